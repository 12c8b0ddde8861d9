"""Per-frame tracks derived from stored arrays: runs of equal values, the predicted class, occlusion deltas.

One definition each, used by the pipeline, the exports and the GUI (numpy only, vectorised: an hour of
frames is one comparison, not a Python loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def runs(values: Sequence[Any] | np.ndarray) -> list[tuple[int, int, Any]]:
    """Maximal runs of equal consecutive values as (start, end_exclusive, value); values keep their type
    (numpy scalars become Python ones)."""
    v = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if v.size == 0:
        return []
    v = v.reshape(-1)
    starts = np.concatenate(([0], np.flatnonzero(v[1:] != v[:-1]) + 1))
    ends = np.concatenate((starts[1:], [v.size]))
    return [(int(a), int(b), v[a].item() if isinstance(v[a], np.generic) else v[a])
            for a, b in zip(starts, ends, strict=True)]


def predicted(probs: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """argmax class per frame, -1 where the frame was not scored (invalid or non-finite scores)."""
    probs = np.asarray(probs)
    ok = np.all(np.isfinite(probs), axis=1) if probs.size else np.zeros(len(probs), bool)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    pred = np.full(len(probs), -1, dtype=np.int64)
    if ok.any():
        pred[ok] = np.argmax(probs[ok], axis=1)
    return pred


def occlusion_deltas(probs: np.ndarray, scores: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """n×C: per occlusion condition, the score of the frame's predicted class when occluded minus
    unoccluded (SCHEMA: exports; negative = the hidden part mattered); NaN where the frame was not scored."""
    probs, scores = np.asarray(probs), np.asarray(scores)
    pred = predicted(probs, valid)
    out = np.full(scores.shape[:2], np.nan)
    ok = pred >= 0
    if ok.any():
        rows = np.flatnonzero(ok)
        out[rows] = scores[rows, :, pred[rows]] - probs[rows, pred[rows]][:, None]
    return out
