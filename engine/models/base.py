"""``FrameModel``: the one interface every per-frame classifier offers the engine and the GUI."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.backbones import Backbone, ReceptiveField, build_backbone
from engine.models.spec import ModelSpec


class FrameModel(nn.Module):
    """Backbone-based frame classifier. ``forward`` gives logits N×C and is a plain differentiable
    function of x (what LRP, Grad-CAM and IG wrap); ``explain`` adds the intrinsic explanation."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone: Backbone = build_backbone(spec.backbone, spec.in_channels, spec.pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def explain(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def target_layer(self) -> nn.Module:
        """Last conv block of the backbone, for Grad-CAM."""
        return self.backbone.target_layer

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(channels, h, w) of the backbone feature map for the spec's input size."""
        n = self.backbone.output_size(self.spec.input_size)
        return self.backbone.out_channels, n, n

    @property
    def receptive_field(self) -> ReceptiveField:
        return self.backbone.receptive_field()

    @property
    def pretrained_loaded(self) -> bool:
        return self.backbone.pretrained_loaded
