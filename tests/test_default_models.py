"""The bundled default models: they load, and their recorded FER2013 test accuracy is what a fresh
`vidxai evaluate` on the same fixed 700-image subset measures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.checkpoint import load_checkpoint
from engine.evaluate import evaluate
from engine.resources import default_model_dir, measured_choice, model_measurements, shipped_models

RECORD = "fer2013:test:700:seed0"
MODELS = shipped_models()


def test_the_default_is_chosen_by_measurement() -> None:
    if not MODELS:
        pytest.skip("no default model in resources/models yet (see resources/models/train.sh)")
    records = {m.name: model_measurements(m) for m in MODELS}
    assert all(a is not None and d is not None for a, d in records.values()), records
    assert default_model_dir().name == measured_choice(records)
    # Within a point of the most accurate, the most faithful default map wins; far less accurate never does.
    assert measured_choice({"a": (0.64, 0.30), "b": (0.638, 0.40), "c": (0.60, 0.9)}) == "b"
    assert measured_choice({"a": (0.64, None)}) is None


PROTOPNETS = [m for m in MODELS if json.loads((m / "model.json").read_text())["spec"]["arch"] == "protopnet"]


@pytest.mark.parametrize("model_dir", PROTOPNETS, ids=[m.name for m in PROTOPNETS])
def test_protopnet_prototypes_on_faces_and_flat_input_is_no_evidence(model_dir: Path, fer_dir: Path) -> None:
    """docs/EXPLANATIONS.md §4–§5: ≥ 90 % of the prototypes on the face (landmark-hull test); a flat input
    at the normalisation mean gets no class above p = 0.35 and no prototype above the median top-prototype
    similarity of real FER2013 test faces."""
    import numpy as np
    import torch

    from engine.analyzer import FrameAnalyzer
    from engine.data import DataConfig, prepare
    from engine.data.provenance import source_path
    from engine.evaluate import split_cache
    from engine.explain.onface import face_cells, input_landmarks

    a = FrameAnalyzer(model_dir)
    rf = a.model.receptive_field
    on = 0
    for p in a.meta["prototypes"]:
        src = dict(p["source"])
        path = source_path(src, fer_dir.parent)
        assert path is not None, src
        src["path"] = str(path)
        lm = input_landmarks(src, np.zeros((48, 48, 1), np.uint8), a.spec.preprocess)
        on += bool(face_cells(lm, rf, 6, 6)[tuple(p["position"])])
    assert on >= 0.9 * len(a.meta["prototypes"]), on
    with torch.no_grad():
        flat = a.model.explain(torch.zeros(1, 1, 48, 48))
    assert float(torch.softmax(flat["logits"], 1).max()) <= 0.35
    cache = split_cache(prepare(DataConfig(path=str(fer_dir)), a.spec.preprocess), "test", 700, 0)
    with torch.no_grad():
        real = torch.cat([a.model.explain(a.tensor(np.asarray(cache.images[s:s + 128])))["similarities"].max(1).values
                          for s in range(0, len(cache), 128)])
    assert float(flat["similarities"].max()) <= float(real.median())


@pytest.mark.parametrize("model_dir", MODELS, ids=[m.name for m in MODELS])
def test_recorded_accuracy_matches_a_fresh_evaluation(model_dir: Path, fer_dir: Path) -> None:
    model, meta = load_checkpoint(model_dir)
    assert model.spec.classes == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    recorded = meta["evaluations"][RECORD]
    fresh = evaluate(model_dir, fer_dir, "test", limit=700, seed=0)
    assert fresh.n == recorded["n"] == 700
    assert abs(fresh.accuracy - recorded["accuracy"]) <= 0.02, (fresh.accuracy, recorded["accuracy"])
    assert fresh.accuracy >= 2 / 7  # well above chance (1/7)
    doc = json.loads((model_dir / "model.json").read_text())
    training = doc["metadata"]["training"]
    assert training["seed"] == 0 and training["command"][1] == "train" and training["complete"]
    if model.spec.arch == "protopnet":
        pngs = sorted((model_dir / "prototypes").glob("*.png"))
        assert len(pngs) == model.spec.n_prototypes  # the crops that explain it ship with it
