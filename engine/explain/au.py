"""Action-unit maps from 68 landmarks and the AU alignment loss (METHODS §7; seed 001).

Each AU of an expression's FACS codebook entry is drawn as one or two filled ellipses centred on
landmark-derived points (dlib 0-based order); the map is the pixel-wise max over AUs, box-blurred
and min-max normalised to 0..1. Radii scale with the face size s = max(box width, box height).

AU → centres (landmark indices; "mean(a,b)" is the midpoint; offsets in units of s):
  AU1  inner brow raiser   mean(19,20,21), mean(22,23,24)
  AU2  outer brow raiser   mean(17,18), mean(25,26)
  AU4  brow lowerer        mean(19,24) (between the brows), wide
  AU5  upper lid raiser    mean(37,38), mean(43,44)
  AU6  cheek raiser        41 and 46, shifted down 0.10
  AU7  lid tightener       mean(40,41), mean(46,47)
  AU9  nose wrinkler       mean(27..30), tall
  AU10 upper lip raiser    mean(50,51,52)
  AU12 lip corner puller   48, 54
  AU15 lip corner depr.    48, 54 shifted down 0.03
  AU16 lower lip depressor 57
  AU17 chin raiser         mean(57,8)
  AU20 lip stretcher       48, 54 shifted outward 0.04, wide
  AU23 lip tightener       51, 57
  AU24 lip pressor         51, 57
  AU25 lips part           51, 57
  AU26 jaw drop            66, mean(57,8)
  AU27 mouth stretch       mean(62,66), tall
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

CODEBOOK: dict[str, tuple[int, ...]] = {
    "angry": (4, 5, 7, 10, 17, 23, 24, 25, 26),
    "disgust": (9, 10, 16, 17, 25, 26),
    "fear": (1, 2, 4, 5, 20, 25, 26, 27),
    "happy": (6, 12, 25),
    "sad": (1, 4, 6, 15, 17),
    "surprise": (1, 2, 5, 26, 27),
    "neutral": (),
}

ALIASES: dict[str, str] = {
    "anger": "angry", "ang": "angry",
    "disgusted": "disgust", "dis": "disgust",
    "fearful": "fear", "fea": "fear", "afraid": "fear",
    "happiness": "happy", "hap": "happy",
    "sadness": "sad",
    "surprised": "surprise", "sur": "surprise",
    "neu": "neutral",
    # RAVDESS "calm" has no FACS entry of its own; like neutral it predicts no active AU.
    "calm": "neutral",
}


@dataclass(frozen=True)
class AUShape:
    centres: tuple[tuple[tuple[int, ...], tuple[float, float]], ...]  # (landmarks averaged, (dx, dy) in s)
    radii: tuple[float, float] = (0.07, 0.05)  # (rx, ry) in units of the face size


def _c(*idx: int, dx: float = 0.0, dy: float = 0.0) -> tuple[tuple[int, ...], tuple[float, float]]:
    return (idx, (dx, dy))


AU_SHAPES: dict[int, AUShape] = {
    1: AUShape((_c(19, 20, 21), _c(22, 23, 24))),
    2: AUShape((_c(17, 18), _c(25, 26))),
    4: AUShape((_c(19, 24),), (0.10, 0.05)),
    5: AUShape((_c(37, 38), _c(43, 44)), (0.06, 0.04)),
    6: AUShape((_c(41, dy=0.10), _c(46, dy=0.10)), (0.08, 0.06)),
    7: AUShape((_c(40, 41), _c(46, 47)), (0.06, 0.04)),
    9: AUShape((_c(27, 28, 29, 30),), (0.06, 0.10)),
    10: AUShape((_c(50, 51, 52),), (0.08, 0.04)),
    12: AUShape((_c(48), _c(54))),
    15: AUShape((_c(48, dy=0.03), _c(54, dy=0.03))),
    16: AUShape((_c(57),)),
    17: AUShape((_c(57, 8),), (0.08, 0.06)),
    20: AUShape((_c(48, dx=-0.04), _c(54, dx=0.04)), (0.09, 0.05)),
    23: AUShape((_c(51), _c(57)), (0.08, 0.04)),
    24: AUShape((_c(51), _c(57)), (0.08, 0.04)),
    25: AUShape((_c(51), _c(57)), (0.07, 0.04)),
    26: AUShape((_c(66), _c(57, 8)), (0.07, 0.05)),
    27: AUShape((_c(62, 66),), (0.07, 0.10)),
}


def canonical_expression(expression: str) -> str:
    key = expression.strip().lower()
    key = ALIASES.get(key, key)
    if key not in CODEBOOK:
        raise KeyError(f"no AU codebook entry for expression {expression!r}; known: {sorted(CODEBOOK)}")
    return key


def au_map(
    landmarks: np.ndarray,
    expression: str,
    shape: tuple[int, int],
    box: np.ndarray | None = None,
    blur: float = 0.05,
) -> np.ndarray:
    """H×W float32 AU map (0..1) of ``expression`` for 68×2 (x, y) landmarks in the map's pixels.

    ``box`` (x0, y0, x1, y1) sets the face size; by default the landmarks' bounding box does.
    ``blur`` is the box-filter side in units of the face size. Neutral gives all zeros.
    """
    return action_unit_map(landmarks, CODEBOOK[canonical_expression(expression)], shape, box, blur)


def action_unit_map(
    landmarks: np.ndarray,
    aus: tuple[int, ...],
    shape: tuple[int, int],
    box: np.ndarray | None = None,
    blur: float = 0.05,
) -> np.ndarray:
    """The map of any set of AUs (``au_map`` draws an expression's codebook entry through this)."""
    h, w = int(shape[0]), int(shape[1])
    out = np.zeros((h, w), dtype=np.float32)
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be 68×2, got {lm.shape}")
    if not aus:
        return out
    if box is not None:
        x0, y0, x1, y1 = np.asarray(box, dtype=np.float64)
    else:
        (x0, y0), (x1, y1) = lm.min(axis=0), lm.max(axis=0)
    size = max(x1 - x0, y1 - y0, 1.0)
    shift = 4  # cv2 fixed-point bits: sub-pixel centres on small (48²) maps
    scale = 1 << shift
    layer = np.zeros((h, w), dtype=np.float32)
    for au in aus:
        spec = AU_SHAPES[au]
        layer[:] = 0.0
        axes = (max(1, round(spec.radii[0] * size * scale)), max(1, round(spec.radii[1] * size * scale)))
        for idx, (dx, dy) in spec.centres:
            cx, cy = lm[list(idx)].mean(axis=0) + np.array([dx, dy]) * size
            cv2.ellipse(layer, (round(cx * scale), round(cy * scale)), axes, 0.0, 0.0, 360.0, 1.0, -1,
                        cv2.LINE_8, shift)
        np.maximum(out, layer, out=out)
    k = max(1, round(blur * size))
    if k > 1:
        out = cv2.blur(out, (k, k), borderType=cv2.BORDER_CONSTANT)
    lo, hi = float(out.min()), float(out.max())
    if hi - lo <= 1e-12:
        return np.zeros((h, w), dtype=np.float32)
    return ((out - lo) / (hi - lo)).astype(np.float32)


def cam_cos(cam: np.ndarray, au: np.ndarray) -> float:
    """Cosine between a heatmap (resized bilinearly to the AU map's size) and the AU map; 0 if either is 0."""
    a = np.asarray(au, dtype=np.float32)
    c = np.asarray(cam, dtype=np.float32)
    if c.shape != a.shape:
        c = cv2.resize(c, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR)
    cf, af = c.ravel().astype(np.float64), a.ravel().astype(np.float64)
    den = np.linalg.norm(cf) * np.linalg.norm(af)
    return float(cf @ af / den) if den > 0 else 0.0


def alignment_loss(t_l: torch.Tensor, a: torch.Tensor, lam: float = 4.0) -> torch.Tensor:
    """λ · mean over the batch of (1 − cos(T_l, A)); the AU term of L = CE + λ(1 − cos).

    ``t_l`` is N×h×w (or N×K×h×w feature maps, reduced by the channel mean per METHODS §7); ``a`` is
    N×H×W AU maps, resized bilinearly to h×w. Scaling T_l by a positive factor leaves the loss as is.
    """
    if t_l.ndim == 4:
        t_l = t_l.mean(dim=1)
    if a.ndim == 2:
        a = a[None]
    a = a.to(t_l)
    if a.shape[-2:] != t_l.shape[-2:]:
        a = F.interpolate(a[:, None], size=t_l.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cos = F.cosine_similarity(t_l.flatten(1), a.flatten(1), dim=1, eps=1e-8)
    return lam * (1.0 - cos).mean()
