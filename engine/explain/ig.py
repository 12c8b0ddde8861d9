"""Integrated Gradients with Captum (METHODS §8).

IG_i = (x_i − x′_i) · (1/m) Σ_{k=1..m} ∂F(x′ + (k/m)(x − x′))/∂x_i: the right Riemann sum, which is
Captum's ``riemann_right`` method (its default Gauss-Legendre rule is a different quadrature).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import nn

from engine.explain.hooks import eval_mode, model_device, target_indices

log = logging.getLogger(__name__)


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    baseline: torch.Tensor | None = None,
    steps: int = 50,
    internal_batch_size: int | None = None,
    reduce_channels: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """IG attributions (N×S×S summed over channels, or N×C×S×S) and the per-sample convergence delta.

    The delta is ΣIG − (F(x) − F(x′)) for the target logit; completeness says it tends to 0.
    ``baseline`` defaults to zeros (the dataset mean after normalisation).
    """
    if steps < 1:
        raise ValueError(f"IG needs at least one step, got {steps}")
    x = x.detach().to(model_device(model), dtype=torch.float32)
    base = torch.zeros_like(x) if baseline is None else baseline.to(x).expand_as(x)
    tgt = target_indices(target, x.shape[0]).tolist()
    with eval_mode(model):
        attr, delta = IntegratedGradients(model).attribute(
            x,
            baselines=base,
            target=tgt,
            n_steps=steps,
            method="riemann_right",
            internal_batch_size=internal_batch_size,
            return_convergence_delta=True,
        )
    attr = attr.detach()
    if reduce_channels and attr.ndim == 4:
        attr = attr.sum(dim=1)
    return attr.cpu().numpy(), delta.detach().cpu().numpy()
