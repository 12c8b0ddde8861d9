"""Prototype-aware LRP for ProtoPNet (PRP-style; docs/EXPLANATIONS.md §3).

After the idea of Gautam et al., "This looks more like that: enhancing self-explaining models by
prototypical relevance propagation" (Pattern Recognition 2023): LRP's default rules do not know the
prototype layer's L2 distance, so the relevance is carried through it by rules of its own, and
through the trunk by the usual LRP rules. Our rules (implemented here, not taken from their code):

1. Last layer (linear, no bias): R_j = W_ĉj · s_j, so Σ_j R_j = logit_ĉ exactly.
2. Max-pool over positions: R_j goes whole to prototype j's best cell (h_j*, w_j*).
3. Log-similarity s = log((d+1)/(d+ε)): passed through unchanged (a monotone per-prototype map).
4. Distance d_j = ‖z − p_j‖² = ‖z‖² − 2 z·p_j + ‖p_j‖²: the match lives in the cross term, so R_j is
   split over the feature channels in proportion to z_c · p_jc (z-rule on z·p_j; z, p ≥ 0 after the
   add-on's sigmoid, so every share is non-negative and the split conserves R_j).
5. Add-on and backbone: Zennit's EpsilonPlusFlat with BatchNorm merged (as ``engine.explain.lrp``),
   the sigmoid and ReLUs passed through.

On a bias-free network the input relevance sums to logit_ĉ (tests/test_evidence.py checks 1e-3).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from zennit.core import Composite

from engine.explain.hooks import eval_mode, model_device
from engine.explain.lrp import canonizers_for, make_composite


class _Features(nn.Module):
    """backbone → add-on as one module, so a composite covers exactly the trunk."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.add_on = model.add_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_on(self.backbone(x))


@torch.no_grad()
def feature_relevance(model, z: torch.Tensor, target: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rules 1–4: relevance N×D×h×w on the add-on features ``z`` for classes ``target``."""
    from engine.models.protopnet import similarity

    d = model.distances(z)                                     # N×K×h×w
    n, k, h, w = d.shape
    sim = similarity(d).flatten(2)                              # N×K×hw
    s, best = sim.max(-1)                                       # N×K
    r = model.last_layer.weight[target] * s                     # N×K (rule 1)
    p = model.prototype_vectors.view(k, -1)                     # K×D
    zf = z.flatten(2)                                           # N×D×hw
    z_best = torch.gather(zf.unsqueeze(1).expand(n, k, zf.shape[1], h * w), 3,
                          best[:, :, None, None].expand(n, k, zf.shape[1], 1))[..., 0]   # N×K×D
    share = z_best * p.unsqueeze(0)                             # z_c · p_jc
    share = share / share.sum(-1, keepdim=True).clamp_min(eps)
    rel_kd = share * r.unsqueeze(-1)                            # N×K×D (rule 4)
    out = torch.zeros_like(zf)                                  # N×D×hw
    out.scatter_add_(2, best.unsqueeze(1).expand(n, zf.shape[1], k), rel_kd.transpose(1, 2))  # rule 2
    return out.view_as(z)


def prp_explain(model, x: torch.Tensor, target=None, composite: str = "epsilon_plus_flat",
                epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(relevance N×S×S summed over channels, logits N×C) for ``target`` (default: the prediction)."""
    x = x.detach().to(model_device(model), dtype=torch.float32).clone()
    feat = _Features(model)
    comp: Composite = make_composite(composite, epsilon=epsilon, canonizers=canonizers_for(feat))
    with eval_mode(model):
        with torch.no_grad():
            logits = model(x)
        t = logits.argmax(1) if target is None else torch.as_tensor(np.asarray(target), dtype=torch.long,
                                                                        device=x.device).view(-1)
        with comp.context(feat) as modified, torch.enable_grad():
            x.requires_grad_(True)
            z = modified(x)
            r_z = feature_relevance(model, z.detach(), t)
            (rel,) = torch.autograd.grad(z, x, grad_outputs=r_z)
    return rel.detach().sum(1).cpu().float().numpy(), logits.cpu().float().numpy()


def prp(model, x: torch.Tensor, target=None) -> np.ndarray:
    """PRP-style relevance maps N×S×S for ``target`` classes (default: the prediction)."""
    return prp_explain(model, x, target)[0]
