"""The case report: one self-contained HTML file a clinician can file or print to PDF (`vidxai report`).

`case_data(session)` gathers what the report shows from the session file, the model folder it names and
the video (key frames), `render_html(case)` fills the jinja2 template `engine/templates/report.html.j2`,
`write_report(session_path, out)` does both as an engine job. Images are PNG/SVG data URIs, there is no
script and no network reference, and the stylesheet has print rules (page breaks, A4 margins). Figures come
from engine.figures, the code behind `vidxai figure`. No torch, cv2 or Qt is imported.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from engine.colours import class_hex
from engine.figures import (
    KeyFrame,
    Prototype,
    StageView,
    TimelineData,
    figure_bytes,
    heat_image,
    heat_on_face,
    jpeg_bytes,
    overlay,
    png_bytes,
    timeline_figure,
)
from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.overlay import FrameEvidence

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
MAX_STAGES = 24  # stages drawn in the strip (the longest ones, in time order), beyond that a note
MAX_STAGE_DETAILS = 12  # stages with a key frame and its prototypes
TOP_PROTOTYPES = 3
MAPS_PER_STAGE = 256  # frames read to average a stage's map (evenly spread), so an hour-long stage stays cheap
FAITHFULNESS_RECORD = "fer2013:test:700:seed0"
ACCURACY_RECORD = "fer2013:test:all:seed0"


class ReportError(ValueError):
    """A report or figure that cannot be made from this input (the message says what to do)."""


@dataclass
class Case:
    """Everything the report shows, as plain values (the template only formats)."""

    title: str
    generated: str
    session_path: str
    video: dict[str, Any]
    person: int | None
    people: int
    classes: list[str]
    decision: str
    alpha: float
    complete: bool
    method: str
    timeline: TimelineData
    stages: list[StageView]
    stages_hidden: int
    stages_how: str  # where the stages come from (SpRAy, merged to a minimum duration)
    tau_s: float | None  # the EWMA's time constant in seconds, when the analysis recorded it
    model: dict[str, Any]
    occlusion: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    software: dict[str, str]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why
    decision_frame: KeyFrame | None = None  # without stages: the frame where the decided class is most probable
    class_share: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ gathering

def _model_dir(model: dict[str, Any], model_dir: str | Path | None) -> Path | None:
    """The model folder: the one given, else the path the session recorded, else a shipped one by name."""
    cands = [Path(model_dir)] if model_dir else []
    if model.get("path"):
        cands.append(Path(str(model["path"])))
    if model.get("name"):
        from engine.resources import models_dir

        cands.append(models_dir() / str(model["name"]))
    return next((c for c in cands if (c / "model.json").is_file()), None)


def _read_model_json(folder: Path | None) -> dict[str, Any]:
    if folder is None:
        return {}
    try:
        return json.loads((folder / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s: model.json unreadable (%s)", folder, exc)
        return {}


def not_trained_on(card: dict[str, Any], classes: list[str], video_path: str) -> list[str]:
    """What the model never saw in training, from its model.json (an explicit `not_trained_on` list first)."""
    meta = card.get("metadata") or {}
    out = [str(x) for x in meta.get("not_trained_on") or []]
    data = ((meta.get("training") or {}).get("data") or {})
    corpus = data.get("corpus") or {}
    prep = meta.get("preprocess") or (card.get("spec") or {}).get("preprocess") or {}
    if corpus.get("kind") == "image":
        out.append("video: it scores each frame alone; time enters only through the EWMA of its frame scores")
    if prep.get("grayscale"):
        out.append(f"colour: it sees {prep.get('size', '?')}×{prep.get('size', '?')} greyscale face crops")
    others = [c for c in ("contempt", "pain", "boredom", "confusion") if c not in classes]
    if others:
        out.append(f"other states: it can only answer one of {', '.join(classes)} "
                   f"(never e.g. {', '.join(others)})")
    root = str(corpus.get("root") or "")
    if root and video_path and not str(Path(video_path).resolve()).startswith(str(Path(root).resolve())):
        out.append(f"this video: it is not part of the training corpus ({Path(root).name})")
    if corpus and not corpus.get("subjects"):
        out.append("subject-separated data: the corpus has no subject ids, so test faces may resemble training faces")
    return out


def model_card(session_model: dict[str, Any], folder: Path | None, classes: list[str], method: str,
               video_path: str) -> dict[str, Any]:
    """Architecture, training data, test accuracy, faithfulness of the shown map, what it was not trained on."""
    card = _read_model_json(folder)
    meta = card.get("metadata") or {}
    spec = card.get("spec") or {}
    data = ((meta.get("training") or {}).get("data") or {})
    corpus = data.get("corpus") or {}
    evals = meta.get("evaluations") or {}
    acc_rec = evals.get(ACCURACY_RECORD) or next(iter(evals.values()), {})
    faith = meta.get("faithfulness") or {}
    f_name = FAITHFULNESS_RECORD if FAITHFULNESS_RECORD in faith else next(iter(faith), "")
    f_methods = (faith.get(f_name) or {}).get("methods") or {}
    delta = (f_methods.get(method) or {}).get("mean_delta")
    split = data.get("split") or {}
    return {
        "name": session_model.get("name") or (folder.name if folder else ""),
        "folder": str(folder) if folder else "",
        "found": folder is not None,
        "sha256": session_model.get("sha256") or (card.get("weights") or {}).get("sha256", ""),
        "arch": session_model.get("arch") or spec.get("arch", ""),
        "backbone": session_model.get("backbone") or spec.get("backbone", ""),
        "label_setting": session_model.get("label_setting") or spec.get("label_setting", ""),
        "preprocess": session_model.get("preprocess") or spec.get("preprocess", {}),
        "prototypes": spec.get("prototypes_per_class") if spec.get("arch") == "protopnet" else None,
        "latents": spec.get("n_latents") if spec.get("arch") == "patchsae" else None,
        "corpus": Path(str(corpus.get("root", ""))).name if corpus.get("root") else "",
        "corpus_kind": corpus.get("kind", ""),
        "corpus_items": corpus.get("items"),
        "per_class": corpus.get("per_class") or {},
        "split": {k: split.get(k) for k in ("method", "train", "val", "test") if k in split},
        "accuracy": acc_rec.get("accuracy"),
        "accuracy_n": acc_rec.get("n"),
        "accuracy_split": acc_rec.get("split"),
        "accuracy_record": ACCURACY_RECORD if ACCURACY_RECORD in evals else next(iter(evals), ""),
        "recall": acc_rec.get("per_class_recall") or {},
        "faithfulness_method": method,
        "faithfulness_delta": delta,
        "faithfulness_record": f_name,
        "faithfulness_all": {m: v.get("mean_delta") for m, v in f_methods.items()},
        "trained_git_commit": (meta.get("training") or {}).get("git_commit", ""),
        "not_trained_on": not_trained_on(card, classes, video_path),
        "prototype_meta": meta.get("prototypes") or [],
    }


def software() -> dict[str, str]:
    """The exact software that made the report (and read the session)."""
    def ver(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    out = {"vidxai": ver("vidxai")}
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                           timeout=2, check=False)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=2, check=False)
        if r.returncode == 0:
            out["git commit"] = r.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from sessions.store import FORMAT_VERSION

    out.update({"session format": str(FORMAT_VERSION), "python": platform.python_version(),
                "platform": platform.platform(terse=True)})
    for name in ("numpy", "h5py", "av", "Pillow", "matplotlib", "Jinja2"):
        out[name] = ver(name)
    return out


def shown_method(session: Any, explanations: list[str], review: dict[str, Any], folder: Path | None) -> str:
    """The map the report shows, as the review window picks it: the reviewer's last choice, else the
    session's method with the largest faithfulness Δ recorded in model.json, else "intrinsic"."""
    have = [m for m in explanations if session.has_maps(m)]
    if review.get("method") in have:
        return str(review["method"])
    faith = (_read_model_json(folder).get("metadata") or {}).get("faithfulness") or {}
    record = faith.get(FAITHFULNESS_RECORD) or next(iter(faith.values()), {})
    deltas = {m: v.get("mean_delta") for m, v in (record.get("methods") or {}).items()
              if m in have and v.get("mean_delta") is not None}
    if deltas:
        return max(deltas, key=lambda m: deltas[m])
    return "intrinsic" if "intrinsic" in have else (have[0] if have else "")


def _stages(session: Any) -> tuple[list[Any], str]:
    """The stages the report shows and how they were made: the strip's stages (SpRAy's, with those shorter
    than the minimum duration merged into a neighbour, Session.display_stages), else those of the decided
    class's SpRAy."""
    from sessions.export import _stage_class

    shown = session.display_stages()
    if shown:
        how = "SpRAy temporal prototype: runs of frames whose explanations cluster together"
        if session.exists("stages/merged"):
            a = session.attrs("stages")
            raw = a.get("n_stages")
            how += (f"; {raw if raw is not None else 'its'} stages, those shorter than "
                    f"{float(a.get('min_stage_s', 0)):g} s merged into a neighbour")
        return shown, how
    cls, stages = _stage_class(session)
    return stages, f"SpRAy stages of the class {cls}" if stages else ""


def _stage_view(session: Any, st: Any, times: np.ndarray, method: str, valid: np.ndarray) -> StageView:
    end_t = float(times[st.end]) if st.end < len(times) else \
        float(times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0))
    view = StageView(st.start, st.end, st.descriptor, float(times[st.start]), end_t, None)
    frames = np.arange(st.start, st.end)
    frames = frames[valid[st.start:st.end]]
    if not method or frames.size == 0:
        return view
    if frames.size > MAPS_PER_STAGE:
        frames = frames[np.linspace(0, frames.size - 1, MAPS_PER_STAGE).round().astype(int)]
    if frames[-1] - frames[0] < 4 * MAPS_PER_STAGE:
        block = session.explanation_maps(method, slice(int(frames[0]), int(frames[-1]) + 1))
        maps = block[frames - frames[0]].astype(np.float32)
    else:  # a long stage: only the sampled frames' rows, never the whole span's maps in memory
        maps = np.stack([session.explanation_maps(method, slice(int(k), int(k) + 1))[0]
                         for k in frames]).astype(np.float32)
    ok = np.all(np.isfinite(maps.reshape(len(maps), -1)), axis=1)
    if not ok.any():
        return view
    maps, frames = maps[ok], frames[ok]
    mean = maps.mean(axis=0)
    view.mean_map = mean
    # The key frame: the one whose map is most like the stage's mean map (cosine), its most typical moment.
    flat = maps.reshape(len(maps), -1)
    m = mean.ravel()
    cos = flat @ m / (np.linalg.norm(flat, axis=1) * (np.linalg.norm(m) or 1.0) + 1e-12)
    best = int(np.argmax(cos))
    view.key = KeyFrame(int(frames[best]), 0.0, "", 0.0, None, None, maps[best])
    return view


def _prototypes(session: Any, k: int, probs: np.ndarray, card: dict[str, Any], folder: Path | None,
                weight: np.ndarray | None) -> list[Prototype]:
    """The ProtoPNet prototypes that add most to frame k's predicted class (W_ĉj · s_j, largest first, as the
    review window's gallery ranks them: engine.overlay.top_prototypes), with their crops and sources."""
    from engine.overlay import top_prototypes

    sims = session.intrinsic("similarities", slice(k, k + 1))
    if weight is None or sims is None or weight.shape[1] != sims.shape[1]:
        return []
    _, top = top_prototypes(weight, sims[0], probs, n=TOP_PROTOTYPES)
    meta = {int(p.get("prototype", i)): p for i, p in enumerate(card.get("prototype_meta") or [])}
    out = []
    for j, sim, contrib in top:
        if contrib <= 0:
            break
        info = meta.get(j, {})
        src = info.get("source") or {}
        ref = str(src.get("ref", ""))
        if src.get("frame", -1) not in (-1, None):
            ref += f" frame {src['frame']}"
        crop = None
        if folder is not None and (folder / "prototypes" / f"{j}.png").is_file():
            from PIL import Image

            with Image.open(folder / "prototypes" / f"{j}.png") as im:
                crop = np.asarray(im.convert("RGB"))
        out.append(Prototype(j, str(info.get("class", "")), contrib, sim, crop, ref or "provenance not recorded"))
    return out


def _evidence(session: Any, k: int, method: str, weight: np.ndarray | None) -> FrameEvidence | None:
    """Frame k's overlay as the review window draws it: engine.overlay.frame_evidence's steps (the shown
    relevance on the face, its 99th-percentile level, the top prototype's 95th-percentile box) with the
    map laid on the frame by engine.figures.heat_on_face (Pillow) instead of cv2; None where frame k has
    no model input. tests/test_report.py checks it against frame_evidence."""
    from engine.overlay import evidence_on_frame

    mapping = (session.mappings(slice(k, k + 1)) or [None])[0]
    hw = (int(session.video.get("height", 0)), int(session.video.get("width", 0)))
    if mapping is None or min(hw) <= 0:
        return None
    return evidence_on_frame(session, k, method, weight, lambda m: heat_on_face(m, mapping, hw))


def _decode_overlays(keys: list[KeyFrame], video_path: Path, cancel: CancelToken | None) -> None:
    """Each key frame's face crop and overlay, decoded from the video in frame order."""
    from engine.video import open_video

    with open_video(video_path) as reader:
        for key in sorted(keys, key=lambda x: x.index):
            if cancel is not None:
                cancel.raise_if_cancelled()
            ev = key.evidence
            if ev is not None and ev.heat is not None:
                key.face, key.overlay = overlay(reader.frame(key.index), ev)


def _occlusion(session: Any, probs: np.ndarray, valid: np.ndarray, classes: list[str], decision: str) -> list[dict]:
    """Per facial-part condition, over the scored frames: the mean change of the frame's predicted class
    when the part is hidden (Session.occlusion_deltas, the exports' figure), the same for the decided class,
    and how often the top class changes."""
    occ, deltas = session.occlusion(), session.occlusion_deltas()
    if occ is None or deltas is None:
        return []
    conditions, scores = occ
    ok = valid & np.all(np.isfinite(probs), axis=1) & np.all(np.isfinite(scores.reshape(len(scores), -1)), axis=1)
    if not ok.any():
        return []
    p, sc, d = probs[ok], scores[ok], deltas[1][ok]
    pred = p.argmax(1)
    d_idx = classes.index(decision) if decision in classes else None
    return [{"condition": name, "delta_predicted": float(d[:, ci].mean()),
             "delta_decision": float((sc[:, ci, d_idx] - p[:, d_idx]).mean()) if d_idx is not None else None,
             "flips": float((sc[:, ci].argmax(1) != pred).mean()), "frames": int(ok.sum())}
            for ci, name in enumerate(conditions)]


def case_data(session_path: str | Path, model_dir: str | Path | None = None, video: str | Path | None = None,
              progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
              key_frames: bool = True) -> Case:
    """Read what the report shows. `model_dir` / `video` override the paths the session recorded (a session
    opened on another machine); without them found, the report says what is missing."""
    from sessions import Session
    from sessions.people import analysed_person, people

    def step(i: int, msg: str) -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(i, 6, msg)

    step(0, "reading the session")
    with Session.open(session_path) as s:
        info = s.analysis_info()
        if info is None:
            from sessions.store import SessionError

            raise SessionError(f"{session_path} has no analysis: run `vidxai analyze` on its video first")
        classes = list(info["classes"])
        T = s.frame_count
        times = np.asarray(s.timestamps, np.float64)
        probs = s.read("probs").astype(np.float32)
        ewma = s.read("ewma").astype(np.float32)
        valid = s.read("valid").astype(bool)
        review = s.review_state()
        notes: list[str] = []
        if not info["complete"]:
            notes.append(f"the analysis is incomplete: {info['frames_done']} of {T} frames scored")
        folder = _model_dir(info["model"] or {}, model_dir)
        method = shown_method(s, info["explanations"], review, folder)
        video_info = dict(s.video)
        video_path = Path(str(video)) if video else Path(str(video_info.get("path", "")))
        card = model_card(info["model"] or {}, folder, classes, method, str(video_path))
        if folder is None:
            notes.append(f"model folder {info['model'].get('path', '?')} not found: the model card shows only "
                         "what the session recorded, and prototypes are not shown")

        step(1, "stages")
        all_stages, stages_how = _stages(s)
        shown = all_stages
        if len(all_stages) > MAX_STAGES:
            shown = sorted(sorted(all_stages, key=lambda x: x.end - x.start, reverse=True)[:MAX_STAGES],
                           key=lambda x: x.start)
        views = [_stage_view(s, st, times, method, valid) for st in shown]
        detail = views if len(views) <= MAX_STAGE_DETAILS else sorted(
            sorted(views, key=lambda v: v.end - v.start, reverse=True)[:MAX_STAGE_DETAILS], key=lambda v: v.start)
        with_key = {id(v) for v in detail} if key_frames else set()
        for v in views:
            if id(v) not in with_key:
                v.key = None

        step(2, "key frames")
        weight = s.head_weight()
        for v in detail:
            if v.key is None:
                continue
            k = v.key.index
            pred = int(np.nanargmax(probs[k]))
            v.key.time_s, v.key.predicted, v.key.probability = float(times[k]), classes[pred], float(probs[k, pred])
            v.key.prototypes = _prototypes(s, k, probs[k], card, folder, weight)
            v.key.evidence = _evidence(s, k, method, weight)
        occlusion = _occlusion(s, probs, valid, classes, info["decision"])
        ann = s.annotations()
        person = analysed_person(s)
        n_people = len(people(s))
        analysis_attrs = s.attrs("")

    step(3, "decoding key frames")
    keys = [v.key for v in detail if v.key is not None]
    if keys and video_path.is_file():
        try:
            _decode_overlays(keys, video_path, cancel)
        except Exception as exc:  # noqa: BLE001 - a video that no longer decodes still gets its report
            notes.append(f"{video_path}: key frames could not be decoded ({str(exc).splitlines()[0]}); "
                         "their maps are shown without the picture")
    elif keys:
        notes.append(f"video {video_path} not found: key frames show the explanation map without the picture")

    segs = []
    for seg in sorted(ann.segments, key=lambda x: (x.start_frame, x.tier)):
        a, b = max(0, min(seg.start_frame, T - 1)), seg.end_frame
        t1 = float(times[b]) if b < T else float(times[-1] + (times[-1] - times[-2] if T > 1 else 0))
        segs.append({**dataclasses.asdict(seg), "t0": float(times[a]), "t1": t1})
    scored = valid & np.all(np.isfinite(probs), axis=1)
    share = []
    if scored.any():
        top = probs[scored].argmax(1)
        for i, c in enumerate(classes):
            share.append({"class": c, "colour": class_hex(c, i), "mean": float(probs[scored, i].mean()),
                          "share": float((top == i).mean()), "final_ewma": float(ewma[scored][-1, i])})
    timeline = TimelineData(times, classes, probs, ewma, float(info["alpha"] or 0.0), info["decision"], views,
                            [(x["tier"], x["t0"], x["t1"], x["label"]) for x in segs], info.get("ewma_tau_s"))
    settings = {
        "EWMA α": info["alpha"], "EWMA τ (s)": info.get("ewma_tau_s") if info.get("ewma_tau_s") is not None
        else "not recorded (set as α)", "explanations computed": ", ".join(info["explain"] or []) or "intrinsic",
        "map shown": method, "preprocessing": json.dumps(info["preprocess"]), "label setting": info["label_setting"],
        "person analysed": person, "analysis started": analysis_attrs.get("started", ""),
        "analysis finished": analysis_attrs.get("finished", ""), "SpRAy classes": ", ".join(info["spray"]) or "none",
        "occlusion": "yes" if info["occlusion"] else "no", "model sha256": info["model_sha256"] or card["sha256"],
    }
    if review.get("alpha") is not None and review.get("alpha") != info["alpha"]:
        settings["EWMA α the reviewer last viewed"] = review["alpha"]
    decision_frame = None
    if key_frames and not keys and scored.any():
        try:
            decision_frame = key_frame(session_path, None, model_dir, video)[0]
        except (OSError, ValueError) as exc:
            notes.append(f"the decision's key frame could not be shown ({str(exc).splitlines()[0]})")
    step(4, "figures")
    name = Path(str(video_info.get("path", ""))).name or Path(session_path).stem
    return Case(
        title=f"Case report: {name}", generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        session_path=str(Path(session_path).resolve()),
        video={"name": name, **video_info, "found": video_path.is_file(), "read_from": str(video_path)},
        person=person, people=n_people, classes=classes, decision=info["decision"], alpha=float(info["alpha"] or 0),
        complete=bool(info["complete"]), method=method, timeline=timeline, stages=views,
        stages_hidden=len(all_stages) - len(shown), stages_how=stages_how, tau_s=info.get("ewma_tau_s"),
        model=card, occlusion=occlusion, annotations=segs,
        software=software(), settings=settings, notes=notes, class_share=share, decision_frame=decision_frame,
    )


def key_frame(session_path: str | Path, k: int | None = None, model_dir: str | Path | None = None,
              video: str | Path | None = None) -> tuple[KeyFrame, str]:
    """One frame as the report shows a stage's key frame: (KeyFrame, map method). Without `k`, the scored
    frame where the decided class is most probable."""
    from sessions import Session

    with Session.open(session_path) as s:
        info = s.analysis_info()
        if info is None:
            from sessions.store import SessionError

            raise SessionError(f"{session_path} has no analysis: run `vidxai analyze` on its video first")
        classes = list(info["classes"])
        probs = s.read("probs").astype(np.float32)
        valid = s.read("valid").astype(bool) & np.all(np.isfinite(probs), axis=1)
        if not valid.any():
            raise ReportError(f"{session_path}: no frame was scored (no face found)")
        if k is None:
            d = classes.index(info["decision"]) if info["decision"] in classes else 0
            k = int(np.flatnonzero(valid)[np.argmax(probs[valid, d])])
        if not 0 <= k < s.frame_count:
            raise ReportError(f"{session_path}: frame {k} is outside 0..{s.frame_count - 1}")
        if not valid[k]:
            raise ReportError(f"{session_path}: frame {k} has no face, so no score or explanation; choose another")
        folder = _model_dir(info["model"] or {}, model_dir)
        method = shown_method(s, info["explanations"], s.review_state(), folder)
        maps = s.explanation_maps(method, slice(k, k + 1)) if method else None
        heat = maps[0].astype(np.float32) if maps is not None else None
        pred = int(np.argmax(probs[k]))
        card = model_card(info["model"] or {}, folder, classes, method, "")
        weight = s.head_weight()
        key = KeyFrame(k, float(s.timestamps[k]), classes[pred], float(probs[k, pred]), None, None, heat,
                       _prototypes(s, k, probs[k], card, folder, weight), _evidence(s, k, method, weight))
        path = Path(str(video)) if video else Path(str(s.video.get("path", "")))
    if path.is_file():
        _decode_overlays([key], path, None)
    return key, method


def timeline_data(session_path: str | Path) -> tuple[TimelineData, list[str]]:
    """The timeline figure's data (scores, EWMA, stages, annotations) without key frames or the video."""
    case = case_data(session_path, video=Path("/nonexistent"), key_frames=False)
    return case.timeline, case.classes


# ------------------------------------------------------------------------------------------ rendering

def data_uri(payload: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _env():
    import jinja2

    loader = jinja2.FileSystemLoader(str(TEMPLATES_DIR))
    env = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda x, d=1: "–" if x is None else f"{100 * x:.{d}f} %"
    env.filters["num"] = lambda x, d=3: "–" if x is None else f"{x:.{d}f}"
    env.filters["signed"] = lambda x, d=3: "–" if x is None else f"{x:+.{d}f}"
    env.filters["secs"] = lambda x: f"{x:.2f} s"
    return env


def render_html(case: Case) -> str:
    """The report's HTML: the template filled with the case and its figures as data URIs."""
    # Text stays text in the report's SVG (the browser has fonts; drawing glyphs as paths triples the time).
    timeline_svg = figure_bytes(timeline_figure(case.timeline), "svg", text_as_paths=False)
    images: dict[str, Any] = {"timeline": data_uri(timeline_svg, "image/svg+xml")}
    stage_items = []
    for i, st in enumerate(case.stages):
        item: dict[str, Any] = {"stage": st, "n": i + 1,
                                "colour": class_hex(st.cls, case.classes.index(st.cls)) if st.cls in case.classes
                                else "#999999",
                                "mean": data_uri(png_bytes(heat_image(st.mean_map, 96)), "image/png")
                                if st.mean_map is not None else ""}
        if st.key is not None:
            item.update(_key_item(st.key))
        stage_items.append(item)
    decision_item = _key_item(case.decision_frame) if case.decision_frame is not None else None
    return _env().get_template(TEMPLATE).render(case=case, images=images, stage_items=stage_items,
                                                decision_item=decision_item)


def _key_item(key: KeyFrame) -> dict[str, Any]:
    """A key frame's pictures as data URIs: the face, the map over it (or the map alone), its prototypes."""
    return {
        "key": key,
        "face": data_uri(jpeg_bytes(key.face, 300), "image/jpeg") if key.face is not None else "",
        "overlay": data_uri(jpeg_bytes(key.overlay, 300), "image/jpeg") if key.overlay is not None else
        (data_uri(png_bytes(heat_image(key.heat, 96)), "image/png") if key.heat is not None else ""),
        "prototypes": [{"p": p, "img": data_uri(png_bytes(p.crop, 120), "image/png") if p.crop is not None else ""}
                       for p in key.prototypes],
    }


def write_report(session_path: str | Path, out: str | Path, model_dir: str | Path | None = None,
                 video: str | Path | None = None, progress: ProgressFn = no_progress,
                 cancel: CancelToken | None = None) -> Path:
    """Write the case report of a session to `out` (.html), atomically; returns the path."""
    from sessions.atomic import atomic_write

    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"{out}: the case report is an .html file (print it to PDF from a browser)")
    t0 = time.perf_counter()
    case = case_data(session_path, model_dir, video, progress, cancel)
    html = render_html(case)
    if cancel is not None:
        cancel.raise_if_cancelled()
    progress(5, 6, "writing")
    os.makedirs(out.parent, exist_ok=True)
    with atomic_write(out, "w", encoding="utf-8") as fh:
        fh.write(html)
    progress(6, 6, "done")
    log.info("%s: case report of %s in %.2f s", out, session_path, time.perf_counter() - t0)
    return out


__all__ = ["Case", "ReportError", "case_data", "model_card", "not_trained_on", "render_html", "software", "write_report"]
