"""Per-frame models: ProtoPNet, PatchSAE and the plain CNN baseline, built from a ``ModelSpec``."""

from __future__ import annotations

from engine.models.backbones import Backbone, ReceptiveField, build_backbone
from engine.models.base import FrameModel
from engine.models.baseline import CNNClassifier
from engine.models.landmark import LandmarkSequenceModel
from engine.models.patchsae import LatentReferences, PatchSAEModel, SparseAutoencoder, sae_loss
from engine.models.protopnet import (
    ProtoPNet,
    ProtoPNetLossWeights,
    null_input_loss,
    null_inputs,
    percentile_box,
    protopnet_loss,
    provenance_to_json,
    push_prototypes,
    similarity,
)
from engine.models.spec import ARCHS, BACKBONES, CLIP_ARCHS, ModelSpec, from_input, to_input
from engine.models.timesformer import TimeSformer, TimeSformerConfig

__all__ = [
    "ARCHS", "BACKBONES", "CLIP_ARCHS", "Backbone", "CNNClassifier", "FrameModel", "LandmarkSequenceModel",
    "LatentReferences", "ModelSpec", "PatchSAEModel", "ProtoPNet", "ProtoPNetLossWeights", "ReceptiveField",
    "SparseAutoencoder", "TimeSformer", "TimeSformerConfig",
    "build_backbone", "build_model", "from_input", "null_input_loss", "null_inputs", "percentile_box", "protopnet_loss", "provenance_to_json",
    "push_prototypes", "sae_loss", "similarity", "to_input",
]

_ARCH_CLASSES: dict[str, type[FrameModel]] = {"protopnet": ProtoPNet, "patchsae": PatchSAEModel,
                                              "cnn": CNNClassifier, "timesformer": TimeSformer}
_ARCH_CLASSES["landmark-lstm"] = LandmarkSequenceModel  # type: ignore[assignment]  # not a frame model


def build_model(spec: ModelSpec) -> FrameModel:
    """A fresh model for ``spec`` (random weights, or cached ImageNet weights when spec.pretrained)."""
    return _ARCH_CLASSES[spec.arch](spec)
