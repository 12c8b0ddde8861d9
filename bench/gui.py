"""GUI responsiveness on a real clip, offscreen: what a reviewer feels when scrubbing and playing.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui.py [VIDEO] [--seeks N] [--frames T]

Reports: time from "open" to frame 0 on screen; random-seek and single-step latency (request → frame
on screen, mean and 95th percentile); playback at 1× and 2× (frames shown, dropped, worst lag behind
the video clock); the longest the GUI thread went without processing events while playing; and the
cost of recomputing the EWMA curves when α moves, for a long synthetic score array (T frames × 7).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np

from vidxai_gui.app import SETTINGS_ENV, app_settings, ensure_app

DEFAULT_CLIP = REPO.parent / "shared" / "data" / "videos" / "crema-d" / "1001_DFA_HAP_XX.flv"


def pump_until(app, cond, timeout: float = 10.0) -> float:
    """Process events until cond() holds; returns the seconds it took."""
    t0 = time.perf_counter()
    while not cond():
        app.processEvents()
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the window did not get there in time")
        time.sleep(0.0005)
    return time.perf_counter() - t0


def stats(xs: list[float]) -> str:
    a = np.asarray(xs) * 1000
    return f"mean {a.mean():6.1f} ms   p95 {np.percentile(a, 95):6.1f} ms   max {a.max():6.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", default=str(DEFAULT_CLIP))
    ap.add_argument("--seeks", type=int, default=40)
    ap.add_argument("--frames", type=int, default=30_000, help="length of the synthetic score array for α")
    args = ap.parse_args()
    os.environ[SETTINGS_ENV] = tempfile.mkdtemp(prefix="vidxai-bench-")
    app = ensure_app()
    from vidxai_gui.main_window import MainWindow

    w = MainWindow(app_settings())
    w.resize(1280, 800)
    w.show()
    app.processEvents()
    p = w.player

    t_open = time.perf_counter()
    w.open_path(args.video)
    pump_until(app, lambda: p.current == 0)
    print(f"video: {args.video} ({p.frame_count} frames, {p.fps:.2f} fps)")
    print(f"open → frame 0 on screen: {1000 * (time.perf_counter() - t_open):.1f} ms")

    rng = np.random.default_rng(0)
    seeks = []
    for k in rng.integers(0, p.frame_count, args.seeks):
        k = int(k) if int(k) != p.current else (int(k) + 1) % p.frame_count
        t0 = time.perf_counter()
        w.timeline.seekRequested.emit(k)
        pump_until(app, lambda k=k: p.current == k)
        seeks.append(time.perf_counter() - t0)
    print(f"random seek: {stats(seeks)}")

    p.seek(0)
    pump_until(app, lambda: p.current == 0)
    steps = []
    for k in range(1, min(p.frame_count, 40)):
        t0 = time.perf_counter()
        p.step(1)
        pump_until(app, lambda k=k: p.current == k)
        steps.append(time.perf_counter() - t0)
    print(f"step +1:     {stats(steps)}")

    for speed in (1.0, 2.0):
        p.seek(0)
        pump_until(app, lambda: p.current == 0)
        p.set_speed(speed)
        p.dropped = 0
        shown0 = p.shown_count
        lag = 0
        stall = 0.0
        last = time.perf_counter()
        t0 = time.perf_counter()
        p.play()
        while p.playing:
            app.processEvents()
            now = time.perf_counter()
            stall = max(stall, now - last)
            last = now
            lag = max(lag, p.due_frame() - p.current)
            time.sleep(0.001)
        wall = time.perf_counter() - t0
        expected = (p.timestamps[-1] - p.timestamps[0]) / speed
        print(f"play {speed:g}×: {p.shown_count - shown0} shown, {p.dropped} dropped, worst lag {lag} frames, "
              f"{wall:.2f} s for {expected:.2f} s of video, longest GUI stall {1000 * stall:.1f} ms")

    T = args.frames
    probs = rng.dirichlet(np.ones(7), size=T)
    valid = rng.random(T) > 0.05
    w.timeline.set_video(T, 25.0)
    w.timeline.set_scores([f"c{i}" for i in range(7)], probs, valid)
    times = []
    for v in (10, 20, 30, 40, 50, 60):
        t0 = time.perf_counter()
        w.timeline.alpha_slider.setValue(v)
        app.processEvents()
        times.append(time.perf_counter() - t0)
    print(f"α change, {T} frames × 7 classes (EWMA + 7 curves + repaint): {stats(times)}")
    w.shutdown()


if __name__ == "__main__":
    main()
