"""Action-unit maps and the AU alignment loss (METHODS §7; seed au-guided-interpretable-fer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.explain.au import CODEBOOK, alignment_loss, au_map, cam_cos, canonical_expression


def synthetic_face(scale: float = 100.0, offset: tuple[float, float] = (14.0, 10.0)) -> np.ndarray:
    """A frontal 68-point face in dlib's 0-based order, in a unit square scaled to pixels."""
    pts = np.zeros((68, 2))
    t = np.linspace(0, 1, 17)
    pts[0:17] = np.c_[0.1 + 0.8 * t, 0.3 + 0.65 * (1 - (2 * t - 1) ** 2)]  # jaw, chin at 8
    pts[17:22] = np.c_[np.linspace(0.18, 0.45, 5), [0.26, 0.23, 0.22, 0.23, 0.25]]  # right brow
    pts[22:27] = np.c_[np.linspace(0.55, 0.82, 5), [0.25, 0.23, 0.22, 0.23, 0.26]]  # left brow
    pts[27:31] = np.c_[[0.5] * 4, np.linspace(0.34, 0.55, 4)]
    pts[31:36] = np.c_[np.linspace(0.42, 0.58, 5), [0.6, 0.61, 0.62, 0.61, 0.6]]
    for start, cx in ((36, 0.32), (42, 0.68)):
        ring = [(-0.07, 0), (-0.03, -0.025), (0.03, -0.025), (0.07, 0), (0.03, 0.025), (-0.03, 0.025)]
        pts[start : start + 6] = [(cx + dx, 0.38 + dy) for dx, dy in ring]
    outer = [(0.35, 0.75), (0.40, 0.71), (0.45, 0.70), (0.5, 0.71), (0.55, 0.70), (0.60, 0.71),
             (0.65, 0.75), (0.60, 0.80), (0.55, 0.82), (0.5, 0.83), (0.45, 0.82), (0.40, 0.80)]
    pts[48:60] = outer
    inner = [(0.38, 0.75), (0.44, 0.74), (0.5, 0.74), (0.56, 0.74), (0.62, 0.75), (0.56, 0.77),
             (0.5, 0.78), (0.44, 0.77)]
    pts[60:68] = inner
    return (pts * scale + np.array(offset)).astype(np.float32)


def _value_near(m: np.ndarray, xy: np.ndarray, r: int = 2) -> float:
    x, y = np.round(xy).astype(int)
    return float(m[y - r : y + r + 1, x - r : x + r + 1].max())


def test_happy_map_peaks_at_mouth_corners_not_brows() -> None:
    lm = synthetic_face()
    m = au_map(lm, "happiness", (128, 128))
    assert m.dtype == np.float32 and m.shape == (128, 128)
    assert m.min() == 0.0 and m.max() == pytest.approx(1.0)
    for corner in (48, 54):
        assert _value_near(m, lm[corner]) == pytest.approx(1.0)  # the maximum is reached there
    for brow in (19, 24):
        assert _value_near(m, lm[brow]) == 0.0  # happiness has no brow AU
    assert m[0:5, 0:5].max() == 0.0
    peak = np.unravel_index(np.argmax(m), m.shape)  # the first maximum: on one of the mouth/cheek AUs
    assert peak[0] > lm[36:48, 1].mean()  # below the eyes


def test_sad_and_surprise_light_the_brows() -> None:
    lm = synthetic_face()
    for expr in ("sad", "surprise", "fearful"):
        m = au_map(lm, expr, (128, 128))
        assert _value_near(m, lm[20]) > 0.5


def test_neutral_is_zero_and_aliases() -> None:
    lm = synthetic_face()
    assert not au_map(lm, "neutral", (64, 64)).any()
    assert not au_map(lm, "calm", (64, 64)).any()
    assert canonical_expression("Anger") == "angry" and canonical_expression("sadness") == "sad"
    assert set(CODEBOOK) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    with pytest.raises(KeyError):
        au_map(lm, "positive", (64, 64))


def test_map_scales_with_face() -> None:
    big = au_map(synthetic_face(100.0), "happy", (128, 128))
    small = au_map(synthetic_face(50.0, (7.0, 5.0)), "happy", (64, 64))
    # Same face at half size on a half-size canvas: the maps agree after downsampling.
    other = au_map(synthetic_face(50.0, (7.0, 5.0)), "surprise", (64, 64))
    assert cam_cos(big, small) > 0.85 and cam_cos(big, small) > cam_cos(big, other) + 0.3
    assert np.count_nonzero(big > 0.5) > 3 * np.count_nonzero(small > 0.5)


def test_alignment_loss_properties() -> None:
    lm = synthetic_face()
    a = torch.from_numpy(au_map(lm, "happy", (128, 128)))[None]
    t = torch.rand(1, 16, 16)
    loss = alignment_loss(t, a)
    assert torch.allclose(alignment_loss(t * 37.5, a), loss, atol=1e-6)  # scale invariant
    assert alignment_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < loss.item() <= 8.0
    feats = torch.rand(2, 8, 16, 16, requires_grad=True)
    aa = a.expand(2, -1, -1)
    lo = alignment_loss(feats, aa, lam=4.0)
    lo.backward()  # differentiable, usable as a training term
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert alignment_loss(feats.detach(), aa, lam=2.0).item() == pytest.approx(lo.item() / 2, rel=1e-5)


def test_cam_cos() -> None:
    a = au_map(synthetic_face(), "happy", (128, 128))
    assert cam_cos(a, a) == pytest.approx(1.0)
    other = au_map(synthetic_face(), "surprise", (128, 128))
    # A coarse CAM is upsampled to the AU map; it stays far closer to its own map than to another.
    assert cam_cos(a[::4, ::4], a) > 0.85 and cam_cos(a[::4, ::4], a) > cam_cos(other, a) + 0.2
    assert cam_cos(np.zeros_like(a), a) == 0.0
