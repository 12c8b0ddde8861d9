"""engine.train on real FER2013 subsets (CPU): every architecture beats chance on held-out test images,
seeded runs repeat bit for bit, cancel is prompt and leaves a loadable checkpoint, resume continues it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint
from engine.data import AugmentConfig, DataConfig, FaceCache, PreparedData, SamplingConfig, prepare
from engine.data.provenance import resolve_ref
from engine.evaluate import evaluate
from engine.jobs import Cancelled, CancelToken
from engine.train import (
    TrainConfig,
    TrainData,
    optimizer_state_from_files,
    optimizer_state_to_files,
    plan,
    train,
)

# 32×32 greyscale crops keep a CPU epoch over 2,800 images to a few seconds; fast mode (FER2013 is
# already cropped) keeps the cache build to ~2 s. Chance is 1/7: 2× chance = 28.6 %.
PP = {"mode": "face", "size": 32, "grayscale": True, "margin": 0.1, "occlude": [], "fill": 0}
TWICE_CHANCE = 2 / 7
FLIP = AugmentConfig(flip=True, shift=0.0, brightness=0.0)


@pytest.fixture(scope="module")
def fer_subset(fer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    root = tmp_path_factory.mktemp("crops")
    dc = DataConfig(
        str(fer_dir),
        sampling=SamplingConfig(fast=True),
        cache_root=str(root),
        max_per_class={"train": 400, "val": 20, "test": 50},
    )
    return prepare(dc, PP)


def _cfg(out: Path, **kw) -> TrainConfig:
    base = {
        "preprocess": PP,
        "batch_size": 32,
        "augment": FLIP,
        "prototypes_per_class": 2,
        "proto_dim": 32,
        "n_latents": 64,
        "device": "cpu",
        "out_dir": str(out),
    }
    base.update(kw)
    return TrainConfig(**base)


def _lines(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cnn_model(fer_subset: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cnn")
    return train(fer_subset, _cfg(out, arch="cnn", epochs=5, lr_cnn=1e-3))


def test_cnn_beats_chance(cnn_model: Path, fer_subset: PreparedData) -> None:
    res = evaluate(cnn_model, fer_subset, "test")
    assert res.n == 350
    assert res.accuracy >= TWICE_CHANCE, res.accuracy
    lines = _lines(cnn_model.parent)
    assert [ln["epoch"] for ln in lines] == [0, 1, 2, 3, 4]
    for ln in lines:
        assert {"loss", "ce", "train_acc", "val_acc", "lr", "time_s"} <= set(ln)
    _, meta = load_checkpoint(cnn_model)
    assert meta["classes"] == fer_subset.classes and meta["label_setting"] == "fer2013"
    assert meta["preprocess"] == PP
    tr = meta["training"]
    assert tr["config"]["epochs"] == 5 and tr["seed"] == 0 and tr["complete"] is True
    assert tr["data"]["corpus"]["label_setting"] == "fer2013" and tr["train_samples"] == len(
        fer_subset.items("train")
    )


def test_protopnet_beats_chance_with_push(cnn_model: Path, fer_subset: PreparedData, tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        arch="protopnet",
        backbone_checkpoint=str(cnn_model),
        epochs=3,
        warmup_epochs=1,
        push_start=100,
        last_layer_epochs=2,
        lr_backbone=1e-4,
    )
    out = train(fer_subset, cfg)
    res = evaluate(out, fer_subset, "test")
    assert res.accuracy >= TWICE_CHANCE, res.accuracy
    lines = _lines(tmp_path)
    epochs = [ln for ln in lines if ln["kind"] == "epoch"]
    assert [ln["stage"] for ln in epochs] == ["warm", "joint", "joint", "last", "last"]
    for ln in epochs:
        assert {"loss", "ce", "clst", "sep", "l1", "train_acc", "val_acc"} <= set(ln)
    push = [ln for ln in lines if ln["kind"] == "push"]
    assert (
        len(push) == 1
        and push[0]["val_acc_before_push"] is not None
        and push[0]["val_acc_after_push"] is not None
    )
    _model, meta = load_checkpoint(out)
    prov = meta["prototypes"]
    train_paths = {str(Path(it.path).resolve()) for it in fer_subset.items("train")}
    assert len(prov) == 14
    root = Path(fer_subset.corpus.root)
    for p in prov:
        # Named relative to the data set (fer2013:train/<class>/<file>), found again under its parent folder.
        assert "path" not in p["source"] and p["source"]["ref"].startswith(f"{root.name}:train/")
        assert str(resolve_ref(p["source"]["ref"], root.parent).resolve()) in train_paths
        assert p["source"]["label"] == p["class"]
        assert len(p["rf_box"]) == 4 and len(p["act_box"]) == 4
    assert len(meta["checkpoint"]["prototypes"]) == 14
    assert all(Path(p).is_file() for p in meta["checkpoint"]["prototypes"])
    assert meta["metrics"]["push"][0]["epoch"] == 2


def test_patchsae_beats_chance(cnn_model: Path, fer_subset: PreparedData, tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        arch="patchsae",
        backbone_checkpoint=str(cnn_model),
        sae_epochs=2,
        sae_batch_size=32,
        sae_warmup_steps=20,
        head_epochs=3,
        head_lr=1e-2,
        references_top=3,
    )
    out = train(fer_subset, cfg)
    res = evaluate(out, fer_subset, "test")
    assert res.accuracy >= TWICE_CHANCE, res.accuracy
    lines = _lines(tmp_path)
    sae = [ln for ln in lines if ln.get("stage") == "sae"]
    assert len(sae) == 2 and all({"loss", "mse", "l1", "l0"} <= set(ln) for ln in sae)
    assert sae[1]["mse"] < sae[0]["mse"]
    model, meta = load_checkpoint(out)
    norms = model.sae.W_dec.detach().norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    refs = meta["latent_references"]
    assert refs["n_frames"] == len(fer_subset.items("train")) and len(refs["latents"]) == 64
    live = [lat for lat in refs["latents"] if lat["references"]]
    assert live and all(len(lat["references"]) <= 3 for lat in live)
    # every reference ships its patch (uint8 crops of the 48×48 grey input), best first
    from engine.checkpoint import read_latent_patches

    patches = read_latent_patches(out)
    assert {lat["latent"]: len(lat["references"]) for lat in live} == {j: len(p) for j, p in patches.items()}
    first = patches[live[0]["latent"]][0]
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 1 and first.shape[0] <= 48


def _small(fer_subset: PreparedData, n: int = 96) -> TrainData:
    full = fer_subset.cache("train")
    idx = np.random.default_rng(0).choice(len(full), n, replace=False)
    return TrainData(full.subset(np.sort(idx)), full.subset(np.arange(20)), fer_subset.classes, "fer2013")


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    model, _ = load_checkpoint(folder)
    return model.state_dict()


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights(fer_subset: PreparedData, tmp_path: Path) -> None:
    data = _small(fer_subset)
    kw = {
        "arch": "protopnet",
        "epochs": 2,
        "warmup_epochs": 1,
        "push_start": 100,
        "last_layer_epochs": 1,
        "num_workers": 0,
        "augment": AugmentConfig(),
    }
    a = train(data, _cfg(tmp_path / "a", **kw))
    b = train(data, _cfg(tmp_path / "b", **kw))
    c = train(data, _cfg(tmp_path / "c", seed=1, **kw))
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert _same(wa, wb)
    assert not _same(wa, wc)


def test_cancel_is_prompt_and_resume_matches_uninterrupted(fer_subset: PreparedData, tmp_path: Path) -> None:
    data = _small(fer_subset)
    kw = {"arch": "cnn", "epochs": 3, "batch_size": 16, "optimizer": "sgd", "augment": AugmentConfig()}
    per_epoch = 96 // 16
    token = CancelToken()
    seen: list[tuple[int, str]] = []
    cancelled_at: list[float] = []

    def progress(done: int, total: int, msg: str) -> None:
        seen.append((done, msg))
        if done == per_epoch + 2 and not token.cancelled:  # mid-way through the second epoch
            cancelled_at.append(time.perf_counter())
            token.cancel()

    out = tmp_path / "run"
    with pytest.raises(Cancelled):
        train(data, _cfg(out, **kw), progress=progress, cancel=token)
    assert time.perf_counter() - cancelled_at[0] < 3.0
    assert max(d for d, _ in seen) == per_epoch + 2  # not one more batch ran
    assert "epoch 2" in seen[-1][1] and "loss" in seen[-1][1]
    state = json.loads((out / "last" / "training_state.json").read_text())
    assert state["done"] == 1
    _model, meta = load_checkpoint(out / "last")  # the last completed epoch loads as a model
    assert meta["training"]["complete"] is False and meta["training"]["steps_done"] == 1
    assert len(_lines(out)) == 1
    assert not (out / "model").exists()

    resumed = train(data, _cfg(out, **kw), resume=True)
    assert [ln["epoch"] for ln in _lines(out)] == [0, 1, 2]
    straight = train(data, _cfg(tmp_path / "straight", **kw))
    assert _same(_weights(resumed), _weights(straight))  # optimiser momentum and RNG streams were restored


def test_cancel_from_thread(fer_subset: PreparedData, tmp_path: Path) -> None:
    token = CancelToken()
    timer = threading.Timer(1.0, token.cancel)
    timer.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(Cancelled):
            train(_small(fer_subset, 400), _cfg(tmp_path, arch="cnn", epochs=50), cancel=token)
    finally:
        timer.cancel()
    assert time.perf_counter() - t0 < 6.0


def test_optimizer_state_roundtrip_without_pickle() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    tensors, doc = optimizer_state_to_files(opt)
    json.dumps(doc)  # plain JSON, no objects
    net2 = torch.nn.Linear(4, 3)
    net2.load_state_dict(net.state_dict())
    opt2 = torch.optim.Adam(net2.parameters(), lr=1e-2)
    opt2.load_state_dict(optimizer_state_from_files(tensors, doc))
    x = torch.randn(8, 4)
    for o, n in ((opt, net), (opt2, net2)):
        o.zero_grad()
        n(x).pow(2).mean().backward()
        o.step()
    assert torch.equal(net.weight, net2.weight)


def test_plan_follows_methods_schedule() -> None:
    cfg = TrainConfig(
        arch="protopnet", epochs=100, warmup_epochs=5, push_start=30, push_every=10, last_layer_epochs=20
    )
    steps = plan(cfg)
    pushes = [s.epoch for s in steps if s.kind == "push"]
    assert pushes == [30, 40, 50, 60, 70, 80, 90, 99]
    assert sum(s.kind == "warm" for s in steps) == 5 and sum(s.kind == "joint" for s in steps) == 95
    assert sum(s.kind == "last" for s in steps) == 20 * len(pushes)
    first_push = next(i for i, s in enumerate(steps) if s.kind == "push")
    assert {s.kind for s in steps[first_push + 1 : first_push + 21]} == {"last"}
    sae = plan(TrainConfig(arch="patchsae", epochs=2, sae_epochs=3, head_epochs=1))
    assert [s.kind for s in sae] == ["cnn", "cnn", "sae", "sae", "sae", "head", "refs"]
    assert TrainConfig().last_layer_lr == 1e-3
    repush = plan(TrainConfig(arch="protopnet", epochs=0, init_checkpoint="m", last_layer_epochs=2))
    assert [s.kind for s in repush] == ["push", "last", "last"]
    with pytest.raises(ValueError, match="init_checkpoint"):
        TrainConfig(arch="protopnet", epochs=0)


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    cache = FaceCache.from_arrays(np.zeros((4, 32, 32, 1), np.uint8), np.array([0, 1, 0, 1]), ["a", "b"])
    train(TrainData(cache, None, ["a", "b"]), _cfg(tmp_path, arch="cnn", epochs=1))
    with pytest.raises(ValueError, match="plan|settings"):
        train(TrainData(cache, None, ["a", "b"]), _cfg(tmp_path, arch="cnn", epochs=2), resume=True)


def test_occlusion_augment_changes_training_and_is_seeded(fer_subset: PreparedData, tmp_path: Path) -> None:
    """docs/EXPLANATIONS.md §9: occlusion_augment hides random 8×8 patches at the test's fill while training."""
    data = _small(fer_subset, 64)
    kw = {"arch": "cnn", "epochs": 1, "num_workers": 0, "augment": AugmentConfig()}
    plain = _weights(train(data, _cfg(tmp_path / "plain", **kw)))
    a = _weights(train(data, _cfg(tmp_path / "a", occlusion_augment=0.5, **kw)))
    b = _weights(train(data, _cfg(tmp_path / "b", occlusion_augment=0.5, **kw)))
    assert _same(a, b)
    assert not _same(a, plain)
    assert TrainConfig().occlusion_augment == 0.0
