"""engine.evaluate: accuracy matches a direct computation, the report is written, video-level EWMA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.aggregate import ewma, video_decision
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.data import DataConfig, FaceCache, SamplingConfig, prepare
from engine.evaluate import evaluate, write_report
from engine.jobs import Cancelled, CancelToken
from engine.models import ModelSpec, build_model, to_input
from engine.train import TrainConfig, train

PP = {"mode": "face", "size": 32, "grayscale": True, "margin": 0.1, "occlude": [], "fill": 0}


@pytest.fixture(scope="module")
def trained(fer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("eval")
    data = prepare(
        DataConfig(
            str(fer_dir),
            sampling=SamplingConfig(fast=True),
            cache_root=str(root / "crops"),
            max_per_class={"train": 60, "val": 5, "test": 30},
        ),
        PP,
    )
    out = train(
        data, TrainConfig(arch="cnn", preprocess=PP, epochs=1, device="cpu", out_dir=str(root / "run"))
    )
    return out, data


def test_accuracy_matches_direct_computation(trained, tmp_path: Path) -> None:
    model_dir, data = trained
    res = evaluate(model_dir, data, "test")
    model, _ = load_checkpoint(model_dir)
    cache = data.cache("test")
    with torch.no_grad():
        pred = model(to_input(np.array(cache.images), model.spec)).argmax(1).numpy()
    labels = np.asarray(cache.labels)
    assert res.n == 210 == len(labels)
    assert res.accuracy == pytest.approx(float((pred == labels).mean()), abs=1e-12)
    cm = np.array(res.confusion)
    assert cm.sum() == 210 and (cm.sum(1) == 30).all()
    assert np.trace(cm) == int((pred == labels).sum())
    for i, c in enumerate(res.classes):
        assert res.per_class_recall[c] == pytest.approx(cm[i, i] / 30)
    assert res.video_accuracy is None  # still images

    paths = write_report(res, tmp_path / "report")
    doc = json.loads(paths["json"].read_text())
    assert doc["accuracy"] == res.accuracy and doc["confusion"] == res.confusion
    with Image.open(paths["confusion"]) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 200

    sub = evaluate(model_dir, data, "test", limit=50, seed=1)
    sub2 = evaluate(model_dir, data, "test", limit=50, seed=1)
    assert sub.n == 50 and sub.labels == sub2.labels and sub.predictions == sub2.predictions


def test_wrong_classes_and_cancel(trained, tmp_path: Path) -> None:
    model_dir, data = trained
    other = FaceCache.from_arrays(np.zeros((4, 32, 32, 1), np.uint8), np.array([0, 1, 0, 1]), ["x", "y"])
    with pytest.raises(ValueError, match="label setting"):
        evaluate(model_dir, other)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        evaluate(model_dir, data, "test", cancel=token)


def test_data_labelled_in_a_subset_of_the_model_classes(trained) -> None:
    """A 7-class FER2013 model on data with three of its classes, in another order (as CREMA-D's six): the
    labels are read in the model's classes, the model still chooses among all seven; a class the model does
    not know is refused, naming it."""
    model_dir, data = trained
    cache = data.cache("test")
    names = ["happy", "angry", "sad"]
    keep = np.flatnonzero(np.isin(np.asarray(cache.labels), [cache.classes.index(c) for c in names]))
    images = np.asarray(cache.images)[keep]
    own = np.array([names.index(cache.classes[int(y)]) for y in np.asarray(cache.labels)[keep]])
    sub = FaceCache.from_arrays(images, own, names)
    res = evaluate(model_dir, sub)
    model, _ = load_checkpoint(model_dir)
    with torch.no_grad():
        pred = model(to_input(images, model.spec)).argmax(1).numpy()
    truth = np.array([model.spec.classes.index(names[y]) for y in own])
    assert res.n == len(keep) == 90 and res.classes == model.spec.classes
    assert res.labels == truth.tolist() and res.accuracy == pytest.approx(float((pred == truth).mean()), abs=1e-12)
    cm = np.array(res.confusion)
    assert cm.shape == (7, 7) and cm.sum() == 90 and (cm.sum(1)[[0, 3, 5]] == 30).all()
    assert res.per_class_recall["fear"] is None and res.per_class_recall["happy"] is not None
    with pytest.raises(ValueError, match="'calm'"):
        evaluate(model_dir, FaceCache.from_arrays(images[:2], np.array([0, 1]), ["happy", "calm"]))


def test_video_level_uses_ewma_last_state(tmp_path: Path) -> None:
    torch.manual_seed(0)
    classes = ["neg", "pos"]
    spec = ModelSpec(arch="cnn", classes=classes, preprocess={**PP, "size": 16})
    model = build_model(spec)
    folder = save_checkpoint(tmp_path / "m", model, {"classes": classes})
    rng = np.random.default_rng(0)
    n_videos, per_video = 5, 7
    images = rng.integers(0, 256, (n_videos * per_video, 16, 16, 1), dtype=np.uint8)
    item_index = np.repeat(np.arange(n_videos), per_video)
    # frames stored out of order: the evaluator must sort them by frame index before smoothing
    frame_index = np.concatenate([rng.permutation(per_video) * 3 for _ in range(n_videos)])
    labels = np.repeat(np.arange(n_videos) % 2, per_video)
    cache = FaceCache(
        images,
        labels,
        classes,
        item_index,
        frame_index,
        [{"path": f"v{i}.mp4", "label": classes[i % 2], "kind": "video"} for i in range(n_videos)],
    )
    res = evaluate(folder, cache, alpha=0.4)
    model, _ = load_checkpoint(folder)
    correct = 0
    for v in range(n_videos):
        rows = np.flatnonzero(item_index == v)
        rows = rows[np.argsort(frame_index[rows])]
        with torch.no_grad():
            probs = torch.softmax(model(to_input(images[rows], spec)), 1).numpy()
        decision = video_decision(ewma(probs, 0.4), classes)
        assert res.video_decisions[v]["decision"] == decision
        correct += decision == classes[v % 2]
    assert res.videos == n_videos and res.video_accuracy == pytest.approx(correct / n_videos)
    paths = write_report(res, tmp_path / "r")
    assert paths["video_confusion"].is_file()


def test_video_decision_alpha_follows_tau_fps_and_sampling(tmp_path: Path, hap_clip: Path) -> None:
    """Without `alpha`, each video is smoothed as analysis smooths it: τ seconds at the video's fps, for
    scores of every k-th frame (α = 1 − exp(−k/(fps·τ))); a file that cannot be read is taken at 25 fps."""
    from engine.aggregate import alpha_from_tau
    from engine.video import open_video

    torch.manual_seed(0)
    classes = ["neg", "pos"]
    spec = ModelSpec(arch="cnn", classes=classes, preprocess={**PP, "size": 16})
    folder = save_checkpoint(tmp_path / "m", build_model(spec), {"classes": classes})
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 16, 16, 1), dtype=np.uint8)
    cache = FaceCache(images, np.zeros(12, np.int64), classes, np.repeat([0, 1], 6),
                      np.tile(np.arange(6) * 5, 2),  # every 5th frame
                      [{"path": str(hap_clip), "label": "neg", "kind": "video"},
                       {"path": str(tmp_path / "moved.mp4"), "label": "neg", "kind": "video"}])
    res = evaluate(folder, cache, tau_s=0.5)
    with open_video(hap_clip) as r:
        fps = r.fps
    real, moved = res.video_decisions
    assert real["fps"] == pytest.approx(fps) and real["alpha"] == pytest.approx(alpha_from_tau(0.5, fps / 5))
    assert moved["fps"] is None and moved["alpha"] == pytest.approx(alpha_from_tau(0.5, 25.0 / 5))
    assert res.tau_s == 0.5 and res.alpha is None
    assert real["alpha"] != pytest.approx(0.3)  # not the old fixed α
