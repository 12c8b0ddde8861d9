"""Occlusion faithfulness tests (METHODS §6; seed 004 §3.2/§3.4) and facial-part scoring helpers.

Patch importance is the heatmap summed over the patch and frame importance the heatmap summed over
the frame. MoRF occludes the most important patches first, LeRF the least important; faithfulness
Δ(p, f) = Acc_LeRF − Acc_MoRF, higher is better. Ranking is per frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.explain.hooks import eval_mode, model_device
from engine.jobs import CancelToken, ProgressFn, no_progress

log = logging.getLogger(__name__)

MODES = ("morf", "lerf")
DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"occlusion mode must be one of {MODES}, got {mode!r}")


def patch_scores(heatmap: np.ndarray, patch: int) -> np.ndarray:
    """Heatmap summed over each patch×patch cell (edge cells are partial): a grid gh×gw."""
    h = np.asarray(heatmap, dtype=np.float64)
    gh, gw = math.ceil(h.shape[0] / patch), math.ceil(h.shape[1] / patch)
    padded = np.pad(h, ((0, gh * patch - h.shape[0]), (0, gw * patch - h.shape[1])))
    return padded.reshape(gh, patch, gw, patch).sum(axis=(1, 3))


def patch_order(heatmap: np.ndarray, patch: int, mode: str = "morf") -> np.ndarray:
    """Flat patch indices (row-major over the grid), most important first for MoRF, least for LeRF."""
    _check_mode(mode)
    scores = patch_scores(heatmap, patch).ravel()
    # Stable sort so ties (common for zero relevance) resolve in a fixed, reproducible order.
    return np.argsort(-scores if mode == "morf" else scores, kind="stable")


def n_occluded(fraction: float, n_patches: int) -> int:
    """Patches to occlude for a fraction: rounded, but at least one whenever the fraction is > 0."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"occlusion fraction must be in [0, 1], got {fraction}")
    n = round(fraction * n_patches)
    return max(n, 1) if fraction > 0 else 0


def _resize_to(heat: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if heat.shape == hw:
        return heat
    # Nearest keeps a patch-level map (e.g. 14×14 attention over 224²) exact per patch; bilinear
    # would leak importance into neighbouring patches and change their ranking.
    t = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    return F.interpolate(t, size=hw, mode="nearest-exact")[0, 0].numpy()


def _patch_mask(heat: np.ndarray, hw: tuple[int, int], fraction: float, patch: int, mode: str) -> np.ndarray:
    """H×W bool mask of the patches to occlude in one frame."""
    heat = _resize_to(np.asarray(heat), hw)
    gh, gw = math.ceil(hw[0] / patch), math.ceil(hw[1] / patch)
    chosen = patch_order(heat, patch, mode)[: n_occluded(fraction, gh * gw)]
    grid = np.zeros(gh * gw, dtype=bool)
    grid[chosen] = True
    full = np.kron(grid.reshape(gh, gw), np.ones((patch, patch), dtype=bool)).astype(bool)
    return full[: hw[0], : hw[1]]


FILLS = ("mean", "blur", "noise")


def fill_values(x: torch.Tensor, fill: str | float, seed: int = 0) -> torch.Tensor | float:
    """What occluded pixels become (docs/EXPLANATIONS.md §6): ``"mean"`` (0: the normalisation mean),
    ``"blur"`` (the input box-blurred with a kernel of a third of its side, twice: local brightness
    without features) or ``"noise"`` (N(0, 1) in normalised units, seeded); a number is used as is."""
    if not isinstance(fill, str):
        return float(fill)
    if fill == "mean":
        return 0.0
    if fill == "blur":
        k = max(3, (x.shape[-1] // 3) | 1)
        b = x.reshape(-1, *x.shape[-3:])
        for _ in range(2):
            b = F.avg_pool2d(b, k, stride=1, padding=k // 2, count_include_pad=False)
        return b.reshape(x.shape)
    if fill == "noise":
        g = torch.Generator().manual_seed(seed)
        return torch.randn(x.shape, generator=g).to(x.device, x.dtype)
    raise ValueError(f"occlusion fill must be a number or one of {FILLS}, got {fill!r}")


def occlude_patches(
    x: torch.Tensor,
    heatmap: np.ndarray,
    fraction: float,
    patch: int,
    mode: str = "morf",
    fill: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """Copy of N×C×H×W ``x`` with ``fraction`` of each sample's patches set to ``fill`` (a number, or a
    tensor of x's shape whose pixels replace the occluded ones, see :func:`fill_values`).

    ``heatmap`` is N×h×w; a map at another resolution is resized (nearest) to H×W first.
    """
    _check_mode(mode)
    hw = (x.shape[-2], x.shape[-1])
    heat = np.asarray(heatmap)
    if heat.shape[0] != x.shape[0]:
        raise ValueError(f"need one heatmap per sample: {heat.shape[0]} maps for {x.shape[0]} inputs")
    masks = np.stack([_patch_mask(h, hw, fraction, patch, mode) for h in heat])
    mask = torch.as_tensor(masks, device=x.device)[:, None]
    return torch.where(mask, torch.as_tensor(fill, dtype=x.dtype, device=x.device), x)


def occlude_clip(
    clip: torch.Tensor,
    heatmaps: np.ndarray,
    fraction: float,
    n_frames: int,
    patch: int,
    mode: str = "morf",
    fill: float = 0.0,
) -> torch.Tensor:
    """Occlude one N×C×T×H×W clip batch: the top (or bottom) ``n_frames`` frames whole, then
    ``fraction`` of the patches in every frame, each ranked by the N×T×h×w heatmaps."""
    _check_mode(mode)
    n, _, t, h, w = clip.shape
    heat = np.asarray(heatmaps, dtype=np.float64)
    out = clip.clone()
    fill_t = torch.as_tensor(fill, dtype=clip.dtype, device=clip.device)
    for i in range(n):
        frame_scores = heat[i].reshape(t, -1).sum(axis=1)
        order = np.argsort(-frame_scores if mode == "morf" else frame_scores, kind="stable")
        for ti in order[:n_frames]:
            out[i, :, ti] = fill_t
        if fraction > 0:
            masks = np.stack([_patch_mask(heat[i, ti], (h, w), fraction, patch, mode) for ti in range(t)])
            out[i] = torch.where(torch.as_tensor(masks, device=clip.device)[None], fill_t, out[i])
    return out


def random_patch_occlusion(x: torch.Tensor, max_fraction: float, patch: int = 8,
                           generator: torch.Generator | None = None, fill: float = 0.0) -> torch.Tensor:
    """Training augmentation matching the faithfulness test (docs/EXPLANATIONS.md §6): each sample of
    N×C×H×W ``x`` gets a uniform random fraction in [0, ``max_fraction``] of its patch×patch cells, at
    random positions, set to ``fill`` (0: the normalisation mean, the test's fill). A copy."""
    if max_fraction <= 0:
        return x
    n, _, h, w = x.shape
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    cells = gh * gw
    k = (torch.rand(n, generator=generator) * max_fraction * cells).round().long()
    rank = torch.rand(n, cells, generator=generator).argsort(1).argsort(1)   # a random rank per cell
    grid = (rank < k[:, None]).view(n, 1, gh, 1, gw, 1).expand(n, 1, gh, patch, gw, patch)
    mask = grid.reshape(n, 1, gh * patch, gw * patch)[..., :h, :w].to(x.device)
    return x.masked_fill(mask, fill)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    correct = 0
    for s in range(0, x.shape[0], batch_size):
        pred = model(x[s : s + batch_size]).argmax(dim=1)
        correct += int((pred.cpu() == y[s : s + batch_size].cpu()).sum())
    return correct / max(1, x.shape[0])


def faithfulness_curves(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | np.ndarray | Sequence[int],
    heatmaps: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    patch: int = 8,
    frames: Sequence[int] | None = None,
    fill: float | str = 0.0,
    batch_size: int = 64,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> dict[str, list]:
    """Accuracy under MoRF and LeRF occlusion and their difference.

    Images: ``x`` N×C×H×W with heatmaps N×h×w; lists are indexed by fraction. Clips: ``x``
    N×C×T×H×W with heatmaps N×T×h×w and ``frames`` (e.g. 0..4 frames occluded whole); lists are
    indexed [frames][fraction]. ``fill``: a number or one of :data:`FILLS` (images only).
    """
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    x = x.to(model_device(model))
    if isinstance(fill, str) and x.ndim == 5:
        raise ValueError("blur and noise fills apply to images (N×C×H×W), not clips")
    fill = fill_values(x, fill)
    clip = x.ndim == 5
    if clip and frames is None:
        frames = (0,)
    if not clip and frames is not None:
        raise ValueError("frames applies to clips (N×C×T×H×W input) only")
    frame_counts = list(frames) if frames is not None else [0]
    curves: dict[str, list] = {"fractions": list(fractions), "morf": [], "lerf": [], "delta": []}
    if clip:
        curves["frames"] = frame_counts
    total, done = len(frame_counts) * len(fractions) * 2, 0
    with eval_mode(model):
        for nf in frame_counts:
            row: dict[str, list[float]] = {"morf": [], "lerf": []}
            for frac in fractions:
                for mode in MODES:
                    if cancel is not None:
                        cancel.raise_if_cancelled()
                    if clip:
                        xo = occlude_clip(x, heatmaps, frac, nf, patch, mode, fill)
                    else:
                        xo = occlude_patches(x, heatmaps, frac, patch, mode, fill)
                    row[mode].append(_accuracy(model, xo, yt, batch_size))
                    done += 1
                    progress(done, total, f"occlusion {mode} {frac:.0%} frames {nf}")
            delta = [le - mo for le, mo in zip(row["lerf"], row["morf"], strict=True)]
            if clip:
                curves["morf"].append(row["morf"])
                curves["lerf"].append(row["lerf"])
                curves["delta"].append(delta)
            else:
                curves["morf"], curves["lerf"], curves["delta"] = row["morf"], row["lerf"], delta
    return curves


def condition_deltas(
    base_probs: np.ndarray,
    cond_probs: Mapping[str, np.ndarray] | np.ndarray,
    target: np.ndarray | None = None,
) -> dict[str, np.ndarray] | np.ndarray:
    """Per-sample change of the reference class probability under each occlusion condition.

    The reference class is ``target`` when given (e.g. the true label), else the unoccluded
    prediction. Negative values mean the occluded part carried evidence for that class.
    """
    base = np.asarray(base_probs, dtype=np.float64)
    ref = np.argmax(base, axis=1) if target is None else np.asarray(target, dtype=np.int64)
    rows = np.arange(base.shape[0])

    def one(cond: np.ndarray) -> np.ndarray:
        c = np.asarray(cond, dtype=np.float64)
        if c.shape != base.shape:
            raise ValueError(f"condition scores {c.shape} do not match base scores {base.shape}")
        return c[rows, ref] - base[rows, ref]

    if isinstance(cond_probs, Mapping):
        return {name: one(c) for name, c in cond_probs.items()}
    return one(cond_probs)


def confusion_matrix(y_true: np.ndarray | Sequence[int], y_pred: np.ndarray | Sequence[int], n_classes: int) -> np.ndarray:
    """C×C counts, rows true and columns predicted; pairs with a negative label (no face) are left out."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    keep = (t >= 0) & (p >= 0)
    if ((t >= n_classes) | (p >= n_classes)).any():
        raise ValueError(f"labels must be below n_classes={n_classes}")
    return np.bincount(t[keep] * n_classes + p[keep], minlength=n_classes * n_classes).reshape(n_classes, n_classes)
