"""Space–time relevance for the divided-attention clip model (METHODS.md §5), implemented here: no
maintained library propagates relevance through divided space–time attention.

Token space: the clip's T·L tokens, L = 1 + HW per frame (each frame's CLS first; see
engine.models.timesformer for why every frame keeps its own CLS). Every block contributes two attention
operators on that space, applied in the order the forward pass runs them — temporal (block-diagonal:
position l of frame t mixes with position l of the other frames) then spatial (frame t's tokens mix
among themselves) — so a product over "layers" is a product over 2·depth structured operators. They
are never materialised as (T·L)² matrices: ``_apply`` multiplies them into the relevance matrix R (the
tested definition), ``cls_relevance`` multiplies only the CLS row vector through them (what analysis runs).

- ``rollout``: fuse heads (mean/max/min, min by default as seed 004), Â = (A + I) row-normalised,
  R = Â_K ⋯ Â_1.
- ``rollout-grad``: as rollout with A replaced by mean_h(A ⊙ ∂y_c/∂A)⁺.
- ``chefer`` (Chefer et al. 2021): R = I; per operator Ā = mean_h((∇A ⊙ A)⁺), R ← R + Ā R.
- ``gradcam``: on the last block's (input) patch tokens, channel weights = mean gradient over all space–time
  positions, map = ReLU(Σ_d w_d · token_d).

The clip's logits read the mean of the T CLS tokens, so a map is the mean over t of R's CLS_t rows,
restricted to patch columns: N×T×H×W. The temporal relevance of frame t is its map's share of the whole
clip's (METHODS §6: frame importance = sum over the frame); all zeros when the map is all zero.
Everything leaves the model's mode, hooks and parameter gradients as it found them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.explain.hooks import eval_mode, model_device, preserved_grads, target_indices
from engine.models.timesformer import TimeSformer

METHODS = ("rollout", "rollout-grad", "chefer", "gradcam")
FUSIONS = ("mean", "max", "min")


@dataclass
class Recorded:
    """One forward (and backward) pass of a clip batch: what every method needs."""

    logits: torch.Tensor                 # N×C
    attentions: list[torch.Tensor]       # per operator, in forward order: temporal N×L×H×T×T, spatial N×T×H×L×L
    kinds: list[str]                     # "t" | "s" per operator
    grads: list[torch.Tensor] | None     # ∂y_c/∂A, same shapes (None without a target)
    tokens: torch.Tensor                 # the last block's input patch tokens N×T×HW×D
    token_grads: torch.Tensor | None
    grid: int


def record(model: TimeSformer, x: torch.Tensor, target: int | torch.Tensor | None = None,
           gradients: bool | None = None) -> Recorded:
    """Run ``model`` on clips ``x`` keeping every attention map and, with ``gradients`` (default: when a
    ``target`` is given), their gradients of y_target (class per clip or one for all; None: the
    predicted class of this same forward pass)."""
    x = TimeSformer.as_clips(x).detach().to(model_device(model), torch.float32)
    n, t = x.shape[:2]
    raw: list[torch.Tensor] = []
    want = target is not None if gradients is None else gradients
    grad = torch.enable_grad() if want else torch.no_grad()
    with eval_mode(model), preserved_grads(model), grad:
        frame_logits, z = model.run(x.requires_grad_(want), raw)
        logits = frame_logits.mean(1)
        grads = token_grads = None
        if want:
            z.retain_grad()
            tgt = target_indices(logits.argmax(1) if target is None else target, n).to(logits.device)
            logits.gather(1, tgt[:, None]).sum().backward()
            grads = [a.grad if a.grad is not None else torch.zeros_like(a) for a in raw]
            token_grads = z.grad[:, :, 1:].detach()
    L = 1 + model.grid ** 2
    kinds = ["t", "s"] * model.cfg.depth
    att, grd = [], []
    for i, a in enumerate(raw):
        # raw temporal: (N·L)×H×T×T → N×L×H×T×T; raw spatial: (N·T)×H×L×L → N×T×H×L×L
        shape = (n, L, *a.shape[1:]) if kinds[i] == "t" else (n, t, *a.shape[1:])
        att.append(a.detach().reshape(shape))
        if grads is not None:
            grd.append(grads[i].detach().reshape(shape))
    return Recorded(logits.detach(), att, kinds, grd if grads is not None else None, z[:, :, 1:].detach(),
                    token_grads, model.grid)


def _apply(op: torch.Tensor, kind: str, r: torch.Tensor) -> torch.Tensor:
    """op · R for one structured operator (heads already fused). R: N×T×L×M (rows = tokens (t, l)).
    Temporal op N×L×T×T: out[t, l] = Σ_t' op[l, t, t'] R[t', l]. Spatial op N×T×L×L: out[t, i] = Σ_j op[t, i, j] R[t, j]."""
    if kind == "t":
        return torch.einsum("nlab,nblm->nalm", op, r)
    return torch.einsum("ntij,ntjm->ntim", op, r)


def _identity(n: int, t: int, L: int, device: torch.device) -> torch.Tensor:
    return torch.eye(t * L, device=device).expand(n, -1, -1).reshape(n, t, L, t * L).clone()


def _fuse(a: torch.Tensor, fusion: str) -> torch.Tensor:
    if fusion == "mean":
        return a.mean(2)
    if fusion == "max":
        return a.amax(2)
    if fusion == "min":
        return a.amin(2)
    raise ValueError(f"head fusion must be one of {FUSIONS}, not {fusion!r}")


def _rows_sum(op: torch.Tensor, kind: str) -> torch.Tensor:
    """Row sums of a structured operator, shaped N×T×L×1 to divide R's rows."""
    s = op.sum(-1)                                      # t: N×L×T ; s: N×T×L
    return (s.transpose(1, 2) if kind == "t" else s)[..., None]


def rollout_matrix(rec: Recorded, fusion: str = "min", grad: bool = False) -> torch.Tensor:
    """R = Â_K ⋯ Â_1 over the clip's token space, N×T×L×(T·L) (row (t, l), column t'·L + l')."""
    a0 = rec.attentions[0]
    n, L, t = a0.shape[0], a0.shape[1], a0.shape[-1]
    r = _identity(n, t, L, a0.device)
    for i, (a, kind) in enumerate(zip(rec.attentions, rec.kinds)):
        if grad:
            if rec.grads is None:
                raise ValueError("rollout-grad needs gradients: record with a target")
            op = (a * rec.grads[i]).mean(2).clamp_min(0)
        else:
            op = _fuse(a, fusion)
        r = (_apply(op, kind, r) + r) / (_rows_sum(op, kind) + 1.0)
    return r


def chefer_matrix(rec: Recorded) -> torch.Tensor:
    """Chefer's R: R = I; R ← R + mean_h((∇A ⊙ A)⁺) R per operator."""
    if rec.grads is None:
        raise ValueError("Chefer relevance needs gradients: record with a target")
    a0 = rec.attentions[0]
    n, L, t = a0.shape[0], a0.shape[1], a0.shape[-1]
    r = _identity(n, t, L, a0.device)
    for a, g, kind in zip(rec.attentions, rec.grads, rec.kinds):
        r = r + _apply((g * a).clamp_min(0).mean(2), kind, r)
    return r


def _apply_left(v: torch.Tensor, op: torch.Tensor, kind: str) -> torch.Tensor:
    """v · op for row vectors v N×T×L (one entry per token) and one structured operator."""
    if kind == "t":
        return torch.einsum("nal,nlab->nbl", v, op)
    return torch.einsum("nti,ntij->ntj", v, op)


def cls_relevance(rec: Recorded, method: str, fusion: str = "min") -> torch.Tensor:
    """The maps of :func:`cls_maps` without building R: the mean CLS row vector v times the operators,
    last first (v·Â_K⋯Â_1), N×T×H×W. ~T·L times less work than the full matrix; equal to it (tested)."""
    a0 = rec.attentions[0]
    n, L, t = a0.shape[0], a0.shape[1], a0.shape[-1]
    v = torch.zeros(n, t, L, device=a0.device)
    v[:, :, 0] = 1.0 / t
    grads = rec.grads
    if method != "rollout" and grads is None:
        raise ValueError(f"{method} needs gradients: record with a target")
    for i in reversed(range(len(rec.attentions))):
        a, kind = rec.attentions[i], rec.kinds[i]
        if method == "chefer":
            v = v + _apply_left(v, (grads[i] * a).clamp_min(0).mean(2), kind)
            continue
        op = (a * grads[i]).mean(2).clamp_min(0) if method == "rollout-grad" else _fuse(a, fusion)
        rows = _rows_sum(op, kind)[..., 0] + 1.0          # N×T×L: Â's row normaliser per token
        w = v / rows
        v = _apply_left(w, op, kind) + w
    return v[:, :, 1:].reshape(n, t, rec.grid, rec.grid)


def cls_maps(r: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean over frames of the CLS_t rows, patch columns only: N×T×H×W."""
    n, t, L, _ = r.shape
    row = r[:, :, 0].mean(1).view(n, t, L)              # N×(T·L) → N×T×L
    return row[:, :, 1:].reshape(n, t, grid, grid)


def gradcam_maps(rec: Recorded) -> torch.Tensor:
    if rec.token_grads is None:
        raise ValueError("Grad-CAM needs gradients: record with a target")
    w = rec.token_grads.mean((1, 2))                    # N×D
    cam = torch.einsum("nd,ntpd->ntp", w, rec.tokens).clamp_min(0)
    n, t = cam.shape[:2]
    return cam.view(n, t, rec.grid, rec.grid)


def temporal_relevance(maps: torch.Tensor) -> torch.Tensor:
    """Each frame's share of the clip's relevance, N×T (rows sum to 1, or all zero for a zero map)."""
    per = maps.clamp_min(0).flatten(2).sum(-1)
    total = per.sum(1, keepdim=True)
    return torch.where(total > 0, per / total.clamp_min(1e-30), torch.zeros_like(per))


@dataclass
class ClipRelevance:
    maps: torch.Tensor        # N×T×H×W over the token grid (non-negative)
    temporal: torch.Tensor    # N×T
    logits: torch.Tensor      # N×C
    target: torch.Tensor      # N


def relevance(model: TimeSformer, x: torch.Tensor, method: str = "rollout",
              target: int | torch.Tensor | None = None, fusion: str = "min") -> ClipRelevance:
    """Space–time relevance of clips ``x`` (N×T×C×S×S, normalised input) for ``target`` (default: the
    predicted class). Maps are on the model's token grid; upsample them onto the input per frame."""
    if method not in METHODS:
        raise ValueError(f"unknown clip relevance method {method!r}; expected one of {METHODS}")
    rec = record(model, x, target, gradients=method != "rollout")
    maps = gradcam_maps(rec) if method == "gradcam" else cls_relevance(rec, method, fusion)
    maps = maps.clamp_min(0)
    tgt = target_indices(rec.logits.argmax(1) if target is None else target, maps.shape[0])
    return ClipRelevance(maps, temporal_relevance(maps), rec.logits, tgt)


__all__ = ["FUSIONS", "METHODS", "ClipRelevance", "Recorded", "chefer_matrix", "cls_maps", "cls_relevance",
           "gradcam_maps",
           "record", "relevance", "rollout_matrix", "temporal_relevance"]
