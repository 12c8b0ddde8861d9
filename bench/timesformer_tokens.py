"""Which patch tokens for the TimeSformer: the hybrid (the shipped CNN's trunk) against a pure ViT, on a
FER2013 subset: validation accuracy per epoch against CPU seconds (README §TimeSformer).

    OMP_NUM_THREADS=1 .venv/bin/python bench/timesformer_tokens.py [PER_CLASS [EPOCHS [hybrid|hybrid-scratch|patch ...]]]

Trains on PER_CLASS (default 300) images per class of FER2013's train split (validation: 100 per class of
the seeded validation split), batch 64, Adam 5e-4 (the hybrid's trunk at lr_backbone 1e-4), seed 0, into
runs/timesformer_<name>/. The same code as session 6's run that made the README's figures.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.data import DataConfig, prepare
from engine.preprocess import PreprocessConfig
from engine.train import TrainConfig, train

FER = REPO.parent / "shared" / "data" / "images" / "fer2013"
RUNS = {
    "hybrid": {"timesformer": {"tokens": "cnn"}, "backbone_checkpoint": str(REPO / "resources" / "models" / "cnn")},
    "hybrid-scratch": {"timesformer": {"tokens": "cnn"}},
    "patch": {"timesformer": {"tokens": "patch", "patch": 8}},
}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    per = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    which = sys.argv[3:] or ["hybrid", "patch"]
    pp = PreprocessConfig().to_json()
    data = prepare(DataConfig(path=str(FER.resolve()), label_setting="fer2013",
                              max_per_class={"train": per, "val": 100}), pp)
    for name in which:
        t0, w0 = time.process_time(), time.time()
        out = REPO / "runs" / f"timesformer_{name}"
        cfg = TrainConfig(arch="timesformer", label_setting="fer2013", preprocess=pp, epochs=epochs,
                          batch_size=64, lr_cnn=5e-4, device="cpu", out_dir=str(out), **RUNS[name])
        train(data, cfg)
        lines = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
        print(name, "val_acc", [r.get("val_acc") for r in lines], "train_s/epoch",
              [round(r["train_time_s"]) for r in lines], "cpu_s", round(time.process_time() - t0),
              "wall_s", round(time.time() - w0), flush=True)


if __name__ == "__main__":
    main()
