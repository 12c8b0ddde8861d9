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
# SpRAy temporal weight 2: fewest raw stages on the 10-minute video (8,373 of 18,032 frames, against 16,744
#   without the term and 11,915 at weight 1) and raw reduction on the clips 0.64–0.73 → 0.68–0.81 for a
#   mean frame-to-stage cosine 0.01 lower; weight 4 is worse on the long video.
# Minimum stage 0.6 s: the shortest in the sweep that keeps the 10-minute video at ≤ 1 stage per second
#   (545 stages, 0.91/s; 0.5 s gives 1.02/s); on the clips about 97 % reduction.
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
    s, d = s[ok], d[ok]
    if len(s) < 2:
        return None
    ms, md = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - ms, d - md
    var = float((sc**2).sum()) / len(s)
    if var <= 1e-12:
        return None
    cov = dc.T @ sc / len(s)
    u, sv, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1.0
    r = u @ e @ vt
    scale = float(np.trace(np.diag(sv) @ e)) / var
    t = md - scale * r @ ms
    return np.hstack([scale * r, t[:, None]])


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
    for k in rows:
        if not ok[k]:
            continue
        acc = np.zeros((h, w), np.float64)
        cover = np.zeros((h, w), np.float64)
        for off, g in zip(offsets, weights, strict=True):
            j = k + int(off)
            if j < 0 or j >= t_len or not ok[j]:
                continue
            M = None
            if off != 0 and lm is not None:
                M = similarity_transform(lm[j], lm[k])
            if M is None:
                acc += g * m[j]
                cover += g
                continue
            warped = cv2.warpAffine(m[j], M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            mask = cv2.warpAffine(ones, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            acc += g * warped
            cover += g * mask
        out[k] = np.where(cover > 1e-6, acc / np.maximum(cover, 1e-6), m[k]).astype(np.float32)
    return out


def session_smoothed_maps(session, method: str, frames: slice, sigma_s: float = DEFAULT_MAP_SIGMA_S,
                          align: bool = True) -> np.ndarray:
    """Display maps of frames [start, stop) of one method of a session, smoothed (`smooth_maps`) with σ in
    seconds (converted at the session's fps). Reads the stored maps, faces and input mappings of those
    frames and of the frames around them the Gaussian reaches; reads only, never writes."""
    T = session.frame_count
    start, stop, _ = frames.indices(T)
    radius = gaussian_radius(sigma_s * session.fps)
    a, b = max(0, start - radius), min(T, stop + radius)
    stored = session.explanation_maps(method, slice(a, b))
    if stored is None:
        raise KeyError(f"{session.path} has no {method} maps")
    maps = stored.astype(np.float32)
    valid = session.read("valid", slice(a, b)).astype(bool)
    lm = None
    if align:
        faces = session.faces(slice(a, b))
        lm = map_landmarks(faces.landmarks, session.mappings(slice(a, b)), maps.shape[1:])
    out = smooth_maps(maps, lm, sigma_s * session.fps, valid, align, frames=np.arange(start - a, stop - a))
    return out[start - a: stop - a]
