"""Grad-CAM through pytorch-grad-cam, hook-clean.

pytorch-grad-cam switches the model to eval mode and calls ``backward()`` (accumulating parameter
gradients); both side effects are undone here, and its hooks are released by its context manager.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from engine.explain.hooks import eval_mode, model_device, preserved_grads, target_indices

log = logging.getLogger(__name__)


def default_target_layer(model: nn.Module) -> nn.Module:
    """The model's declared ``target_layer()`` (engine.models), else its last Conv2d."""
    declared = getattr(model, "target_layer", None)
    if callable(declared):
        return declared()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a convolutional target layer; pass target_layer explicitly")
    return convs[-1]


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: int | torch.Tensor,
    target_layer: nn.Module | None = None,
) -> np.ndarray:
    """Grad-CAM maps N×S×S at input resolution, each min-max normalised to 0..1."""
    if x.ndim != 4:
        raise ValueError(f"Grad-CAM expects N×C×S×S input, got shape {tuple(x.shape)}")
    layer = target_layer if target_layer is not None else default_target_layer(model)
    tgt = target_indices(target, x.shape[0])
    # The input requires grad so the target layer's output carries a graph even when the
    # parameters are frozen (a loaded checkpoint), else the gradient hook never fires.
    inp = x.detach().to(model_device(model), dtype=torch.float32).clone().requires_grad_(True)
    with eval_mode(model), preserved_grads(model), GradCAM(model=model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=inp, targets=[ClassifierOutputTarget(int(c)) for c in tgt])
    return np.asarray(maps, dtype=np.float32)
