"""Analysis throughput and memory: per stage, end to end, and peak memory against video length.

    .venv/bin/python bench/analyze.py [--model DIR] [--clip VIDEO] [--threads N] [--device cpu|cuda]

Prints frames/s of each pipeline stage alone (decode, faces, preprocess, model with intrinsic
explanations, model + LRP, + Grad-CAM), of `analyze` end to end with intrinsic explanations and with
LRP, the wall time of analysing the demo clip, the peak RSS of `analyze` on the clip and on the same
clip concatenated 4× and 16× (each in a fresh process), which must stay flat, and end-to-end frames/s on
1080p and 4K wide shots of the clip (face ~130 px tall) next to the close-up's (target: within 0.7×;
`--wide-only` runs just that).
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import torch

from engine.analyzer import FrameAnalyzer
from engine.faces import FaceTracker
from engine.pipeline import AnalyzeSettings, _post_hoc, analyze
from engine.resources import default_model_dir, demo_clip
from engine.video import open_video

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


def end_to_end(video: Path, out: Path, analyzer: FrameAnalyzer, device: str) -> tuple[int, float, int]:
    """(frames, seconds, frames with a face) of `analyze` with intrinsic explanations, SpRAy off."""
    from sessions import Session

    t0 = time.perf_counter()
    analyze(video, None, out, AnalyzeSettings(device=device, spray=False), analyzer=analyzer)
    dt = time.perf_counter() - t0
    with Session.open(out) as s:
        found = int(np.asarray(s.faces().found).sum())
        n = s.frame_count
    return n, dt, found


def wide_rates(clip: Path, analyzer: FrameAnalyzer, device: str, tmp: Path, times: int) -> None:
    """End-to-end frames/s on 1080p and 4K wide shots of the clip, next to the close-up's (the same frames)."""
    print(f"\nwide shots: end to end (intrinsic, SpRAy off), the clip {times}× (frames/s, wall; the face "
          "~130 px tall)")
    closeup = concat(clip, times, tmp / "closeup.mp4")
    end_to_end(clip, tmp / "warm-up.vxs", analyzer, device)  # imports, caches, allocator: not in the figures
    n, dt, found = end_to_end(closeup, tmp / "closeup.vxs", analyzer, device)
    base = rate(n, dt)
    print(f"  {'close-up':<18}{base:>9.1f}   ({dt:.1f} s for {n} frames, face in {found})")
    for name, size in (("1080p wide", (1920, 1080)), ("4K wide", (3840, 2160))):
        t0 = time.perf_counter()
        video = wide_shot(clip, size, tmp / f"wide-{size[1]}.mp4", times=times)
        made = time.perf_counter() - t0
        n, dt, found = end_to_end(video, tmp / f"wide-{size[1]}.vxs", analyzer, device)
        ratio = rate(n, dt) / base
        ok = "✓" if ratio >= 0.7 else "✗ (target ≥ 0.7×)"
        print(f"  {name:<18}{rate(n, dt):>9.1f}   ({dt:.1f} s for {n} frames, face in {found}; "
              f"{ratio:.2f}× the close-up {ok}; made in {made:.0f} s)", flush=True)


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
    ap.add_argument("--wide-times", type=int, default=2, help="the clip repeated this many times in each shot")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = args.model or default_model_dir()
    clip = args.clip or demo_clip()
    analyzer = FrameAnalyzer(model, device=args.device)
    print(f"model {model} ({analyzer.spec.arch}/{analyzer.spec.backbone}), clip {clip.name}, "
          f"device {analyzer.device}, torch threads {torch.get_num_threads()}; machine: {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.wide_only:
        with tempfile.TemporaryDirectory() as tmp:
            wide_rates(clip, analyzer, args.device, Path(tmp), args.wide_times)
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

        wide_rates(clip, analyzer, args.device, Path(tmp), args.wide_times)


if __name__ == "__main__":
    main()
