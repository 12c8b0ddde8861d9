"""One trainer for every frame model: ProtoPNet stages, PatchSAE stages, plain CE for the CNN.

Training is a job: ``train(data, cfg, progress, cancel)``. The run is a fixed plan of steps (one epoch of a
stage, a push, the SAE reference retrieval). After every completed step ``out_dir/last/`` holds a loadable
checkpoint plus the optimiser state (safetensors + JSON, never pickle) and the step counter, so a cancelled
or crashed run resumes with ``resume=True``. Each step re-seeds torch from (seed, step), so a resumed run
takes exactly the path an uninterrupted one would have. Per-epoch metrics go to ``out_dir/metrics.jsonl``;
the final checkpoint is ``out_dir/model/``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from engine.checkpoint import load_checkpoint, read_latent_patches, save_checkpoint
from engine.data import (
    DataConfig,
    FaceCache,
    FaceDataset,
    PreparedData,
    canonical_preprocess,
    collate_batch,
    prepare,
)
from engine.data.dataset import AugmentConfig, ClipDataset
from engine.data.provenance import relative_source
from engine.jobs import Cancelled, CancelToken, ProgressFn, RecordFn, no_progress, no_record
from engine.models import (
    FrameModel,
    LatentReferences,
    ModelSpec,
    PatchSAEModel,
    ProtoPNet,
    ProtoPNetLossWeights,
    build_model,
    from_input,
    null_input_loss,
    null_inputs,
    protopnet_loss,
    provenance_to_json,
    push_prototypes,
    sae_loss,
    similarity,
    to_input,
)
from engine.models.timesformer import TimeSformer

log = logging.getLogger(__name__)

STATE_JSON = "training_state.json"
OPTIM_TENSORS = "optimizer.safetensors"
CROPS_TENSORS = "prototype_crops.safetensors"
TRAINING_STATE_VERSION = 1


def _default_preprocess() -> dict[str, Any]:
    from engine.preprocess import PreprocessConfig

    return PreprocessConfig().to_json()


@dataclass
class TrainConfig:
    """Every setting of a training run (written into model.json). Defaults follow METHODS.md §1/§2."""

    arch: str = "protopnet"  # "protopnet" | "patchsae" | "cnn" | "timesformer"
    backbone: str = "small"  # "small" | "vgg16_bn" | "resnet18"
    pretrained: bool = False  # ImageNet weights from torchvision's local cache when present
    label_setting: str | None = None  # None: what the data folder implies
    preprocess: dict[str, Any] = field(default_factory=_default_preprocess)
    prototypes_per_class: int = 10
    proto_dim: int = 128
    n_latents: int = 512

    epochs: int = 20  # ProtoPNet warm-up + joint; CNN; PatchSAE's backbone pre-training
    batch_size: int = 32
    optimizer: str = "adam"  # "adam" (reference repo) | "sgd" (thesis, momentum below)
    momentum: float = 0.9
    weight_decay: float = 1e-3  # on backbone and add-on weights (reference repo)
    lr_step: int = 5  # StepLR period (epochs) of the joint stage; 0 = constant
    lr_gamma: float = 0.1

    # ProtoPNet
    warmup_epochs: int = 5
    lr_backbone: float = 1e-4
    lr_add_on: float = 3e-3
    lr_prototypes: float = 3e-3
    push_start: int = 30
    push_every: int = 10  # 0: push only at the end
    last_layer_epochs: int = 20
    last_layer_lr: float = 1e-3  # 1e-4 (reference) under-recovers after push on FER2013, see METHODS §1
    clst: float = 0.8
    sep: float = 0.08
    l1: float = 1e-4
    # Push only onto feature cells whose receptive-field centre is inside the source face's landmark
    # hull (docs/EXPLANATIONS.md §4), so no prototype encodes a border or background patch.
    push_on_face: bool = True
    # Featureless inputs (flat at the normalisation mean, heavily blurred, noise) carry no class signal:
    # weight of CE(uniform) + a hinge keeping their prototype similarities below the real faces' top
    # similarity (batch median) minus null_margin. 0 switches it off. docs/EXPLANATIONS.md §5.
    null_weight: float = 0.5
    null_margin: float = 1.0
    # Start from this ProtoPNet checkpoint (every weight); with epochs=0 the run is its push and
    # last-layer epochs only: re-pushing a trained model under the restrictions above.
    init_checkpoint: str | None = None
    # Last-layer epochs on the similarities of the un-augmented training images, computed once per push
    # (the rest of the network is frozen then, so only augmentation is lost; ~10x quicker on a CPU).
    last_layer_cached: bool = False
    # Occlusion augmentation ("ROAR"-style robustness to the faithfulness test's fill): each training
    # image of the gradient stages gets a random fraction in [0, occlusion_augment] of its 8×8 patches set
    # to the normalisation mean (engine.explain.occlusion.random_patch_occlusion). 0 switches it off.
    occlusion_augment: float = 0.0
    # AU-guided training (METHODS §7, engine.au_guidance): λ of L = CE + λ(1 − cos(T_l, A)) with A the AU
    # map of the labelled class from each crop's landmarks; CNN and ProtoPNet (warm/joint). 0: off.
    au_guidance: float = 0.0
    # landmark-lstm (engine.landmark_train): {"window": P, "points": [...], "channels", "hidden"}; epochs,
    # batch_size, lr_cnn, seed and out_dir as above.
    sequence: dict[str, Any] = field(default_factory=dict)

    # plain CNN (also PatchSAE's backbone pre-training)
    lr_cnn: float = 1e-3
    cnn_lr_step: int = 0  # 0 = constant

    # PatchSAE
    # Start from this checkpoint's backbone (ProtoPNet: instead of ImageNet; PatchSAE: skips pre-training).
    backbone_checkpoint: str | None = None
    sae_epochs: int = 5
    sae_batch_size: int = 16  # images per SAE step (tokens = images × h × w)
    sae_lr: float = 4e-4
    sae_l1: float = 8e-5
    sae_warmup_steps: int = 500
    head_epochs: int = 5
    head_lr: float = 1e-3
    references_top: int = 10

    # TimeSformer (engine.models.timesformer): its shape (TimeSformerConfig fields: frames, dim, depth, heads,
    # mlp_ratio, patch, tokens) and, on video corpora, the window stride in sampled frames (windows of
    # `frames` consecutive samples of the frame sampler). Trained by plain CE at lr_cnn; with
    # backbone_checkpoint its CNN trunk starts from that model's trunk and trains at lr_backbone.
    timesformer: dict[str, Any] = field(default_factory=dict)
    clip_stride: int = 4

    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    amp: bool = True  # autocast + GradScaler, CUDA only
    num_workers: int = 0
    val_every: int = 1  # validation accuracy every N epochs (and always at the end of a stage)
    keep_last: bool = True  # keep out_dir/last/ after success (lets a finished run be extended)
    out_dir: str = "runs/model"

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        self.preprocess = canonical_preprocess(self.preprocess)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', not {self.optimizer!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if min(self.epochs, self.batch_size, self.sae_batch_size) < 1 and not (
                self.epochs == 0 and self.arch == "protopnet" and self.init_checkpoint):
            raise ValueError("epochs and batch sizes must be at least 1 (epochs may be 0 only for a "
                             "ProtoPNet started from init_checkpoint: push and last layer only)")

        if self.au_guidance < 0 or (self.au_guidance > 0 and (
                self.arch not in ("cnn", "protopnet") or self.preprocess.get("mode") == "reassembled")):
            raise ValueError("AU guidance (λ >= 0) needs a CNN or ProtoPNet on whole-face input (mode face or "
                             f"original), not {self.arch} on {self.preprocess.get('mode')!r}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainData:
    """Already-cropped samples (tests, benchmarks, a caller with its own arrays)."""

    train: FaceCache
    val: FaceCache | None
    classes: list[str]
    label_setting: str = ""
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    kind: str  # warm | joint | last | cnn | push | sae | head | refs
    epoch: int  # epoch within its stage (for schedules); push: the joint epoch it follows
    index: int = 0  # running number within the stage kind (last-layer epochs after a push)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan(cfg: TrainConfig) -> list[Step]:
    """The whole run as steps, in order (what ``resume`` counts)."""
    steps: list[Step] = []
    if cfg.arch == "cnn":
        return [Step("cnn", e) for e in range(cfg.epochs)]
    if cfg.arch == "timesformer":
        return [Step("clip", e) for e in range(cfg.epochs)]
    if cfg.arch == "protopnet" and cfg.epochs == 0:
        return [Step("push", 0)] + [Step("last", 0, i) for i in range(cfg.last_layer_epochs)]
    if cfg.arch == "protopnet":
        n_last = 0
        joint = 0
        for e in range(cfg.epochs):
            if e < cfg.warmup_epochs:
                steps.append(Step("warm", e))
            else:
                steps.append(Step("joint", e, joint))
                joint += 1
            scheduled = cfg.push_every > 0 and e >= cfg.push_start and e % cfg.push_every == 0
            if scheduled or e == cfg.epochs - 1:
                steps.append(Step("push", e))
                for _ in range(cfg.last_layer_epochs):
                    steps.append(Step("last", e, n_last))
                    n_last += 1
        return steps
    if cfg.arch == "patchsae":
        if cfg.backbone_checkpoint is None:
            steps += [Step("cnn", e) for e in range(cfg.epochs)]
        steps += [Step("sae", e) for e in range(cfg.sae_epochs)]
        steps += [Step("head", e) for e in range(cfg.head_epochs)]
        steps.append(Step("refs", 0))
        return steps
    raise ValueError(f"unknown arch {cfg.arch!r}; expected protopnet, patchsae, cnn or timesformer")


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {name!r} asked for, but this torch build sees no CUDA GPU; use 'cpu' or 'auto'"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --- optimiser state as safetensors + JSON -------------------------------------------------------------


def optimizer_state_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``opt.state_dict()`` into tensors (safetensors) and plain values (JSON): no pickle."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_state_from_files(tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = t
    for pid, vals in doc.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(vals)
    return {"state": state, "param_groups": doc["param_groups"]}


# --- the trainer -------------------------------------------------------------------------------------


def _as_train_data(
    data: TrainData | PreparedData | DataConfig | str | Path,
    cfg: TrainConfig,
    progress: ProgressFn,
    cancel: CancelToken | None,
) -> TrainData:
    if isinstance(data, TrainData):
        return data
    if not isinstance(data, PreparedData):
        dc = data if isinstance(data, DataConfig) else DataConfig(path=str(data))
        if cfg.label_setting is not None and dc.label_setting is None:
            dc = dataclasses.replace(dc, label_setting=cfg.label_setting)
        data = prepare(dc, cfg.preprocess)
    if data.preprocess != cfg.preprocess:
        raise ValueError(
            f"data prepared for preprocessing {data.preprocess} but the model is configured for "
            f"{cfg.preprocess}; prepare the data with the training config's preprocess"
        )
    tr = data.cache("train", lambda d, t, m: progress(d, t, f"train set: {m}"), cancel)
    val = None
    if data.items("val"):
        val = data.cache("val", lambda d, t, m: progress(d, t, f"validation set: {m}"), cancel)
    return TrainData(tr, val, data.classes, data.label_setting, data.summary())


class _Trainer:
    def __init__(
        self, data: TrainData, cfg: TrainConfig, progress: ProgressFn, cancel: CancelToken | None,
        on_record: RecordFn = no_record,
    ) -> None:
        self.data, self.cfg, self.progress, self.cancel = data, cfg, progress, cancel
        self.on_record = on_record
        # Data-parallel (torchrun): engine.distributed; None in a single process, which runs as before.
        from engine import distributed

        self.dist = distributed.current()
        if self.dist is not None and not self.dist.main:
            self.progress, self.on_record = no_progress, no_record  # rank 0 reports
        self.device = select_device(cfg.device)
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.out = Path(cfg.out_dir)
        self.spec = ModelSpec(
            arch=cfg.arch,
            backbone=cfg.backbone,
            classes=list(data.classes),
            preprocess=dict(cfg.preprocess),
            label_setting=data.label_setting or "",
            prototypes_per_class=cfg.prototypes_per_class,
            proto_dim=cfg.proto_dim,
            n_latents=cfg.n_latents,
            sae_l1=cfg.sae_l1,
            pretrained=cfg.pretrained,
            options=dict(cfg.timesformer) if cfg.arch == "timesformer" else {},
        )
        self.steps = plan(cfg)
        self.model: FrameModel = build_model(self.spec).to(self.device)
        if self.dist is not None:
            distributed.global_batchnorm(self.model)
        # PatchSAE's backbone is first trained as a plain CNN: a CNN model sharing the same backbone module.
        self.cnn: FrameModel | None = None
        if cfg.backbone_checkpoint is not None:
            # A trained backbone (e.g. a CNN trained on the same faces) instead of ImageNet weights.
            self._load_backbone(cfg.backbone_checkpoint)
        if cfg.init_checkpoint is not None:
            src, _ = load_checkpoint(cfg.init_checkpoint, "cpu")
            if src.spec.arch != self.spec.arch or src.spec.backbone != self.spec.backbone or \
                    src.spec.preprocess != self.spec.preprocess or list(src.spec.classes) != list(self.spec.classes):
                raise ValueError(f"{cfg.init_checkpoint}: a {src.spec.arch}/{src.spec.backbone} model for "
                                 f"{src.spec.classes}; it must match the configured model to start from it")
            self.model.load_state_dict(src.state_dict())
        self._sim_cache: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None
        if cfg.arch == "patchsae" and cfg.backbone_checkpoint is None:
            cnn_spec = dataclasses.replace(self.spec, arch="cnn")
            self.cnn = build_model(cnn_spec).to(self.device)
            self.cnn.backbone = self.model.backbone
            if self.dist is not None:
                distributed.global_batchnorm(self.cnn)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.opt: torch.optim.Optimizer | None = None
        self.opt_kind: str | None = None
        self.done = 0  # completed steps
        self.batches_done = 0
        self.provenance: list[dict[str, Any]] = []
        self.crops: dict[int, np.ndarray] = {}
        self.push_history: list[dict[str, Any]] = []
        self.references: dict[str, Any] | None = None
        self.latent_patches: dict[tuple[int, int], np.ndarray] = {}  # PatchSAE: (latent, rank) → patch
        self.last_metrics: dict[str, Any] = {}
        self.aug_ds = self._dataset(data.train, cfg.augment, self._au_maps() if cfg.au_guidance > 0 else None)
        self.plain_ds = self._dataset(data.train, None)

    def _dataset(self, cache: FaceCache, augment: AugmentConfig | None,
                 au_maps: np.ndarray | None = None) -> FaceDataset:
        """Frames, or T-frame clips for a clip model on video samples (still images stay one-frame clips);
        `au_maps`: AU guidance targets per sample (frame models only, see _au_maps)."""
        if self.spec.is_clip and bool((np.asarray(cache.frame_index) >= 0).any()):
            frames = int(getattr(self.model, "frames", 1))
            return ClipDataset(cache, frames, self.cfg.clip_stride, augment)
        return FaceDataset(cache, augment, au_maps)

    def _au_maps(self) -> np.ndarray:
        from engine.au_guidance import au_targets, cache_landmarks

        lm = cache_landmarks(self.data.train, self.cfg.preprocess,
                             lambda d, t, m: self.progress(d, t, m), self.cancel)
        maps = au_targets(lm, np.asarray(self.data.train.labels), list(self.data.classes), self.spec.input_size)
        n_with = int((maps.reshape(len(maps), -1).max(1) > 0).sum())
        self.au_summary = {"lambda": self.cfg.au_guidance, "samples_with_map": n_with,
                           "samples_without_landmarks": int((~np.isfinite(lm).all(axis=(1, 2))).sum())}
        log.info("AU guidance λ=%g: %d of %d training crops have a target map", self.cfg.au_guidance, n_with,
                 len(maps))
        return maps

    # -- model pieces per stage --
    def _load_backbone(self, folder: str) -> None:
        src, _ = load_checkpoint(folder, "cpu")
        if src.spec.backbone != self.spec.backbone or src.spec.preprocess != self.spec.preprocess:
            raise ValueError(
                f"{folder}: its backbone ({src.spec.backbone}, {src.spec.preprocess}) differs from the "
                f"configured one ({self.spec.backbone}, {self.spec.preprocess}); choose a matching "
                "checkpoint or change the settings"
            )
        self.model.backbone.load_state_dict(src.backbone.state_dict())

    def _groups(self, kind: str, step: Step) -> list[dict[str, Any]]:
        cfg, m = self.cfg, self.model
        wd = cfg.weight_decay

        def decay(base: float, period: int, epoch: int) -> float:
            return base * (cfg.lr_gamma ** (epoch // period)) if period > 0 else base

        if kind == "warm":
            assert isinstance(m, ProtoPNet)
            return [
                {
                    "name": "add_on",
                    "params": list(m.add_on.parameters()),
                    "lr": cfg.lr_add_on,
                    "weight_decay": wd,
                },
                {"name": "prototypes", "params": [m.prototype_vectors], "lr": cfg.lr_prototypes},
            ]
        if kind == "joint":
            assert isinstance(m, ProtoPNet)
            e = step.index
            return [
                {
                    "name": "backbone",
                    "params": list(m.backbone.parameters()),
                    "lr": decay(cfg.lr_backbone, cfg.lr_step, e),
                    "weight_decay": wd,
                },
                {
                    "name": "add_on",
                    "params": list(m.add_on.parameters()),
                    "lr": decay(cfg.lr_add_on, cfg.lr_step, e),
                    "weight_decay": wd,
                },
                {
                    "name": "prototypes",
                    "params": [m.prototype_vectors],
                    "lr": decay(cfg.lr_prototypes, cfg.lr_step, e),
                },
            ]
        if kind == "last":
            assert isinstance(m, ProtoPNet)
            return [
                {"name": "last_layer", "params": list(m.last_layer.parameters()), "lr": cfg.last_layer_lr}
            ]
        if kind == "cnn":
            net = self._cnn_model()
            return [
                {
                    "name": "all",
                    "params": list(net.parameters()),
                    "lr": decay(cfg.lr_cnn, cfg.cnn_lr_step, step.epoch),
                }
            ]
        if kind == "clip":
            assert isinstance(m, TimeSformer)
            trunk = m.trunk_parameters()
            ids = {id(p) for p in trunk}
            rest = [p for p in m.parameters() if id(p) not in ids]
            groups = [{"name": "transformer", "params": rest, "lr": decay(cfg.lr_cnn, cfg.cnn_lr_step, step.epoch)}]
            if trunk:
                lr = cfg.lr_backbone if cfg.backbone_checkpoint else cfg.lr_cnn
                groups.append({"name": "trunk", "params": trunk, "lr": decay(lr, cfg.cnn_lr_step, step.epoch),
                               "weight_decay": cfg.weight_decay})
            return groups
        if kind == "sae":
            assert isinstance(m, PatchSAEModel)
            return [{"name": "sae", "params": list(m.sae.parameters()), "lr": cfg.sae_lr}]
        if kind == "head":
            assert isinstance(m, PatchSAEModel)
            return [{"name": "head", "params": list(m.head.parameters()), "lr": cfg.head_lr}]
        raise ValueError(kind)

    def _cnn_model(self) -> FrameModel:
        return self.cnn if self.cnn is not None else self.model

    def _trainable(self, kind: str) -> nn.Module:
        """The module trained by this stage; everything else gets no gradients (and no autograd cost)."""
        net = self._cnn_model() if kind == "cnn" else self.model
        for p in self.model.parameters():
            p.requires_grad_(False)
        if self.cnn is not None:
            for p in self.cnn.parameters():
                p.requires_grad_(False)
        for g in self._groups(kind, Step(kind, 0)):
            for p in g["params"]:
                p.requires_grad_(True)
        if isinstance(self.model, PatchSAEModel):
            # The patch model keeps its backbone in eval mode when frozen; CNN pre-training needs train mode.
            self.model.backbone_frozen = kind != "cnn"
        return net

    def _optimizer(self, step: Step) -> torch.optim.Optimizer:
        groups = self._groups(step.kind, step)
        if self.opt is None or self.opt_kind != step.kind:
            cfg = self.cfg
            if cfg.optimizer == "sgd":
                self.opt = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=cfg.momentum)
            else:
                self.opt = torch.optim.Adam(groups, lr=groups[0]["lr"])
            self.opt_kind = step.kind
        else:
            for pg, g in zip(self.opt.param_groups, groups):
                pg["lr"] = g["lr"]
        return self.opt

    # -- data --
    def _loader(self, ds: FaceDataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
        gen = torch.Generator()
        gen.manual_seed(seed)
        n = len(ds)
        # A final batch of one sample breaks BatchNorm in train mode; drop it in that single case.
        drop = shuffle and n > batch_size and n % batch_size == 1
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=gen,
            collate_fn=collate_batch,
            num_workers=self.cfg.num_workers,
            drop_last=drop,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _n_batches(self, step: Step) -> int:
        n = len(self.data.train) if step.kind in ("push", "refs") else len(self.aug_ds)
        if step.kind == "sae":
            bs = self.cfg.sae_batch_size
        else:
            bs = self.cfg.batch_size
        if step.kind in ("push", "refs"):
            return math.ceil(n / bs)
        return n // bs if (n > bs and n % bs == 1) else math.ceil(n / bs)

    def _x(self, x_u8: torch.Tensor) -> torch.Tensor:
        if x_u8.ndim == 5:  # clips N×T×S×S×C
            n, t = x_u8.shape[:2]
            x = to_input(x_u8.reshape(n * t, *x_u8.shape[2:]).numpy(), self.spec)
            return x.view(n, t, *x.shape[1:]).to(self.device, non_blocking=True)
        return to_input(x_u8.numpy(), self.spec).to(self.device, non_blocking=True)

    def _ids(self, cache: FaceCache, start: int, stop: int) -> list[dict[str, Any]]:
        return [cache.source(i) for i in range(start, stop)]

    def _ordered_batches(
        self, cache: FaceCache, bs: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list]]:
        stop = len(cache) if stop is None else stop
        for s in range(start, stop, bs):
            e = min(s + bs, stop)
            x = self._x(torch.from_numpy(np.array(cache.images[s:e])))
            yield x, torch.from_numpy(np.array(cache.labels[s:e])).to(self.device), self._ids(cache, s, e)

    # -- evaluation --
    @torch.no_grad()
    def accuracy(self, cache: FaceCache | None, net: nn.Module | None = None) -> float | None:
        if cache is None or len(cache) == 0:
            return None
        net = net or self.model
        was = net.training
        net.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        bs = max(self.cfg.batch_size, 64)
        ds = self._dataset(cache, None)
        try:
            for s in range(0, len(ds), bs):
                if self.cancel is not None:
                    self.cancel.raise_if_cancelled()
                if self.dist is not None and (s // bs) % self.dist.world != self.dist.rank:
                    continue  # another rank's batch; the counts are summed below
                x_u8, y = ds.__getitems__(list(range(s, min(s + bs, len(ds)))))
                x, y = self._x(x_u8), y.to(self.device)
                with torch.autocast(self.device.type, enabled=self.amp):
                    logits = net(x)
                correct += (logits.argmax(1) == y).sum()
        finally:
            net.train(was)
        if self.dist is not None:
            correct = self.dist.all_sum(correct)
        return float(correct.item()) / len(ds)

    # -- one epoch of gradient steps --
    def _last_cached(self, step: Step, total: int) -> dict[str, Any]:
        """A last-layer epoch on cached similarities (``last_layer_cached``): CE + l1 on the weights to
        other classes, + null_weight · CE(uniform) on featureless inputs' similarities."""
        cfg, m = self.cfg, self.model
        assert isinstance(m, ProtoPNet)
        t0 = time.perf_counter()
        if self._sim_cache is None:
            sims, nulls, labels = [], [], []
            m.eval()
            with torch.no_grad():
                for x, y, _ids in self._ordered_batches(self.data.train, max(cfg.batch_size, 64)):
                    if self.cancel is not None:
                        self.cancel.raise_if_cancelled()
                    sims.append(similarity(m.forward_train(x)["min_distances"]).float())
                    labels.append(y)
                    if cfg.null_weight > 0:
                        nulls.append(similarity(m.forward_train(null_inputs(x))["min_distances"]).float())
                    self.progress(self.batches_done, total, "last layer: similarities of the training images")
            self._sim_cache = (torch.cat(sims), torch.cat(nulls) if nulls else None, torch.cat(labels))
        sims_all, null_all, y_all = self._sim_cache
        self._trainable("last")
        opt = self._optimizer(step)
        gen = torch.Generator().manual_seed(cfg.seed * 100003 + self.done)
        perm = torch.randperm(len(y_all), generator=gen)
        other = 1 - m.prototype_class_identity.t()
        bs = cfg.batch_size
        sums = {"loss": 0.0, "ce": 0.0, "l1": 0.0, "null": 0.0}
        correct = 0
        for b in range(0, len(perm), bs):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            idx = perm[b : b + bs].to(sims_all.device)
            logits = m.last_layer(sims_all[idx])
            ce = F.cross_entropy(logits, y_all[idx])
            l1 = (m.last_layer.weight * other).abs().sum()
            loss = ce + cfg.l1 * l1
            null = torch.zeros(())
            if null_all is not None:
                ni = torch.randint(len(null_all), (max(1, bs // 8),), generator=gen).to(null_all.device)
                lp = F.log_softmax(m.last_layer(null_all[ni]), 1)
                null = -lp.mean(1).mean() - math.log(lp.shape[1])
                loss = loss + cfg.null_weight * null
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = len(idx)
            for key, v in (("loss", loss), ("ce", ce), ("l1", l1), ("null", null)):
                sums[key] += float(v) * n
            correct += int((logits.detach().argmax(1) == y_all[idx]).sum())
            self.batches_done += 1
            self.progress(self.batches_done, total, f"last epoch {step.epoch + 1} (cached) batch {b // bs + 1}")
        rec: dict[str, Any] = {k: v / len(perm) for k, v in sums.items()}
        rec["train_acc"] = correct / len(perm)
        rec["lr"] = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}
        rec["train_time_s"] = time.perf_counter() - t0
        return rec

    def _epoch(self, step: Step, total: int) -> dict[str, Any]:
        cfg = self.cfg
        if step.kind == "last" and cfg.last_layer_cached:
            return self._last_cached(step, total)
        net = self._trainable(step.kind)
        opt = self._optimizer(step)
        net.train()
        sae_kind = step.kind == "sae"
        bs = cfg.sae_batch_size if sae_kind else cfg.batch_size
        loader = self._loader(self.aug_ds, bs, True, cfg.seed * 100003 + self.done)
        occ_gen = torch.Generator().manual_seed(cfg.seed * 100003 + self.done + 1)
        per_epoch = len(loader)
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        shown = ""
        t0 = time.perf_counter()
        last_show = 0.0
        guided = cfg.au_guidance > 0 and step.kind in ("cnn", "warm", "joint")
        for bi, batch in enumerate(loader):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            x_u8, y = batch[0], batch[1]
            x = self._x(x_u8)
            y = y.to(self.device, non_blocking=True)
            if cfg.occlusion_augment > 0 and not sae_kind:
                from engine.explain.occlusion import random_patch_occlusion

                x = random_patch_occlusion(x, cfg.occlusion_augment, 8, occ_gen)
            xn, weight = None, 1.0
            if self.dist is not None and not sae_kind:
                # Everything random was drawn for the global batch, as in one process; keep this rank's share.
                if cfg.null_weight > 0 and isinstance(self.model, ProtoPNet) and step.kind != "cnn":
                    xn = null_inputs(x)
                share = self.dist.share(len(y))
                weight = self.dist.weight(len(y[share]), len(y))
                x, y = x[share], y[share]
                if len(batch) > 2:
                    batch = (batch[0], batch[1], batch[2][share], *batch[3:])
            if sae_kind:
                assert isinstance(self.model, PatchSAEModel)
                sae = self.model.sae
                with torch.no_grad():
                    tokens = self.model.tokens(x).reshape(-1, self.model.backbone.out_channels).float()
                if step.epoch == 0 and bi == 0:
                    sae.init_b_dec(tokens, "median")
                for g in opt.param_groups:
                    g["lr"] = cfg.sae_lr * min(
                        1.0, (step.epoch * per_epoch + bi + 1) / max(cfg.sae_warmup_steps, 1)
                    )
                terms = sae_loss(sae, tokens, cfg.sae_l1)
                loss = terms["total"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                sae.remove_parallel_grad()
                opt.step()
                sae.normalize_decoder()
                logged = {
                    "loss": loss,
                    "mse": terms["mse"],
                    "l1": terms["l1"],
                    "l0": (terms["latents"] > 0).float().sum(-1).mean(),
                }
            else:
                with torch.autocast(self.device.type, enabled=self.amp), self._t_l(net, guided) as t_l:
                    if isinstance(self.model, ProtoPNet) and step.kind in ("warm", "joint", "last"):
                        out = self.model.forward_train(x)
                        w = ProtoPNetLossWeights(clst=cfg.clst, sep=cfg.sep, l1=cfg.l1)
                        terms = protopnet_loss(self.model, out, y, w)
                        loss = terms["total"]
                        logits = out["logits"]
                        logged = {
                            "loss": loss,
                            "ce": terms["ce"],
                            "clst": terms["clst"],
                            "sep": terms["sep"],
                            "l1": terms["l1"],
                        }
                        if cfg.null_weight > 0:
                            if xn is None:
                                null = null_input_loss(self.model, out, null_inputs(x), cfg.null_margin)
                            else:  # data-parallel: the global batch's featureless inputs and median
                                null = self._null_loss_global(out, xn)
                            loss = loss + cfg.null_weight * null
                            logged["loss"] = loss
                            logged["null"] = null
                    else:
                        logits = net(x)
                        loss = F.cross_entropy(logits, y)
                        logged = {"loss": loss, "ce": loss}
                    if guided:
                        from engine.au_guidance import guided_term

                        au, cos = guided_term(t_l[0], batch[2].to(self.device), cfg.au_guidance)
                        loss = loss + au
                        logged.update(loss=loss, au=au, au_cos=cos)
                opt.zero_grad(set_to_none=True)
                if self.dist is None:
                    self.scaler.scale(loss).backward()
                else:
                    self.scaler.scale(loss * weight).backward()
                    self.dist.average_gradients(self._all_parameters())
                self.scaler.step(opt)
                self.scaler.update()
                correct += (logits.detach().argmax(1) == y).sum()
            n = int(y.shape[0])
            seen += n
            for k, v in logged.items():
                d = v.detach().float() * n
                sums[k] = sums[k] + d if k in sums else d
            self.batches_done += 1
            now = time.perf_counter()
            # Reading a loss value syncs the GPU; do it at most a few times a second, not every batch.
            if now - last_show > 0.5:
                last_show = now
                running = float(sums["loss"]) / seen
                shown = f"loss {running:.4f}"
                self.on_record({"kind": "batch", "batch": self.batches_done, "loss": running})
            self.progress(
                self.batches_done,
                total,
                f"{step.kind} epoch {step.epoch + 1} batch {bi + 1}/{per_epoch} {shown}",
            )
        if self.dist is not None and not sae_kind:  # metrics of the global batches
            keys = sorted(sums)
            tot = self.dist.all_sum(torch.stack([sums[k].reshape(()).double() for k in keys] +
                                                [correct.double().reshape(()), torch.tensor(float(seen)).double()]))
            sums = dict(zip(keys, tot[: len(keys)]))
            correct, seen = tot[len(keys)], int(tot[-1])
        rec: dict[str, Any] = {k: float(v) / max(seen, 1) for k, v in sums.items()}
        if not sae_kind:
            rec["train_acc"] = float(correct) / max(seen, 1)
        rec["lr"] = {g.get("name", str(i)): g["lr"] for i, g in enumerate(opt.param_groups)}
        rec["train_time_s"] = time.perf_counter() - t0
        return rec

    def _null_loss_global(self, out: dict[str, torch.Tensor], xn: torch.Tensor) -> torch.Tensor:
        from engine import distributed

        assert self.dist is not None
        top = distributed.global_median(self.dist, similarity(out["min_distances"].detach()).max(1).values)
        with distributed.replicated():
            return null_input_loss(self.model, out, xn, self.cfg.null_margin, real_top=top)

    def _all_parameters(self) -> list[nn.Parameter]:
        """Every parameter once, in a fixed order (the gradient all-reduce packs them in this order)."""
        seen: dict[int, nn.Parameter] = {}
        for m in (self.model, self.cnn):
            if m is not None:
                for p in m.parameters():
                    seen.setdefault(id(p), p)
        return list(seen.values())

    def _t_l(self, net: nn.Module, guided: bool) -> Any:
        """Captures T_l's layer output while AU guidance is on (engine.au_guidance), else nothing."""
        from contextlib import nullcontext

        from engine.au_guidance import captured, feature_layer

        return captured(feature_layer(net)) if guided else nullcontext()

    # -- non-gradient steps --
    def _push(self, step: Step, total: int) -> dict[str, Any]:
        assert isinstance(self.model, ProtoPNet)
        before = self.accuracy(self.data.val)
        bs = self.cfg.batch_size
        base = self.batches_done

        def prog(d: int, t: int, m: str) -> None:
            self.batches_done = base + d
            self.progress(self.batches_done, total, m)

        allowed = None
        if self.cfg.push_on_face:
            from engine.explain.onface import face_cells, input_landmarks

            rf, pre = self.model.receptive_field, self.spec.preprocess

            def allowed(src: Any, image: np.ndarray, h: int, w: int) -> np.ndarray:
                return face_cells(input_landmarks(src, image, pre), rf, h, w)

        null_x = None
        if self.cfg.null_weight > 0:
            n0 = min(len(self.data.train), bs)
            null_x = null_inputs(self._x(torch.from_numpy(np.array(self.data.train.images[:n0]))))
        self._sim_cache = None  # the prototypes change: cached similarities are stale
        if self.dist is None:
            prov = push_prototypes(
                self.model,
                self._ordered_batches(self.data.train, bs),
                prog,
                self.cancel,
                total=math.ceil(len(self.data.train) / bs),
                allowed=allowed,
                null_x=null_x,
                null_margin=self.cfg.null_margin,
            )
        else:  # each rank pushes its contiguous shard; the global nearest patch wins (engine.distributed)
            from engine.distributed import PushMerge, shard_range

            a, b = shard_range(len(self.data.train), self.dist)
            prov = push_prototypes(
                self.model,
                self._ordered_batches(self.data.train, bs, a, b),
                prog,
                self.cancel,
                total=math.ceil((b - a) / bs),
                allowed=allowed,
                null_x=null_x,
                null_margin=self.cfg.null_margin,
                merge=PushMerge(self.dist),
            )
        after = self.accuracy(self.data.val)
        root = (self.data.summary.get("corpus") or {}).get("root")
        for p in prov:
            p["source"] = relative_source(p.get("source"), root)
        self.provenance = provenance_to_json(prov)
        self.crops = {p["prototype"]: p["crop"] for p in prov if p.get("crop") is not None}
        rec = {
            "val_acc_before_push": before,
            "val_acc_after_push": after,
            "on_face": None if allowed is None else int(sum(bool(p.get("on_allowed")) for p in prov)),
            "featureless": None if null_x is None else int(sum(bool(p.get("featureless")) for p in prov)),
            "mean_push_distance": float(np.mean([p["distance"] for p in prov if "distance" in p] or [0.0])),
        }
        self.push_history.append({"epoch": step.epoch, **rec})
        log.info("push after epoch %d: val accuracy %s → %s", step.epoch + 1, before, after)
        return rec

    @torch.no_grad()
    def _refs(self, total: int) -> dict[str, Any]:
        assert isinstance(self.model, PatchSAEModel)
        refs = LatentReferences(top=self.cfg.references_top)
        self.model.eval()
        for x, _, ids in self._ordered_batches(self.data.train, self.cfg.batch_size):
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            ex = self.model.explain(x)
            refs.update(ex["latents"], ids, ex["latent_maps"], from_input(x, self.model.spec))
            self.batches_done += 1
            self.progress(self.batches_done, total, "retrieving latent reference images")
        self.references = refs.to_json()
        self.latent_patches = refs.patches()
        live = sum(1 for lat in self.references["latents"] if lat["frequency"] > 0)
        return {"live_latents": live, "n_latents": len(self.references["latents"])}

    # -- persistence --
    def metadata(self, final: bool) -> dict[str, Any]:
        cfg = self.cfg
        meta: dict[str, Any] = {
            "classes": list(self.data.classes),
            "label_setting": self.data.label_setting,
            "preprocess": dict(cfg.preprocess),
            "training": {
                "config": cfg.to_json(),
                "command": list(sys.argv),
                "seed": cfg.seed,
                "git_commit": git_commit(),
                "device": str(self.device),
                "data": self.data.summary,
                "train_samples": len(self.data.train),
                "val_samples": 0 if self.data.val is None else len(self.data.val),
                "steps_done": self.done,
                "steps_total": len(self.steps),
                "complete": final,
            },
            "metrics": {"last_epoch": self.last_metrics, "push": self.push_history},
        }
        if self.provenance:
            meta["prototypes"] = self.provenance
        if self.references is not None:
            meta["latent_references"] = self.references
        if getattr(self, "au_summary", None):
            meta["training"]["au_guidance"] = self.au_summary
        return meta

    def save_last(self) -> None:
        if self.dist is not None and not self.dist.main:
            return
        last = self.out / "last"
        tmp = self.out / "last.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_checkpoint(tmp, self.model, self.metadata(final=False), self.crops or None,
                        latent_patches=self.latent_patches or None)
        tensors: dict[str, torch.Tensor] = {}
        opt_doc: dict[str, Any] | None = None
        if self.opt is not None:
            t, opt_doc = optimizer_state_to_files(self.opt)
            tensors.update({f"optim.{k}": v for k, v in t.items()})
        if self.cnn is not None:
            # The pre-training head is not part of the patch model; keep it for a resumed pre-training.
            tensors.update(
                {
                    f"cnn_head.{k}": v.detach().cpu().contiguous().clone()
                    for k, v in self.cnn.head.state_dict().items()
                }
            )
        save_file(tensors, str(tmp / OPTIM_TENSORS))
        if self.crops:
            save_file(
                {str(j): torch.from_numpy(np.ascontiguousarray(c)) for j, c in self.crops.items()},
                str(tmp / CROPS_TENSORS),
            )
        state = {
            "version": TRAINING_STATE_VERSION,
            "done": self.done,
            "batches_done": self.batches_done,
            "plan": [s.to_json() for s in self.steps],
            "config": self.cfg.to_json(),
            "opt_kind": self.opt_kind,
            "optimizer": opt_doc,
            "scaler": self.scaler.state_dict() if self.amp else None,
            "provenance": self.provenance,
            "push_history": self.push_history,
            "references": self.references,
            "last_metrics": self.last_metrics,
        }
        (tmp / STATE_JSON).write_text(json.dumps(state))
        old = self.out / "last.old"
        shutil.rmtree(old, ignore_errors=True)
        if last.exists():
            os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self) -> bool:
        last = self.out / "last"
        if not (last / STATE_JSON).exists() and (self.out / "last.old" / STATE_JSON).exists():
            last = self.out / "last.old"  # crashed between the two renames of save_last
        if not (last / STATE_JSON).exists():
            return False
        state = json.loads((last / STATE_JSON).read_text())
        if state.get("version") != TRAINING_STATE_VERSION:
            raise ValueError(
                f"{last / STATE_JSON}: written by another VidXAI version; start a new run (resume=False)"
            )
        if state["plan"] != [s.to_json() for s in self.steps]:
            raise ValueError(
                f"{last}: that run had another training plan (different settings); resume it with its "
                "own settings or start a new run in another out_dir"
            )
        model, _ = load_checkpoint(last, "cpu")
        self.model.load_state_dict(model.state_dict())
        tensors = load_file(str(last / OPTIM_TENSORS))
        if self.cnn is not None:
            head = {k[len("cnn_head.") :]: v for k, v in tensors.items() if k.startswith("cnn_head.")}
            if head:
                self.cnn.head.load_state_dict(head)
        self.done = int(state["done"])
        self.batches_done = int(state["batches_done"])
        self.provenance = state["provenance"]
        self.push_history = state["push_history"]
        self.references = state["references"]
        self.last_metrics = state["last_metrics"]
        if (last / CROPS_TENSORS).exists():
            self.crops = {int(k): v.numpy() for k, v in load_file(str(last / CROPS_TENSORS)).items()}
        self.latent_patches = {(j, r): a for j, ps in read_latent_patches(last).items() for r, a in enumerate(ps)}
        if state["opt_kind"] is not None and self.done < len(self.steps):
            prev = self.steps[self.done - 1]
            nxt = self.steps[self.done]
            if nxt.kind == state["opt_kind"] == prev.kind:
                self._trainable(nxt.kind)
                opt = self._optimizer(nxt)
                opt.load_state_dict(
                    optimizer_state_from_files(
                        {k[len("optim.") :]: v for k, v in tensors.items() if k.startswith("optim.")},
                        state["optimizer"],
                    )
                )
                for pg, g in zip(opt.param_groups, self._groups(nxt.kind, nxt)):
                    pg["lr"] = g["lr"]
        if state.get("scaler") and self.amp:
            self.scaler.load_state_dict(state["scaler"])
        log.info("resuming %s after step %d of %d", self.out, self.done, len(self.steps))
        return True

    def write_metrics(self, rec: dict[str, Any]) -> None:
        if self.dist is not None and not self.dist.main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    # -- the run --
    def run(self, resume: bool) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        metrics = self.out / "metrics.jsonl"
        if self.dist is not None and not self.dist.main:
            # Rank 0 alone tidies the folder; the others only read what it holds (resume).
            if resume:
                self.restore()
            self.dist.barrier()
        elif not (resume and self.restore()):
            if (self.out / "last").exists() or metrics.exists():
                log.warning("%s holds an earlier run; starting over (resume=True continues it)", self.out)
            shutil.rmtree(self.out / "last", ignore_errors=True)
            metrics.unlink(missing_ok=True)
        else:
            self._trim_metrics()
        if self.dist is not None and self.dist.main:
            self.dist.barrier()
        total = sum(self._n_batches(s) for s in self.steps)
        epoch_no = sum(1 for s in self.steps[: self.done] if s.kind not in ("push", "refs"))
        while self.done < len(self.steps):
            step = self.steps[self.done]
            seed_everything(self.cfg.seed * 100003 + self.done)
            t0 = time.perf_counter()
            if step.kind == "push":
                rec = {"kind": "push", "step": self.done, **self._push(step, total)}
            elif step.kind == "refs":
                rec = {"kind": "references", "step": self.done, **self._refs(total)}
            else:
                rec = {
                    "kind": "epoch",
                    "epoch": epoch_no,
                    "stage": step.kind,
                    "stage_epoch": step.epoch,
                    "step": self.done,
                    **self._epoch(step, total),
                }
                epoch_no += 1
                last_of_stage = (
                    self.done + 1 >= len(self.steps) or self.steps[self.done + 1].kind != step.kind
                )
                if step.kind != "sae" and (last_of_stage or epoch_no % max(self.cfg.val_every, 1) == 0):
                    rec["val_acc"] = self.accuracy(
                        self.data.val, self._cnn_model() if step.kind == "cnn" else None
                    )
            rec["time_s"] = time.perf_counter() - t0
            self.last_metrics = rec
            self.done += 1
            self.save_last()
            self.write_metrics(rec)
            self.on_record({**rec, "end_batch": self.batches_done})
            log.info("%s", json.dumps(rec))
        final = self.out / "model"
        if self.dist is not None:
            self.dist.barrier()
            if not self.dist.main:
                return final
        save_checkpoint(final, self.model, self.metadata(final=True), self.crops or None,
                        latent_patches=self.latent_patches or None)
        shutil.copyfile(metrics, final / "metrics.jsonl")
        if not self.cfg.keep_last:
            shutil.rmtree(self.out / "last", ignore_errors=True)
        self.progress(total, total, "training finished")
        return final

    def _trim_metrics(self) -> None:
        # Lines written after the restored step (a crash between save_last and the metrics write) go.
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in lines if json.loads(ln).get("step", -1) < self.done]
        path.write_text("".join(ln + "\n" for ln in keep))


def train(
    data: TrainData | PreparedData | DataConfig | str | Path,
    cfg: TrainConfig,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    resume: bool = False,
    on_record: RecordFn = no_record,
) -> Path:
    """Train ``cfg.arch`` on ``data``; returns the final checkpoint folder ``cfg.out_dir/model``.

    ``on_record`` gets the numbers as they are made: {"kind": "batch", "batch", "loss"} (the epoch's running
    mean, a few times a second) and each step's metrics.jsonl record with "end_batch" (batches done).

    Raises ``Cancelled`` within one batch of ``cancel`` being set; ``out_dir/last/`` then holds the last
    completed step (loadable with ``load_checkpoint``) and ``resume=True`` continues from it.
    """
    if cfg.arch == "landmark-lstm":  # landmark sequences, not face crops: its own loop, same contract
        from engine.landmark_train import train_landmarks

        return train_landmarks(data, cfg, progress, cancel, resume, on_record)
    seed_everything(cfg.seed)
    from engine import distributed

    d = distributed.current()
    if d is not None and not d.main:
        d.barrier()  # rank 0 prepares (and caches) the data first; the others then read its cache
        progress = no_progress
    td = _as_train_data(data, cfg, progress, cancel)
    if d is not None and d.main:
        d.barrier()
    if len(td.train) == 0:
        raise ValueError("the training split is empty; check the data folder and split settings")
    trainer = _Trainer(td, cfg, progress, cancel, on_record)
    log.info(
        "training %s/%s on %d samples (%d classes) on %s, %d steps",
        cfg.arch,
        cfg.backbone,
        len(td.train),
        len(td.classes),
        trainer.device,
        len(trainer.steps),
    )
    try:
        return trainer.run(resume)
    except Cancelled:
        log.info(
            "training cancelled after %d of %d steps; %s holds the last completed one",
            trainer.done,
            len(trainer.steps),
            Path(cfg.out_dir) / "last",
        )
        raise


if __name__ == "__main__":  # `torchrun --nproc-per-node N -m engine.train DATA --out DIR …` (vidxai train's options)
    from engine.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))


__all__ = [
    "Step",
    "TrainConfig",
    "TrainData",
    "git_commit",
    "optimizer_state_from_files",
    "optimizer_state_to_files",
    "plan",
    "seed_everything",
    "select_device",
    "train",
]
