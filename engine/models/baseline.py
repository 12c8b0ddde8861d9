"""Plain CNN baseline: backbone → global average pool → linear head."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.base import FrameModel
from engine.models.spec import ModelSpec


class CNNClassifier(FrameModel):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.backbone.out_channels, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.backbone(x)).flatten(1))

    def explain(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.backbone(x)
        return {"logits": self.head(self.pool(feats).flatten(1)), "features": feats}
