"""AU-guided training (METHODS §7): the target maps, the guided term, the cached landmarks, and a tiny
guided CNN on real FER2013 crops that agrees with the AU maps more than the same CNN trained without."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.au_guidance import au_targets, cache_landmarks, captured, feature_layer, guided_term
from engine.checkpoint import load_checkpoint
from engine.data import AugmentConfig, DataConfig, FaceCache, SamplingConfig, prepare
from engine.explain.au import action_unit_map, alignment_loss, au_map
from engine.models import to_input
from engine.train import TrainConfig, train
from tests.test_au import synthetic_face

PP = {"mode": "face", "size": 32, "grayscale": True, "margin": 0.1, "occlude": [], "fill": 0}


def test_au12_is_reproducible_and_centred_on_the_lip_corners() -> None:
    lm = synthetic_face()
    m = action_unit_map(lm, (12,), (128, 128), blur=0.0)
    assert np.array_equal(m, action_unit_map(lm.copy(), (12,), (128, 128), blur=0.0))  # reproducible
    ys, xs = np.nonzero(m)
    # Two equal blobs: each half's centre of mass is its lip corner, the whole one their midpoint.
    for half, corner in ((xs < 64, 48), (xs >= 64, 54)):
        centre = np.array([xs[half].mean(), ys[half].mean()])
        assert np.abs(centre - lm[corner]).max() < 1.0, (centre, lm[corner])
    assert not m[lm[19, 1].astype(int)].any()  # nothing on the brow row
    # The expression map is the max of its AUs: happiness (6, 12, 25) covers AU12's blobs.
    happy = au_map(lm, "happy", (128, 128), blur=0.0)
    assert (happy[m > 0] == 1.0).all()


def test_guided_term_skips_samples_without_a_map() -> None:
    a = torch.from_numpy(au_map(synthetic_face(), "happy", (128, 128)))
    maps = torch.stack([a, torch.zeros_like(a)])  # the second sample is neutral
    t = torch.rand(2, 8, 16, 16)
    loss, cos = guided_term(t, maps, 4.0)
    assert loss.item() == pytest.approx(alignment_loss(t[:1], a[None], 4.0).item(), rel=1e-6)
    assert cos.item() == pytest.approx(1 - loss.item() / 4.0, rel=1e-6)
    assert guided_term(t * 9.0, maps, 4.0)[0].item() == pytest.approx(loss.item(), rel=1e-5)  # scale-free
    same, _ = guided_term(a[None, None].expand(2, 3, -1, -1), maps, 4.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)  # loss(A, A) = 0
    zero, _ = guided_term(t, torch.zeros_like(maps), 4.0)
    assert zero.item() == 0.0


def test_targets_follow_the_label_and_refuse_unknown_classes() -> None:
    lm = np.stack([synthetic_face(20.0, (6, 6)), synthetic_face(20.0, (6, 6)), np.full((68, 2), np.nan)])
    maps = au_targets(lm.astype(np.float32), np.array([0, 1, 0]), ["happy", "neutral"], 32)
    assert maps.dtype == np.uint8 and maps[0].max() == 255
    assert not maps[1].any() and not maps[2].any()  # neutral; no landmarks
    with pytest.raises(ValueError, match="codebook"):
        au_targets(lm, np.array([0, 0, 0]), ["positive", "negative"], 32)
    for bad in ({"arch": "patchsae"}, {"arch": "cnn", "preprocess": {**PP, "mode": "reassembled"}}):
        with pytest.raises(ValueError, match="AU guidance"):  # refused before any data is cropped
            TrainConfig(**{"preprocess": PP, **bad, "au_guidance": 4.0})


@pytest.fixture(scope="module")
def fer_small(fer_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("crops")
    dc = DataConfig(str(fer_dir), cache_root=str(root), max_per_class={"train": 24, "val": 4, "test": 4})
    return prepare(dc, PP)


def test_cache_stores_crop_landmarks_and_fills_old_caches(fer_small, fer_dir: Path, tmp_path: Path) -> None:
    cache = fer_small.cache("train")
    assert cache.landmarks is not None and cache.landmarks.shape == (len(cache), 68, 2)
    ok = np.isfinite(cache.landmarks).all(axis=(1, 2))
    assert ok.mean() > 0.9
    # In crop pixels: the face fills the 32×32 crop.
    assert np.nanmin(cache.landmarks) > -4 and np.nanmax(cache.landmarks) < 36
    # A fast-mode cache holds none; they are found once and stored beside the crops.
    fast = prepare(DataConfig(str(fer_dir), cache_root=str(tmp_path), sampling=SamplingConfig(fast=True),
                              max_per_class={"train": 1}), PP).cache("train")
    assert not np.isfinite(fast.landmarks).any()
    lm = cache_landmarks(fast, PP)
    assert np.isfinite(lm).all(axis=(1, 2)).mean() > 0.7
    assert np.array_equal(FaceCache.load(fast.path).landmarks, lm, equal_nan=True)


def _cos_on_train(model_dir: Path, cache: FaceCache, maps: np.ndarray) -> float:
    model, _ = load_checkpoint(model_dir)
    model.eval()
    with torch.no_grad(), captured(feature_layer(model)) as got:
        model(to_input(np.asarray(cache.images), model.spec))
    _, cos = guided_term(got[0], torch.from_numpy(maps.astype(np.float32)), 1.0)
    return float(cos)




def test_guided_cnn_agrees_with_the_au_maps_more(fer_small, tmp_path: Path, one_thread) -> None:
    base = {"arch": "cnn", "epochs": 2, "batch_size": 32, "preprocess": PP, "device": "cpu", "lr_cnn": 1e-3,
                "augment": AugmentConfig(flip=True, shift=0.08, brightness=0.0)}
    plain = train(fer_small, TrainConfig(**base, out_dir=str(tmp_path / "plain")))
    guided = train(fer_small, TrainConfig(**base, au_guidance=4.0, out_dir=str(tmp_path / "guided")))
    _, meta = load_checkpoint(guided)
    assert meta["training"]["au_guidance"]["samples_with_map"] > 100
    rec = meta["metrics"]["last_epoch"]
    assert {"au", "au_cos", "ce"} <= set(rec) and rec["loss"] == pytest.approx(rec["ce"] + rec["au"], rel=1e-4)
    cache = fer_small.cache("train")
    maps = au_targets(cache.landmarks, np.asarray(cache.labels), fer_small.classes, 32)
    c_plain, c_guided = _cos_on_train(plain, cache, maps), _cos_on_train(guided, cache, maps)
    assert c_guided > c_plain + 0.05, (c_plain, c_guided)


def test_guided_protopnet_trunk(fer_small, tmp_path: Path, one_thread) -> None:
    cfg = TrainConfig(arch="protopnet", epochs=2, warmup_epochs=1, last_layer_epochs=1, push_on_face=False,
                      prototypes_per_class=1, proto_dim=16, null_weight=0.0, batch_size=32, preprocess=PP,
                      device="cpu", au_guidance=4.0, out_dir=str(tmp_path))
    train(fer_small, cfg)
    recs = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    by_stage = {r.get("stage"): r for r in recs if r["kind"] == "epoch"}
    for stage in ("warm", "joint"):  # the add-on output z is T_l while the trunk trains
        assert 0 < by_stage[stage]["au"] <= 8 and -1 <= by_stage[stage]["au_cos"] <= 1
    assert "au" not in by_stage["last"]  # only the last layer trains: no gradient reaches T_l


def test_cam_cos_per_class(fer_small, one_thread) -> None:
    from engine.au_guidance import cam_cos_per_class
    from engine.models import ModelSpec, build_model

    torch.manual_seed(0)  # an untrained CNN: the measure, not the model, is under test
    model = build_model(ModelSpec(arch="cnn", classes=fer_small.classes, preprocess=PP)).eval()
    cache = fer_small.cache("val")
    res = cam_cos_per_class(model, cache, PP)
    assert res["per_class"]["neutral"] is None and res["n"]["neutral"] == 0  # neutral has no AU map
    have = [v for v in res["per_class"].values() if v is not None]
    assert len(have) >= 5 and all(0.0 <= v <= 1.0 for v in have) and 0 < res["mean"] < 1


def test_evaluate_cam_cos_prints_and_records_per_class(fer_dir: Path, tmp_path: Path, monkeypatch, capsys,
                                                       one_thread) -> None:
    """`vidxai evaluate --cam-cos`: CAM-COS per labelled class on the evaluated subset, printed and, with
    --record, stored beside the accuracy; the same figures as cam_cos_per_class on that subset directly."""
    import shutil

    from engine.au_guidance import cam_cos_per_class
    from engine.cli import main
    from engine.evaluate import split_cache
    from engine.resources import models_dir

    src = models_dir() / "cnn"
    if not (src / "model.json").is_file():
        pytest.skip("no shipped CNN (resources/models/train.sh)")
    model_dir = tmp_path / "cnn"
    shutil.copytree(src, model_dir)
    monkeypatch.setenv("VIDXAI_CACHE", str(tmp_path / "cache"))
    assert main(["evaluate", str(fer_dir), "--model", str(model_dir), "--limit", "40", "--cam-cos", "--record",
                 "--out", str(tmp_path / "report")]) == 0
    printed = {ln.split()[1]: ln.split()[2] for ln in capsys.readouterr().out.splitlines()
               if ln.startswith("  cam-cos ")}
    model, _ = load_checkpoint(model_dir)
    cache = split_cache(prepare(DataConfig(str(fer_dir)), model.spec.preprocess), "test", 40, 0)
    direct = cam_cos_per_class(model, cache, model.spec.preprocess)
    assert set(printed) == set(model.spec.classes) and printed["neutral"] == "n/a"
    for c, v in direct["per_class"].items():
        assert v is None or printed[c] == f"{v:.3f}", (c, printed[c], v)
    rec = json.loads((model_dir / "model.json").read_text())["metadata"]["evaluations"]["fer2013:test:40:seed0"]
    assert rec["cam_cos"]["n"] == direct["n"] and rec["cam_cos"]["mean"] == pytest.approx(direct["mean"])
    assert 0 < sum(direct["n"].values()) < 40  # neutral faces (and any without landmarks) have no map
    # index: a subset of the rows gives those rows' cosines only
    part = cam_cos_per_class(model, cache, model.spec.preprocess, index=np.arange(10))
    assert sum(part["n"].values()) <= 10
