"""Model-state hygiene shared by the explainers: eval mode, targets, and a hook census.

Every explainer must leave the model exactly as it found it (STYLE §6: hooks left on a model after
an explanation are a known failure in pytorch-grad-cam). These helpers make that checkable.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run in eval mode (BatchNorm uses running statistics) and restore every module's flag after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextmanager
def preserved_grads(model: nn.Module) -> Iterator[None]:
    """Restore parameter ``.grad`` after libraries that call ``backward()`` (pytorch-grad-cam does)."""
    saved = [(p, p.grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, g in saved:
            p.grad = g


def target_indices(target: int | torch.Tensor | list[int], n: int) -> torch.Tensor:
    """One class index per sample as a long tensor of length n."""
    t = torch.as_tensor(target, dtype=torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"target must be one int or one per sample ({n}), got {t.numel()}")
    return t.clone()


def one_hot(target: torch.Tensor, n_classes: int, like: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(target.numel(), n_classes, dtype=like.dtype, device=like.device)
    out[torch.arange(target.numel()), target.to(like.device)] = 1.0
    return out


def hook_count(model: nn.Module) -> int:
    """Number of forward, forward-pre and backward hooks registered on any submodule."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
