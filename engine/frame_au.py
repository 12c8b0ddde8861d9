"""A frame's expected action-unit regions and their agreement with what the model used (issue 16, METHODS §7),
and a landmark model's per-frame landmark evidence: what the window draws. Qt-free; the GUI computes the
per-video arrays on a worker thread.

**The face square.** Everything of a frame is compared on one grid: a square of FACE_PX × FACE_PX pixels
centred on the face box, side (1 + 2·MARGIN) × the box's longer side, in the frame's pixels. A, the
action-unit map of the frame's predicted class, is drawn there from the frame's 68 landmarks with the one
codebook (``engine.explain.au.au_map``, face size from the box); the window shows that same map.

**Landmark models.** The relevance of landmark l at frame t is its |IG| in the window that scored frame t,
summed over the window's frames and x, y (``engine.explain.landmark_ig.clip_relevance`` of that window;
the clip ranking sums the same over the video). Its sign (the signed IG summed the same way) says whether
the landmark's movement pushed the predicted class's logit up (> 0) or down (< 0) relative to the IG
baseline. The relevance map R of frame t puts a Gaussian of σ = SPLAT_SIGMA × the face size, weighted by
that |IG|, at each landmark's position in frame t; the AU agreement is cos(R, A) (``cam_cos``).

**Frame models** (heatmaps): the AU agreement is the session's stored ``au_cos`` of the method, which the
analysis computed over the model input with the method's map (``engine.pipeline``), so the window, the
JSON export and this track give one number.

Imports of engine.explain (torch) wait until a function needs them: the window imports this module at start.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sessions.tracks import predicted

FACE_PX = 96  # the face square's side in map pixels
MARGIN = 0.15  # the square reaches this fraction of the face size beyond the box on each side
SPLAT_SIGMA = 0.05  # a landmark's Gaussian in the relevance map, in units of the face size
LANDMARK_METHOD = "landmark_ig"  # the explanation key of landmark-sequence sessions
BLOCK = 256  # frames read at a time
# FACS names of the codebook's action units (engine.explain.au.CODEBOOK), for the window's legend.
AU_NAMES = {1: "inner brow raiser", 2: "outer brow raiser", 4: "brow lowerer", 5: "upper lid raiser",
            6: "cheek raiser", 7: "lid tightener", 9: "nose wrinkler", 10: "upper lip raiser",
            12: "lip corner puller", 15: "lip corner depressor", 16: "lower lip depressor", 17: "chin raiser",
            20: "lip stretcher", 23: "lip tightener", 24: "lip pressor", 25: "lips part", 26: "jaw drop",
            27: "mouth stretch"}


@dataclass(frozen=True)
class FaceSquare:
    """The face square of one frame: top-left (x0, y0) and side, in frame pixels."""

    x0: float
    y0: float
    side: float

    @classmethod
    def around(cls, box: np.ndarray) -> FaceSquare:
        x0, y0, x1, y1 = (float(v) for v in box)
        size = max(x1 - x0, y1 - y0, 1.0)
        side = size * (1 + 2 * MARGIN)
        return cls((x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2, side)

    def to_map(self, xy: np.ndarray) -> np.ndarray:
        """Frame pixels → map pixels (the grid's pixel centres at 0.5, 1.5, …)."""
        return (np.asarray(xy, np.float64) - [self.x0, self.y0]) * (FACE_PX / self.side)


def expression_aus(expression: str) -> tuple[int, ...] | None:
    """The codebook's AUs of a class (() for neutral, calm), None for a class the codebook does not know."""
    from engine.explain.au import CODEBOOK, canonical_expression

    try:
        return CODEBOOK[canonical_expression(expression)]
    except KeyError:
        return None


def expected_au_map(landmarks: np.ndarray, box: np.ndarray, expression: str) -> np.ndarray | None:
    """A of ``expression`` over the frame's face square (FACE_PX², 0..1; all 0 for neutral); None without
    a face or for a class outside the codebook."""
    if expression_aus(expression) is None or not (np.isfinite(landmarks).all() and np.isfinite(box).all()):
        return None
    from engine.explain.au import au_map

    sq = FaceSquare.around(box)
    b = sq.to_map(np.asarray(box, np.float64).reshape(2, 2)).ravel()
    return au_map(sq.to_map(landmarks), expression, (FACE_PX, FACE_PX), box=b)


def landmark_relevance_map(landmarks: np.ndarray, box: np.ndarray, relevance: np.ndarray,
                           points: list[int]) -> np.ndarray:
    """R over the face square: Σ_l relevance_l · Gaussian(σ = SPLAT_SIGMA · face size) at landmark l."""
    sq = FaceSquare.around(box)
    xy = sq.to_map(np.asarray(landmarks, np.float64)[list(points)])
    sigma = SPLAT_SIGMA * FACE_PX / (1 + 2 * MARGIN)
    g = np.arange(FACE_PX) + 0.5
    gx = np.exp(-((g[None, :] - xy[:, :1]) ** 2) / (2 * sigma ** 2))  # L×W
    gy = np.exp(-((g[None, :] - xy[:, 1:]) ** 2) / (2 * sigma ** 2))  # L×H
    w = np.nan_to_num(np.asarray(relevance, np.float64))
    return np.einsum("l,lh,lw->hw", w, gy, gx).astype(np.float32)


def landmark_au_cos(landmarks: np.ndarray, box: np.ndarray, relevance: np.ndarray, points: list[int],
                    expression: str) -> float:
    """cos(R, A) of one frame; NaN without a face, scores or AU map (neutral, a class outside the codebook)."""
    from engine.explain.au import cam_cos

    a = expected_au_map(landmarks, box, expression)
    if a is None or not a.any() or not np.isfinite(relevance).all():
        return float("nan")
    return cam_cos(landmark_relevance_map(landmarks, box, relevance, points), a)


def landmark_frame_evidence(attr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IG windows (…×P×L×2) → (signed, |IG|), each …×L: the landmark's IG summed over the window's frames and
    x, y, and its |IG| summed the same way (NaN stays NaN for unscored frames)."""
    a = np.asarray(attr, np.float32)
    return a.sum(axis=(-1, -3)), np.abs(a).sum(axis=(-1, -3))  # the second: landmark_ig.clip_relevance


def au_agreement(session, method: str) -> np.ndarray | None:
    """The per-frame AU agreement of an analysed session (float32 T, NaN where undefined), None when the
    session has none for ``method`` (no analysis, or a frame model's maps without a stored cosine)."""
    info = session.analysis_info()
    if info is None:
        return None
    if method != LANDMARK_METHOD:
        cos = session.au_cos(method) if method else None
        return None if cos is None else np.asarray(cos, np.float32)
    classes = list(info["classes"])
    points = list(session.landmark_ig_info().get("points", range(68)))
    T = session.frame_count
    out = np.full(T, np.nan, np.float32)
    for s in range(0, T, BLOCK):
        sl = slice(s, min(s + BLOCK, T))
        attr = session.landmark_ig(sl)
        if attr is None:
            return None
        faces = session.faces(sl)
        pred = predicted(session.read("probs", sl), session.read("valid", sl))
        rel = landmark_frame_evidence(attr)[1]
        for i in np.flatnonzero((pred >= 0) & np.asarray(faces.found, bool)):
            out[s + i] = landmark_au_cos(faces.landmarks[i], faces.box[i], rel[i], points, classes[pred[i]])
    return out


__all__ = ["AU_NAMES", "BLOCK", "FACE_PX", "LANDMARK_METHOD", "FaceSquare", "au_agreement", "expected_au_map", "expression_aus",
           "landmark_au_cos", "landmark_frame_evidence", "landmark_relevance_map"]
