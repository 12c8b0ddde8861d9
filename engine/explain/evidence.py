"""Evidence maps of the interpretable models and gradient × input (docs/EXPLANATIONS.md §1–§3).

Every function returns N×h×w over the feature grid (intrinsic maps) or N×S×S over the model input
(gradient maps) for target classes ĉ (the prediction unless given). The definitions:

- ``proto_sum``: Σ_j max(W_ĉj, 0) · sim_map_j(h, w) — the whole similarity map of every prototype
  with positive weight (VidXAI ≤ 0.1's intrinsic ProtoPNet map).
- ``proto_argmax``: the logit's own decomposition: s_j = max_hw sim_map_j, so prototype j's whole
  contribution W_ĉj · s_j sits at its best cell (h_j*, w_j*). Map(h, w) = Σ_{j: (h_j*, w_j*) = (h, w)}
  max(W_ĉj · s_j, 0); with ``spread`` > 0 each term is spread as a Gaussian of σ = spread cells around
  its cell (the effective receptive field; the theoretical one covers almost the whole input).
- ``latent_sum``: PatchSAE, Σ_j max(W_ĉj, 0) · f_j(h, w) (its shipped intrinsic map).
- ``latent_signed``: PatchSAE, the logit's exact token decomposition: logit_ĉ − b_ĉ =
  Σ_hw Σ_j W_ĉj f_j(h, w) / (h·w); the map is that per-token sum, negative evidence kept.
- ``gradient_x_input``: x ⊙ ∂logit_ĉ/∂x summed over channels (through the prototype or latent layer).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.explain.hooks import eval_mode, model_device


def _targets(logits: torch.Tensor, target: torch.Tensor | np.ndarray | None) -> torch.Tensor:
    if target is None:
        return logits.argmax(1)
    return torch.as_tensor(np.asarray(target), dtype=torch.long, device=logits.device)


def proto_sum(model, out: dict[str, torch.Tensor], target=None) -> np.ndarray:
    t = _targets(out["logits"], target)
    w = model.last_layer.weight.clamp_min(0)[t]
    return torch.einsum("nk,nkhw->nhw", w, out["sim_maps"]).detach().cpu().float().numpy()


def gaussian_spread(grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """N×h×w grid convolved with a normalised Gaussian of σ cells (zero padding; σ ≤ 0: unchanged)."""
    if sigma <= 0:
        return grid
    r = max(1, math.ceil(3 * sigma))
    ax = torch.arange(-r, r + 1, dtype=grid.dtype, device=grid.device)
    k1 = torch.exp(-0.5 * (ax / sigma) ** 2)
    k1 = k1 / k1.sum()
    g = grid[:, None]
    g = torch.nn.functional.conv2d(g, k1.view(1, 1, 1, -1), padding=(0, r))
    g = torch.nn.functional.conv2d(g, k1.view(1, 1, -1, 1), padding=(r, 0))
    return g[:, 0]


def proto_argmax(model, out: dict[str, torch.Tensor], target=None, spread: float = 0.0,
                 signed: bool = False) -> np.ndarray:
    t = _targets(out["logits"], target)
    sim_maps = out["sim_maps"]
    n, _k, h, w = sim_maps.shape
    contrib = model.last_layer.weight[t] * out["similarities"]            # N×K: W_ĉj · s_j
    if not signed:
        contrib = contrib.clamp_min(0)
    best = sim_maps.flatten(2).argmax(-1)                                  # N×K
    grid = torch.zeros(n, h * w, dtype=contrib.dtype, device=contrib.device)
    grid.scatter_add_(1, best, contrib)
    return gaussian_spread(grid.view(n, h, w), spread).detach().cpu().float().numpy()


def latent_sum(model, out: dict[str, torch.Tensor], target=None) -> np.ndarray:
    t = _targets(out["logits"], target)
    w = model.head.weight.clamp_min(0)[t]
    return torch.einsum("nl,nlhw->nhw", w, out["latent_maps"]).detach().cpu().float().numpy()


def latent_signed(model, out: dict[str, torch.Tensor], target=None) -> np.ndarray:
    t = _targets(out["logits"], target)
    lm = out["latent_maps"]
    w = model.head.weight[t]
    return (torch.einsum("nl,nlhw->nhw", w, lm) / (lm.shape[2] * lm.shape[3])).detach().cpu().float().numpy()


def gradient_x_input(model, x: torch.Tensor, target=None) -> np.ndarray:
    """x ⊙ ∂logit_ĉ/∂x, summed over channels: N×S×S. The model's parameters get no gradient."""
    x = x.detach().to(model_device(model)).clone().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        logits = model(x)
        t = _targets(logits, target)
        sel = logits.gather(1, t[:, None]).sum()
        (g,) = torch.autograd.grad(sel, x)
    return (g * x).sum(1).detach().cpu().float().numpy()
