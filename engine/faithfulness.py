"""Occlusion tests of a model on labelled data (`vidxai evaluate --occlusion`).

Two questions, as seed "TimeSformer explainability" §3.2 and §3.4 ask them:
- Is an explanation faithful? Occlude the most (MoRF) or least (LeRF) relevant patches of each input,
  0–50 %, and watch accuracy: a faithful map makes MoRF fall fast and LeRF hold, so
  Δ = Acc_LeRF − Acc_MoRF is large. Frame models see one frame, so the seed's "top frames" axis is 0.
- Which facial parts does the model rely on? Score every sample with the eyes, nose, mouth and their
  combinations hidden (METHODS §6, from landmarks, applied to the frame before cropping), one
  confusion matrix per condition.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.analyzer import FrameAnalyzer
from engine.data import DataConfig, PreparedData, prepare
from engine.evaluate import split_cache
from engine.explain.occlusion import DEFAULT_FRACTIONS, faithfulness_curves
from engine.explain.occlusion import confusion_matrix as confusion
from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.model_card import FAITHFULNESS_KEY, PREFERRED_RECORD, most_faithful, recorded_deltas  # noqa: F401 (re-exported)
from engine.preprocess import OCCLUSION_CONDITIONS

log = logging.getLogger(__name__)


@dataclass
class OcclusionReport:
    model_dir: str
    split: str
    classes: list[str]
    n: int
    accuracy: float                                   # unoccluded
    patch: int
    fill: float | str = "mean"
    curves: dict[str, dict[str, list]] = field(default_factory=dict)      # method → fractions/morf/lerf/delta
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)   # condition → accuracy, confusion
    skipped_no_landmarks: int = 0
    # Clip models on video data: windows of `frames` face crops every `window_stride`; curves are then
    # indexed [top frames occluded][fraction]; per method and true class the mean map over its windows.
    frames: int = 0
    window_stride: int = 0
    mean_maps: dict[str, dict[str, list]] = field(default_factory=dict)
    mean_faces: dict[str, list] = field(default_factory=dict)               # true class → mean crop

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        unit = f"{self.frames}-frame windows" if self.frames else "samples"
        lines = [f"occlusion on {self.n} {unit} of {self.split}: unoccluded accuracy {self.accuracy:.1%}"]
        for m, c in self.curves.items():
            if "frames" in c:
                lines.append(f"  {m:<12} Δ(p, f) = Acc_LeRF − Acc_MoRF, mean Δ {mean_delta(c):+.3f}")
                lines.append("    f \\ p   " + " ".join(f"{100 * p:>6.0f}%" for p in c["fractions"]))
                lines += [f"    {f:<8} " + " ".join(f"{d:+7.2f}" for d in row) for f, row in zip(c["frames"], c["delta"], strict=True)]
                continue
            lines.append(f"  {m:<10} MoRF {' '.join(f'{a:.2f}' for a in c['morf'])}  "
                         f"LeRF {' '.join(f'{a:.2f}' for a in c['lerf'])}  mean Δ {mean_delta(c):+.3f}")
        for cond, d in self.conditions.items():
            lines.append(f"  hide {cond:<16} accuracy {d['accuracy']:.1%} ({d['accuracy'] - self.accuracy:+.1%})")
        return "\n".join(lines)


def mean_delta(curve: dict[str, list]) -> float:
    """The mean faithfulness Δ of one method's curves: over the fractions > 0 (a frame model's), or over
    every (p, f) but (0 %, 0 frames) (a clip model's Δ(p, f) table)."""
    d = np.asarray(curve["delta"], dtype=np.float64)
    if d.ndim == 2:
        return float(d.ravel()[1:].mean()) if d.size > 1 else 0.0
    return float(d[1:].mean()) if d.size > 1 else 0.0


def _source_frame(src: dict[str, Any]) -> np.ndarray:
    """The full picture a sample was cropped from (an image, or frame k of a video)."""
    if int(src.get("frame", -1)) >= 0:
        from engine.video import open_video

        with open_video(src["path"]) as r:
            return r.frame(int(src["frame"]))
    from PIL import Image

    with Image.open(src["path"]) as im:
        return np.asarray(im.convert("RGB"))


def _face_of(picture: np.ndarray, is_frame: bool):
    from engine.faces import detect_single, face_from_crop_image

    return detect_single(picture) if is_frame else face_from_crop_image(picture)


# Explanation methods per architecture (docs/EXPLANATIONS.md): "intrinsic" is what the analysis stores
# as the model's own map (engine.analyzer.condense); the others are the candidates it was chosen from.
INTRINSIC_VARIANTS = {
    "protopnet": ("proto-sum", "proto-argmax", "proto-argmax-g1", "proto-occ"),
    "patchsae": ("latent-sum", "latent-signed"),
    "cnn": (),
    "timesformer": ("rollout-grad", "chefer", "gradcam-tokens"),   # engine.explain.spacetime; intrinsic: rollout
}


def methods_for(arch: str) -> tuple[str, ...]:
    """Every explanation method `vidxai evaluate --occlusion` measures for a model of this architecture."""
    post = ("gxi", "prp", "lrp", "gradcam", "ig") if arch == "protopnet" else ("gxi", "lrp", "gradcam", "ig")
    if arch == "timesformer":   # Zennit's rules and pytorch-grad-cam's conv layers do not apply to it
        post = ("gxi", "ig")
    return ("intrinsic", *INTRINSIC_VARIANTS.get(arch, ()), *post)


def method_maps(analyzer: FrameAnalyzer, method: str, images: np.ndarray, target: np.ndarray) -> np.ndarray:
    """One explanation method's maps for a batch of model-input images, for classes ``target``:
    N×h×w (feature grid) or N×S×S (input pixels)."""
    import torch

    from engine.explain import evidence
    from engine.pipeline import _post_hoc

    if method == "intrinsic":
        return analyzer.run(images)[2]["maps"]
    arch = analyzer.spec.arch
    if arch == "timesformer" and method in INTRINSIC_VARIANTS["timesformer"]:
        from engine.explain.spacetime import relevance

        name = "gradcam" if method == "gradcam-tokens" else method
        x = analyzer.tensor(images)
        return relevance(analyzer.model, x, name, target=torch.as_tensor(target)).maps[:, 0].cpu().numpy()
    if method in INTRINSIC_VARIANTS.get(arch, ()):
        fn = {"proto-sum": evidence.proto_sum, "latent-sum": evidence.latent_sum,
              "latent-signed": evidence.latent_signed, "proto-argmax": evidence.proto_argmax}
        with torch.no_grad():
            x = analyzer.tensor(images)
            out = analyzer.model.explain(x)
            if method == "proto-occ":
                return evidence.proto_occlusion(analyzer.model, x, out, target)
            if method == "proto-argmax-g1":
                return evidence.proto_argmax(analyzer.model, out, target, spread=1.0)
            return fn[method](analyzer.model, out, target)
    return _post_hoc(method, analyzer, images, target, 16)


def occlusion_evaluate(model_dir: str | Path, data: PreparedData | DataConfig | str | Path, split: str = "test",
                       limit: int | None = 700, seed: int = 0,
                       methods: tuple[str, ...] = ("intrinsic", "lrp", "gradcam"),
                       fractions: tuple[float, ...] = tuple(DEFAULT_FRACTIONS), patch: int = 8,
                       device: str = "cpu", progress: ProgressFn = no_progress,
                       cancel: CancelToken | None = None, fill: float | str = "mean",
                       parts: bool = True, labels: str | None = None) -> OcclusionReport:
    """``labels``: the data's label setting (default: found from its layout); its classes may be a subset of
    the model's (engine.evaluate.in_model_classes)."""
    from engine.evaluate import in_model_classes

    analyzer = FrameAnalyzer(model_dir, device=device)
    prepared = data if isinstance(data, PreparedData) else prepare(
        data if isinstance(data, DataConfig) else DataConfig(path=str(data), label_setting=labels),
        analyzer.spec.preprocess)
    cache = in_model_classes(split_cache(prepared, split, limit, seed, progress, cancel), analyzer.classes, model_dir)
    if analyzer.spec.is_clip and (np.asarray(cache.frame_index) >= 0).any():
        from engine.clip_faithfulness import clip_occlusion_evaluate

        return clip_occlusion_evaluate(analyzer, cache, split, limit, seed, methods, fractions, patch, progress,
                                       cancel, parts)
    idx = np.arange(len(cache))
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=limit, replace=False))
    images = np.asarray(cache.images[idx])
    labels = np.asarray(cache.labels[idx])
    bs = 64
    x = analyzer.tensor(images)
    probs = np.concatenate([analyzer.probs(images[s:s + bs]) for s in range(0, len(images), bs)])
    pred = probs.argmax(1)
    rep = OcclusionReport(str(model_dir), split, analyzer.classes, len(idx), float((pred == labels).mean()), patch)

    for mi, method in enumerate(methods):
        progress(mi, len(methods), f"faithfulness: {method}")
        maps = []
        for s in range(0, len(images), bs):
            if cancel is not None:
                cancel.raise_if_cancelled()
            maps.append(method_maps(analyzer, method, images[s:s + bs], pred[s:s + bs]))
        heat = np.concatenate(maps).astype(np.float32)
        rep.curves[method] = faithfulness_curves(analyzer.model, x, labels, heat, fractions, patch, fill=fill,
                                                 cancel=cancel)
    rep.fill = fill
    if not parts:
        progress(len(idx), len(idx), "occlusion done")
        return rep

    # Facial parts need each sample's landmarks, found again on the picture it was cropped from.
    per_cond = {c: analyzer.config(occlude=parts) for c, parts in OCCLUSION_CONDITIONS.items()}
    cond_images: dict[str, list[np.ndarray]] = {c: [] for c in per_cond}
    keep = []
    for j, i in enumerate(idx):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if j % 50 == 0:
            progress(j, len(idx), "facial-part occlusion")
        src = cache.source(int(i))
        picture = _source_frame(src)
        face = _face_of(picture, int(src.get("frame", -1)) >= 0)
        outs = {c: analyzer.prepare(picture, face, cfg) for c, cfg in per_cond.items()}
        if face is None or not face.found or any(o is None for o in outs.values()):
            rep.skipped_no_landmarks += 1
            continue
        keep.append(j)
        for c, o in outs.items():
            cond_images[c].append(o.image)
    keep_a = np.asarray(keep, dtype=np.int64)
    for c, imgs in cond_images.items():
        if not imgs:
            continue
        arr = np.stack(imgs)
        cp = np.concatenate([analyzer.probs(arr[s:s + bs]) for s in range(0, len(arr), bs)]).argmax(1)
        y = labels[keep_a]
        rep.conditions[c] = {"accuracy": float((cp == y).mean()), "n": len(y),
                             "accuracy_unoccluded_same_samples": float((pred[keep_a] == y).mean()),
                             "confusion": confusion(y, cp, len(analyzer.classes)).tolist()}
    progress(len(idx), len(idx), "occlusion done")
    return rep




def record_faithfulness(model_dir: str | Path, name: str, rep: OcclusionReport, command: str = "",
                        merge: bool = False) -> Path:
    """Store every method's curves and mean Δ under metadata.faithfulness[name] in model.json. With
    ``merge`` the record's other methods stay (same n, split, fill and accuracy required): for a method
    whose definition changed while the model did not."""
    from engine.checkpoint import read_checkpoint_json, record_in_model_json

    methods = {m: {"mean_delta": mean_delta(c), **c} for m, c in rep.curves.items()}
    if merge:
        old = ((read_checkpoint_json(model_dir).get("metadata") or {}).get(FAITHFULNESS_KEY) or {}).get(name)
        if old is not None:
            same = (old["n"], old["split"], old["fill"], old["patch"]) == (rep.n, rep.split, rep.fill, rep.patch)
            if not same or abs(float(old["accuracy"]) - rep.accuracy) > 1e-9:
                raise ValueError(f"cannot merge into faithfulness[{name!r}]: it was measured on other samples "
                                 "or with another model; record every method instead")
            methods = {**old["methods"], **methods}
            command = "; ".join(c for c in (old.get("command", ""), command) if c)
    value = {"n": rep.n, "split": rep.split, "accuracy": rep.accuracy, "patch": rep.patch, "fill": rep.fill,
             "methods": methods, "command": command}
    return record_in_model_json(model_dir, FAITHFULNESS_KEY, name, value)


def write_occlusion_report(rep: OcclusionReport, out_dir: str | Path) -> dict[str, Path]:
    """occlusion.json, faithfulness.png (MoRF/LeRF per method) and one confusion PNG per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.evaluate import _plot_confusion

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "occlusion.json"}
    paths["json"].write_text(json.dumps(rep.to_json(), indent=2))
    if rep.frames:
        from engine.clip_faithfulness import plot_delta_table, plot_mean_maps

        paths["faithfulness"] = plot_delta_table(rep, out / "faithfulness.png")
        if rep.mean_maps:
            paths["mean_heatmaps"] = plot_mean_maps(rep, out / "mean_heatmaps.png")
    elif rep.curves:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
        for m, c in rep.curves.items():
            fr = [100 * f for f in c["fractions"]]
            line, = ax.plot(fr, c["morf"], "-o", label=f"{m} MoRF")
            ax.plot(fr, c["lerf"], "--s", color=line.get_color(), label=f"{m} LeRF")
        ax.set_xlabel("patches occluded (%)")
        ax.set_ylabel("accuracy")
        ax.set_title("Occlusion faithfulness (higher LeRF − MoRF is better)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths["faithfulness"] = out / "faithfulness.png"
        fig.savefig(paths["faithfulness"])
        plt.close(fig)
    for cond, d in rep.conditions.items():
        p = out / f"confusion_hide_{cond.replace('+', '_')}.png"
        _plot_confusion(np.asarray(d["confusion"]), rep.classes, f"{cond} hidden: accuracy {d['accuracy']:.1%}", p)
        paths[f"confusion_{cond}"] = p
    return paths
