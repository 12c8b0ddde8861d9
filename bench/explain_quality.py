"""How far each explanation can be trusted: one row per model × explanation method.

Columns (docs/EXPLANATIONS.md defines every map and every measure):
- FER2013 700-subset (test split, seed 0): unoccluded accuracy, occlusion faithfulness Δ = Acc_LeRF − Acc_MoRF
  at 10/30/50 % of the 8×8 patches and its mean over 10–50 % (fill: the normalisation mean);
- the shared CREMA-D clips (frames with a face, labelled with the clip's intended emotion): accuracy, mean Δ,
  CAM-COS (cosine with the predicted class's action-unit map, METHODS §7), flicker (mean frame-to-frame
  1 − cosine of the maps), ms per frame for the map;
- per ProtoPNet, the fraction of prototypes whose source patch lies on the face (landmark-hull test,
  engine/explain/onface.py) and the flat-input check (top class probability; top prototype similarity vs
  the median top similarity on the 700 test faces).

    .venv/bin/python bench/explain_quality.py [--before REV] [--limit 700] [--out bench/results/explain_quality]

``--before REV`` adds the shipped ProtoPNet of git revision REV as ``protopnet@REV`` (the before/after rows).
``--from-record`` takes the FER2013 curves of every method from each model's model.json faithfulness
record (written by ``vidxai evaluate --occlusion --record`` / ``bench/record_methods.py`` on the same
subset) instead of measuring them again; the clips, the baseline and the ProtoPNet checks are measured.
Every model also gets a **centre-prior** row: one Gaussian (σ = 1.5 cells) at the input's centre, the same
map for every face — a content-free baseline that a map must beat to say more than "the centre matters".

``--table-from A.json B.json …`` measures nothing: it prints (and writes to OUT) one table of the rows of
earlier runs' JSON files, in that order, naming each run's command and time — for models measured in
separate runs.

``--temporal-only`` measures only the temporal columns (issue 14) with bench/temporal_quality.py's functions,
on sessions of the same clips (made in --work unless there; the --temporal-methods): flicker of the
stored maps raw and smoothed in face-aligned coordinates (σ default), SpRAy stage reduction 1 − stages/frames
raw (temporal term on, what the session keeps) and merged (minimum stage duration, what the strip shows), each
with the mean frame-to-stage cosine; written to OUT_temporal.json. ``--table-from`` takes such a file among
its JSON files and adds its columns to the rows of the same model × method (a model's "intrinsic" session
map is also its INTRINSIC_MAP variant's row; "–" where not measured).

Writes OUT.md (the table) and OUT.json. About 10 minutes per model on 2 idle CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.analyzer import FrameAnalyzer
from engine.explain.occlusion import faithfulness_curves
from engine.faithfulness import method_maps, methods_for, occlusion_evaluate

DATA = ROOT.parent / "shared" / "data"
CREMA = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def export_model(rev: str, name: str, dest: Path) -> Path:
    """resources/models/<name> as it was at git revision ``rev`` (git archive, no checkout)."""
    out = dest / f"{name}@{rev}"
    out.mkdir(parents=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", rev, f"resources/models/{name}"],
                         check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out), "--strip-components=3"], input=tar, check=True)
    return out


def clip_frames(analyzer: FrameAnalyzer) -> list[dict]:
    """Per shared CREMA-D clip: the model inputs of its frames with a face, their faces, and the label."""
    from engine.faces import FaceTracker
    from engine.video import open_video

    clips = []
    for path in sorted((DATA / "videos" / "crema-d").glob("*.flv")):
        label = CREMA[path.stem.split("_")[2]]
        tracker = FaceTracker(detect_every=5)
        items = []
        with open_video(path) as reader:
            for k, frame in enumerate(reader):
                face = tracker.process(frame)
                if not face.found:
                    continue
                pre = analyzer.prepare(frame, face)
                if pre is not None:
                    items.append((frame, k, face, pre))
        clips.append({"name": path.stem, "label": analyzer.classes.index(label), "items": items})
    return clips


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(1) / np.maximum(den, 1e-12), np.nan)


def flat_input_check(analyzer: FrameAnalyzer, test_images: np.ndarray) -> dict:
    s = analyzer.spec.input_size
    c = 1 if analyzer.spec.preprocess.get("grayscale") else 3
    with torch.no_grad():
        flat = analyzer.model.explain(torch.zeros(1, c, s, s))
        real = [analyzer.model.explain(analyzer.tensor(test_images[i:i + 128]))["similarities"].max(1).values
                for i in range(0, len(test_images), 128)]
    probs = torch.softmax(flat["logits"], 1)[0].numpy()
    return {"flat_top_class": analyzer.classes[int(probs.argmax())], "flat_top_p": float(probs.max()),
            "flat_top_similarity": float(flat["similarities"].max()),
            "median_top_similarity_real": float(torch.cat(real).median())}


def on_face_fraction(analyzer: FrameAnalyzer) -> dict:
    from engine.data.provenance import source_path
    from engine.explain.onface import face_cells, input_landmarks

    prov = analyzer.meta.get("prototypes") or []
    rf = analyzer.model.receptive_field
    grid = analyzer.spec.input_size // int(rf.jump)
    on, known = 0, 0
    for p in prov:
        src = dict(p.get("source") or {})
        path = source_path(src, DATA / "images")
        if path is None:
            continue
        src["path"] = str(path)
        from PIL import Image

        with Image.open(path) as im:
            pic = np.asarray(im.convert("RGB"))
        from engine.faces import face_from_crop_image

        pre = analyzer.prepare(pic, face_from_crop_image(pic))
        lm = input_landmarks(src, pre.image, analyzer.spec.preprocess)
        ph, pw = p["position"]
        known += 1
        on += bool(face_cells(lm, rf, grid, grid)[ph, pw])
    return {"prototypes": len(prov), "checked": known, "on_face": on,
            "on_face_fraction": on / known if known else None}


def centre_prior(n: int, size: int, patch: int = 8, sigma_cells: float = 1.5) -> np.ndarray:
    """N×g×g content-free map: a Gaussian of ``sigma_cells`` patches at the centre of a g×g patch grid."""
    g = size // patch
    yy, xx = np.mgrid[0:g, 0:g]
    c = (g - 1) / 2
    m = np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * sigma_cells ** 2)).astype(np.float32)
    return np.repeat(m[None], n, 0)


class _Rec:
    """The parts of an OcclusionReport the table needs, read back from a model.json record."""

    def __init__(self, mdir: Path) -> None:
        from engine.checkpoint import read_checkpoint_json
        from engine.faithfulness import FAITHFULNESS_KEY, PREFERRED_RECORD

        rec = read_checkpoint_json(mdir)["metadata"][FAITHFULNESS_KEY][PREFERRED_RECORD]
        self.n, self.accuracy = rec["n"], rec["accuracy"]
        self.curves = {m: {k: v[k] for k in ("fractions", "morf", "lerf", "delta")} for m, v in rec["methods"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="protopnet,patchsae,cnn", help="shipped model names")
    ap.add_argument("--before", default=None, help="git revision whose shipped ProtoPNet is added as a 'before' row")
    ap.add_argument("--limit", type=int, default=700)
    ap.add_argument("--no-ig", action="store_true", help="skip Integrated Gradients (the slowest method)")
    ap.add_argument("--from-record", action="store_true",
                    help="FER2013 curves from each model's model.json faithfulness record (see the docstring)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "explain_quality"))
    ap.add_argument("--table-from", nargs="+", metavar="JSON", default=None,
                    help="measure nothing: one table from the rows of these earlier runs' JSON files")
    ap.add_argument("--temporal-only", action="store_true",
                    help="measure only the temporal columns (flicker smoothed, stage reduction) into OUT_temporal.json")
    ap.add_argument("--temporal-methods", default="intrinsic,gxi,prp,lrp,gradcam",
                    help="methods measured by --temporal-only (default skips ig: slow); the sessions always have intrinsic")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vidxai_explain_temporal",
                    help="--temporal-only: folder of the clip sessions (kept, reused)")
    args = ap.parse_args()
    if args.temporal_only:
        temporal_run(args)
        return
    if args.table_from:
        write_table(combine_runs([Path(f) for f in args.table_from]), Path(args.out))
        return
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="vidxai-explain-quality-"))
    models = [(n, ROOT / "resources" / "models" / n) for n in args.models.split(",") if n]
    if args.before:
        models.insert(1, (f"protopnet@{args.before}", export_model(args.before, "protopnet", tmp)))
    fer = DATA / "images" / "fer2013"
    rows, extras = [], {}
    for name, mdir in models:
        analyzer = FrameAnalyzer(mdir)
        methods = [m for m in methods_for(analyzer.spec.arch) if not (args.no_ig and m == "ig")]
        t0 = time.perf_counter()
        if args.from_record:
            rep = _Rec(mdir)
            if rep.n != args.limit or not set(methods) <= set(rep.curves):
                raise SystemExit(f"{name}: the record has n={rep.n} and {sorted(rep.curves)}; need n={args.limit} "
                                 f"and {methods}: record them first")
        else:
            rep = occlusion_evaluate(mdir, fer, limit=args.limit, seed=0, methods=tuple(methods), parts=False)
        from engine.data import DataConfig, prepare
        from engine.evaluate import split_cache

        cache = split_cache(prepare(DataConfig(path=str(fer)), analyzer.spec.preprocess), "test", args.limit, 0)
        fer_x = analyzer.tensor(np.asarray(cache.images[:]))
        fer_y = np.asarray(cache.labels[:])
        rep.curves["centre-prior"] = faithfulness_curves(analyzer.model, fer_x, fer_y,
                                                         centre_prior(len(fer_y), analyzer.spec.input_size),
                                                         FRACTIONS, 8)
        methods = [*methods, "centre-prior"]
        print(f"{name}: FER2013 {rep.n} images, {time.perf_counter() - t0:.0f} s", flush=True)
        clips = clip_frames(analyzer)
        ex = {}
        if analyzer.spec.arch == "protopnet":
            from engine.data import DataConfig, prepare
            from engine.evaluate import split_cache

            prepared = prepare(DataConfig(path=str(fer)), analyzer.spec.preprocess)
            cache = split_cache(prepared, "test", args.limit, 0)
            idx = np.sort(np.random.default_rng(0).choice(len(cache), size=min(args.limit, len(cache)), replace=False))
            ex.update(flat_input_check(analyzer, np.asarray(cache.images[idx])))
            ex.update(on_face_fraction(analyzer))
        extras[name] = ex
        from engine.pipeline import _au_cosines

        for method in methods:
            c = rep.curves[method]
            d = dict(zip(c["fractions"], c["delta"], strict=True))
            row = {"model": name, "method": method, "fer_accuracy": rep.accuracy,
                   "delta10": d[0.1], "delta30": d[0.3], "delta50": d[0.5],
                   "mean_delta": float(np.mean(c["delta"][1:])), "morf": c["morf"], "lerf": c["lerf"]}
            # The clips: frames with a face.
            maps_all, imgs_all, labels_all, flick, cos, t_map, n_frames, correct = [], [], [], [], [], 0.0, 0, 0
            for clip in clips:
                if not clip["items"]:
                    continue
                imgs = np.stack([it[3].image for it in clip["items"]])
                pred = np.concatenate([analyzer.probs(imgs[s:s + 64]).argmax(1) for s in range(0, len(imgs), 64)])
                t1 = time.perf_counter()
                if method == "centre-prior":
                    maps = centre_prior(len(imgs), analyzer.spec.input_size)
                else:
                    maps = np.concatenate([method_maps(analyzer, method, imgs[s:s + 32], pred[s:s + 32])
                                           for s in range(0, len(imgs), 32)]).astype(np.float32)
                t_map += time.perf_counter() - t1
                n_frames += len(imgs)
                correct += int((pred == clip["label"]).sum())
                if len(maps) > 1:
                    flick.append(1 - cosine_rows(maps[1:], maps[:-1]))
                cos.append(_au_cosines(maps, clip["items"], pred, analyzer.classes))
                maps_all.append(maps)
                imgs_all.append(imgs)
                labels_all.append(np.full(len(imgs), clip["label"]))
            x = analyzer.tensor(np.concatenate(imgs_all))
            cc = faithfulness_curves(analyzer.model, x, np.concatenate(labels_all), np.concatenate(maps_all),
                                     FRACTIONS, 8)
            fl = np.concatenate(flick) if flick else np.array([np.nan])
            co = np.concatenate(cos)
            row.update(clip_frames=n_frames, clip_accuracy=correct / max(n_frames, 1),
                       clip_mean_delta=float(np.mean(cc["delta"][1:])),
                       cam_cos=float(np.nanmean(co)) if np.isfinite(co).any() else None,
                       flicker=float(np.nanmean(fl)), ms_per_frame=1000 * t_map / max(n_frames, 1))
            rows.append(row)
            print(f"  {method:16} Δ {row['mean_delta']:+.3f}  clips Δ {row['clip_mean_delta']:+.3f}  "
                  f"CAM-COS {row['cam_cos'] if row['cam_cos'] is None else round(row['cam_cos'], 3)}  "
                  f"flicker {row['flicker']:.3f}  {row['ms_per_frame']:.1f} ms/frame", flush=True)
    total = time.perf_counter() - t_start
    doc = {"command": shlex.join(["bench/explain_quality.py", *sys.argv[1:]]), "seconds": total,
           "limit": args.limit, "fill": "mean", "patch": 8, "rows": rows, "models": extras}
    write_table(doc, Path(args.out))


def temporal_run(args: argparse.Namespace) -> None:
    """--temporal-only: the temporal columns per model × method on sessions of the shared clips."""
    from bench.temporal_quality import flicker_table, sessions_for, summary_table
    from engine.analyzer import INTRINSIC_MAP
    from engine.temporal import DEFAULT_MAP_SIGMA_S, DEFAULT_MIN_STAGE_S, DEFAULT_TEMPORAL_WEIGHT

    torch.set_num_threads(2)
    t_start = time.perf_counter()
    rows, measured = [], {}
    for name in [n for n in args.models.split(",") if n]:
        mdir = ROOT / "resources" / "models" / name
        arch = FrameAnalyzer(mdir).spec.arch
        methods = tuple(m for m in args.temporal_methods.split(",") if m in methods_for(arch))
        sessions = {name: sessions_for(args.work, name, tuple(m for m in methods if m != "intrinsic"))}
        summary = summary_table(sessions, flicker_table(sessions, methods, (DEFAULT_MAP_SIGMA_S,)), methods)
        for r in summary:
            rows.append(r)
            if r["method"] == "intrinsic" and arch in INTRINSIC_MAP:  # the same map under its variant's name
                rows.append({**r, "method": INTRINSIC_MAP[arch], "same_as": "intrinsic"})
        measured[name] = [r["method"] for r in rows if r["model"] == name]
        print(f"{name}: {', '.join(measured[name])} ({time.perf_counter() - t_start:.0f} s)", flush=True)
    doc = {"command": shlex.join(["bench/explain_quality.py", *sys.argv[1:]]), "seconds": time.perf_counter() - t_start,
           "temporal": {"temporal_weight": DEFAULT_TEMPORAL_WEIGHT, "min_stage_s": DEFAULT_MIN_STAGE_S,
                        "map_sigma_s": DEFAULT_MAP_SIGMA_S, "clips": _shown(DATA / "videos" / "crema-d")},
           "measured": measured, "rows": rows}
    out = Path(args.out + "_temporal.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"written {out}")


TEMPORAL_KEYS = ("flicker_raw", "flicker_smoothed", "reduction_raw", "cosine_raw", "reduction_merged", "cosine_merged")


def merge_temporal(rows: list[dict], temporal: list[dict]) -> list[dict]:
    """``rows`` with the TEMPORAL_KEYS of the ``temporal`` row of the same model and method added under
    ``t_<key>`` (None where that model × method was not measured); a model × method measured twice is an error."""
    by_key: dict[tuple[str, str], dict] = {}
    for t in temporal:
        key = (t["model"], t["method"])
        if key in by_key:
            raise SystemExit(f"temporal columns of {key[0]} × {key[1]} measured twice")
        by_key[key] = t
    out = []
    for r in rows:
        t = by_key.get((r["model"], r["method"]), {})
        out.append({**r, **{f"t_{k}": (None if t.get(k) is None else float(t[k])) for k in TEMPORAL_KEYS}})
    return out


def combine_runs(files: list[Path]) -> dict:
    """The rows and ProtoPNet checks of several runs' JSON files, in order, with each run's command and time;
    the temporal columns of --temporal-only files added to the rows they measure."""
    docs = [json.loads(f.read_text()) for f in files]
    temporal = [(f, d) for f, d in zip(files, docs, strict=True) if "temporal" in d]
    files = [f for f, d in zip(files, docs, strict=True) if "temporal" not in d]
    docs = [d for d in docs if "temporal" not in d]
    if not docs:
        raise SystemExit("--table-from needs at least one full run's JSON besides --temporal-only files")
    for f, d in zip(files, docs, strict=True):
        if (d["limit"], d["fill"], d["patch"]) != (docs[0]["limit"], docs[0]["fill"], docs[0]["patch"]):
            raise SystemExit(f"{f}: measured on another subset, fill or patch size than {files[0]}")
    runs = [{"file": _shown(f), "command": d["command"], "seconds": d["seconds"],
             "models": sorted({r["model"] for r in d["rows"]})} for f, d in zip(files, docs, strict=True)]
    rows = [r for d in docs for r in d["rows"]]
    if temporal:
        rows = merge_temporal(rows, [r for _, d in temporal for r in d["rows"]])
    return {"command": shlex.join(["bench/explain_quality.py", *sys.argv[1:]]), "runs": runs,
            "temporal_runs": [{"file": _shown(f), "command": d["command"], "seconds": d["seconds"], **d["temporal"]}
                              for f, d in temporal],
            "seconds": sum(d["seconds"] for d in docs), "limit": docs[0]["limit"], "fill": docs[0]["fill"],
            "patch": docs[0]["patch"], "rows": rows,
            "models": {k: v for d in docs for k, v in d["models"].items()}}


def _shown(path: Path) -> str:
    """A path as the repository names it (relative to its root, or to the shared folder beside it)."""
    path = path.resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if path.is_relative_to(base):
            return prefix + str(path.relative_to(base))
    return str(path)


def _temporal_cells(r: dict) -> list[str]:
    """The four temporal cells of a row ("–" where not measured)."""
    def num(k: str) -> str:
        return "–" if r.get(k) is None else f"{r[k]:.3f}"

    def stage(k: str) -> str:
        red, cos = r.get(f"t_reduction_{k}"), r.get(f"t_cosine_{k}")
        return "–" if red is None else f"{red:.1%} ({cos:.2f})"

    return [num("t_flicker_raw"), num("t_flicker_smoothed"), stage("raw"), stage("merged")]


def _temporal_note(temporal: list[dict], rows: list[dict]) -> str:
    """Where the temporal columns come from, and which rows they leave blank."""
    models = {r["model"] for r in rows if r.get("t_flicker_raw") is not None}
    blank = sorted({r["method"] for r in rows if r["model"] in models and r.get("t_flicker_raw") is None})
    t = temporal[0]
    return ("Temporal columns (issue 14) from " + "; ".join(f"`{x['command']}` ({x['seconds'] / 60:.1f} min, {x['file']})"
                                                           for x in temporal) +
            f": on sessions of the same clips ({t['clips']}) analysed with the app's default settings, stored maps' positive part; flicker = mean "
            f"frame-to-frame 1 − cos over frames with a face, smoothed in face-aligned coordinates with σ = "
            f"{t['map_sigma_s']} s; stage reduction = 1 − stages/frames of SpRAy with temporal weight "
            f"{t['temporal_weight']} (raw) and merged to ≥ {t['min_stage_s']} s (merged), in brackets the mean "
            f"frame-to-stage cosine; mean over clips. A model's intrinsic map is also its variant's row "
            "(proto-occ, latent-sum). Not measured (–): " +
            "; ".join(f"{m} ({_NOT_MEASURED.get(m, 'not a session map')})" for m in blank) + "." +
            "".join(f" {m}: not measured." for m in dict.fromkeys(r["model"] for r in rows) if m not in models))


_NOT_MEASURED = {"ig": "not in these runs, see --temporal-methods",
                 "centre-prior": "content-free: the same map on every frame"}


def write_table(doc: dict, out: Path) -> None:
    """OUT.json (``doc``) and OUT.md (the table, also printed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    rows, extras = doc["rows"], doc["models"]
    temporal = doc.get("temporal_runs")
    head = "| model | method | FER acc | Δ10 | Δ30 | Δ50 | mean Δ | clips acc | clips mean Δ | CAM-COS | flicker | ms/frame |"
    if temporal:
        head += " flicker session raw | flicker smoothed | stages raw: reduction (cos) | stages merged: reduction (cos) |"
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for r in rows:
        flag = " ⚠" if r["mean_delta"] <= 0 else ""
        cam = "–" if r["cam_cos"] is None else f"{r['cam_cos']:.3f}"
        line = (f"| {r['model']} | {r['method']} | {r['fer_accuracy']:.1%} | {r['delta10']:+.2f} | "
                f"{r['delta30']:+.2f} | {r['delta50']:+.2f} | **{r['mean_delta']:+.3f}**{flag} | "
                f"{r['clip_accuracy']:.1%} | {r['clip_mean_delta']:+.3f} | {cam} | {r['flicker']:.3f} | "
                f"{r['ms_per_frame']:.1f} |")
        if temporal:
            line += " " + " | ".join(_temporal_cells(r)) + " |"
        lines.append(line)
    lines.append("")
    if temporal:
        lines.append(_temporal_note(temporal, rows))
        lines.append("")
    lines.append("| ProtoPNet | prototypes on the face (hull test) | flat input: top class, p | flat input top "
                 "similarity | median top similarity, real test faces |")
    lines.append("|---|---|---|---|---|")
    for name, ex in extras.items():
        if ex:
            frac = "–" if ex.get("on_face_fraction") is None else f"{ex['on_face']}/{ex['checked']} ({ex['on_face_fraction']:.0%})"
            lines.append(f"| {name} | {frac} | {ex['flat_top_class']}, {ex['flat_top_p']:.2f} | "
                         f"{ex['flat_top_similarity']:.2f} | {ex['median_top_similarity_real']:.2f} |")
    lines.append("")
    runs = doc.get("runs")
    when = (f"Run time {doc['seconds'] / 60:.1f} min." if not runs else
            "Rows from " + "; ".join(f"`{r['command']}` ({', '.join(r['models'])}, {r['seconds'] / 60:.1f} min, "
                                     f"{r['file']})" for r in runs) + ".")
    lines.append(f"FER2013: {doc['limit']}-image test subset, seed 0; clips: {_shown(DATA / 'videos' / 'crema-d')} "
                 f"(frames with a face). Fill: normalisation mean; 8×8 patches; ⚠: Δ ≤ 0. {when}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
