"""PatchSAE (Lim et al., ICLR 2025) over the backbone feature map, per docs METHODS.md §2.

Tokens are the h×w positions of the frozen backbone's feature map. The class head on the mean
latent activation is the thesis' proposed design (METHODS §2 "Class scores").
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.models.base import FrameModel
from engine.models.spec import ModelSpec

# Backbone tokens come after a ReLU and can be all zero; their norm would divide by zero.
NORM_FLOOR = 1e-6


class SparseAutoencoder(nn.Module):
    """f = ReLU((x − b_dec) W_enc + b_enc); x̂ = f W_dec + b_dec, decoder rows kept at unit norm."""

    def __init__(self, d_in: int, n_latents: int) -> None:
        super().__init__()
        w_dec = torch.randn(n_latents, d_in)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().clone())
        self.b_enc = nn.Parameter(torch.zeros(n_latents))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.act = nn.ReLU()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.act((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every decoder row (one atom) to unit L2 norm; call after each optimiser step."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the gradient component along each (unit) decoder row; call before the optimiser step."""
        g = self.W_dec.grad
        if g is None:
            return
        w = self.W_dec
        g -= (g * w).sum(1, keepdim=True) * w

    @torch.no_grad()
    def init_b_dec(self, tokens: torch.Tensor, method: str = "median", iters: int = 50) -> None:
        """Initialise b_dec at the geometric median (Weiszfeld) or the mean of tokens T×D."""
        t = tokens.detach().to(self.b_dec.device, torch.float32)
        m = t.mean(0)
        if method == "median":
            for _ in range(iters):
                w = 1.0 / (t - m).norm(dim=1).clamp_min(1e-8)
                new = (w[:, None] * t).sum(0) / w.sum()
                if (new - m).norm() < 1e-6 * (m.norm() + 1e-12):
                    m = new
                    break
                m = new
        elif method != "mean":
            raise ValueError(f"init_b_dec method must be 'median' or 'mean', got {method!r}")
        self.b_dec.copy_(m)


def sae_loss(sae: SparseAutoencoder, x: torch.Tensor, l1: float = 8e-5) -> dict[str, torch.Tensor]:
    """mean[(x̂ − x)² / ‖x‖₂] + λ · mean Σ_j |f_j| over tokens x T×D."""
    x_hat, f = sae(x)
    norm = x.norm(dim=-1, keepdim=True).clamp_min(NORM_FLOOR)
    mse = ((x_hat - x) ** 2 / norm).mean()
    sparsity = f.abs().sum(-1).mean()
    return {"mse": mse, "l1": sparsity, "total": mse + l1 * sparsity, "latents": f}


class PatchSAEModel(FrameModel):
    def __init__(self, spec: ModelSpec, freeze_backbone: bool = True) -> None:
        super().__init__(spec)
        self.sae = SparseAutoencoder(self.backbone.out_channels, spec.n_latents)
        self.head = nn.Linear(spec.n_latents, spec.n_classes)
        self.backbone_frozen = False
        if freeze_backbone:
            self.freeze_backbone()

    def freeze_backbone(self) -> None:
        self.backbone_frozen = True
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> PatchSAEModel:
        super().train(mode)
        if self.backbone_frozen:
            # Frozen means frozen BatchNorm statistics too, or the SAE's inputs would drift.
            self.backbone.eval()
        return self

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone feature vectors at every position: N×h×w×C."""
        return self.backbone(x).permute(0, 2, 3, 1)

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(self.tokens(x))  # N×h×w×L

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._latents(x).mean((1, 2)))

    def explain(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self._latents(x)
        g = f.mean((1, 2))
        return {
            "logits": self.head(g),
            "latents": g,
            "latent_maps": f.permute(0, 3, 1, 2),
            "contributions": self.head.weight.unsqueeze(0) * g.unsqueeze(1),
            "bias": self.head.bias,
        }


class LatentReferences:
    """Running top-``top`` reference frames per latent (image score = mean activation over tokens),
    with each latent's firing frequency and mean activation over all frames seen."""

    def __init__(self, top: int = 10) -> None:
        self.top = top
        self.n_frames = 0
        self._heaps: dict[int, list[tuple[float, int, Any, np.ndarray | None, np.ndarray | None]]] = {}
        self._active: np.ndarray | None = None
        self._sum: np.ndarray | None = None
        self._tie = itertools.count()

    def update(self, g_batch: torch.Tensor | np.ndarray, ids: Sequence[Any],
               maps: torch.Tensor | np.ndarray | None = None, images: np.ndarray | None = None) -> None:
        """g_batch N×L image scores, ids one JSON-able id per image, maps N×L×h×w (optional), images the
        N×S×S×C uint8 model inputs (optional, with maps): each reference then keeps the patch of its image
        where the latent fires (the 95th-percentile box of its upsampled map, as a prototype's crop)."""
        g = np.asarray(g_batch.detach().cpu() if isinstance(g_batch, torch.Tensor) else g_batch, np.float32)
        mp = None
        if maps is not None:
            mp = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, np.float32)
        n, n_lat = g.shape
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} images")
        if self._active is None:
            self._active = np.zeros(n_lat, np.int64)
            self._sum = np.zeros(n_lat, np.float64)
        self._active += (g > 0).sum(0)
        self._sum += g.sum(0)
        self.n_frames += n
        # Only images that beat a latent's current k-th score can enter; check cheaply per latent.
        order = np.argsort(-g, axis=0)[: self.top]  # top×L candidate rows per latent
        for j in range(n_lat):
            heap = self._heaps.setdefault(j, [])
            for i in order[:, j]:
                s = float(g[i, j])
                if s <= 0:
                    break
                if len(heap) == self.top and s <= heap[0][0]:
                    break
                m = None if mp is None else mp[i, j].copy()
                patch = None
                if images is not None and m is not None:
                    from engine.models.protopnet import percentile_box

                    (x0, y0, x1, y1), _ = percentile_box(m, images.shape[1])
                    patch = np.ascontiguousarray(images[i, y0:y1, x0:x1])
                item = (s, next(self._tie), ids[i], m, patch)
                if len(heap) < self.top:
                    heapq.heappush(heap, item)
                else:
                    heapq.heapreplace(heap, item)

    def references(self, latent: int) -> list[dict[str, Any]]:
        """Best first: {"source", "score", "map" (h×w list or None), "peak" (h, w) or None}."""
        out = []
        for s, _, ident, m, _patch in sorted(self._heaps.get(latent, []), key=lambda t: (-t[0], t[1])):
            peak = None if m is None else [int(v) for v in np.unravel_index(int(np.argmax(m)), m.shape)]
            out.append({"source": ident, "score": s, "map": None if m is None else np.round(m, 6).tolist(),
                        "peak": peak})
        return out

    def patches(self) -> dict[tuple[int, int], np.ndarray]:
        """(latent, rank) → uint8 patch, best first, for the references that kept one."""
        out = {}
        for j, heap in self._heaps.items():
            for r, item in enumerate(sorted(heap, key=lambda t: (-t[0], t[1]))):
                if item[4] is not None:
                    out[(j, r)] = item[4]
        return out

    def to_json(self) -> dict[str, Any]:
        n_lat = 0 if self._active is None else len(self._active)
        latents = []
        for j in range(n_lat):
            latents.append({
                "latent": j,
                "frequency": float(self._active[j]) / max(self.n_frames, 1),  # type: ignore[index]
                "mean_activation": float(self._sum[j]) / max(self.n_frames, 1),  # type: ignore[index]
                "references": self.references(j),
            })
        return {"top": self.top, "n_frames": self.n_frames, "latents": latents}
