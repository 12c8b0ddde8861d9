"""Integrated Gradients over landmark sequences (METHODS §8; seed 003).

Attributions of a landmark model's target logit w.r.t. its input window (P frames × L landmarks × (x, y)),
computed with Captum's IntegratedGradients. The path integral is the Riemann sum at the midpoints
(k − ½)/m of the m steps (Captum's ``riemann_middle``), not METHODS §8's right sum: both converge to the
same integral, the midpoint rule's error falls as 1/m² instead of 1/m (median completeness error on the
CREMA-D demo model 0.04 % vs 0.23 % at m = 50; the worst windows, about one in five above 1 %, are paths
through steep regions that neither rule resolves at m = 50). ``method="riemann_right"`` gives METHODS'
formula exactly.
Baselines: ``"others"`` (the seed's: the typical window of every *other* emotion, stored with the model by
its trainer; attributions are averaged over those baselines), ``"zeros"`` (every point at the eye midpoint)
and ``"mean"`` (the mean training window: the average face doing the average thing).

A clip's landmark relevance is |IG| summed over frames and coordinates; a data set's ranking per emotion
is the mean of that over the emotion's samples (target: the emotion), averaged over baselines first.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from captum.attr import IntegratedGradients

from engine.explain.hooks import eval_mode
from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.models.landmark import LANDMARK_PARTS, LandmarkSequenceModel

log = logging.getLogger(__name__)

BASELINES = ("others", "zeros", "mean")


def baselines_for(model: LandmarkSequenceModel, target: int, kind: str = "others") -> torch.Tensor:
    """B×P×L×2 baseline windows for ``target``: the other classes' typical windows, zeros or the mean."""
    if kind == "others":
        keep = [c for c in range(model.spec.n_classes) if c != target]
        return model.typical[keep].detach().clone()
    if kind == "zeros":
        return torch.zeros_like(model.mean_window)[None]
    if kind == "mean":
        return model.mean_window.detach().clone()[None]
    raise ValueError(f"unknown IG baseline {kind!r}; choose one of {', '.join(BASELINES)}")


def landmark_ig(model: LandmarkSequenceModel, x: torch.Tensor | np.ndarray, target: int | list[int] | np.ndarray,
                baseline: str = "others", steps: int = 50, method: str = "riemann_middle",
                ) -> tuple[np.ndarray, np.ndarray]:
    """IG of each window's target logit: (attributions N×P×L×2, completeness delta N), both averaged over
    the baselines of ``baseline`` (for "others", C−1 of them per sample)."""
    xt = torch.as_tensor(np.asarray(x, np.float32) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
    n = xt.shape[0]
    tg = np.broadcast_to(np.asarray(target, np.int64), (n,))
    attr = np.zeros(tuple(xt.shape), np.float64)
    delta = np.zeros(n, np.float64)
    # cuDNN's LSTM has no backward in eval mode; the plain kernels do (and these models are tiny).
    if steps < 1:
        raise ValueError(f"IG needs at least one step, got {steps}")
    dev = model.mean_window.device
    with torch.backends.cudnn.flags(enabled=False), eval_mode(model):
        ig = IntegratedGradients(model)
        for c in np.unique(tg):
            rows = np.flatnonzero(tg == c)
            xr = xt[rows].detach().to(dev)
            base = baselines_for(model, int(c), baseline)
            for b in base:
                a, d = ig.attribute(xr, baselines=b[None].expand_as(xr).contiguous(), target=int(c), n_steps=steps,
                                    method=method, return_convergence_delta=True)
                attr[rows] += a.detach().cpu().numpy() / len(base)
                delta[rows] += d.detach().cpu().numpy() / len(base)
    return attr.astype(np.float32), delta.astype(np.float32)


def frame_landmark_relevance(attr: np.ndarray) -> np.ndarray:
    """…×P×L×2 → …×P×L: |IG| summed over the two coordinates (one value per frame and landmark)."""
    return np.abs(attr).sum(axis=-1)


def clip_relevance(attr: np.ndarray) -> np.ndarray:
    """…×P×L×2 → …×L: |IG| summed over frames and coordinates (one value per landmark)."""
    return np.abs(attr).sum(axis=(-1, -3))


def part_relevance(relevance: np.ndarray, points: list[int]) -> dict[str, float]:
    """Per-landmark relevance (…×L over ``points``) summed by facial part (brows, eyes, nose, mouth, jaw)."""
    r = np.asarray(relevance)
    return {part: float(r[..., [j for j, p in enumerate(points) if p in idx]].sum())
            for part, idx in LANDMARK_PARTS.items()}


def rank_landmarks(model: LandmarkSequenceModel, x: np.ndarray, labels: np.ndarray, baseline: str = "others",
                   steps: int = 50, per_class: int = 64, seed: int = 0, progress: ProgressFn = no_progress,
                   cancel: CancelToken | None = None) -> dict[str, Any]:
    """Landmark ranking per emotion over a data set (windows ``x`` N×P×L×2 in the model's points).

    Up to ``per_class`` seeded windows of each emotion are explained for that emotion; their clip relevance
    is averaged. Returns {"points", "classes", "relevance": C×L list, "ranking": {class: points, best first},
    "overall": points ranked by the mean over classes, "samples": per class, "baseline", "steps"}.
    """
    rng = np.random.default_rng(seed)
    points = list(model.points)
    classes = list(model.spec.classes)
    rel = np.zeros((len(classes), len(points)), np.float64)
    used: dict[str, int] = {}
    for c, name in enumerate(classes):
        if cancel is not None:
            cancel.raise_if_cancelled()
        idx = np.flatnonzero(np.asarray(labels) == c)
        if len(idx) > per_class:
            idx = np.sort(rng.choice(idx, per_class, replace=False))
        used[name] = len(idx)
        progress(c, len(classes), f"IG ranking: {name} ({len(idx)} windows)")
        if len(idx):
            attr, _ = landmark_ig(model, x[idx], c, baseline, steps)
            rel[c] = clip_relevance(attr).mean(0)
    progress(len(classes), len(classes), "IG ranking")
    have = np.array([used[c] > 0 for c in classes])
    overall = rel[have].mean(0) if have.any() else rel.mean(0)

    def order(r: np.ndarray) -> list[int]:
        return [points[i] for i in np.argsort(-r, kind="stable")]

    return {"points": points, "classes": classes, "relevance": rel.tolist(),
            "ranking": {name: order(rel[c]) for c, name in enumerate(classes) if used[name]},
            "overall": order(overall), "overall_relevance": overall.tolist(), "samples": used,
            "baseline": baseline, "steps": steps}


__all__ = ["BASELINES", "baselines_for", "clip_relevance", "frame_landmark_relevance", "landmark_ig",
           "part_relevance", "rank_landmarks"]
