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


def hidden_patch_similarities(model, x: torch.Tensor, grid: tuple[int, int], fill: float = 0.0,
                              chunk: int = 2048) -> torch.Tensor:
    """s_j(x with patch p hidden) for every patch p of an h×w grid over the input (patch = S/h pixels,
    the feature grid's cells; hidden = set to ``fill``, the normalisation mean by default): N×P×K."""
    from engine.models.protopnet import similarity

    n, c, hh, ww = x.shape
    gh, gw = grid
    ph, pw = math.ceil(hh / gh), math.ceil(ww / gw)
    masks = torch.zeros(gh * gw, 1, hh, ww, dtype=torch.bool, device=x.device)
    for p in range(gh * gw):
        i, j = divmod(p, gw)
        masks[p, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] = True
    out = []
    per = max(1, chunk // (gh * gw))
    for s in range(0, n, per):
        xb = x[s:s + per]
        xo = xb[:, None].masked_fill(masks[None], fill).reshape(-1, c, hh, ww)
        out.append(similarity(model.forward_train(xo)["min_distances"]).view(xb.shape[0], gh * gw, -1))
    return torch.cat(out)


def proto_occlusion(model, x: torch.Tensor, out: dict[str, torch.Tensor] | None = None, target=None,
                    normalise: bool = False, fill: float = 0.0) -> np.ndarray:
    """proto-occ (docs/EXPLANATIONS.md §1): the class evidence of the prototypes lost when one cell's
    patch is hidden. M(p) = Σ_j max(W_ĉj, 0) · max(s_j(x) − s_j(x with patch p hidden), 0) over the
    h×w grid (N×h×w). With ``normalise`` each prototype's own evidence max(W_ĉj s_j, 0) is shared out
    over the patches in proportion to those drops instead (Σ M = the positive part of logit_ĉ; a
    prototype no single patch affects keeps its evidence at its best cell, as proto-argmax)."""
    x = x.detach().to(model_device(model))
    with eval_mode(model), torch.no_grad():
        if out is None:
            out = model.explain(x)
        t = _targets(out["logits"], target)
        n, _k, h, w = out["sim_maps"].shape
        s = out["similarities"]                                               # N×K
        drop = (s[:, None, :] - hidden_patch_similarities(model, x, (h, w), fill)).clamp_min(0)   # N×P×K
        wt = model.last_layer.weight[t]                                       # N×K
        if not normalise:
            grid = torch.einsum("nk,npk->np", wt.clamp_min(0), drop)
        else:
            ev = (wt * s).clamp_min(0)
            tot = drop.sum(1)                                                 # N×K
            share = torch.where(tot[:, None, :] > 0, drop / tot[:, None, :].clamp_min(1e-12), 0.0)
            grid = torch.einsum("nk,npk->np", ev, share)
            none = (tot <= 0).to(ev.dtype) * ev                               # unaffected prototypes
            best = out["sim_maps"].flatten(2).argmax(-1)
            grid.scatter_add_(1, best, none)
    return grid.view(n, h, w).detach().cpu().float().numpy()
