"""TimeSformer with divided space–time attention (Bertasius et al. 2021; METHODS.md §5), CPU-sized.

A *clip* model: input N×T×C×S×S (or N×C×S×S, read as one-frame clips), logits N×C. Every block first
attends over time (each token position l of the frame grid attends to the same position in the T
frames), then over space (each frame's 1 + HW tokens attend to each other), then an MLP.

Two deliberate choices, both so that a model trained on still images is, before any video training,
exactly the image model applied per frame and averaged (the TimeSformer paper's zero-init argument):

- The temporal residual ``fc_t`` starts at zero (weights and bias), and the learned time embedding is
  added inside the temporal branch only, so a zero branch leaves every frame's tokens untouched.
- Each frame keeps its own CLS token (position 0 of its grid, also attended over time like any other
  position) and the clip logits are the mean over frames of ``head(norm(cls_t))``. The reference code
  shares one CLS token and averages its per-frame copies after every block, which mixes frames even
  with a zero temporal branch; with per-frame CLS the equivalence is exact at any depth. The token
  space for rollout/Chefer is therefore T·(1 + HW) rather than 1 + HW·T.

Patch tokens come from a linear patch embedding (``tokens="patch"``, the pure ViT) or from a CNN
trunk's feature map (``tokens="cnn"``, the ViT paper's hybrid; our ``small`` trunk gives 6×6 tokens on a
48×48 face and can start from a trained checkpoint's trunk via ``backbone_checkpoint``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.base import FrameModel
from engine.models.spec import ModelSpec, known_fields

TOKENS = ("cnn", "patch")


@dataclass(frozen=True)
class TimeSformerConfig:
    """The clip model's shape (``ModelSpec.options``). Defaults: the hybrid chosen in README §TimeSformer."""

    frames: int = 8        # T: frames per window (the most the time embedding covers)
    dim: int = 192
    depth: int = 4
    heads: int = 3
    mlp_ratio: float = 2.0
    patch: int = 8         # pixels per patch side (tokens="patch" only)
    tokens: str = "cnn"    # "cnn" (hybrid: the small trunk's feature map) | "patch" (pure ViT)

    def __post_init__(self) -> None:
        if self.tokens not in TOKENS:
            raise ValueError(f"timesformer tokens must be one of {TOKENS}, not {self.tokens!r}")
        if self.dim % self.heads:
            raise ValueError(f"timesformer dim {self.dim} is not divisible by heads {self.heads}")
        if min(self.frames, self.depth, self.heads, self.patch) < 1:
            raise ValueError(f"invalid timesformer shape {self}")

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> TimeSformerConfig:
        known = sorted(f.name for f in dataclasses.fields(cls))
        return cls(**known_fields(cls, options, "unknown timesformer options {}; known: " + ", ".join(known)))


class Attention(nn.Module):
    """Multi-head self-attention over B×S×D. With ``record`` (a list) the attention probabilities
    B×H×S×S are computed explicitly, kept for relevance (with ``retain_grad`` when they carry a graph) and
    appended; otherwise the fused kernel runs."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, record: list[torch.Tensor] | None = None) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if record is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax((q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5), dim=-1)
            if a.requires_grad:
                a.retain_grad()
            record.append(a)
            out = a @ v
        return self.proj(out.transpose(1, 2).reshape(b, s, d))


class DividedBlock(nn.Module):
    """Temporal attention (zero-initialised residual) → spatial attention → MLP, pre-norm."""

    def __init__(self, cfg: TimeSformerConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.norm_t = nn.LayerNorm(d)
        self.time_embed = nn.Parameter(torch.zeros(1, cfg.frames, d))
        self.attn_t = Attention(d, cfg.heads)
        self.fc_t = nn.Linear(d, d)
        self.norm_s = nn.LayerNorm(d)
        self.attn_s = Attention(d, cfg.heads)
        self.norm_m = nn.LayerNorm(d)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor, record: list[torch.Tensor] | None = None) -> torch.Tensor:
        n, t, L, d = x.shape
        xt = x.transpose(1, 2).reshape(n * L, t, d)                # every grid position over time
        h = self.attn_t(self.norm_t(xt) + self.time_embed[:, :t], record)
        xt = xt + self.fc_t(h)
        xs = xt.view(n, L, t, d).transpose(1, 2).reshape(n * t, L, d)   # every frame over its grid
        xs = xs + self.attn_s(self.norm_s(xs), record)
        xs = xs + self.mlp(self.norm_m(xs))
        return xs.view(n, t, L, d)


class TimeSformer(FrameModel):
    """Divided space–time transformer over face clips (see the module docstring)."""

    def __init__(self, spec: ModelSpec) -> None:
        cfg = TimeSformerConfig.from_options(spec.options)
        if cfg.tokens == "cnn":
            super().__init__(spec)                      # builds self.backbone (the trunk)
            c, g = self.backbone.out_channels, self.backbone.output_size(spec.input_size)
            self.patch_embed: nn.Module = nn.Conv2d(c, cfg.dim, 1)
        else:
            nn.Module.__init__(self)                    # no CNN trunk: a pure ViT
            self.spec = spec
            self.backbone = None  # type: ignore[assignment]
            if spec.input_size % cfg.patch:
                raise ValueError(f"input size {spec.input_size} is not a multiple of patch {cfg.patch}")
            g = spec.input_size // cfg.patch
            self.patch_embed = nn.Conv2d(spec.in_channels, cfg.dim, cfg.patch, stride=cfg.patch)
        self.cfg = cfg
        self.grid = g
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + g * g, cfg.dim))
        self.blocks = nn.ModuleList(DividedBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, spec.n_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for name, m in self.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            nn.init.zeros_(blk.fc_t.weight)
            nn.init.zeros_(blk.fc_t.bias)

    # -- shapes --
    @property
    def frames(self) -> int:
        return self.cfg.frames

    @staticmethod
    def as_clips(x: torch.Tensor) -> torch.Tensor:
        """N×C×S×S (still images) → N×1×C×S×S; N×T×C×S×S unchanged."""
        if x.ndim == 4:
            return x[:, None]
        if x.ndim != 5:
            raise ValueError(f"a clip model takes N×T×C×S×S (or N×C×S×S) input, got {tuple(x.shape)}")
        return x

    def trunk_parameters(self) -> list[nn.Parameter]:
        return [] if self.backbone is None else list(self.backbone.parameters())

    # -- forward --
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Clips N×T×C×S×S → tokens N×T×(1+HW)×D (CLS first in every frame)."""
        n, t = x.shape[:2]
        f = x.reshape(n * t, *x.shape[2:])
        if self.backbone is not None:
            f = self.backbone(f)
        tok = self.patch_embed(f).flatten(2).transpose(1, 2)           # (N·T)×HW×D
        tok = torch.cat([self.cls_token.expand(n * t, -1, -1), tok], 1) + self.pos_embed
        return tok.view(n, t, *tok.shape[1:])

    def run(self, x: torch.Tensor, record: list[torch.Tensor] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-frame logits N×T×C, the last block's input tokens N×T×(1+HW)×D).

        The last block's *input* is what Grad-CAM weighs (as pytorch-grad-cam's ViT recipe does): its
        output patch tokens feed nothing (the head reads the CLS tokens only), so their gradient is zero."""
        x = self.as_clips(x)
        if x.shape[1] > self.cfg.frames:
            raise ValueError(f"clip of {x.shape[1]} frames; this model takes at most {self.cfg.frames}")
        z = self.embed(x)
        last = z
        for blk in self.blocks:
            last = z
            z = blk(z, record)
        return self.head(self.norm(z[:, :, 0])), last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0].mean(1)

    def explain(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        frame_logits, _ = self.run(x)
        return {"logits": frame_logits.mean(1), "frame_logits": frame_logits}

    def target_layer(self) -> nn.Module:
        """The last block (its patch tokens are what Grad-CAM weighs; engine.explain.spacetime)."""
        return self.blocks[-1]

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

