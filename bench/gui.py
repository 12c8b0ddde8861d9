"""GUI responsiveness on a real clip, offscreen: what a reviewer feels when scrubbing and playing.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui.py [VIDEO] [--model DIR | --session S.vxs]
        [--seeks N] [--play S]

The clip is first analysed with the default shipped model (``--model none``: the bare video), so every
frame shown carries its overlays (heatmap, face box, landmarks, prototype box) and the docks update.
Reports: time from "open" to frame 0 on screen; random-seek and single-step latency from the request to
the frame *and its overlays painted* (median, p95, max); playback at 1× for ``--play`` seconds (the clip
played over and over) and at 2× once (frames shown, dropped, worst lag behind the video clock, the
longest the GUI thread went without processing events); the cost of recomputing the EWMA curves when α
moves for a long synthetic score array (T frames × 7); and the process's memory (RSS) along the way.
Seeks, steps and playback are measured with View ▸ Smooth heatmaps over time on (the default), off and on
again in the one run, and the medians of the last two printed side by side. ``--session S.vxs`` opens an analysed session
instead of analysing VIDEO (a long video: playback then stops after ``--play`` seconds).

``--av-drift MINUTES`` measures only the sound's lock (issue 18): VIDEO repeated to MINUTES with PyAV (stream
copy into a temp folder, never kept), played at 1× with its sound (a FakeSink on the wall clock where there is
no audio device), printing the largest |shown frame's timestamp − audio clock| over the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
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
    return (f"median {np.median(a):6.1f} ms   mean {a.mean():6.1f} ms   p95 {np.percentile(a, 95):6.1f} ms   "
            f"max {a.max():6.1f} ms")


def rss_mb() -> str:
    """Current and peak resident memory of this process."""
    try:
        with open("/proc/self/statm") as fh:
            now = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        now = float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return f"RSS {now:.0f} MB (peak {peak:.0f} MB)"


def analysed_session(video: str, model: str) -> str:
    """The clip analysed by ``model`` (the shipped default when "default") through the CLI; its .vxs."""
    out = tempfile.mkdtemp(prefix="vidxai-bench-session-")
    cmd = [sys.executable, "-m", "engine.cli", "analyze", video, "--out", out]
    if model != "default":
        cmd += ["--model", model]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    session = next(Path(out).glob("*.vxs"))
    print(f"analysed {Path(video).name} in {time.perf_counter() - t0:.1f} s → {session}")
    return str(session)


def overlay_read_cost(session: str, method: str, frame_hw: tuple[int, int], frame_count: int) -> None:
    """What one frame's overlay data costs on the decode thread (vidxai_gui.review.HeatmapReader), stepping
    through up to 300 frames: the stored map, the map smoothed over time reading its neighbours' rows for
    every frame (no cache), and smoothed with the reader's rolling cache (engine.temporal.MapRows)."""
    from engine.overlay import frame_evidence
    from engine.temporal import DEFAULT_MAP_SIGMA_S
    from sessions import Session
    from vidxai_gui.review import HeatmapReader

    frames = range(frame_count // 2, min(frame_count, frame_count // 2 + 300))
    out = {}
    for name, smooth in (("stored map", None), ("smoothed, cached", DEFAULT_MAP_SIGMA_S)):
        reader = HeatmapReader(Path(session), method, frame_hw, None, smooth)
        reader(frames[0] - 1)  # the session opened, the head read
        t = []
        for k in frames:
            t0 = time.perf_counter()
            reader(k)
            t.append(time.perf_counter() - t0)
        reader.close()
        out[name] = t
    with Session.open(session) as s:
        weight, t = s.head_weight(), []
        for k in frames:
            t0 = time.perf_counter()
            frame_evidence(s, k, method, frame_hw, None, weight, DEFAULT_MAP_SIGMA_S)
            t.append(time.perf_counter() - t0)
        out["smoothed, uncached"] = t
    print(f"overlay data per frame ({method}, {len(frames)} steps, decode thread's reader):")
    for name, t in out.items():
        print(f"  {name:20s} {stats(t)}")


def concatenated(clip: Path, minutes: float, out: Path) -> Path:
    """`clip` repeated for `minutes` into one file with PyAV, stream copy (FLV, both streams shifted by the sound
    track's length per copy, each offset rounded once from the exact time, so nothing accumulates)."""
    import av

    with av.open(str(clip)) as inp:
        a = inp.streams.audio[0]
        samples = sum(f.samples for f in inp.decode(a))
        copy_s = max(samples / a.rate, float(inp.duration or 0) / av.time_base)
    n = int(np.ceil(minutes * 60 / copy_s))
    with av.open(str(clip)) as inp, av.open(str(out), "w", format="flv") as dst:
        streams = [inp.streams.video[0], inp.streams.audio[0]]
        outs = {s.index: dst.add_stream_from_template(s, opaque=True) for s in streams}
        packets = [p for p in inp.demux(streams) if p.dts is not None]
        for i in range(n):
            for p in packets:
                tb = p.time_base
                shift = round(i * copy_s / tb)
                q = av.Packet(bytes(p))
                q.pts, q.dts, q.time_base = p.pts + shift, p.dts + shift, tb
                q.is_keyframe = p.is_keyframe
                q.stream = outs[p.stream.index]
                dst.mux(q)
    return out


def av_drift(clip: Path, minutes: float) -> None:
    """Play `minutes` of the clip concatenated (made here, in a temp folder) in the window, with its sound through
    the audio device or, without one, a FakeSink playing on the wall clock; at every frame shown, the difference
    between that frame's timestamp and the audio clock."""
    from PySide6.QtCore import QEventLoop, QTimer

    from vidxai_gui.audio import FakeSink, has_output_device

    tmp = Path(tempfile.mkdtemp(prefix="vidxai-avdrift-"))
    t0 = time.perf_counter()
    long_clip = concatenated(clip, minutes, tmp / f"{clip.stem}_x{minutes:g}min.flv")
    print(f"{long_clip.name}: {long_clip.stat().st_size / 2**20:.1f} MiB, made in {time.perf_counter() - t0:.1f} s")
    os.environ[SETTINGS_ENV] = str(tmp)
    app = ensure_app()
    from vidxai_gui.main_window import MainWindow

    w = MainWindow(app_settings())
    w.resize(1280, 800)
    w.show()
    p = w.player
    device = has_output_device()
    if not device:
        p.audio.sink = FakeSink()
    w.open_path(long_clip)
    pump_until(app, lambda: p.current == 0 and p.audio.info is not None, timeout=120)
    frame_s = 1.0 / p.fps
    diffs: list[float] = []
    when: list[float] = []
    wall: list[float] = []  # when each frame was shown (a long gap before it: the GUI thread was held up)
    behind: list[int] = []  # frames the decoder was behind the clock when it was shown

    def shown(k: int) -> None:
        if p.sound_on:
            diffs.append(p.audio.clock() - float(p.timestamps[k]))
            when.append(float(p.timestamps[k]))
            wall.append(time.perf_counter())
            behind.append(p.due_frame() - k)

    p.frameShown.connect(shown)
    p.play()
    loop = QEventLoop()
    check = QTimer()
    check.timeout.connect(lambda: loop.quit() if not p.playing or p.current >= p.frame_count - 1 else None)
    check.start(500)
    loop.exec()
    p.pause()
    d, t = np.asarray(diffs), np.asarray(when)
    worst = float(np.abs(d).max())
    first, last = d[t < 60], d[t > t.max() - 60]
    print(f"A/V drift over {t.max() / 60:.1f} min ({len(d)} frames shown, {p.dropped} dropped; sink: "
          f"{'audio device' if device else 'FakeSink on the wall clock (no audio device)'}): largest |shown frame "
          f"timestamp − audio clock| {worst * 1000:.1f} ms = {worst / frame_s:.2f} frames; p99 "
          f"{np.percentile(np.abs(d), 99) * 1000:.1f} ms; frames over 1 frame: {int((np.abs(d) > frame_s).sum())}; "
          f"mean first / last minute {first.mean() * 1000:.1f} / {last.mean() * 1000:.1f} ms")
    over = np.abs(d) > frame_s
    gap = np.diff(np.asarray(wall), prepend=wall[0]) > 2 * frame_s
    late = np.asarray(behind) > 0
    print(f"  of the {int(over.sum())} over 1 frame: {int((over & late).sum())} shown while the decoder was behind "
          f"the clock, {int((over & gap).sum())} after the GUI thread was held up over 2 frames "
          f"({int(gap.sum())} such hold-ups in all); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    w.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", default=str(DEFAULT_CLIP))
    ap.add_argument("--model", default="default", help='model folder, "default" (shipped) or "none"')
    ap.add_argument("--session", help="an analysed session (.vxs) to open instead of analysing VIDEO")
    ap.add_argument("--seeks", type=int, default=100)
    ap.add_argument("--play", type=float, default=60.0, help="seconds of 1× playback (the clip loops)")
    ap.add_argument("--frames", type=int, default=30_000, help="length of the synthetic score array for α")
    ap.add_argument("--av-drift", type=float, metavar="MINUTES",
                    help="only the A/V drift: play VIDEO concatenated to MINUTES with its sound (issue 18)")
    args = ap.parse_args()
    if args.av_drift:
        av_drift(Path(args.video), args.av_drift)
        return
    target = args.session or (args.video if args.model == "none" else analysed_session(args.video, args.model))
    os.environ[SETTINGS_ENV] = tempfile.mkdtemp(prefix="vidxai-bench-")
    app = ensure_app()
    from vidxai_gui.main_window import MainWindow

    w = MainWindow(app_settings())
    w.resize(1280, 800)
    w.show()
    app.processEvents()
    p = w.player

    print(f"window shown: {rss_mb()}")
    t_open = time.perf_counter()
    w.open_path(target)
    pump_until(app, lambda: p.current == 0, timeout=60)
    print(f"video: {args.session or args.video} ({p.frame_count} frames, {p.fps:.2f} fps)")
    print(f"open → frame 0 on screen: {1000 * (time.perf_counter() - t_open):.1f} ms")
    if args.model != "none":
        pump_until(app, lambda: w.data is not None and w.data.probs is not None, timeout=60)
        p.seek(p.frame_count // 2)
        pump_until(app, lambda: p.view.heat_item.isVisible(), timeout=30)
        print(f"session loaded, overlays on: heatmap {w.heat_method or '-'}; {rss_mb()}")

    def drawn(k: int) -> None:
        """Wait for frame k with its overlays, then paint the frame view now (offscreen: into its buffer)."""
        pump_until(app, lambda: p.current == k)
        p.view.viewport().repaint()

    rng = np.random.default_rng(0)

    def idle(seconds: float) -> None:
        t_idle = time.perf_counter()
        while time.perf_counter() - t_idle < seconds:
            app.processEvents()
            time.sleep(0.01)

    def seek_run(n: int) -> list[float]:
        out = []
        for k in rng.integers(0, p.frame_count, n):
            k = int(k) if int(k) != p.current else (int(k) + 1) % p.frame_count
            t0 = time.perf_counter()
            w.timeline.seekRequested.emit(k)
            drawn(k)
            out.append(time.perf_counter() - t0)
        return out

    def transport(first: bool) -> dict[str, list[float]]:
        """Seeks (at once after a change of overlay, then after a 2 s pause), steps, playback; the times."""
        times: dict[str, list[float]] = {}
        # Right after opening (or a change of overlay) the decode thread has not yet cached anything: seeks
        # decode (or re-read the overlay data) at once. Then a reviewer's pause of 2 s lets it fill its caches.
        times["seek at once"] = seek_run(10)
        idle(2.0)
        times["seek after 2 s"] = seek_run(args.seeks)
        p.seek(0)
        pump_until(app, lambda: p.current == 0)
        steps = []
        for k in range(1, min(p.frame_count, 40)):
            t0 = time.perf_counter()
            p.step(1)
            drawn(k)
            steps.append(time.perf_counter() - t0)
        times["step +1"] = steps
        for name, values in times.items():
            print(f"  {name + ' → drawn:':22s} {stats(values)}")
        if first:
            print(f"  after seeking: {rss_mb()}")
        clip_s = (p.timestamps[-1] - p.timestamps[0]) + 1 / p.fps
        for speed, seconds in ((1.0, args.play), (2.0, min(clip_s / 2, args.play))):
            p.set_speed(speed)
            shown = dropped = lag = plays = 0
            stall = video = wall = 0.0
            while wall < seconds - 1e-6 or plays == 0:  # the clip over and over until the time is played
                p.seek(0)
                pump_until(app, lambda: p.current == 0)
                p.dropped = 0
                shown0 = p.shown_count
                last = t0 = time.perf_counter()
                p.play()
                while p.playing:
                    app.processEvents()
                    now = time.perf_counter()
                    if wall + now - t0 >= seconds:
                        p.pause()  # a long video: only `seconds` of it
                    stall = max(stall, now - last)
                    last = now
                    lag = max(lag, p.due_frame() - p.current)
                    time.sleep(0.001)
                wall += time.perf_counter() - t0
                video += (p.timestamps[p.current] - p.timestamps[0]) / speed  # what was played of it
                shown += p.shown_count - shown0
                dropped += p.dropped
                plays += 1
            print(f"  play {speed:g}× ({plays} × the clip): {shown} frames shown, {dropped} dropped, worst lag "
                  f"{lag} frames, {wall:.2f} s for {video:.2f} s of video, longest GUI stall {1000 * stall:.1f} ms; "
                  f"{rss_mb()}")
            times[f"dropped {speed:g}×"] = [dropped / max(shown + dropped, 1)]
        p.set_speed(1.0)
        return times

    # The heatmap drawn with View ▸ Smooth heatmaps over time on (the default) and off, in this one run, so
    # the two are compared under the same load (README issue 14): on, off, on; the medians compare the last
    # two, which both find the decoder's frame cache warm (the first pass decodes cold).
    results = {}
    for smooth in (True, False, True) if args.session or args.model != "none" else (False,):
        w.smooth_maps_action.setChecked(smooth)
        app.processEvents()
        print(f"heatmaps smoothed over time: {'on' if smooth else 'off'}")
        results[smooth] = transport(not results)
    if len(results) == 2:
        on, off = results[True], results[False]
        print("smoothing on / off (the last two passes), median: " + ", ".join(
            f"{name} {np.median(on[name]) * 1000:.1f} / {np.median(off[name]) * 1000:.1f} ms"
            for name in ("seek at once", "seek after 2 s", "step +1")))
        overlay_read_cost(target, w.heat_method, (p.info.height, p.info.width), p.frame_count)

    T = args.frames
    probs = rng.dirichlet(np.ones(7), size=T)
    valid = rng.random(T) > 0.05
    w.timeline.set_video(T, 25.0)
    w.timeline.set_scores([f"c{i}" for i in range(7)], probs, valid)
    times = []
    for v in (2, 4, 6, 8, 10, 12):  # the τ control's steps (0.05 s each): α follows τ at the video's fps
        t0 = time.perf_counter()
        w.timeline.tau_slider.setValue(v)
        app.processEvents()
        times.append(time.perf_counter() - t0)
    print(f"τ/α change, {T} frames × 7 classes (EWMA + 7 curves + repaint): {stats(times)}")
    w.shutdown()


if __name__ == "__main__":
    main()
