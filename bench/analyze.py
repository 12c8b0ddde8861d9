"""Analysis throughput and memory: per stage, end to end, and peak memory against video length.

    .venv/bin/python bench/analyze.py [--model DIR] [--clip VIDEO] [--threads N] [--device cpu|cuda]

Prints frames/s of each pipeline stage alone (decode, faces, preprocess, model with intrinsic
explanations, model + LRP, + Grad-CAM), of `analyze` end to end with intrinsic explanations and with
LRP, the wall time of analysing the demo clip, the peak RSS of `analyze` on the clip and on the same
clip concatenated 4× and 16× (each in a fresh process), which must stay flat, and end-to-end frames/s on
1080p and 4K wide shots of the clip (face ~130 px tall) next to the close-up's (target: within 0.7×;
`--wide-only` runs just that, `--shots DIR` keeps the generated shots there for the next run).

`--timesformer` prints a clip model's frames/s instead (the `--model` if it is a TimeSformer, else one of
the default size with random weights, which cost the same as trained ones): the model stage alone over the
clip's face crops in sliding windows (T = 8, `--stride` 4), without relevance and with each relevance
method alone, then `analyze` end to end (faces already in the session) with rollout (always computed: it is
the intrinsic map) and with each other method added; every figure also as a ratio to the first of its
table, measured in the same run.

`--wide-stages` prints what each stage of the analysis costs per frame (CPU ms, one thread of work at a
time, so the figures add up) on the close-up and the wide shots, read as RGB frames (the analysis before
issue 11's speed work) and as the analysis reads them now (AnalysisFrames: luma, colour of regions only):
FFmpeg decoding, turning the decoded frame into what the analysis reads, the face tracker (its detector
passes, the shape predictor with its exact-grey crops, the rest), the model-input crop, and the model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from engine.analyzer import FrameAnalyzer
from engine.faces import FaceTracker
from engine.pipeline import (
    AnalyzeSettings,
    _post_hoc,
    analyze,
    bounded_heap,
    ingest,
    model_threads,
    prepare_frame,
)
from engine.resources import default_model_dir, demo_clip
from engine.video import ReaderOptions, open_video
from sessions import Session

MEM_SCRIPT = """
import json, resource, sys, time
from engine.pipeline import AnalyzeSettings, analyze
t = time.perf_counter()
analyze(sys.argv[1], sys.argv[2], sys.argv[3], AnalyzeSettings(device=sys.argv[4]))
print(json.dumps({"s": time.perf_counter() - t, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def concat(clip: Path, times: int, out: Path) -> Path:
    """The clip repeated `times` times, re-encoded losslessly enough for face tracking (H.264, crf 18)."""
    import av

    with open_video(clip) as r, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=round(r.fps))
        stream.width, stream.height, stream.pix_fmt = r.width, r.height, "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        frames = list(r)
        for _ in range(times):
            for f in frames:
                for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    dst.mux(p)
        for p in stream.encode():
            dst.mux(p)
    return out


def wide_shot(clip: Path, size: tuple[int, int], out: Path, face_px: float = 130.0, times: int = 2) -> Path:
    """`clip` (a close-up) with its face scaled to ~`face_px` tall (brows to chin) and pasted off-centre
    into a `size` canvas over a textured wall (bench/faces_scale.py's composition), `times` over; H.264 as
    a camera writes it (crf 23, keyframe every second). Made at run time, never committed."""
    import av

    from bench.faces_scale import background, compose, face_height

    with open_video(clip) as r:
        frames, fps = list(r), r.fps
    tracker = FaceTracker()
    lm = next((f.landmarks for f in map(tracker.process, frames) if f is not None and f.found), None)
    if lm is None:
        raise SystemExit(f"no face in {clip}: cannot place it in a wide shot")
    scale = face_px / face_height(lm)
    centre = lm.mean(axis=0)
    W, H = size
    wall = background(W, H)
    with av.open(str(out), "w") as dst:
        st = dst.add_stream("libx264", rate=round(fps))
        st.width, st.height, st.pix_fmt = W, H, "yuv420p"
        st.codec_context.gop_size = round(fps)
        st.options = {"crf": "23", "preset": "veryfast"}
        for _ in range(times):
            for f in frames:
                img, _, _ = compose(f, wall, scale, (0.7, 0.4), centre)
                for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    dst.mux(pkt)
        for pkt in st.encode():
            dst.mux(pkt)
    return out


def end_to_end(video: Path, out: Path, analyzer: FrameAnalyzer, device: str,
               rgb_frames: bool = False) -> tuple[int, float, int, float]:
    """(frames, seconds, frames with a face, CPU seconds of the process) of `analyze` with intrinsic
    explanations, SpRAy off; with `rgb_frames`, every frame read as a whole RGB frame (how the analysis read
    frames before AnalysisFrames). CPU time counts every thread; a loaded machine stretches it less than
    wall time, and it does not favour a run with more threads (the scheduler shares the CPU per thread)."""
    import resource

    from engine import pipeline
    from sessions import Session

    opened = pipeline.open_video
    if rgb_frames:
        pipeline.open_video = lambda path: open_video(path, ReaderOptions(analysis_min_pixels=1 << 62))
    try:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        analyze(video, None, out, AnalyzeSettings(device=device, spray=False), analyzer=analyzer)
        dt = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        pipeline.open_video = opened
    with Session.open(out) as s:
        found = int(np.asarray(s.faces().found).sum())
        n = s.frame_count
    return n, dt, found, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


WIDE = (("1080p wide", (1920, 1080)), ("4K wide", (3840, 2160)))


def shots(clip: Path, times: int, where: Path) -> list[tuple[str, Path, float]]:
    """(name, video, seconds to make it) of the close-up and the wide shots, the clip `times` over; made in
    `where` unless there already (the same clip and times: the name says so)."""
    out = []
    for name, size in (("close-up", None), *WIDE):
        video = where / f"{clip.stem}-x{times}-{'closeup' if size is None else size[1]}.mp4"
        t0 = time.perf_counter()
        if not video.exists():
            part = video.with_suffix(".part.mp4")
            concat(clip, times, part) if size is None else wide_shot(clip, size, part, times=times)
            part.rename(video)
        out.append((name, video, time.perf_counter() - t0))
    return out


def wide_rates(clip: Path, analyzer: FrameAnalyzer, device: str, tmp: Path, times: int,
               where: Path | None = None, compare_rgb: bool = False) -> None:
    """End-to-end frames/s on 1080p and 4K wide shots of the clip, next to the close-up's (the same frames)."""
    print(f"\nwide shots: end to end (intrinsic, SpRAy off), the clip {times}× (frames/s, wall; the face "
          f"~130 px tall; load average {os.getloadavg()[0]:.1f})")
    made_shots = shots(clip, times, where or tmp)
    end_to_end(clip, tmp / "warm-up.vxs", analyzer, device)  # imports, caches, allocator: not in the figures
    base = base_cpu = None
    for name, video, made in made_shots:
        n, dt, found, cpu = end_to_end(video, tmp / f"{video.stem}.vxs", analyzer, device)
        dec = decode_alone(video)
        if base is None:
            base, base_cpu = rate(n, dt), 1000 * cpu / n
            print(f"  {name:<18}{base:>9.1f}   ({dt:.1f} s for {n} frames, face in {found}; CPU {base_cpu:.1f} ms "
                  f"per frame; decoding alone {dec:.0f} frames/s)", flush=True)
            continue
        ratio = rate(n, dt) / base
        ok = "✓" if ratio >= 0.7 else "✗ (target ≥ 0.7×)"
        print(f"  {name:<18}{rate(n, dt):>9.1f}   ({dt:.1f} s for {n} frames, face in {found}; "
              f"{ratio:.2f}× the close-up {ok}; CPU {1000 * cpu / n:.1f} ms per frame, the close-up's / this "
              f"{base_cpu * n / (1000 * cpu):.2f}×; decoding alone {dec:.0f} frames/s = {dec / base:.2f}× the "
              f"close-up's analysis; made in {made:.0f} s)", flush=True)
        if compare_rgb:
            n, dt, found, cpu = end_to_end(video, tmp / f"{video.stem}-rgb.vxs", analyzer, device, rgb_frames=True)
            print(f"  {name + ', RGB':<18}{rate(n, dt):>9.1f}   ({dt:.1f} s, face in {found}; "
                  f"{rate(n, dt) / base:.2f}× the close-up; CPU {1000 * cpu / n:.1f} ms per frame, "
                  f"{base_cpu * n / (1000 * cpu):.2f}×: every frame read as RGB, as before)", flush=True)
    print(f"  (load average {os.getloadavg()[0]:.1f} at the end)")


def decode_alone(video: Path) -> float:
    """Wall frames/s of FFmpeg decoding the video with nothing else done (its threads as in the analysis):
    what no analysis of it can beat."""
    import av

    with av.open(str(video)) as c:
        stream = c.streams.video[0]
        if stream.codec_context.width * stream.codec_context.height >= ReaderOptions().threaded_min_pixels:
            stream.thread_type = "AUTO"
        t0 = time.perf_counter()
        n = sum(1 for _ in c.decode(stream))
        return rate(n, time.perf_counter() - t0)


class _CpuTimers:
    """CPU seconds spent inside some functions of engine.faces (the detector's passes, the shape predictor,
    descriptors), by wrapping them for the duration of a `with` block."""

    def __init__(self) -> None:
        from engine import faces

        self.faces = faces
        self.spent: dict[str, float] = {"detector": 0.0, "landmarks": 0.0, "descriptors": 0.0}
        self.wrapped = {"detector": (faces._Detector, "_run"), "landmarks": (faces, "_landmarks"),
                        "descriptors": (faces, "face_descriptor")}

    def __enter__(self) -> Self:
        self.saved = {}
        for key, (owner, attr) in self.wrapped.items():
            fn = getattr(owner, attr)
            self.saved[key] = fn

            def timed(*a, _fn=fn, _key=key, **kw):
                t0 = time.process_time()
                try:
                    return _fn(*a, **kw)
                finally:
                    self.spent[_key] += time.process_time() - t0
            setattr(owner, attr, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        for key, (owner, attr) in self.wrapped.items():
            setattr(owner, attr, self.saved[key])


def stage_costs(video: Path, analyzer: FrameAnalyzer, analysis: bool) -> dict[str, float]:
    """CPU ms per frame of each analysis stage on `video`, the frames read as RGB (analysis False: every frame
    converted, as before) or as the analysis reads them now. Decoding is measured on its own (FFmpeg's
    threads as in the analysis); the rest one frame at a time on a single-threaded decoder, so nothing runs
    beside the stage being timed."""
    import av

    options = ReaderOptions() if analysis else ReaderOptions(analysis_min_pixels=1 << 62)
    out: dict[str, float] = {}
    with open_video(video, options) as r:
        n = r.frame_count
        with av.open(str(video)) as c:
            stream = c.streams.video[0]
            if r.width * r.height >= options.threaded_min_pixels:
                stream.thread_type = "AUTO"
            t0 = time.process_time()
            for _ in c.decode(stream):
                pass
            out["decode (FFmpeg)"] = time.process_time() - t0
        t0 = time.process_time()
        for _ in r.iter_frames(threads=False, analysis=True):
            pass
        read = time.process_time() - t0
        with av.open(str(video)) as c:
            t0 = time.process_time()
            for _ in c.decode(c.streams.video[0]):
                pass
            out["to RGB" if not analysis else "to analysis frame"] = max(0.0, read - (time.process_time() - t0))
        tracker = FaceTracker()
        faces = prep = 0.0
        images = []
        with _CpuTimers() as timers:
            for k, frame in r.iter_frames(threads=False, analysis=True):
                t0 = time.process_time()
                face = tracker.process(frame, k)
                t1 = time.process_time()
                pre = prepare_frame(analyzer, frame, face)
                prep += time.process_time() - t1
                faces += t1 - t0
                if pre is not None:
                    images.append(pre.image)
        spent = timers.spent
        out["faces: detector passes"] = spent["detector"]
        out["faces: landmarks"] = spent["landmarks"]
        out["faces: descriptors"] = spent["descriptors"]
        out["faces: rest"] = faces - sum(spent.values())
        out["model-input crop"] = prep
    batches = [np.stack(images[i:i + 32]) for i in range(0, len(images), 32)]
    previous = torch.get_num_threads()
    torch.set_num_threads(model_threads(AnalyzeSettings(device="cpu"), analyzer.device) or previous)  # as analyze
    try:
        analyzer.run(batches[0])
        t0 = time.process_time()
        for b in batches:
            analyzer.run(b)
        out["model (intrinsic)"] = time.process_time() - t0
    finally:
        torch.set_num_threads(previous)
    return {k: 1000.0 * v / n for k, v in out.items()}


def wide_stages(clip: Path, analyzer: FrameAnalyzer, tmp: Path, times: int, where: Path | None = None) -> None:
    """The per-stage CPU table of the close-up and the wide shots, before (RGB frames) and now."""
    bounded_heap()  # big buffers mmap-allocated, as in `analyze` (a 4K RGB frame is then ~6000 page faults)
    print(f"\nper-stage CPU ms per frame, the clip {times}× (the model on the threads `analyze` gives it; "
          f"load average {os.getloadavg()[0]:.1f}; CPU time, so load inflates it less than wall time)")
    made = shots(clip, times, where or tmp)
    cols = []
    for name, video, _ in made:
        for analysis in (False, True):
            cols.append((f"{name.split()[0]} {'now' if analysis else 'RGB'}", stage_costs(video, analyzer, analysis)))
    keys = list(dict.fromkeys(k for _, c in cols for k in c))
    print(f"  {'stage':<24}" + "".join(f"{h:>15}" for h, _ in cols))
    for key in keys:
        print(f"  {key:<24}" + "".join(f"{c[key]:>15.2f}" if key in c else f"{'':>15}" for _, c in cols))
    print(f"  {'total':<24}" + "".join(f"{sum(c.values()):>15.2f}" for _, c in cols))
    close = sum(cols[1][1].values())
    print("  close-up total / shot total (now; what the end-to-end ratio tends to where CPU is the limit): "
          + ", ".join(f"{h.split()[0]} {close / sum(c.values()):.2f}×" for h, c in cols[3::2]))


def stage_rates(clip: Path, analyzer: FrameAnalyzer, repeat: int) -> dict[str, float]:
    with open_video(clip) as r:
        t0 = time.perf_counter()
        frames = [f for _ in range(repeat) for f in r]
        decode = rate(len(frames), time.perf_counter() - t0)
    tracker = FaceTracker()
    t0 = time.perf_counter()
    faces = []
    for i, f in enumerate(frames):
        if i % (len(frames) // repeat) == 0:
            tracker.reset()
        faces.append(tracker.process(f))
    face_rate = rate(len(frames), time.perf_counter() - t0)
    t0 = time.perf_counter()
    pre = [analyzer.prepare(f, face) for f, face in zip(frames, faces, strict=True)]
    pre_rate = rate(len(frames), time.perf_counter() - t0)
    images = np.stack([p.image for p in pre if p is not None])
    out = {"decode": decode, "faces": face_rate, "preprocess": pre_rate}
    batches = [images[i:i + 32] for i in range(0, len(images), 32)]
    analyzer.run(batches[0])  # warm-up
    t0 = time.perf_counter()
    preds = [analyzer.run(b)[1].argmax(1) for b in batches]
    out["model+intrinsic"] = rate(len(images), time.perf_counter() - t0)
    for method in ("lrp", "gradcam"):
        t0 = time.perf_counter()
        for b, p in zip(batches, preds, strict=True):
            _post_hoc(method, analyzer, b, p, 16)
        out[f"+{method}"] = rate(len(images), time.perf_counter() - t0)
    return out


def _timesformer_dir(model: Path | None, tmp: Path) -> Path:
    """`model` when it is a clip model, else a default-size TimeSformer with random weights saved in `tmp`."""
    from engine.checkpoint import save_checkpoint
    from engine.model_card import model_arch
    from engine.models import ModelSpec, build_model

    if model is not None and model_arch(model) == "timesformer":
        return model
    torch.manual_seed(0)
    spec = ModelSpec(arch="timesformer", classes=["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"])
    return save_checkpoint(tmp / "timesformer", build_model(spec), {"name": "timesformer (random weights: bench)"})


def timesformer_rates(clip: Path, model: Path | None, device: str, stride: int, repeat: int, tmp: Path) -> None:
    """Frames/s of a TimeSformer without and with each relevance method: model stage, then end to end."""
    from engine.clips import WindowStream
    from engine.explain.spacetime import METHODS

    folder = _timesformer_dir(model, tmp)
    analyzer = FrameAnalyzer(folder, device=device)
    m = analyzer.model
    with open_video(clip) as r:
        tracker = FaceTracker()
        crops = [p.image for k, f in r.iter_frames()
                 if (p := analyzer.prepare(f, tracker.process(f, k))) is not None]
    print(f"TimeSformer {folder.name}: {m.n_parameters / 1e6:.2f} M parameters, {m.spec.input_size} px, "
          f"T = {m.frames}, {m.grid}×{m.grid} tokens, window stride {stride}; {len(crops)} face crops of {clip.name}; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")

    def stage(methods: tuple[str, ...]) -> float:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            ws = WindowStream(m, stride, methods, batch=4)
            for c in crops:
                ws.push(c)
            ws.finish()
            best = min(best, time.perf_counter() - t0)
        return rate(len(crops), best)

    print("\nmodel stage alone (frames/s; ratio to scores alone)")
    base = stage(())
    print(f"  {'scores alone':<22}{base:>9.1f}   1.00")
    for method in METHODS:
        v = stage((method,))
        print(f"  {'+ ' + method:<22}{v:>9.1f}   {v / base:.2f}")

    print("\nanalyze end to end, faces already tracked (frames/s; ratio to rollout alone)")
    session = tmp / "tsf.vxs"
    ingest(clip, session)
    n = open_video(clip).frame_count
    first = None
    for extra in ((), *((x,) for x in METHODS if x != "rollout")):
        explain = ("rollout", *extra)
        best = float("inf")
        for _ in range(max(1, repeat // 2)):
            t0 = time.perf_counter()
            analyze(clip, None, session, AnalyzeSettings(explain=explain, device=device, stride=stride,
                                                         spray=False, commit_every_s=1e9), analyzer=analyzer)
            best = min(best, time.perf_counter() - t0)
            with Session.open(session, writable=True) as s:   # analyse anew next time (faces kept)
                s.set_attrs("", complete=False, frames_done=0)
        v = rate(n, best)
        first = first or v
        print(f"  {'+'.join(explain):<22}{v:>9.1f}   {v / first:.2f}   ({best:.2f} s for {n} frames)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: the bundled ProtoPNet)")
    ap.add_argument("--clip", type=Path, default=None, help="video (default: the bundled demo clip)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--no-memory", action="store_true", help="skip the 1×/4×/16× memory runs")
    ap.add_argument("--wide-only", action="store_true",
                    help="only the wide shots (1080p, 4K) against the close-up, end to end")
    ap.add_argument("--wide-times", type=int, default=8, help="the clip repeated this many times in each shot")
    ap.add_argument("--wide-stages", action="store_true",
                    help="only the per-stage CPU table of the close-up and the wide shots (RGB frames vs now)")
    ap.add_argument("--compare-rgb", action="store_true",
                    help="with --wide-only: each wide shot also analysed with frames read as whole RGB frames")
    ap.add_argument("--timesformer", action="store_true",
                    help="only a TimeSformer's frames/s, without and with each relevance method (see above)")
    ap.add_argument("--stride", type=int, default=4, help="with --timesformer: the window stride (default 4)")
    ap.add_argument("--shots", type=Path, default=None,
                    help="keep the generated close-up and wide shots in this folder (reused when there)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clip = args.clip or demo_clip()
    if args.timesformer:
        with tempfile.TemporaryDirectory() as tmp:
            timesformer_rates(clip, args.model, args.device, args.stride, args.repeat, Path(tmp))
        return
    model = args.model or default_model_dir()
    analyzer = FrameAnalyzer(model, device=args.device)
    print(f"model {model} ({analyzer.spec.arch}/{analyzer.spec.backbone}), clip {clip.name}, "
          f"device {analyzer.device}, torch threads {torch.get_num_threads()}; machine: {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.shots:
        args.shots.mkdir(parents=True, exist_ok=True)
    if args.wide_only or args.wide_stages:
        with tempfile.TemporaryDirectory() as tmp:
            if args.wide_stages:
                wide_stages(clip, analyzer, Path(tmp), args.wide_times, args.shots)
            if args.wide_only:
                wide_rates(clip, analyzer, args.device, Path(tmp), args.wide_times, args.shots, args.compare_rgb)
        return

    print("\nstage alone (frames/s)")
    stages = stage_rates(clip, analyzer, args.repeat)
    for k, v in stages.items():
        print(f"  {k:<18}{v:>9.1f}")

    print("\nanalyze end to end (frames/s, wall)")
    with tempfile.TemporaryDirectory() as tmp:
        n = open_video(clip).frame_count
        for explain in (("intrinsic",), ("intrinsic", "lrp")):
            t0 = time.perf_counter()
            analyze(clip, None, Path(tmp) / f"{'_'.join(explain)}.vxs",
                    AnalyzeSettings(explain=explain, device=args.device), analyzer=analyzer)
            dt = time.perf_counter() - t0
            print(f"  {'+'.join(explain):<18}{rate(n, dt):>9.1f}   ({dt:.1f} s for {n} frames)")

        # Steady state: a longer video (the clip 16×), after the runs above have imported and warmed
        # everything; the pipeline's rate against its slowest stage says how well the stages overlap.
        n16 = 16 * n
        long_clip = concat(clip, 16, Path(tmp) / "x16_steady.mp4")
        t0 = time.perf_counter()
        analyze(long_clip, None, Path(tmp) / "steady.vxs", AnalyzeSettings(device=args.device, spray=False),
                analyzer=analyzer)
        dt = time.perf_counter() - t0
        slowest = min(stages["decode"], stages["faces"], stages["preprocess"], stages["model+intrinsic"])
        print(f"  intrinsic, clip×16 {rate(n16, dt):>9.1f}   ({dt:.1f} s for {n16} frames; "
              f"{rate(n16, dt) / slowest:.2f} of the slowest stage alone, {slowest:.0f} frames/s)")

        if not args.no_memory:
            print("\npeak memory of `analyze` in a fresh process (clip repeated)")
            for times in (1, 4, 16):
                video = concat(clip, times, Path(tmp) / f"x{times}.mp4")
                r = subprocess.run([sys.executable, "-c", MEM_SCRIPT, str(video), str(model),
                                    str(Path(tmp) / f"m{times}.vxs"), args.device],
                                   cwd=REPO, capture_output=True, text=True, check=True)
                d = json.loads(r.stdout.strip().splitlines()[-1])
                print(f"  {times:>3}× ({n * times:>5} frames) {d['rss_mb']:>8.0f} MB  {d['s']:>6.1f} s")

        wide_rates(clip, analyzer, args.device, Path(tmp), args.wide_times, args.shots)


if __name__ == "__main__":
    main()
