"""Training the TimeSformer: clip windows from the frame sampler, one augmentation per clip, fine-tuning
on the shared CREMA-D clips (loss falls, the checkpoint reloads, the result changes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.data import (
    AugmentConfig,
    ClipDataset,
    DataConfig,
    FaceCache,
    SamplingConfig,
    clip_windows,
    prepare,
)
from engine.models import ModelSpec, build_model
from engine.preprocess import PreprocessConfig
from engine.train import TrainConfig, TrainData, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY = {"frames": 4, "dim": 16, "depth": 1, "heads": 2}



def _cache(frames_per_item: list[int], size: int = 8) -> FaceCache:
    """Items with the given numbers of sampled frames (0: a still image), rows shuffled."""
    item, frame = [], []
    for i, k in enumerate(frames_per_item):
        if k == 0:
            item.append(i)
            frame.append(-1)
        for f in range(k):
            item.append(i)
            frame.append(5 * f)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(item))
    item_a, frame_a = np.array(item)[order], np.array(frame)[order]
    images = rng.integers(0, 256, (len(item), size, size, 1), dtype=np.uint8)
    labels = item_a % 2
    return FaceCache(images, labels.astype(np.int64), ["a", "b"], item_a.astype(np.int64), frame_a.astype(np.int64),
                     [{"path": f"v{i}", "label": "a", "kind": "video"} for i in range(len(frames_per_item))])


def test_clip_windows_follow_frame_order() -> None:
    c = _cache([6, 2, 0])
    w = clip_windows(c, frames=3, stride=2)
    got = [(int(c.item_index[r[0]]), [int(c.frame_index[j]) for j in r]) for r in w]
    assert got == [(0, [0, 5, 10]), (0, [10, 15, 20]), (0, [15, 20, 25]),   # last window flush with the end
                   (1, [0, 5, 5]),                                           # short video: last frame repeated
                   (2, [-1, -1, -1])]                                        # a still image
    assert all(len({int(c.item_index[j]) for j in r}) == 1 for r in w)


def test_one_augmentation_per_clip() -> None:
    c = _cache([8, 8, 8, 8])
    ds = ClipDataset(c, 4, 4, AugmentConfig(flip=True, shift=0.0, brightness=0.0))
    torch.manual_seed(0)
    x, y = ds.__getitems__(list(range(len(ds))))
    assert x.shape == (len(ds), 4, 8, 8, 1) and y.shape == (len(ds),)
    raw = c.images[ds.windows]
    flipped = []
    for k in range(len(ds)):
        same = [np.array_equal(x[k, t].numpy(), raw[k, t]) for t in range(4)]
        mirrored = [np.array_equal(x[k, t].numpy(), raw[k, t, :, ::-1]) for t in range(4)]
        assert all(same) or all(mirrored)
        flipped.append(all(mirrored))
    assert any(flipped) and not all(flipped)   # the flip is drawn per clip


def test_still_images_train_as_one_frame_clips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cache = FaceCache.from_arrays(rng.integers(0, 256, (24, 16, 16, 1), dtype=np.uint8), np.arange(24) % 2, ["a", "b"])
    cfg = TrainConfig(arch="timesformer", preprocess={"size": 16}, epochs=1, batch_size=8, device="cpu",
                      timesformer={**TINY, "tokens": "patch", "patch": 8}, out_dir=str(tmp_path / "run"))
    out = train(TrainData(cache, cache, ["a", "b"]), cfg)
    model, meta = load_checkpoint(out)
    assert model.spec.options["tokens"] == "patch" and meta["training"]["complete"]


def test_finetune_on_crema_clips(tmp_path: Path, crema_dir: Path) -> None:
    pp = PreprocessConfig().to_json()
    data = prepare(DataConfig(path=str(crema_dir), label_setting="crema-d", cache_root=str(tmp_path / "cache"),
                              sampling=SamplingConfig(stride=5, max_frames=8)), pp)
    torch.manual_seed(0)
    start = build_model(ModelSpec(arch="timesformer", classes=data.classes, preprocess=pp, label_setting="crema-d",
                                  options=TINY))
    save_checkpoint(tmp_path / "start", start, {"classes": data.classes})
    cfg = TrainConfig(arch="timesformer", label_setting="crema-d", preprocess=pp, epochs=3, batch_size=4,
                      lr_cnn=3e-3, device="cpu", timesformer=TINY, clip_stride=2, init_checkpoint=str(tmp_path / "start"),
                      augment=AugmentConfig(flip=False, shift=0.0, brightness=0.0), out_dir=str(tmp_path / "run"))
    out = train(data, cfg)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines] == ["clip"] * 3
    assert lines[-1]["loss"] < lines[0]["loss"]
    tuned, meta = load_checkpoint(out)
    assert tuned.spec.options == TINY and meta["training"]["train_samples"] > 0
    ds = ClipDataset(data.cache("train"), 4, 2)
    assert len(ds) > len(data.items("train"))          # several windows per clip
    x_u8, _ = ds.__getitems__([0, 1])
    from engine.models import to_input

    x = to_input(x_u8.reshape(-1, *x_u8.shape[2:]).numpy(), tuned.spec).view(2, 4, 1, 48, 48)
    with torch.no_grad():
        assert not torch.allclose(tuned.eval()(x), start.eval()(x), atol=1e-3)
