"""Exports of a session: per-frame CSV, JSON summary, ELAN .eaf. All written atomically.

Per-frame data is streamed in blocks, so memory stays flat in video length.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import mimetypes
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from sessions.atomic import atomic_write
from sessions.store import Session, Stage
from sessions.tracks import predicted, runs

log = logging.getLogger(__name__)

BLOCK = 4096  # frames per read while streaming
DECISION_TIER = "model decision"
STAGE_TIER = "SpRAy stages"
GENERATED_BY = "VidXAI"  # ANNOTATOR of the tiers we compute (decision, stages), not the reviewer's
VIDXAI_PROPERTY = "vidxai_annotation_value"  # HEADER property: how reviewer values are written
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """Text XML 1.0 can hold (control characters dropped), so the file stays well-formed."""
    return _XML_ILLEGAL.sub("", text)


def _blocks(n: int) -> Iterator[slice]:
    for i in range(0, n, BLOCK):
        yield slice(i, min(n, i + BLOCK))


def _fmt(x: float) -> str:
    return "" if not np.isfinite(x) else f"{x:.6g}"


def _stage_class(session: Session) -> tuple[str | None, list[Stage]]:
    """The stages to show: the video's temporal prototype as the strip shows it (merged to the minimum
    stage duration, Session.display_stages); failing that, those of the decided class, else of the first
    class that has SpRAy."""
    video_stages = session.display_stages()
    if video_stages:
        return "video", video_stages
    spray = session.spray()
    if not spray:
        return None, []
    info = session.analysis_info() or {}
    cls = info.get("decision") if info.get("decision") in spray else min(spray)
    return cls, sorted(spray[cls].stages, key=lambda s: s.start)


def _stage_labels(stages: list[Stage], sl: slice) -> list[str]:
    idx = np.arange(sl.start, sl.stop)
    out = [""] * len(idx)
    for st in stages:
        lo, hi = max(st.start, sl.start), min(st.end, sl.stop)
        for i in range(lo, hi):
            out[i - sl.start] = st.descriptor
    return out


def frame_columns(session: Session) -> tuple[list[str], Callable[[], Iterator[list[str]]]]:
    """Our per-frame columns: prob_<class>…, ewma_<class>…, stage (SpRAy descriptor),
    occlusion_delta_<condition>… (score of the predicted class under the condition minus unoccluded; only
    when occlusion was run), and for a clip model temporal_<method>… (the frame's temporal relevance) and
    window_first, window_last (the frames of the windows behind its score). Returns (header, rows): `rows()` yields one list of cells per frame, streamed
    in blocks; an empty cell = no value."""
    info = session.analysis_info()
    classes: list[str] = info["classes"] if info else []
    occ = session.occlusion(slice(0, 0)) if info else None
    conditions = occ[0] if occ else []
    _, stages = _stage_class(session)
    temporal = session.temporal_methods() if info else []
    spans = bool(info) and session.window_spans(slice(0, 0)) is not None
    header = ([f"prob_{c}" for c in classes] + [f"ewma_{c}" for c in classes] + ["stage"]
              + [f"occlusion_delta_{c}" for c in conditions] + [f"temporal_{m}" for m in temporal]
              + (["window_first", "window_last"] if spans else []))

    def rows() -> Iterator[list[str]]:
        for sl in _blocks(session.frame_count):
            n = sl.stop - sl.start
            if info:
                probs, ewma = session.read("probs", sl), session.read("ewma", sl)
            deltas = session.occlusion_deltas(sl) if conditions else None
            stage_text = _stage_labels(stages, sl)
            rel = [session.temporal_relevance(m, sl) for m in temporal]
            win = session.window_spans(sl) if spans else None
            for j in range(n):
                row = [_fmt(v) for v in probs[j]] + [_fmt(v) for v in ewma[j]] if info else []
                row.append(stage_text[j])
                if deltas is not None:
                    row += [_fmt(v) for v in deltas[1][j]]
                row += [_fmt(r[j]) for r in rel]
                if win is not None:
                    row += ["" if v < 0 else str(int(v)) for v in win[j]]
                yield row

    return header, rows


def export_csv(session: Session, path: str | os.PathLike[str]) -> Path:
    """One row per frame: index, time_s, face, face_confidence, then `frame_columns`: prob_<class>…,
    ewma_<class>…, stage (SpRAy descriptor of the decided class), occlusion_delta_<condition>…
    Empty cell = no value."""
    path = Path(path)
    ours, rows = frame_columns(session)
    header = ["index", "time_s", "face", "face_confidence"] + ours
    ts = session.timestamps
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        cells = rows()
        for sl in _blocks(session.frame_count):
            faces = session.faces(sl)
            for j in range(sl.stop - sl.start):
                k = sl.start + j
                w.writerow([str(k), f"{ts[k]:.6f}", "1" if faces.found[j] else "0", _fmt(faces.confidence[j])]
                           + next(cells))
    log.info("exported %s", path)
    return path


def _au_agreement(session: Session, info: dict) -> dict[str, dict]:
    """Per explanation method: mean cosine (CAM-COS) between its maps and the predicted class's action-unit
    map, over all frames and per predicted class (frames where it is defined)."""
    classes = info["classes"]
    out: dict[str, dict] = {}
    for method in info["explanations"]:
        if session.au_cos(method, slice(0, 0)) is None:
            continue
        sums, counts = np.zeros(len(classes)), np.zeros(len(classes), dtype=np.int64)
        for sl in _blocks(session.frame_count):
            cos, probs = session.au_cos(method, sl), session.read("probs", sl)
            ok = np.isfinite(cos) & np.all(np.isfinite(probs), axis=1)
            pred = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1)
            np.add.at(sums, pred[ok], cos[ok])
            np.add.at(counts, pred[ok], 1)
        total = int(counts.sum())
        out[method] = {"mean": float(sums.sum() / total) if total else None, "frames": total,
                       "per_class": {c: (float(sums[i] / counts[i]) if counts[i] else None)
                                     for i, c in enumerate(classes)}}
    return out


def export_json(session: Session, path: str | os.PathLike[str]) -> Path:
    """Summary: video, model, classes, decision, per-class mean probabilities, stages, annotations, the people
    of the video and the person analysed."""
    path = Path(path)
    info = session.analysis_info()
    mean_probs: dict[str, float | None] = {}
    scored = 0
    if info:
        total = np.zeros(len(info["classes"]), dtype=np.float64)
        for sl in _blocks(session.frame_count):
            probs, valid = session.read("probs", sl), session.read("valid", sl)
            ok = valid & np.all(np.isfinite(probs), axis=1)
            total += probs[ok].sum(axis=0)
            scored += int(ok.sum())
        mean_probs = {c: (float(total[i] / scored) if scored else None) for i, c in enumerate(info["classes"])}
    ann = session.annotations()
    summary_au = _au_agreement(session, info) if info else {}
    summary = {
        "application": "vidxai", "kind": "session summary", "session": str(session.path),
        "video": session.video, "face_found_frames": session.face_found_frames(),
        "model": info["model"] if info else None,
        "classes": info["classes"] if info else [],
        "decision": info["decision"] if info else "",
        "complete": bool(info and info["complete"]),
        "frames_done": info["frames_done"] if info else 0,
        "scored_frames": scored,
        "alpha": info["alpha"] if info else None,
        "explanations": info["explanations"] if info else [],
        "mean_probs": mean_probs,
        "stages": [dataclasses.asdict(s) for s in session.display_stages()],
        "spray_stages": [dataclasses.asdict(s) for s in session.temporal_prototype()],
        "class_stages": {c: [dataclasses.asdict(s) for s in r.stages] for c, r in session.spray().items()},
        "annotation_count": len(ann.segments),
        "tiers": [t.name for t in ann.tiers],
        "au_agreement": summary_au,
        "clip_windows": session.clip_windows() if info else {},
        "temporal_relevance": session.temporal_methods() if info else [],
        **_people_summary(session),
    }
    with atomic_write(path, "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, default=str)
    log.info("exported %s", path)
    return path


def _people_summary(session: Session) -> dict:
    """The people of the video and the one these scores are of (sessions.people)."""
    from sessions.people import summary

    people, person = summary(session)
    return {"person": person, "people": people}


class _TimeSlots:
    def __init__(self) -> None:
        self._ids: dict[int, str] = {}

    def ref(self, ms: int) -> str:
        if ms not in self._ids:
            self._ids[ms] = f"ts{len(self._ids) + 1}"
        return self._ids[ms]

    def element(self) -> ET.Element:
        order = ET.Element("TIME_ORDER")
        for ms, tid in sorted(self._ids.items()):
            ET.SubElement(order, "TIME_SLOT", TIME_SLOT_ID=tid, TIME_VALUE=str(ms))
        return order


def _decision_runs(session: Session, classes: list[str]) -> list[tuple[int, int, str]]:
    """Maximal runs [start, end) of the per-frame predicted class; unscored frames break runs."""
    pred = np.concatenate([predicted(session.read("probs", sl), session.read("valid", sl))
                           for sl in _blocks(session.frame_count)] or [np.zeros(0, np.int64)])
    return [(a, b, classes[p]) for a, b, p in runs(pred) if p >= 0]


def export_eaf(session: Session, path: str | os.PathLike[str], author: str = "") -> Path:
    """ELAN 3.0 annotation document: the reviewer tiers, a "model decision" tier of runs of the
    predicted class, and "SpRAy stages" (of the decided class) when present. Times are the frames'
    presentation times in ms; a segment ends where its first excluded frame starts."""
    path = Path(path)
    ts = session.timestamps
    T = session.frame_count
    end_of_video = float(ts[-1] + 1.0 / session.fps) if T else 0.0

    def ms(frame: int) -> int:  # EAF time values are non-negative integers
        return max(0, round(1000.0 * float(ts[frame] if frame < T else end_of_video)))

    root = ET.Element("ANNOTATION_DOCUMENT", {
        "AUTHOR": author, "DATE": datetime.now(UTC).isoformat(timespec="seconds"),
        "FORMAT": "3.0", "VERSION": "3.0",
        "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsi:noNamespaceSchemaLocation": "http://www.mpi.nl/tools/elan/EAFv3.0.xsd",
    })
    header = ET.SubElement(root, "HEADER", MEDIA_FILE="", TIME_UNITS="milliseconds")
    raw = str(session.video.get("path", "") or "")
    video = Path(raw)
    media = {"MEDIA_URL": video.resolve().as_uri() if raw else "",
             "MIME_TYPE": mimetypes.guess_type(video.name)[0] or "video/*"}
    if raw:
        try:
            rel = Path(os.path.relpath(video.resolve(), path.resolve().parent)).as_posix()
            media["RELATIVE_MEDIA_URL"] = rel if rel.startswith("..") else "./" + rel
        except ValueError:
            pass  # another drive on Windows: only the absolute URL
    ET.SubElement(header, "MEDIA_DESCRIPTOR", media)
    slots = _TimeSlots()
    tiers: list[tuple[str, list[tuple[int, int, str]], str]] = []
    ann = session.annotations()
    for tier in ann.tiers:
        items = []
        for s in sorted((s for s in ann.segments if s.tier == tier.name), key=lambda s: s.start_frame):
            value = s.label
            if s.agreement:
                value = f"[{s.agreement}] {value}"
            if s.note:
                value = f"{value}: {s.note}"
            items.append((s.start_frame, max(s.end_frame, s.start_frame + 1), value))
        tiers.append((tier.name, items, ""))
    taken = {t.name for t in ann.tiers}

    def generated(name: str) -> str:  # tier ids must be unique (EAFv3.0 tierNameKey)
        out, n = name, 1
        while out in taken:
            n += 1
            out = f"{name} ({n})"
        taken.add(out)
        return out

    info = session.analysis_info()
    if info and info["frames_done"]:
        tiers.append((generated(DECISION_TIER), _decision_runs(session, info["classes"]), GENERATED_BY))
    cls, stages = _stage_class(session)
    if stages:
        tiers.append((generated(STAGE_TIER), [(st.start, st.end, st.descriptor) for st in stages], GENERATED_BY))
    n_ann = 0
    tier_elems = []
    for name, items, annotator in tiers:
        te = ET.Element("TIER", LINGUISTIC_TYPE_REF="default-lt", TIER_ID=_xml_text(name))
        if annotator:
            te.set("ANNOTATOR", annotator)  # our own tiers: `import_eaf` leaves them out
        for start, end, value in items:
            t0, t1 = ms(min(start, T)), ms(min(end, T))
            if t1 <= t0:
                continue
            n_ann += 1
            a = ET.SubElement(ET.SubElement(te, "ANNOTATION"), "ALIGNABLE_ANNOTATION",
                              ANNOTATION_ID=f"a{n_ann}", TIME_SLOT_REF1=slots.ref(t0), TIME_SLOT_REF2=slots.ref(t1))
            ET.SubElement(a, "ANNOTATION_VALUE").text = _xml_text(value)
        tier_elems.append(te)
    ET.SubElement(header, "PROPERTY", NAME="lastUsedAnnotationId").text = str(n_ann)
    ET.SubElement(header, "PROPERTY", NAME=VIDXAI_PROPERTY).text = "[verdict] label: note"
    root.append(slots.element())
    root.extend(tier_elems)
    ET.SubElement(root, "LINGUISTIC_TYPE", GRAPHIC_REFERENCES="false", LINGUISTIC_TYPE_ID="default-lt",
                  TIME_ALIGNABLE="true")
    ET.indent(root)
    with atomic_write(path, "wb") as fh:
        ET.ElementTree(root).write(fh, encoding="UTF-8", xml_declaration=True)
    log.info("exported %s (stages of %s)", path, cls)
    return path
