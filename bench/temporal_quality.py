"""Temporal quality of the explanations on the shared CREMA-D clips (issue 14): stages, EWMA, map flicker.

    nice -n 19 .venv/bin/python bench/temporal_quality.py [--work DIR] [--models patchsae,protopnet,cnn]
                                                          [--long [--long-work DIR]]
                                                          [--out bench/results/temporal_quality.json]

Sessions: every clip of ../shared/data/videos/crema-d analysed with each model (intrinsic, gxi, gradcam and
lrp maps), made in --work unless already there (nothing is committed). Tables printed and written as JSON:

1. stages: SpRAy on each session's maps (the pipeline's reader: maps ≥ 0 sum-pooled to ≤ 32²) for temporal
   weights × minimum stage durations: description-length reduction 1 − stages/frames and the mean
   frame-to-stage cosine (each frame's pooled map against the mean map of the stage it is in), mean over
   clips. Weight 0 and 0 s is SpRAy as METHODS §4 defines it.
2. ewma: for time constants τ (s): per-frame decision flips per second (argmax of the smoothed scores,
   frames with a face); lag: of the changes of the raw per-frame decision that last ≥ 0.3 s, the share the
   smoothed decision follows and the mean delay until it does (a missed change counts its length); settle time (s from the first face until the smoothed argmax equals the video
   decision for the rest of the clip), video accuracy against the intended labels; mean over clips.
3. flicker: per model × method: flicker (mean frame-to-frame 1 − cosine over frames with a face) of the
   stored maps (their positive part, as displayed) and of the maps smoothed in face-aligned coordinates
   for σ values, and how close the smoothed maps stay to the stored ones (fidelity, mean cosine); the
   same smoothing without alignment beside it.
4. summary per model × method with the defaults: flicker raw / smoothed (σ default), stage reduction and mean
   frame-to-stage cosine for SpRAy as published ("spray": no temporal term, no minimum), with the temporal
   term ("raw": SpRAy's stages, what the session keeps per frame) and merged to the minimum stage duration
   ("merged": what the strip shows) — the columns issue 14 asks of the explanation bench.
5. --long: a 10-minute video made by looping one clip (PyAV remux of an H.264 re-encode, in --work),
   analysed with the default model: stages per second raw and merged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from engine.aggregate import DEFAULT_TAU_S, alpha_from_tau, ewma, video_decision
from engine.explain.spray import (
    frame_stage_cosine,
    merge_short_stages,
    spray_streamed,
    stage_durations,
    stage_map_sums,
)
from engine.pipeline import AnalyzeSettings, _pooled_map_reader, analyze
from engine.temporal import (
    DEFAULT_MAP_SIGMA_S,
    DEFAULT_MIN_STAGE_S,
    DEFAULT_TEMPORAL_WEIGHT,
    flicker,
    map_landmarks,
    smooth_maps,
)
from sessions import Session
from sessions.tracks import runs

CREMA = REPO.parent / "shared" / "data" / "videos" / "crema-d"
LABELS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
METHODS = ("intrinsic", "gxi", "gradcam", "lrp")
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
MIN_STAGE_S = (0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.75, 1.0)
TAUS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
SIGMAS = (0.05, 0.1, 0.2)
CHANGE_S = 0.3  # a change of the raw per-frame decision lasting this long must show in the smoothed one


def sessions_for(work: Path, model: str, methods: tuple[str, ...] = METHODS[1:]) -> list[Path]:
    """A session per shared clip analysed with `model` (intrinsic plus post-hoc `methods`), made in
    work/model unless already there."""
    clips = sorted(CREMA.glob("1001_*.flv"))
    if not clips:
        sys.exit(f"no CREMA-D clips in {CREMA}: this bench needs ../shared/data")
    out = []
    for clip in clips:
        path = work / model / f"{clip.stem}.vxs"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            analyze(clip, REPO / "resources" / "models" / model, path,
                    AnalyzeSettings(explain=methods, spray=False))
        out.append(path)
    return out


def spray_stages(s: Session, method: str, weight: float, min_s: float | tuple[float, ...]) -> dict | list[dict]:
    """SpRAy on a session's stored maps of `method` (temporal weight `weight`), stages merged below each
    `min_s`: counts, reductions and mean frame-to-stage cosines (a list when `min_s` is a tuple)."""
    classes = s.analysis_info()["classes"]
    valid = s.read("valid")
    probs = s.read("probs")
    probs[~valid] = np.nan
    read = _pooled_map_reader(s, method)
    res = spray_streamed(read, probs, classes, temporal_weight=weight)
    raw = res.prototypes.stages
    sums, counts = stage_map_sums(read, raw)
    durations = stage_durations(raw, s.timestamps, s.fps)
    T = s.frame_count
    raw_cos = frame_stage_cosine(read, raw)
    out = []
    for m in (min_s if isinstance(min_s, tuple) else (min_s,)):
        merged = merge_short_stages(raw, sums, counts, durations, m)
        out.append({"frames": T, "seconds": T / s.fps, "raw_stages": len(raw), "stages": len(merged),
                    "raw_reduction": 1 - len(raw) / T, "reduction": 1 - len(merged) / T,
                    "raw_cosine": raw_cos, "cosine": frame_stage_cosine(read, merged),
                    "k": {c: cc.k for c, cc in res.classes.items()}})
    return out if isinstance(min_s, tuple) else out[0]


def stage_table(sessions: list[Path], method: str) -> list[dict]:
    per: dict[float, list[list[dict]]] = {}
    for w in WEIGHTS:
        per[w] = []
        for p in sessions:
            with Session.open(p) as s:
                per[w].append(spray_stages(s, method, w, MIN_STAGE_S))
    rows = []
    for w in WEIGHTS:
        for i, m in enumerate(MIN_STAGE_S):
            vals = [clip[i] for clip in per[w]]
            rows.append({"weight": w, "min_stage_s": m,
                         "stages": float(np.mean([v["stages"] for v in vals])),
                         "reduction": float(np.mean([v["reduction"] for v in vals])),
                         "min_reduction": float(np.min([v["reduction"] for v in vals])),
                         "cosine": float(np.nanmean([v["cosine"] for v in vals]))})
    return rows


def ewma_metrics(s: Session, tau: float, classes: list[str]) -> dict:
    valid = s.read("valid")
    probs = s.read("probs").astype(np.float64)
    alpha = alpha_from_tau(tau, s.fps)
    sm = ewma(probs, alpha, valid)
    rows = np.flatnonzero(valid & np.isfinite(sm).all(axis=1))
    decision = video_decision(sm, classes)
    if rows.size == 0:
        return {"flips_per_s": float("nan"), "settle_s": float("nan"), "decision": decision}
    pred = np.argmax(sm[rows], axis=1)
    flips = int(np.count_nonzero(pred[1:] != pred[:-1]))
    dur = rows.size / s.fps
    d = classes.index(decision)
    wrong = np.flatnonzero(pred != d)
    ts = s.timestamps
    settle = 0.0 if wrong.size == 0 else (ts[rows[wrong[-1] + 1]] - ts[rows[0]] if wrong[-1] + 1 < rows.size
                                          else ts[rows[-1]] - ts[rows[0]] + 1 / s.fps)
    # Lag: every change of the raw per-frame decision that lasts at least CHANGE_S (a real change, not a
    # one-frame flip) should be followed by the smoothed decision; delay = time from the change until the
    # smoothed argmax shows the new class (the run's length when it never does: a missed change).
    raw = np.argmax(probs[rows], axis=1)
    delays, followed = [], 0
    for a, b, c in runs(raw)[1:]:
        if (b - a) / s.fps < CHANGE_S:
            continue
        hit = np.flatnonzero(pred[a:b] == c)
        followed += hit.size > 0
        delays.append((hit[0] if hit.size else b - a) / s.fps)
    return {"flips_per_s": flips / dur, "settle_s": float(settle), "decision": decision,
            "delays": delays, "followed": followed}


def ewma_table(sessions_by_model: dict[str, list[Path]]) -> list[dict]:
    rows = []
    for tau in TAUS:
        vals, correct, n, delays, followed = [], 0, 0, [], 0
        for ps in sessions_by_model.values():
            for p in ps:
                with Session.open(p) as s:
                    classes = s.analysis_info()["classes"]
                    v = ewma_metrics(s, tau, classes)
                vals.append(v)
                delays += v["delays"]
                followed += v["followed"]
                correct += v["decision"] == LABELS[p.stem.split("_")[2]]
                n += 1
        rows.append({"tau_s": tau, "alpha_at_29.97": alpha_from_tau(tau, 29.97),
                     "flips_per_s": float(np.mean([v["flips_per_s"] for v in vals])),
                     "settle_s": float(np.mean([v["settle_s"] for v in vals])),
                     "changes": len(delays), "followed": followed / max(len(delays), 1),
                     "delay_s": float(np.mean(delays)) if delays else float("nan"),
                     "video_accuracy": correct / n, "n": n})
    return rows


def map_flicker(s: Session, method: str, sigmas: tuple[float, ...]) -> dict:
    maps = s.explanation_maps(method).astype(np.float32)
    valid = s.read("valid")
    lm = map_landmarks(s.faces().landmarks, s.mappings(), maps.shape[1:])
    raw = np.maximum(np.nan_to_num(maps), 0)  # the displayed (positive) evidence
    raw[~valid] = np.nan
    out = {"raw": flicker(raw, valid)}
    ok = valid & np.isfinite(raw).all(axis=(1, 2))
    a = raw[ok].reshape(ok.sum(), -1).astype(np.float64)

    def fidelity(sm: np.ndarray) -> float:
        """Mean cosine of the smoothed maps with the stored ones."""
        b = sm[ok].reshape(ok.sum(), -1).astype(np.float64)
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        keep = (na > 0) & (nb > 0)
        return float(np.mean(np.einsum("ij,ij->i", a[keep], b[keep]) / (na[keep] * nb[keep]))) if keep.any() else np.nan

    for sg in sigmas:
        sm = smooth_maps(raw, lm, sg * s.fps, valid)
        un = smooth_maps(raw, lm, sg * s.fps, valid, align=False)
        out[f"smoothed_{sg}"] = flicker(sm, valid)
        out[f"fidelity_{sg}"] = fidelity(sm)
        out[f"unaligned_{sg}"] = flicker(un, valid)
        out[f"unaligned_fidelity_{sg}"] = fidelity(un)
    return out


def flicker_table(sessions_by_model: dict[str, list[Path]], methods: tuple[str, ...] = METHODS,
                  sigmas: tuple[float, ...] = SIGMAS) -> list[dict]:
    rows = []
    for model, ps in sessions_by_model.items():
        for method in methods:
            vals = []
            for p in ps:
                with Session.open(p) as s:
                    if s.has_maps(method):
                        vals.append(map_flicker(s, method, sigmas))
            if vals:
                rows.append({"model": model, "method": method,
                             **{k: float(np.nanmean([v[k] for v in vals])) for k in vals[0]}})
    return rows


def summary_table(sessions_by_model: dict[str, list[Path]], flick: list[dict],
                  methods: tuple[str, ...] = METHODS) -> list[dict]:
    rows = []
    for model, ps in sessions_by_model.items():
        for method in methods:
            st, plain = [], []
            for p in ps:
                with Session.open(p) as s:
                    if s.has_maps(method):
                        st.append(spray_stages(s, method, DEFAULT_TEMPORAL_WEIGHT, DEFAULT_MIN_STAGE_S))
                        plain.append(spray_stages(s, method, 0.0, 0.0))
            if not st:
                continue
            f = next(r for r in flick if r["model"] == model and r["method"] == method)
            rows.append({"model": model, "method": method, "flicker_raw": f["raw"],
                         "flicker_smoothed": f.get(f"smoothed_{DEFAULT_MAP_SIGMA_S}", float("nan")),
                         "reduction_spray": float(np.mean([v["reduction"] for v in plain])),
                         "cosine_spray": float(np.nanmean([v["cosine"] for v in plain])),
                         "reduction_raw": float(np.mean([v["raw_reduction"] for v in st])),
                         "reduction_merged": float(np.mean([v["reduction"] for v in st])),
                         "cosine_raw": float(np.nanmean([v["raw_cosine"] for v in st])),
                         "cosine_merged": float(np.nanmean([v["cosine"] for v in st]))})
    return rows


def long_video(work: Path, model: str) -> dict:
    from bench.long_video import loop_video, make_segment

    clip = CREMA / "1001_DFA_HAP_XX.flv"
    seg = work / "seg_hap.mp4"
    if not seg.exists():  # one clip re-encoded as H.264 (keyframe every second), then remuxed to 10 minutes
        make_segment(seg, (480, 360), scale=1.0, clips=[clip])
    video, _ = loop_video(seg, work / "hap_10min.mp4", 10)
    path = work / "hap_10min.vxs"
    if not path.exists():
        analyze(video, REPO / "resources" / "models" / model, path, AnalyzeSettings(spray=False))
    out = {"video": f"{clip.name} looped to 10 min ({model}, intrinsic maps)"}
    with Session.open(path) as s:
        for name, w, m in (("raw", 0.0, 0.0), ("weight_1", 1.0, 0.0), ("temporal_only", DEFAULT_TEMPORAL_WEIGHT, 0.0),
                           ("min_0.5", DEFAULT_TEMPORAL_WEIGHT, 0.5),
                           ("defaults", DEFAULT_TEMPORAL_WEIGHT, DEFAULT_MIN_STAGE_S)):
            t0 = time.perf_counter()
            r = spray_stages(s, "intrinsic", w, m)
            r["stages_per_s"] = r["stages"] / r["seconds"]
            r["raw_stages_per_s"] = r["raw_stages"] / r["seconds"]
            r["seconds_to_compute"] = time.perf_counter() - t0
            out[name] = r
    return out


def fmt_rows(rows: list[dict], cols: list[str]) -> str:
    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = [" | ".join(cols)]
    lines += [" | ".join(cell(r[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/vidxai_temporal_quality"))
    ap.add_argument("--models", default="patchsae,protopnet,cnn")
    ap.add_argument("--stage-method", default="gxi", help="map SpRAy clusters for the stage table (default gxi, "
                    "the pipeline's default SpRAy source when gxi is among the methods)")
    ap.add_argument("--long", action="store_true", help="also the 10-minute looped clip (slow: a real analysis)")
    ap.add_argument("--long-work", type=Path, default=None, help="folder of the 10-minute video and session "
                    "(default --work)")
    ap.add_argument("--skip", default="", help="comma-separated tables to skip: stages,ewma,flicker")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "temporal_quality.json")
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    skip = set(args.skip.split(","))
    tables = {"stages", "ewma", "flicker"} - skip
    by_model = {m: sessions_for(args.work, m) for m in models} if tables else {}
    result: dict = {"clips": [p.name for p in by_model.get(models[0], [])], "models": models,
                    "defaults": {"temporal_weight": DEFAULT_TEMPORAL_WEIGHT, "min_stage_s": DEFAULT_MIN_STAGE_S,
                                 "ewma_tau_s": DEFAULT_TAU_S, "map_sigma_s": DEFAULT_MAP_SIGMA_S}}
    if "stages" not in skip:
        result["stages"] = {}
        for m in models:
            rows = stage_table(by_model[m], args.stage_method)
            result["stages"][m] = rows
            print(f"\n## Stages: {m}, {args.stage_method} maps (mean over {len(by_model[m])} clips)")
            print(fmt_rows(rows, ["weight", "min_stage_s", "stages", "reduction", "min_reduction", "cosine"]))
    if "ewma" not in skip:
        result["ewma"] = ewma_table(by_model)
        print(f"\n## EWMA by time constant ({', '.join(models)}; {sum(map(len, by_model.values()))} sessions)")
        print(fmt_rows(result["ewma"], ["tau_s", "alpha_at_29.97", "flips_per_s", "changes", "followed", "delay_s",
                                         "settle_s", "video_accuracy"]))
    if "flicker" not in skip:
        result["flicker"] = flicker_table(by_model)
        cols = ["model", "method", "raw"] + [f"{k}_{s}" for s in SIGMAS for k in ("smoothed", "fidelity", "unaligned", "unaligned_fidelity")]
        print("\n## Map flicker (mean frame-to-frame 1 − cos), σ in s")
        print(fmt_rows(result["flicker"], cols))
        result["summary"] = summary_table(by_model, result["flicker"])
        print("\n## Summary with defaults (model × method)")
        print(fmt_rows(result["summary"], ["model", "method", "flicker_raw", "flicker_smoothed", "reduction_spray",
                                           "cosine_spray", "reduction_raw", "cosine_raw", "reduction_merged",
                                           "cosine_merged"]))
    if args.long:
        result["long"] = long_video(args.long_work or args.work, models[0])
        print("\n## 10-minute video")
        print(json.dumps(result["long"], indent=1, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
