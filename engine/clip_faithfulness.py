"""Occlusion tests of a clip model on video data (`vidxai evaluate --occlusion`; METHODS §6, seed 004
§3.2–3.4), the clip branch of engine.faithfulness.occlusion_evaluate.

Samples are T-frame windows of each video's sampled face crops (engine.data.clip_windows, one window every
T samples: disjoint windows, so no clip counts twice). Per relevance method (engine.explain.spacetime;
``intrinsic`` is rollout with min head fusion, ``gradcam-tokens`` its Grad-CAM) the clip's maps rank
frames (sum of the frame's map) and patches within each frame; MoRF/LeRF occlude p ∈ {0, 10, …, 50} % of
every frame's patches plus the top (bottom) f ∈ {0..4} frames whole with the normalisation mean (0), and
Δ(p, f) = Acc_LeRF − Acc_MoRF. The seven facial-part conditions hide the part in every frame of the window,
drawn from the cache's landmarks in crop pixels (the same band masks preprocess draws on the frame), one
confusion matrix each. Per-emotion mean heatmaps: the mean over the windows of each true class of the
frame-averaged map, normalised to a maximum of 1 (the seed's Fig. 3 shape), drawn over the mean face.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from engine.data import FaceCache, clip_windows
from engine.explain.occlusion import DEFAULT_FRACTIONS, faithfulness_curves
from engine.explain.occlusion import confusion_matrix as confusion
from engine.explain.spacetime import relevance
from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.models import TimeSformer, to_input
from engine.preprocess import OCCLUSION_CONDITIONS, occlude_frame

if TYPE_CHECKING:
    from engine.analyzer import FrameAnalyzer
    from engine.faithfulness import OcclusionReport

log = logging.getLogger(__name__)

# Method names as `vidxai evaluate --occlusion` lists them (engine.faithfulness.methods_for) → spacetime's.
CLIP_METHODS = {"intrinsic": "rollout", "rollout": "rollout", "rollout-grad": "rollout-grad", "chefer": "chefer",
                "gradcam": "gradcam", "gradcam-tokens": "gradcam"}
TOP_FRAMES = (0, 1, 2, 3, 4)


class ChannelsFirst(nn.Module):
    """A clip model taking engine.explain.occlusion's N×C×T×H×W clips."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.inner(clip.transpose(1, 2))


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch: int) -> np.ndarray:
    return np.concatenate([model(x[s:s + batch]).argmax(1).cpu().numpy() for s in range(0, len(x), batch)])


def clip_faithfulness(model: TimeSformer, x: torch.Tensor, labels: np.ndarray, methods: tuple[str, ...],
                      fractions: tuple[float, ...] = tuple(DEFAULT_FRACTIONS), patch: int = 8,
                      frames: tuple[int, ...] = TOP_FRAMES, batch: int = 16, fusion: str = "min",
                      progress: ProgressFn = no_progress, cancel: CancelToken | None = None
                      ) -> tuple[dict[str, dict[str, list]], dict[str, np.ndarray]]:
    """MoRF/LeRF curves [frames][fraction] of clips ``x`` (N×T×C×S×S, normalised) per method, ranked by
    each method's maps for the predicted class; and those maps (N×T×h×w, token grid)."""
    model = model.eval()
    pred = torch.as_tensor(_predict(model, x, batch))
    frames = tuple(f for f in frames if f <= x.shape[1])
    curves, heat = {}, {}
    for mi, method in enumerate(methods):
        progress(mi, len(methods), f"clip faithfulness: {method}")
        name = CLIP_METHODS[method]
        maps = []
        for s in range(0, len(x), batch):
            if cancel is not None:
                cancel.raise_if_cancelled()
            maps.append(relevance(model, x[s:s + batch], name, target=pred[s:s + batch], fusion=fusion).maps.cpu().numpy())
        heat[method] = np.concatenate(maps).astype(np.float32)
        curves[method] = faithfulness_curves(ChannelsFirst(model), x.transpose(1, 2), labels, heat[method],
                                             fractions, patch, frames=frames, fill=0.0, batch_size=batch,
                                             cancel=cancel)
    return curves, heat


def clip_occlusion_evaluate(analyzer: FrameAnalyzer, cache: FaceCache, split: str, limit: int | None, seed: int,
                            methods: tuple[str, ...], fractions: tuple[float, ...], patch: int,
                            progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
                            parts: bool = True) -> OcclusionReport:
    """The clip branch of occlusion_evaluate (module docstring); ``limit`` counts windows."""
    from engine.faithfulness import OcclusionReport

    model: TimeSformer = analyzer.model
    spec, t = model.spec, model.frames
    video = np.flatnonzero(np.asarray(cache.frame_index) >= 0)
    sub = cache.subset(video) if len(video) < len(cache) else cache
    windows = clip_windows(sub, t, t)
    if limit is not None and limit < len(windows):
        windows = windows[np.sort(np.random.default_rng(seed).choice(len(windows), size=limit, replace=False))]
    labels = np.asarray(sub.labels)[windows[:, 0]]
    images = np.asarray(sub.images)
    x = to_input(images[windows.ravel()], spec).reshape(len(windows), t, spec.in_channels, spec.input_size,
                                                        spec.input_size).to(analyzer.device)
    use = tuple(m for m in methods if m in CLIP_METHODS)
    skipped = [m for m in methods if m not in CLIP_METHODS]
    if skipped:
        log.info("clip occlusion: %s are frame-model methods; measured %s", ", ".join(skipped), ", ".join(use))
    pred = _predict(model, x, 16)
    rep = OcclusionReport(str(analyzer.model_dir), split, list(spec.classes), len(windows),
                          float((pred == labels).mean()) if len(windows) else 0.0, patch, fill=0.0,
                          frames=t, window_stride=t)
    rep.curves, heat = clip_faithfulness(model, x, labels, use, fractions, patch, progress=progress, cancel=cancel)
    for m, h in heat.items():
        per_window = h.mean(1)                                             # N×h×w: the clip's mean map
        rep.mean_maps[m] = {}
        for c, name in enumerate(spec.classes):
            sel = per_window[labels == c]
            if len(sel):
                mean = sel.mean(0)
                rep.mean_maps[m][name] = (mean / mean.max() if mean.max() > 0 else mean).tolist()
    rep.mean_faces = {name: images[windows[labels == c].ravel()].mean(0)[..., 0].tolist()
                              for c, name in enumerate(spec.classes) if (labels == c).any()}
    if parts:
        _part_conditions(rep, analyzer, sub, windows, labels, pred, progress, cancel)
    progress(len(windows), len(windows), "occlusion done")
    return rep


def _part_conditions(rep: OcclusionReport, analyzer: FrameAnalyzer, cache: FaceCache, windows: np.ndarray,
                     labels: np.ndarray, pred: np.ndarray, progress: ProgressFn, cancel: CancelToken | None) -> None:
    """One confusion matrix per facial-part condition, the part hidden in every frame of each window."""
    model, spec = analyzer.model, analyzer.spec
    lm = cache.landmarks
    if lm is None:
        rep.skipped_no_landmarks = len(windows)
        log.warning("the face cache has no landmarks (built by an older VidXAI): rebuild it for part occlusion")
        return
    lm = np.asarray(lm)
    ok = np.isfinite(lm[windows].reshape(len(windows), -1)).all(1)
    rep.skipped_no_landmarks = int((~ok).sum())
    keep = windows[ok]
    y = labels[ok]
    fill = analyzer.preprocess_config.fill
    for ci, (cond, hidden) in enumerate(OCCLUSION_CONDITIONS.items()):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(ci, len(OCCLUSION_CONDITIONS), f"facial-part occlusion: {cond}")
        if not len(keep):
            continue
        crops = np.stack([occlude_frame(np.asarray(cache.images[r]), lm[r], hidden, fill) for r in keep.ravel()])
        x = to_input(crops, spec).reshape(len(keep), keep.shape[1], spec.in_channels, spec.input_size,
                                          spec.input_size).to(analyzer.device)
        cp = _predict(model, x, 16)
        rep.conditions[cond] = {"accuracy": float((cp == y).mean()), "n": len(y),
                                "accuracy_unoccluded_same_samples": float((pred[ok] == y).mean()),
                                "confusion": confusion(y, cp, len(spec.classes)).tolist()}


def plot_delta_table(rep: OcclusionReport, path: Path) -> Path:
    """One Δ(p, f) table per method as an annotated image (rows: top frames f, columns: patches p)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(rep.curves)
    fig, axes = plt.subplots(1, max(1, len(methods)), figsize=(3.2 * max(1, len(methods)), 3.0), dpi=120,
                             squeeze=False)
    for ax, m in zip(axes[0], methods, strict=False):
        c = rep.curves[m]
        d = np.asarray(c["delta"], dtype=float)
        ax.imshow(d, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
        for (i, j), v in np.ndenumerate(d):
            ax.text(j, i, f"{v:+.2f}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(c["fractions"])), [f"{100 * p:.0f}" for p in c["fractions"]], fontsize=7)
        ax.set_yticks(range(len(c["frames"])), [str(f) for f in c["frames"]], fontsize=7)
        ax.set_xlabel("patches occluded (%)", fontsize=7)
        ax.set_ylabel("top frames occluded", fontsize=7)
        ax.set_title(m, fontsize=8)
    fig.suptitle(f"Δ(p, f) = Acc_LeRF − Acc_MoRF, {rep.n} windows of {rep.frames} frames", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_mean_maps(rep: OcclusionReport, path: Path) -> Path:
    """Per method (rows) and emotion (columns): the mean relevance map over the mean face."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faces = rep.mean_faces
    methods = list(rep.mean_maps)
    classes = [c for c in rep.classes if c in faces]
    fig, axes = plt.subplots(len(methods), len(classes), figsize=(1.6 * len(classes), 1.7 * len(methods)),
                             dpi=120, squeeze=False)
    for i, m in enumerate(methods):
        for j, c in enumerate(classes):
            ax = axes[i, j]
            face = np.asarray(faces[c], np.float32)
            ax.imshow(face, cmap="gray")
            if c in rep.mean_maps[m]:
                heat = cv2.resize(np.asarray(rep.mean_maps[m][c], np.float32), face.shape[::-1],
                                  interpolation=cv2.INTER_NEAREST)
                ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(c, fontsize=8)
            if j == 0:
                ax.set_ylabel(m, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["CLIP_METHODS", "TOP_FRAMES", "ChannelsFirst", "clip_faithfulness", "clip_occlusion_evaluate",
           "plot_delta_table", "plot_mean_maps"]
