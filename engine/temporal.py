"""Explanations over time, for display: maps smoothed in face-aligned coordinates, and the defaults of the
temporal settings (SpRAy's temporal term and minimum stage duration, map smoothing).

Nothing here writes to a session: smoothing is computed from the stored maps when they are shown, so the
stored relevance (what every faithfulness figure and export uses) stays exactly what the method gave.

Map smoothing (`smooth_maps`): the map shown for frame k is a Gaussian-weighted mean (σ in seconds) of
the maps of the frames around it that have a face, each first warped into frame k's face geometry: the
similarity transform (rotation, uniform scale, shift; least squares, Umeyama 1991) that takes that
frame's 68 landmarks onto frame k's, with the landmarks in map coordinates (frame → model input through
the frame's input mapping → map cells). That is the same as warping every map to a canonical face
frame, smoothing there and warping back to frame k, with one interpolation instead of two. A pixel's
mean is over the warped maps that cover it, so the edges are not darkened. Frames without a face keep
their stored value (NaN) and never contribute. A moving head therefore does not smear the map, while the
frame-to-frame noise of the method is averaged out.

Flicker (`flicker`) = mean over consecutive frame pairs that both have a map of 1 − cosine of the maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Defaults chosen on the shared CREMA-D clips with bench/temporal_quality.py (tables in the README and
# bench/results/temporal_quality.json).
#
# EWMA τ = 0.2 s (α = 0.154 at 29.97 fps): the largest τ that still follows every change of the raw per-frame
#   decision lasting ≥ 0.3 s (28/28 over 18 sessions) and keeps the best video accuracy (14/18, as τ = 0.1);
#   decision flips 1.30/s against 6.28 raw and 1.81 at τ = 0.1 (≈ the old α = 0.3). τ = 0.3 misses 2 changes
#   and loses a video decision.
# SpRAy temporal weight 2: fewest raw stages on the 10-minute video (9,240 of 18,032 frames, against 17,708
#   without the term, 11,915 at weight 1 and 11,592 at weight 4) and raw reduction on the clips 0.64–0.73 →
#   0.68–0.81 for a mean frame-to-stage cosine about 0.01 lower.
# Minimum stage 0.6 s: the shortest in the sweep that keeps the 10-minute video at ≤ 1 stage per second
#   (545 stages, 0.91/s; 0.5 s gives 613, 1.02/s); on the clips 97 % reduction (1.5–2.2 stages per clip).
# Map σ = 0.1 s: the smallest σ that brings every model × method's flicker under 0.05 (from 0.02–0.58 raw).
DEFAULT_TAU_S = 0.2             # EWMA time constant, seconds (engine.aggregate.alpha_from_tau)
DEFAULT_TEMPORAL_WEIGHT = 2.0   # SpRAy: weight of the temporal-neighbour links beside the kNN graph
DEFAULT_MIN_STAGE_S = 0.6       # SpRAy: stages shorter than this are merged into a neighbour (display)
DEFAULT_MAP_SIGMA_S = 0.1       # map smoothing: σ of the Gaussian over time, seconds
SMOOTH_TRUNCATE = 2.0           # the Gaussian is cut at this many σ


def flicker(maps: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean over consecutive frames that both have a map of 1 − cos(map_t, map_t+1); NaN if no such pair.

    A frame has a map where ``valid`` is set (default: every finite, non-zero map)."""
    m = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    finite = np.isfinite(m).all(axis=1)
    m = np.where(finite[:, None], m, 0.0)
    norm = np.linalg.norm(m, axis=1)
    ok = finite & (norm > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    pair = ok[1:] & ok[:-1]
    if not pair.any():
        return float("nan")
    i = np.flatnonzero(pair)
    cos = np.einsum("ij,ij->i", m[i], m[i + 1]) / (norm[i] * norm[i + 1])
    return float(np.mean(1.0 - cos))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """2×3 least-squares similarity (no reflection) taking points ``src`` (N×2) onto ``dst``; None when the
    points are degenerate (fewer than 2 finite pairs, or all at one place)."""
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    ok = np.isfinite(s).all(axis=1) & np.isfinite(d).all(axis=1)
    if ok.sum() < 2:
        return None
    m = similarity_transforms(s[ok][None], d[ok])[0]
    return None if np.isnan(m).any() else m


def similarity_transforms(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """`similarity_transform` of each of n point sets ``src`` (n×N×2, all finite) onto one ``dst`` (N×2) at
    once: n×2×3, NaN where a set is degenerate (all its points at one place)."""
    # In 2-D a rotation with uniform scale is a complex factor z: the least-squares z (Umeyama's
    # solution without reflection, in closed form) is Σ conj(src_c)·dst_c / Σ |src_c|².
    zs = src[..., 0] + 1j * src[..., 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    ms, md = zs.mean(axis=1), zd.mean()
    sc, dc = zs - ms[:, None], zd - md
    var = (np.abs(sc) ** 2).sum(axis=1)
    z = (np.conj(sc) * dc[None]).sum(axis=1) / np.where(var > 1e-12 * src.shape[1], var, np.nan)
    t = md - z * ms
    return np.stack([np.stack([z.real, -z.imag, t.real], axis=1), np.stack([z.imag, z.real, t.imag], axis=1)],
                    axis=1)


def map_landmarks(landmarks: np.ndarray, mappings: Sequence[dict | None], map_hw: tuple[int, int]) -> np.ndarray:
    """Frame-pixel landmarks (T×68×2) → map-cell coordinates (T×68×2) through each frame's input mapping
    (`engine.preprocess.InputMapping` JSON). NaN where a frame has no mapping, no landmarks, or a mapping
    of several pieces (a reassembled input has no single face geometry: such frames are not warped)."""
    from engine.preprocess import InputMapping

    lm = np.asarray(landmarks, dtype=np.float64)
    out = np.full(lm.shape, np.nan)
    h, w = map_hw
    for k, m in enumerate(mappings):
        if not m or not np.isfinite(lm[k]).all():
            continue
        mapping = InputMapping.from_json(m)
        if len(mapping.pieces) != 1:
            continue
        uv = mapping.from_frame(lm[k], piece=mapping.pieces[0].name)
        size = mapping.input_size
        # Input pixel centres u = 0..S−1 → map cell centres x = 0..w−1.
        out[k, :, 0] = (uv[:, 0] + 0.5) * (w / size) - 0.5
        out[k, :, 1] = (uv[:, 1] + 0.5) * (h / size) - 0.5
    return out


def gaussian_radius(sigma_frames: float) -> int:
    return math.ceil(SMOOTH_TRUNCATE * sigma_frames) if sigma_frames > 0 else 0


def smooth_maps(maps: np.ndarray, landmarks: np.ndarray | None, sigma_frames: float,
                valid: np.ndarray | None = None, align: bool = True,
                frames: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """Maps smoothed over time in face-aligned coordinates (module docstring); float32, same shape.

    ``maps`` T×h×w (NaN rows: no face); ``landmarks`` T×68×2 in map-cell coordinates (`map_landmarks`;
    NaN rows: no geometry, that frame is used unwarped); ``sigma_frames`` the Gaussian's σ in frames (0
    returns a copy); ``align=False`` averages without warping (for comparison); ``frames`` the rows to
    compute (default all; the others are returned as stored). The input is never modified.
    """
    import cv2

    m = np.asarray(maps, dtype=np.float32)
    if m.ndim != 3:
        raise ValueError(f"maps must be T×h×w, got shape {m.shape}")
    t_len, h, w = m.shape
    ok = np.isfinite(m).all(axis=(1, 2))
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    out = np.array(m, dtype=np.float32, copy=True)
    radius = gaussian_radius(sigma_frames)
    if radius == 0:
        return out
    lm = None if landmarks is None or not align else np.asarray(landmarks, dtype=np.float64)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma_frames) ** 2)
    ones = np.ones((h, w), np.float32)
    rows = range(t_len) if frames is None else frames
    full = np.zeros(t_len, bool) if lm is None else np.isfinite(lm).all(axis=(1, 2))
    for k in rows:
        if not ok[k]:
            continue
        acc = np.zeros((h, w), np.float64)
        cover = np.zeros((h, w), np.float64)
        # The neighbours' transforms onto frame k, at once where both have every landmark.
        near = [k + int(off) for off in offsets if off and 0 <= k + off < t_len and ok[k + off] and full[k + off]]
        warps = dict(zip(near, similarity_transforms(lm[near], lm[k]), strict=True)) if near and full[k] else {}
        for off, g in zip(offsets, weights, strict=True):
            j = k + int(off)
            if j < 0 or j >= t_len or not ok[j]:
                continue
            M = None
            if off != 0 and lm is not None:
                M = warps[j] if j in warps else similarity_transform(lm[j], lm[k])
            if M is None or np.isnan(M).any():
                acc += g * m[j]
                cover += g
                continue
            warped = cv2.warpAffine(m[j], M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            mask = cv2.warpAffine(ones, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            acc += g * warped
            cover += g * mask
        out[k] = np.where(cover > 1e-6, acc / np.maximum(cover, 1e-6), m[k]).astype(np.float32)
    return out


def _map_rows(session, method: str, a: int, b: int, align: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Frames [a, b) as smoothing needs them: stored maps (float32), valid flags, map-cell landmarks
    (`map_landmarks`; None without `align`)."""
    stored = session.explanation_maps(method, slice(a, b))
    if stored is None:
        raise ValueError(f"{session.path} has no {method} maps")
    maps = stored.astype(np.float32)
    valid = session.read("valid", slice(a, b)).astype(bool)
    lm = None
    if align:
        faces = session.faces(slice(a, b))
        lm = map_landmarks(faces.landmarks, session.mappings(slice(a, b)), maps.shape[1:])
    return maps, valid, lm


class MapRows:
    """A rolling cache of what `session_smoothed_maps` reads, for a viewer that asks one frame at a time.

    Each frame's stored map, valid flag and map-cell landmarks are read once (moving on: in blocks reaching
    `ahead` frames past what was asked) and kept for the `keep` frames nearest the last frame asked, so stepping
    or playing reads once every `ahead` frames instead of 2·radius + 1 rows each frame, and a seek reads
    one block. Committed session data never changes, so
    a row stays right until the session is re-opened at a newer commit (a running analysis): the owner
    then calls `clear`. Not thread-safe: one per thread (the player's decode thread)."""

    def __init__(self, keep: int = 128, ahead: int = 16) -> None:
        self.keep, self.ahead = keep, ahead
        self._key: tuple[str, bool] | None = None
        self._rows: dict[int, tuple[np.ndarray, bool, np.ndarray | None]] = {}
        self.read_rows = 0  # frames read from the session so far (for tests and benchmarks)

    def clear(self) -> None:
        self._rows.clear()

    def get(self, session, method: str, a: int, b: int, align: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Frames [a, b) as `_map_rows` gives them, reading only the frames not kept."""
        if self._key != (method, align):
            self._key = (method, align)
            self._rows.clear()
        missing = [j for j in range(a, b) if j not in self._rows]
        if missing:
            # One contiguous read. Moving on from kept rows (a step, playback) it reaches `ahead` frames
            # further in that direction: a read costs about the same for 1 or 16 rows (per-call overhead),
            # so stepping or playing reads once every `ahead` frames. A seek reads what it needs only.
            lo, hi = missing[0], missing[-1] + 1
            if lo > a:
                hi = min(session.frame_count, hi + self.ahead)
            elif hi < b:
                lo = max(0, lo - self.ahead)
            maps, valid, lm = _map_rows(session, method, lo, hi, align)
            self.read_rows += hi - lo
            for i, j in enumerate(range(lo, hi)):
                self._rows.setdefault(j, (maps[i], bool(valid[i]), None if lm is None else lm[i]))
        rows = [self._rows[j] for j in range(a, b)]
        centre = (a + b) // 2
        if len(self._rows) > self.keep:
            for j in sorted(self._rows, key=lambda j: abs(j - centre))[self.keep:]:
                del self._rows[j]
        lm = np.stack([r[2] for r in rows]) if align else None
        return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows], bool), lm


def session_smoothed_maps(session, method: str, frames: slice, sigma_s: float = DEFAULT_MAP_SIGMA_S,
                          align: bool = True, rows: MapRows | None = None) -> np.ndarray:
    """Display maps of frames [start, stop) of one method of a session, smoothed (`smooth_maps`) with σ in
    seconds (converted at the session's fps). Reads the stored maps, faces and input mappings of those
    frames and of the frames around them the Gaussian reaches (through `rows`, a `MapRows` cache, when
    given: then only the frames it does not hold yet); reads only, never writes."""
    T = session.frame_count
    start, stop, _ = frames.indices(T)
    radius = gaussian_radius(sigma_s * session.fps)
    a, b = max(0, start - radius), min(T, stop + radius)
    maps, valid, lm = rows.get(session, method, a, b, align) if rows is not None else \
        _map_rows(session, method, a, b, align)
    out = smooth_maps(maps, lm, sigma_s * session.fps, valid, align, frames=np.arange(start - a, stop - a))
    return out[start - a: stop - a]


def stage_details(session, start: int, end: int, descriptor: Sequence[str] | str, method: str = "intrinsic",
                  top: int = 5) -> dict:
    """What a stage of the strip shows when it is selected or hovered (Qt-free; the GUI draws it):

    ``name`` (the descriptor, e.g. "HAPPY_A"), ``tooltip`` (descriptor, frames, seconds, predicted classes
    and face coverage in words), ``start``/``end`` (frames, end exclusive), ``t0``/``t1`` (s),
    ``classes`` (share of the stage's frames with a face that each class is predicted on, largest first),
    ``mean_map`` (the mean stored map of ``method`` over those frames, model-input space, or None),
    ``key_frame`` (the frame whose map is most like the mean map, cosine; −1 without maps) and,
    for a ProtoPNet, ``prototypes``: the ``top`` prototypes with the largest mean contribution W_cj·s_j to
    the stage's most predicted class c, as (index, mean contribution). Reads only."""
    desc = descriptor if isinstance(descriptor, str) else ", ".join(descriptor)
    T = session.frame_count
    ts = np.append(session.timestamps, session.timestamps[-1] + 1.0 / session.fps) if T else np.zeros(1)
    sl = slice(start, end)
    valid = session.read("valid", sl).astype(bool)
    probs = session.read("probs", sl)
    ok = valid & np.isfinite(probs).all(axis=1)
    classes = session.analysis_info()["classes"]
    shares: list[tuple[str, float]] = []
    if ok.any():
        counts = np.bincount(np.argmax(probs[ok], axis=1), minlength=len(classes))
        shares = [(classes[i], float(counts[i] / ok.sum())) for i in np.argsort(-counts, kind="stable") if counts[i]]
    mean_map, key_frame = None, -1
    stored = session.explanation_maps(method, sl) if ok.any() else None
    if stored is not None:
        maps = stored[ok].astype(np.float64)
        mean_map = np.nanmean(maps, axis=0).astype(np.float32)
        # The stage's most representative frame: its map is the most like the mean map (cosine), as the
        # case report picks a stage's key frame.
        flat = np.nan_to_num(maps.reshape(len(maps), -1))
        m = np.nan_to_num(mean_map.astype(np.float64).ravel())
        cos = flat @ m / (np.linalg.norm(flat, axis=1) * (np.linalg.norm(m) or 1.0) + 1e-12)
        key_frame = int(start + np.flatnonzero(ok)[int(np.argmax(cos))])
    prototypes: list[tuple[int, float]] = []
    similarities = session.intrinsic("similarities", sl) if shares else None
    W = session.head_weight() if similarities is not None else None
    if similarities is not None and W is not None:
        c = classes.index(shares[0][0])
        sims = similarities[ok].astype(np.float64)
        contrib = (sims * W[c][None, :]).mean(axis=0)
        order = np.argsort(-contrib, kind="stable")[:top]
        prototypes = [(int(j), float(contrib[j])) for j in order]
    t0, t1 = float(ts[start]), float(ts[end])
    said = ", ".join(f"{c} {100 * v:.0f} %" for c, v in shares) or "no face"
    tooltip = (f"{desc}: frames {start}–{end - 1}, {t0:.2f}–{t1:.2f} s ({t1 - t0:.2f} s); predicted {said}; "
               f"face in {int(ok.sum())} of {end - start} frames")
    return {"name": desc, "tooltip": tooltip, "start": int(start), "end": int(end), "t0": t0, "t1": t1,
            "classes": shares, "mean_map": mean_map, "key_frame": key_frame, "prototypes": prototypes}


def stage_face(session, k: int, mean_map: np.ndarray, video: str | None = None
               ) -> tuple[np.ndarray, float] | None:
    """A stage's mean map laid over a face: frame k's model input (the session's preprocessing of the frame
    and its face, what the model saw) with the map's positive part drawn as the review window draws maps
    (engine.figures.overlay: the overlay colours, opacity rising with the value, full colour at the 99th
    percentile): (RGB uint8 S×S, the value drawn at full colour); None when frame k has no face or the video
    cannot be read. ``video``: where
    the video is now (default: the path the session recorded). Reads only."""
    from PIL import Image

    from engine.faces import FaceResult
    from engine.figures import overlay
    from engine.overlay import FrameEvidence, heat_level, shown_relevance
    from engine.preprocess import PreprocessConfig, preprocess
    from engine.video import VideoError, open_video

    info = session.analysis_info()
    faces = session.faces(slice(k, k + 1))
    if info is None or k < 0 or k >= faces.frames_done or not faces.found[0]:
        return None
    try:
        with open_video(video or session.video["path"]) as reader:
            frame = reader.frame(k, full=True)
    except (VideoError, OSError, KeyError):
        return None
    face = FaceResult(True, faces.box[0].copy(), faces.landmarks[0].copy(), float(faces.confidence[0]), 1)
    prep = preprocess(frame, face, PreprocessConfig.from_json(info["preprocess"]))
    if prep is None:
        return None
    image = prep.image if prep.image.ndim == 3 else prep.image[..., None]
    image = np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)
    size = image.shape[1], image.shape[0]
    heat = np.asarray(Image.fromarray(shown_relevance(mean_map)).resize(size, Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0, None).astype(np.float32)
    level = heat_level(heat)
    _crop, out = overlay(image, FrameEvidence(heat=heat, heat_origin=(0, 0), heat_level=level), pad=0)
    return out, level
