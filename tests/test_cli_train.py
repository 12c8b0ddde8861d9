"""`vidxai train` and `vidxai evaluate` as a batch job runs them: real FER2013 images, real files."""

from __future__ import annotations

import json
from pathlib import Path

from engine.faithfulness import methods_for
from tests.test_cli import vidxai


def test_train_then_evaluate_with_occlusion(tmp_path: Path, fer_dir: Path) -> None:
    model = tmp_path / "tiny"
    env_cache = {"VIDXAI_CACHE": str(tmp_path / "cache")}
    r = vidxai("train", fer_dir, "--arch", "cnn", "--backbone", "small", "--labels", "fer2013", "--epochs", "1",
               "--limit-per-class", "20", "--batch-size", "16", "--out", model, env=env_cache)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((model / "model" / "model.json").read_text())
    assert meta["spec"]["arch"] == "cnn" and meta["spec"]["classes"][3] == "happy"
    lines = (model / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "val_acc" in json.loads(lines[0])

    report = tmp_path / "report"
    r = vidxai("evaluate", fer_dir, "--model", model, "--limit", "35", "--occlusion", "--record", "--out", report,
               env=env_cache)
    assert r.returncode == 0, r.stderr[-2000:]
    ev = json.loads((report / "evaluation.json").read_text())
    assert ev["n"] == 35 and f"accuracy {ev['accuracy']:.4f}" in r.stdout
    assert (report / "confusion.png").stat().st_size > 1000
    occ = json.loads((report / "occlusion.json").read_text())
    assert occ["n"] == 35 and set(occ["curves"]) == set(methods_for("cnn"))
    assert {"intrinsic", "lrp", "gradcam", "gxi", "ig"} <= set(occ["curves"])
    for c in occ["curves"].values():
        assert len(c["morf"]) == len(c["lerf"]) == 6
        assert c["morf"][0] == c["lerf"][0] == occ["accuracy"]  # 0 % occluded is the plain accuracy
    assert len(occ["conditions"]) == 7 and (report / "confusion_hide_eyes_nose_mouth.png").exists()
    assert (report / "faithfulness.png").exists()
    recorded = json.loads((model / "model" / "model.json").read_text())["metadata"]["evaluations"]
    assert recorded[f"{fer_dir.name}:test:35:seed0"]["accuracy"] == ev["accuracy"]
    from engine.checkpoint import load_checkpoint

    load_checkpoint(model)  # recording leaves the weights' checksum valid


def test_train_refuses_an_unknown_setting(tmp_path: Path, fer_dir: Path) -> None:
    r = vidxai("train", fer_dir, "--set", "learning_rate=3", "--out", tmp_path / "m")
    assert r.returncode == 2 and "learning_rate" in r.stderr and "Traceback" not in r.stderr
