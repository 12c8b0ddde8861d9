"""Face finding at any scale: recall and speed on wide shots built from the shared CREMA-D close-ups.

    .venv/bin/python bench/faces_scale.py [--clips N] [--frames N] [--sweep]

Each CREMA-D clip (480×360, face ~95 px brow-to-chin) is scaled so its face is ~130 px or ~70 px tall
(brows to chin) and pasted off-centre into a 1920×1080 or 3840×2160 canvas over a smooth textured
background, frame by frame, at run time (nothing is written). For the close-up and each wide shot it
prints the FaceTracker's recall (frames where the face was found at the right place / frames: the mean
landmark error against the close-up's landmarks mapped through the same scale and shift must be under
8 % of the face height), the mean landmark error, frames/s of the tracker alone (composition excluded),
detection frames and wide passes. `--sweep` also tries smaller faces and prints the smallest found in
>= 95 % of frames.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2
import numpy as np

from engine.faces import FaceTracker
from engine.video import open_video

CREMA = REPO.parent / "shared" / "data" / "videos" / "crema-d"


def face_height(lm: np.ndarray) -> float:
    """Brows (dlib 17-26) to chin (8), px."""
    return float(lm[8, 1] - lm[17:27, 1].min())


def eye_to_chin(lm: np.ndarray) -> float:
    return float(lm[8, 1] - lm[36:48, 1].mean())


def background(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A smooth, textured, face-free wall: low-frequency colour noise plus fine grain."""
    rng = np.random.default_rng(seed)
    low = cv2.resize(rng.integers(40, 200, (9, 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(-12, 13, (h, w, 1), dtype=np.int16)
    return np.clip(low.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def compose(frame: np.ndarray, canvas: np.ndarray, scale: float, centre: tuple[float, float],
            face_centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paste `frame` scaled by `scale` so its face centre lands at `centre` (fractions of the canvas).

    Returns the new canvas and the shift (dx, dy): a close-up point p maps to p * scale + shift (pixel
    centres: cv2.resize maps x to (x + 0.5) * scale - 0.5, folded into the shift).
    """
    h, w = frame.shape[:2]
    H, W = canvas.shape[:2]
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    sx, sy = sw / w, sh / h
    fx, fy = (face_centre[0] + 0.5) * sx - 0.5, (face_centre[1] + 0.5) * sy - 0.5
    x0 = int(np.clip(round(centre[0] * W - fx), 0, W - sw))
    y0 = int(np.clip(round(centre[1] * H - fy), 0, H - sh))
    out = canvas.copy()
    out[y0:y0 + sh, x0:x0 + sw] = small
    shift = np.array([x0 + 0.5 * sx - 0.5, y0 + 0.5 * sy - 0.5])
    return out, np.array([sx, sy]), shift


def reference(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """The close-up's landmarks per frame (what the wide shots are compared with)."""
    tracker = FaceTracker()
    return [r.landmarks if r.found else None for r in (tracker.process(f) for f in frames)]


def run_shot(frames: list[np.ndarray], ref: list[np.ndarray | None], size: tuple[int, int] | None,
             height: float | None, centre: tuple[float, float] = (0.7, 0.32)) -> dict:
    """Recall, landmark error and tracker speed for one shot (size None: the close-up itself)."""
    tracker = FaceTracker()
    first = next(lm for lm in ref if lm is not None)
    scale = 1.0 if height is None else height / face_height(first)
    canvas = None if size is None else background(*size)
    busy, hits, errs, n = 0.0, 0, [], 0
    for f, lm_ref in zip(frames, ref, strict=True):
        if lm_ref is None:
            continue
        if canvas is None:
            img, s, shift = f, np.ones(2), np.zeros(2)
        else:
            img, s, shift = compose(f, canvas, scale, centre, first.mean(axis=0))
        t0 = time.perf_counter()
        r = tracker.process(img)
        busy += time.perf_counter() - t0
        n += 1
        if r.found and r.landmarks is not None:
            err = float(np.linalg.norm(r.landmarks - (lm_ref * s + shift), axis=1).mean())
            if err < 0.08 * face_height(lm_ref) * s[1]:
                hits += 1
                errs.append(err)
    return {"frames": n, "recall": hits / max(n, 1), "err": float(np.mean(errs)) if errs else float("nan"),
            "fps": n / busy if busy else float("inf"), "detections": tracker.n_detections,
            "wide": getattr(tracker, "n_wide", 0), "face_px": face_height(first) * scale, "eye_chin": eye_to_chin(first) * scale}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=2, help="CREMA-D clips to use (default 2)")
    ap.add_argument("--frames", type=int, default=56, help="frames per clip (default 56, a whole clip)")
    ap.add_argument("--sweep", action="store_true", help="also smaller faces: the smallest found")
    args = ap.parse_args()
    clips = sorted(CREMA.glob("*.flv"))[: args.clips]
    if not clips:
        sys.exit(f"no CREMA-D clips under {CREMA}")
    shots: list[tuple[str, tuple[int, int] | None, float | None]] = [
        ("close-up 480x360", None, None),
        ("1920x1080 face 130", (1920, 1080), 130), ("1920x1080 face 70", (1920, 1080), 70),
        ("3840x2160 face 130", (3840, 2160), 130), ("3840x2160 face 70", (3840, 2160), 70)]
    if args.sweep:
        shots += [(f"1920x1080 face {h}", (1920, 1080), h) for h in (60, 52, 45, 40, 35, 30)]
        shots += [(f"3840x2160 face {h}", (3840, 2160), h) for h in (60, 52, 45)]
    data = []
    for c in clips:
        with open_video(c) as r:
            frames = [f for _, f in zip(range(args.frames), r, strict=False)]
        data.append((frames, reference(frames)))
    print(f"{len(clips)} clips × {args.frames} frames; recall = face found within 8 % of its height of the "
          "close-up's landmarks mapped into the shot")
    print(f"{'shot':<22}{'face px':>8}{'eye-chin':>9}{'recall':>8}{'err px':>8}{'frames/s':>10}{'detect':>8}{'wide':>6}")
    smallest = None
    for name, size, height in shots:
        rows = [run_shot(frames, ref, size, height) for frames, ref in data]
        n = sum(r["frames"] for r in rows)
        recall = sum(r["recall"] * r["frames"] for r in rows) / n
        busy = sum(r["frames"] / r["fps"] for r in rows)
        err = float(np.nanmean([r["err"] for r in rows]))
        print(f"{name:<22}{np.mean([r['face_px'] for r in rows]):>8.0f}{np.mean([r['eye_chin'] for r in rows]):>9.0f}"
              f"{recall:>8.3f}{err:>8.2f}{n / busy:>10.1f}{sum(r['detections'] for r in rows):>8}"
              f"{sum(r['wide'] for r in rows):>6}")
        if size is not None and recall >= 0.95:
            eye = float(np.mean([r["eye_chin"] for r in rows]))
            smallest = eye if smallest is None else min(smallest, eye)
    if smallest is not None:
        print(f"smallest face found in >= 95 % of frames: {smallest:.0f} px eye-to-chin")


if __name__ == "__main__":
    main()
