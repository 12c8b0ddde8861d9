"""Ingest throughput on the shared clips: decode alone, faces alone, the whole overlapped ingest.

    .venv/bin/python bench/ingest.py [VIDEO ...] [--repeat N]

Prints frames/s per stage and end to end, the ratio of the whole ingest to its slowest stage (the
pipeline overlaps decode and face work, so it should approach 1), and peak memory (RSS high-water mark).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.faces import FaceTracker
from engine.pipeline import ingest
from engine.video import open_video

SHARED = REPO.parent / "shared" / "data" / "videos"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_clip(path: Path, repeat: int) -> dict:
    with open_video(path) as r:
        n = r.frame_count
        frames = []
        t0 = time.perf_counter()
        for _ in range(repeat):
            for f in r:
                if len(frames) < n:
                    frames.append(f)
        decode = n * repeat / (time.perf_counter() - t0)
    tracker = FaceTracker()
    t0 = time.perf_counter()
    for _ in range(repeat):
        tracker.reset()
        for f in frames:
            tracker.process(f)
    faces = n * repeat / (time.perf_counter() - t0)
    del frames
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i in range(repeat):
            ingest(path, Path(tmp) / f"s{i}.vxs")
        whole = n * repeat / (time.perf_counter() - t0)
    # Decode and faces run one after the other on one frame in the sequential case; overlapped, the
    # pipeline is bounded by the slower of the two when there are cores for both.
    slowest = min(decode, faces)
    return {"clip": path.name, "frames": n, "decode": decode, "faces": faces, "ingest": whole,
            "vs_slowest": whole / slowest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("videos", nargs="*", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    clips = args.videos or sorted(p for p in SHARED.rglob("*") if p.suffix in {".flv", ".mp4", ".mov"})
    if not clips:
        sys.exit(f"no clips given and none found under {SHARED}")
    print(f"{'clip':<28}{'frames':>7}{'decode/s':>10}{'faces/s':>10}{'ingest/s':>10}{'÷slowest':>10}")
    for c in clips:
        r = bench_clip(c, args.repeat)
        print(f"{r['clip']:<28}{r['frames']:>7}{r['decode']:>10.1f}{r['faces']:>10.1f}{r['ingest']:>10.1f}"
              f"{r['vs_slowest']:>10.2f}")
    print(f"peak memory (RSS): {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
