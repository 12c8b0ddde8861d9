"""TimeSformer model-stage throughput on the CPU: frames/s of sliding T-frame windows, plain and with each
clip relevance method (engine.explain.spacetime), for the hybrid and the pure-ViT shapes.

    .venv/bin/python bench/timesformer_speed.py [--threads N] [--window-stride S] [--batch B] [--repeats R]

A window of T frames is scored every S frames, so each frame costs T/S window-frames; frames/s here is
video frames per second of the model stage alone (no decoding, faces or preprocessing; random weights,
which cost the same as trained ones). Prints the CNN baseline's frames/s in the same run for a ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch

from engine.explain.spacetime import METHODS, relevance
from engine.models import ModelSpec, build_model

SHAPES = {
    "hybrid-48 (default)": ({"tokens": "cnn"}, 48),
    "patch8-48": ({"tokens": "patch", "patch": 8}, 48),
    "patch16-112 (METHODS §5)": ({"tokens": "patch", "patch": 16}, 112),
}


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window-stride", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4, help="windows per model call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    classes = [str(i) for i in range(7)]
    cnn = build_model(ModelSpec(arch="cnn", classes=classes)).eval()
    x = torch.randn(args.batch * args.frames, 1, 48, 48)
    with torch.inference_mode():
        s = timed(lambda: cnn(x), args.repeats)
    print(f"cnn (frame model, 48 px): {x.shape[0] / s:.0f} frames/s")
    per_frame = args.frames / args.window_stride    # window-frames computed per video frame
    for name, (opts, size) in SHAPES.items():
        m = build_model(ModelSpec(arch="timesformer", classes=classes, preprocess={"size": size},
                                  options={"frames": args.frames, **opts})).eval()
        clips = torch.randn(args.batch, args.frames, 1, size, size)
        with torch.inference_mode():
            s = timed(lambda m=m, clips=clips: m(clips), args.repeats)
        frames = args.batch * args.frames / per_frame
        row = [f"plain {frames / s:.0f}"]
        for method in METHODS:
            s = timed(lambda m=m, clips=clips, method=method: relevance(m, clips, method), args.repeats)
            row.append(f"{method} {frames / s:.0f}")
        print(f"timesformer {name}, {m.n_parameters / 1e6:.2f} M params, T={args.frames}, window stride "
              f"{args.window_stride}: frames/s " + ", ".join(row), flush=True)


if __name__ == "__main__":
    main()
