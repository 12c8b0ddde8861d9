"""Annotation autosave on an hour-long session: the old whole-file commit against the sidecar write.

    .venv/bin/python bench/autosave.py [--frames 108000] [--saves 60] [--dir DIR]

Builds a synthetic session with the real sessions API (faces, scores, intrinsic maps, prototype
similarities for every frame: 108,000 frames = 60 min at 30 fps), then times an annotation autosave
with a growing annotation list, two ways:

* before: what `Session.save_annotations` did until the sidecar existed — write /annotations/json into
  a working copy of the session file and commit it (copy + fsync + os.replace of the whole file);
* after: what the GUI's autosaver does now per edit — open the session for writing, `save_annotations`
  (one atomic write of `<name>.vxs.annotations.json`), close.

Prints median / p95 of each in ms and the session size. The target is < 50 ms after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sessions import Annotations, Segment, Session, Tier
from sessions.store import _write_bytes

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def build(path: Path, T: int, chunk: int = 4096) -> float:
    """An analysed hour-long session, written as the pipeline writes it; returns its size in MB."""
    rng = np.random.default_rng(0)
    video = {"path": "/data/hour.mp4", "sha256": "0" * 64, "fps": 30.0, "frame_count": T, "width": 1920,
             "height": 1080, "duration": T / 30.0, "rotation": 0, "codec": "h264"}
    with Session.create(path, video, np.arange(T) / 30.0) as s:
        s.begin_analysis({"name": "protopnet", "sha256": "ab" * 32}, CLASSES, ["intrinsic"], 0.3)
        for k in range(0, T, chunk):
            n = min(chunk, T - k)
            box = np.tile(np.array([800, 300, 930, 430], np.float32), (n, 1)) + rng.normal(0, 2, (n, 1))
            lm = np.repeat(box[:, None, :2], 68, 1) + rng.uniform(0, 130, (n, 68, 2)).astype(np.float32)
            s.write_faces(k, np.ones(n, bool), box, lm, np.full(n, 0.9, np.float32), np.ones(n, np.uint8),
                          np.arange(k, k + n) % 5 == 0)
            p = rng.dirichlet(np.ones(len(CLASSES)), n).astype(np.float32)
            s.write_frames("explanations/intrinsic/maps", k,
                           np.repeat(np.repeat(rng.random((n, 3, 3)), 4, 1), 4, 2).astype(np.float16))
            s.write_frames("prototypes/similarities", k, rng.random((n, 70)).astype(np.float32))
            s.write_frames("prototypes/top_index", k, rng.integers(0, 70, (n, 5)).astype(np.int32))
            s.write_scores(k, np.ones(n, bool), np.log(p), p)
            s.commit()
        s.finish_analysis(np.full((T, len(CLASSES)), 1 / len(CLASSES), np.float32), 0.3, "happy")
    return path.stat().st_size / 1e6


def annotations(n: int) -> Annotations:
    return Annotations([Tier("reviewer"), Tier("notes", "comment")],
                       [Segment("reviewer" if i % 3 else "notes", i * 300, i * 300 + 90, "happy",
                                f"note {i}: lip corners up", "dr a", "2026-01-01T00:00:00+00:00",
                                "agree" if i % 2 else "") for i in range(n)])


def before(path: Path, ann: Annotations, state: dict) -> None:
    """The previous save_annotations + set_review_state: rewrite the session file and commit it."""
    with Session.open(path, writable=True) as s:
        f = s._w()  # working copy of the whole file
        _write_bytes(f["review"], "state", json.dumps(state).encode())
        _write_bytes(f["annotations"], "json", json.dumps(ann.to_json()).encode())
        s.commit()


def after(path: Path, ann: Annotations, state: dict) -> None:
    """vidxai_gui.annotations._write, without Qt: what one autosave costs now."""
    with Session.open(path, writable=True) as s:
        s.save_annotations(ann, review_state=state)


def timed(fn, path: Path, saves: int) -> list[float]:
    out = []
    for i in range(saves):
        ann, state = annotations(i + 1), {"frame": i * 300, "alpha": 0.3, "method": "intrinsic"}
        t0 = time.perf_counter()
        fn(path, ann, state)
        out.append((time.perf_counter() - t0) * 1000)
        with Session.open(path) as r:  # every save is readable at once (not timed)
            assert len(r.annotations().segments) == i + 1
    return out


def stats(ms: list[float]) -> str:
    q = np.percentile(ms, [50, 95])
    return f"median {q[0]:7.1f} ms   p95 {q[1]:7.1f} ms   (n={len(ms)}, max {max(ms):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=108_000, help="frames in the session (108000 = 1 h at 30 fps)")
    ap.add_argument("--saves", type=int, default=60, help="autosaves timed each way")
    ap.add_argument("--before-saves", type=int, default=None, help="old-way saves (default: --saves)")
    ap.add_argument("--dir", default=None, help="folder for the session (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "hour.vxs"
        t0 = time.perf_counter()
        mb = build(path, args.frames)
        print(f"session: {args.frames} frames ({args.frames / 30 / 60:.0f} min at 30 fps), {mb:.0f} MB, "
              f"built in {time.perf_counter() - t0:.0f} s")
        old = timed(before, path, args.before_saves or args.saves)
        new = timed(after, path, args.saves)
        print(f"autosave before (whole-file commit): {stats(old)}")
        print(f"autosave after  (sidecar write):     {stats(new)}")
        print(f"speed-up (median): {statistics.median(old) / statistics.median(new):.0f}x; "
              f"target < 50 ms: {'met' if np.percentile(new, 95) < 50 else 'NOT met'} (p95)")


if __name__ == "__main__":
    main()
