"""Convolutional trunks with their receptive-field arithmetic.

Every backbone is a plain ``nn.Sequential``-like module mapping N×C_in×S×S to N×C×h×w, lists its
conv/pool geometry so that output size and receptive fields are computed analytically (no dummy
forward that would touch BatchNorm statistics), and never uses in-place ReLU (zennit and captum
need the pre-activation tensors intact).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerGeom:
    kernel: int
    stride: int
    padding: int
    dilation: int = 1


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of one output position: size, jump between positions, centre of position 0."""

    size: float
    jump: float
    start: float

    def box(self, h: int, w: int, input_size: int) -> tuple[int, int, int, int]:
        """Input-pixel box (x0, y0, x1, y1), x1/y1 exclusive, clipped to the image."""
        half = self.size / 2

        def span(i: int) -> tuple[int, int]:
            c = self.start + i * self.jump
            return max(int(c - half), 0), min(int(c + half), input_size)

        y0, y1 = span(h)
        x0, x1 = span(w)
        return x0, y0, x1, y1


def _geom(m: nn.Module) -> LayerGeom | None:
    def one(v: int | tuple[int, ...]) -> int:
        return int(v[0] if isinstance(v, tuple) else v)

    if isinstance(m, nn.Conv2d):
        return LayerGeom(one(m.kernel_size), one(m.stride), one(m.padding), one(m.dilation))
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        dil = one(getattr(m, "dilation", 1))
        return LayerGeom(one(m.kernel_size), one(m.stride), one(m.padding), dil)
    return None


class Backbone(nn.Module):
    """A trunk: ``body`` (the layers), ``out_channels``, ``target_layer`` (last conv block)."""

    def __init__(self, name: str, body: nn.Module, out_channels: int, target: nn.Module,
                 skip: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.out_channels = out_channels
        self._target = [target]  # a list so the module is not registered twice
        # Geometry along the main path in execution order; branches (ResNet downsample) skipped.
        self.geometry = [g for n, m in body.named_modules()
                         if not any(s in n for s in skip) and (g := _geom(m)) is not None]
        self.pretrained_loaded = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    @property
    def target_layer(self) -> nn.Module:
        return self._target[0]

    def output_size(self, input_size: int) -> int:
        n = input_size
        for g in self.geometry:
            n = (n + 2 * g.padding - g.dilation * (g.kernel - 1) - 1) // g.stride + 1
        if n < 1:
            raise ValueError(f"input {input_size}×{input_size} is too small for backbone {self.name}")
        return n

    def receptive_field(self) -> ReceptiveField:
        size, jump, start = 1.0, 1.0, 0.5
        for g in self.geometry:
            k = g.dilation * (g.kernel - 1) + 1
            start = start + ((k - 1) / 2 - g.padding) * jump
            size = size + (k - 1) * jump
            jump = jump * g.stride
        return ReceptiveField(size, jump, start)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def small_cnn(in_channels: int = 1) -> Backbone:
    """~0.58 M-parameter trunk for 48×48 faces: 32-32 / 64-64 / 128-128 (pool after each) / 256 → 6×6×256."""
    blocks = nn.Sequential(
        nn.Sequential(*_conv_bn_relu(in_channels, 32), *_conv_bn_relu(32, 32), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_bn_relu(32, 64), *_conv_bn_relu(64, 64), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_bn_relu(64, 128), *_conv_bn_relu(128, 128), nn.MaxPool2d(2)),
        nn.Sequential(*_conv_bn_relu(128, 256)),
    )
    for m in blocks.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return Backbone("small", blocks, 256, blocks[-1])


_WEIGHT_FILES = {"vgg16_bn": "vgg16_bn-6c64b313.pth", "resnet18": "resnet18-f37072fd.pth"}


def cached_weights_path(name: str) -> Path:
    """Where torchvision's hub cache keeps the ImageNet weights for ``name`` (may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _WEIGHT_FILES[name]


def _load_cached(net: nn.Module, name: str) -> bool:
    path = cached_weights_path(name)
    if not path.is_file():
        log.warning("ImageNet weights for %s not found at %s; starting from random weights "
                    "(copy the file there to use them; VidXAI never downloads)", name, path)
        return False
    # torchvision's own restricted loader: tensors only, no arbitrary objects are unpickled.
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    log.info("loaded ImageNet weights for %s from %s", name, path)
    return True


def _adapt_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    if in_channels != 1:
        raise ValueError(f"cannot adapt a {conv.in_channels}-channel first conv to {in_channels} channels")
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None)
    with torch.no_grad():
        # A grey image is R=G=B, so summing the RGB filters gives the same response.
        new.weight.copy_(conv.weight.sum(1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _no_inplace(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False


def vgg16_bn(in_channels: int = 1, pretrained: bool = False) -> Backbone:
    from torchvision.models import vgg16_bn as tv_vgg

    net = tv_vgg(weights=None)
    loaded = _load_cached(net, "vgg16_bn") if pretrained else False
    feats = net.features
    feats[0] = _adapt_first_conv(feats[0], in_channels)
    _no_inplace(feats)
    # ProtoPNet's VGG trunk keeps the last max-pool; Grad-CAM looks at the last conv's ReLU.
    bb = Backbone("vgg16_bn", feats, 512, feats[-2])
    bb.pretrained_loaded = loaded
    return bb


def resnet18(in_channels: int = 1, pretrained: bool = False) -> Backbone:
    from torchvision.models import resnet18 as tv_resnet

    net = tv_resnet(weights=None)
    loaded = _load_cached(net, "resnet18") if pretrained else False
    net.conv1 = _adapt_first_conv(net.conv1, in_channels)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                         net.layer4)
    _no_inplace(body)
    bb = Backbone("resnet18", body, 512, net.layer4, skip=("downsample",))
    bb.pretrained_loaded = loaded
    return bb


def build_backbone(name: str, in_channels: int = 1, pretrained: bool = False) -> Backbone:
    if name == "small":
        if pretrained:
            log.warning("the small backbone has no ImageNet weights; starting from random weights")
        return small_cnn(in_channels)
    if name == "vgg16_bn":
        return vgg16_bn(in_channels, pretrained)
    if name == "resnet18":
        return resnet18(in_channels, pretrained)
    raise ValueError(f"unknown backbone {name!r}; expected small, vgg16_bn or resnet18")
