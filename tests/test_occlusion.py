"""MoRF/LeRF occlusion faithfulness (METHODS §6; seed 004 §3.2, §3.4) and part-condition helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from torch import nn

from engine.explain.hooks import hook_count
from engine.explain.occlusion import (
    condition_deltas,
    confusion_matrix,
    faithfulness_curves,
    n_occluded,
    occlude_clip,
    occlude_patches,
    patch_order,
)

S, P = 32, 8
ROW, COL = slice(8, 16), slice(16, 24)  # the one patch the model reads: grid (1, 2) → index 6


def one_patch_model() -> nn.Module:
    """Linear readout of the mean of one 8×8 patch, thresholded at 0.5 (class 1 when bright)."""
    mask = torch.zeros(1, S, S)
    mask[:, ROW, COL] = 1.0 / (P * P)
    lin = nn.Linear(S * S, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([-mask.flatten(), mask.flatten()]))
        lin.bias.copy_(torch.tensor([0.5, -0.5]))
    return nn.Sequential(nn.Flatten(), lin)


def one_patch_data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, S, S, generator=g)
    y = torch.arange(n) % 2
    x[:, :, ROW, COL] = y.view(-1, 1, 1, 1).float() * 0.9 + 0.05 * torch.rand(n, 1, P, P, generator=g)
    return x, y


def saliency(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """|∂f_y/∂x|: correct about the important patch regardless of the pixel values."""
    xr = x.clone().requires_grad_(True)
    model(xr).gather(1, y.view(-1, 1)).sum().backward()
    return xr.grad.abs().sum(1).numpy()


def test_morf_falls_to_chance_lerf_stays() -> None:
    model = one_patch_model()
    x, y = one_patch_data()
    heat = saliency(model, x, y)
    assert patch_order(heat[0], P, "morf")[0] == 6
    curves = faithfulness_curves(model, x, y, heat, patch=P)
    assert curves["fractions"] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    assert curves["morf"][0] == 1.0 and curves["lerf"][0] == 1.0
    assert curves["morf"][1] == pytest.approx(0.5)  # chance for two balanced classes
    assert all(a == 1.0 for a in curves["lerf"])
    assert all(a == pytest.approx(0.5) for a in curves["morf"][1:])
    assert curves["delta"][1] == pytest.approx(0.5)
    assert hook_count(model) == 0


def test_random_heatmap_is_less_faithful() -> None:
    model = one_patch_model()
    x, y = one_patch_data()
    rng = np.random.default_rng(0)
    good = faithfulness_curves(model, x, y, saliency(model, x, y), patch=P)
    bad = faithfulness_curves(model, x, y, rng.random((40, S, S)), patch=P)
    assert sum(good["delta"]) > sum(bad["delta"])


def test_occlude_patches_counts_and_resizes() -> None:
    x = torch.ones(2, 3, S, S)
    heat = np.random.default_rng(1).random((2, 4, 4))  # patch-level map, resized to 32×32
    out = occlude_patches(x, heat, 0.25, P, "morf", fill=-1.0)
    assert n_occluded(0.25, 16) == 4 and n_occluded(0.01, 16) == 1 and n_occluded(0.0, 16) == 0
    for i in range(2):
        filled = (out[i, 0] == -1.0).float()
        assert filled.sum().item() == 4 * P * P
        assert torch.equal(out[i, 0] == -1.0, out[i, 2] == -1.0)  # all channels alike
        top = np.argsort(-heat[i].ravel(), kind="stable")[:4]
        for idx in top:
            r, c = divmod(int(idx), 4)
            assert (out[i, :, r * P : (r + 1) * P, c * P : (c + 1) * P] == -1.0).all()
    assert torch.equal(x, torch.ones(2, 3, S, S))  # input untouched
    # Distinct random scores: LeRF is exactly MoRF reversed.
    assert np.array_equal(patch_order(heat[0], 1, "lerf"), patch_order(heat[0], 1, "morf")[::-1])


class OneFramePatchModel(nn.Module):
    """Clip model N×C×T×H×W that reads the one patch in frame 2 only."""

    def __init__(self) -> None:
        super().__init__()
        self.frame_model = one_patch_model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_model(x[:, :, 2])


def test_clip_frames_morf_lerf() -> None:
    model = OneFramePatchModel()
    x2d, y = one_patch_data(20)
    t = 4
    clip = x2d[:, :, None].repeat(1, 1, t, 1, 1)
    heat = np.zeros((20, t, S, S))
    heat[:, 2] = saliency(model.frame_model, x2d, y)
    curves = faithfulness_curves(model, clip, y, heat, fractions=(0.0, 0.1), patch=P, frames=(0, 1, 2))
    assert curves["frames"] == [0, 1, 2]
    assert curves["morf"][0] == [1.0, pytest.approx(0.5)]
    assert curves["morf"][1] == [pytest.approx(0.5), pytest.approx(0.5)]  # frame 2 occluded whole
    assert curves["lerf"] == [[1.0, 1.0]] * 3
    occ = occlude_clip(clip, heat, 0.0, 1, P, "lerf", fill=7.0)
    assert (occ[:, :, 0] == 7.0).all() and not (occ[:, :, 2] == 7.0).any()


def test_confusion_matrix_matches_sklearn() -> None:
    rng = np.random.default_rng(2)
    yt, yp = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    assert np.array_equal(confusion_matrix(yt, yp, 4), sk_confusion(yt, yp, labels=range(4)))
    yp[:10] = -1  # no face: left out
    assert confusion_matrix(yt, yp, 4).sum() == 190


def test_condition_deltas() -> None:
    base = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    eyes = np.array([[0.4, 0.4, 0.2], [0.1, 0.7, 0.2]])
    d = condition_deltas(base, {"eyes": eyes})
    assert np.allclose(d["eyes"], [-0.3, 0.1])
    assert np.allclose(condition_deltas(base, eyes, target=np.array([1, 2])), [0.2, -0.1])
    with pytest.raises(ValueError):
        condition_deltas(base, eyes[:1])
