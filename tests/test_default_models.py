"""The bundled default models: they load, and their recorded FER2013 test accuracy is what a fresh
`vidxai evaluate` on the same fixed 700-image subset measures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.checkpoint import load_checkpoint
from engine.evaluate import evaluate
from engine.resources import PREFERENCE, default_model_dir, shipped_models

RECORD = "fer2013:test:700:seed0"
MODELS = shipped_models()


def test_the_default_is_the_most_interpretable_shipped_model() -> None:
    if not MODELS:
        pytest.skip("no default model in resources/models yet (see resources/models/train.sh)")
    names = [m.name for m in MODELS]
    want = next(n for n in PREFERENCE if n in names)
    assert default_model_dir().name == want


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
