"""Model description (``ModelSpec``) and the one conversion from uint8 images to model input."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.model_card import ARCHS, BACKBONES, CLIP_ARCHS  # their torch-free home; re-exported

DEFAULT_PREPROCESS: dict[str, Any] = {"mode": "face", "size": 48, "grayscale": True, "margin": 0.1}

# Greyscale inputs are centred on mid-grey with a spread that maps 0..255 to -2..2.
GREY_MEAN, GREY_STD = 0.5, 0.25
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _default_preprocess() -> dict[str, Any]:
    return dict(DEFAULT_PREPROCESS)


@dataclass
class ModelSpec:
    """What a model is: enough to rebuild it from ``model.json`` without any code special-casing.

    ``preprocess`` is the plain-dict form of ``engine.preprocess.PreprocessConfig.to_json()`` so that
    the model package does not import the preprocessing module; a ``PreprocessConfig`` passed in is
    converted on construction.
    """

    arch: str
    backbone: str = "small"
    classes: list[str] = field(default_factory=list)
    preprocess: dict[str, Any] = field(default_factory=_default_preprocess)
    label_setting: str = ""
    prototypes_per_class: int = 10
    proto_dim: int = 128
    n_latents: int = 512
    sae_l1: float = 8e-5
    pretrained: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # architecture-specific shape (timesformer)
    # landmark-lstm only (engine.models.landmark): window P, landmark points, channels, hidden size.
    sequence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if hasattr(self.preprocess, "to_json"):
            self.preprocess = dict(self.preprocess.to_json())  # type: ignore[union-attr]
        else:
            self.preprocess = {**DEFAULT_PREPROCESS, **dict(self.preprocess)}
        self.classes = [str(c) for c in self.classes]
        if self.arch not in ARCHS:
            raise ValueError(f"unknown model arch {self.arch!r}; expected one of {', '.join(ARCHS)}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; expected one of {', '.join(BACKBONES)}")
        if len(self.classes) < 2:
            raise ValueError(f"a model needs at least two classes, got {self.classes!r}")

    @property
    def input_size(self) -> int:
        return int(self.preprocess["size"])

    @property
    def in_channels(self) -> int:
        return 1 if bool(self.preprocess.get("grayscale", True)) else 3

    @property
    def is_clip(self) -> bool:
        return self.arch in CLIP_ARCHS

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_prototypes(self) -> int:
        return self.prototypes_per_class * self.n_classes

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preprocess"] = _jsonable(self.preprocess)
        for name in ("options", "sequence"):
            if not d[name]:
                del d[name]  # frame models' model.json stays as before
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**known_fields(cls, d, "model spec has unknown fields {} (written by a newer VidXAI?)"))


def known_fields(cls: type, d: dict[str, Any], message: str) -> dict[str, Any]:
    """``d`` when every key is a field of dataclass ``cls``; else ValueError(message with the unknown keys)."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(message.format(sorted(unknown)))
    return dict(d)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (set, frozenset)):
        return sorted(_jsonable(x) for x in v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _mean_std(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    if channels == 1:
        mean, std = (GREY_MEAN,), (GREY_STD,)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)


def to_input(images: np.ndarray, spec: ModelSpec) -> torch.Tensor:
    """uint8 images N×S×S×C (or N×S×S, or one S×S×C image) → float32 N×C×S×S normalised for ``spec``.

    Channels are matched to the spec: grey is replicated for a colour model, colour is reduced to
    luma (ITU-R 601, as Pillow's "L") for a grey model.
    """
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise TypeError(f"to_input expects uint8 images, got {a.dtype}")
    if a.ndim == 2:
        a = a[None, :, :, None]
    elif a.ndim == 3:
        # N×S×S grey batch vs a single S×S×C image: a last axis of 1 or 3 that differs from the
        # second axis means channels.
        a = a[None] if a.shape[-1] in (1, 3) and a.shape[-1] != a.shape[-2] else a[..., None]
    if a.ndim != 4:
        raise ValueError(f"to_input expects N×S×S×C images, got shape {images.shape}")
    s = spec.input_size
    if a.shape[1] != s or a.shape[2] != s:
        raise ValueError(f"images are {a.shape[1]}×{a.shape[2]} but the model expects {s}×{s}")
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float().div_(255.0)
    want = spec.in_channels
    if x.shape[1] != want:
        if want == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif want == 1 and x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        else:
            raise ValueError(f"images have {x.shape[1]} channels; the model expects {want}")
    mean, std = _mean_std(want)
    return ((x - mean) / std).contiguous()


def from_input(x: torch.Tensor, spec: ModelSpec) -> np.ndarray:
    """Inverse of :func:`to_input`: model input N×C×S×S → uint8 N×S×S×C (for crops and display)."""
    mean, std = _mean_std(x.shape[1])
    img = (x.detach().cpu().float() * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return img.permute(0, 2, 3, 1).contiguous().numpy()
