"""The content-free centre-prior row (bench/explain_quality.py's baseline) for any shipped models, alone:
one Gaussian (σ 1.5 cells) at the input's centre, the same map for every face, through the occlusion test on
the FER2013 700-image test subset (seed 0). A map says more than "the centre matters" only above this line.

    .venv/bin/python bench/centre_prior.py timesformer [cnn ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.explain_quality import DATA, FRACTIONS, centre_prior
from engine.analyzer import FrameAnalyzer
from engine.data import DataConfig, prepare
from engine.evaluate import split_cache
from engine.explain.occlusion import faithfulness_curves
from engine.faithfulness import mean_delta


def main(names: list[str], limit: int = 700) -> None:
    fer = DATA / "images" / "fer2013"
    for name in names:
        analyzer = FrameAnalyzer(ROOT / "resources" / "models" / name)
        cache = split_cache(prepare(DataConfig(path=str(fer)), analyzer.spec.preprocess), "test", limit, 0)
        x = analyzer.tensor(np.asarray(cache.images[:]))
        y = np.asarray(cache.labels[:])
        c = faithfulness_curves(analyzer.model, x, y, centre_prior(len(y), analyzer.spec.input_size), FRACTIONS, 8)
        print(f"{name:10s} centre prior (σ 1.5 cells, same map every face) {limit}-subset: "
              f"MoRF {' '.join(f'{v:.2f}' for v in c['morf'])} LeRF {' '.join(f'{v:.2f}' for v in c['lerf'])} "
              f"mean Δ {mean_delta(c):+.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["timesformer"])
