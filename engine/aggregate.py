"""Video-level aggregation of per-frame scores (METHODS §9).

EWMA smoothing ỹ_1 = y_1, ỹ_t = α y_t + (1 − α) ỹ_{t−1}; the video decision is argmax of the last
smoothed state. Frames without a face do not enter the recurrence: they carry the previous state,
so a short detector dropout neither resets nor drags the running estimate.

Time in seconds: the smoothing is set by a time constant τ (s) and α follows from the video's frame
rate, α = 1 − exp(−Δt/τ) with Δt = 1/fps (`alpha_from_tau`). A frame's smoothed value is the state at
the end of the interval that frame is shown, so a clip resampled to k× its fps (every frame shown k
times) gives exactly the same curve at the end of each original frame: (1 − α_k)^k = 1 − α. Sessions
made before τ existed recorded α only; `tau_from_alpha` gives the τ it corresponds to at their fps.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy.signal import lfilter

from engine.temporal import DEFAULT_TAU_S as _DEFAULT_TAU_S

log = logging.getLogger(__name__)

NO_FACE = "no face"

# The default time constant (s) is chosen on the shared CREMA-D clips with bench/temporal_quality.py
# (decision stability vs lag); it lives with the other temporal defaults in engine.temporal.
DEFAULT_TAU_S = _DEFAULT_TAU_S


def alpha_from_tau(tau_s: float, fps: float) -> float:
    """EWMA α for time constant ``tau_s`` seconds at ``fps`` frames/s: 1 − exp(−1/(fps·τ)); τ = 0 gives 1."""
    if not tau_s >= 0.0 or not math.isfinite(tau_s):
        raise ValueError(f"EWMA time constant must be ≥ 0 s, got {tau_s}")
    if not fps > 0.0 or not math.isfinite(fps):
        raise ValueError(f"frame rate must be > 0, got {fps}")
    if tau_s == 0.0:
        return 1.0
    return float(-math.expm1(-1.0 / (fps * tau_s)))


def tau_from_alpha(alpha: float, fps: float) -> float:
    """The time constant (s) that α corresponds to at ``fps``; 0 for α = 1 (no smoothing)."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"EWMA alpha must be in (0, 1], got {alpha}")
    if not fps > 0.0 or not math.isfinite(fps):
        raise ValueError(f"frame rate must be > 0, got {fps}")
    if alpha == 1.0:
        return 0.0
    return float(-1.0 / (fps * math.log1p(-alpha)))


def ewma_settings(recorded: dict, fps: float) -> tuple[float, float]:
    """(α, τ s) an analysis recorded: τ when the session has ``ewma_tau_s`` (α then follows from the fps it
    recorded, else ``fps``), else the α that older sessions stored alone, with its τ at ``fps``."""
    tau = recorded.get("ewma_tau_s")
    if tau is not None:
        rec_fps = float(recorded.get("ewma_fps") or fps)
        return alpha_from_tau(float(tau), rec_fps), float(tau)
    alpha = float(recorded.get("alpha") or 0.3)
    return alpha, tau_from_alpha(alpha, fps)


class EwmaSmoother:
    """`ewma` for one score array at any number of α values: the frames that enter the recurrence are
    found and gathered once, so moving the α slider over an hour of frames only reruns the filter."""

    def __init__(self, scores: np.ndarray, valid: np.ndarray | None = None) -> None:
        y = np.asarray(scores, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2:
            raise ValueError(f"scores must be T×C, got shape {np.shape(scores)}")
        t_len = y.shape[0]
        ok = np.isfinite(y).all(axis=1)
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            if valid.shape != (t_len,):
                raise ValueError(f"valid must have length {t_len}, got shape {valid.shape}")
            ok &= valid
        self.shape = y.shape
        # Skipped frames carry the state, so the recurrence runs over the valid rows only: one lfilter
        # call over the compacted rows, then a forward fill back onto the full timeline.
        self._yv = y[ok]
        pos = np.cumsum(ok) - 1
        self._pos = pos[pos >= 0]  # for each row from the first valid one on: its valid row's index

    def __call__(self, alpha: float) -> np.ndarray:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"EWMA alpha must be in (0, 1], got {alpha}")
        if self._yv.shape[0] == 0:
            return np.full(self.shape, np.nan)
        zi = ((1.0 - alpha) * self._yv[0])[None, :]  # makes the first output equal y_1 exactly
        smoothed, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], self._yv, axis=0, zi=zi)
        # The rows from the first valid frame on are a suffix: gather them with take (a boolean-mask
        # assignment of an hour's T×C rows cost ~8 ms of the α slider's time, take ~0.6 ms).
        out = np.empty(self.shape)
        first = self.shape[0] - len(self._pos)
        out[:first] = np.nan
        np.take(smoothed, self._pos, axis=0, out=out[first:])
        return out


def ewma(scores: np.ndarray, alpha: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Exponentially weighted moving average over time of a T×C score array.

    ``valid`` (bool, length T) marks frames with a face; invalid frames, and frames whose scores are
    not all finite, carry the previous smoothed state. Rows before the first valid frame are NaN.
    Returns float64 T×C.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"EWMA alpha must be in (0, 1], got {alpha}")
    return EwmaSmoother(scores, valid)(alpha)


def frame_predictions(smoothed: np.ndarray) -> np.ndarray:
    """Per-frame argmax of a T×C array; −1 where the row is not finite (no face yet)."""
    s = np.asarray(smoothed, dtype=np.float64)
    finite = np.isfinite(s).all(axis=1)
    pred = np.full(s.shape[0], -1, dtype=np.int64)
    if finite.any():
        pred[finite] = np.argmax(s[finite], axis=1)
    return pred


def video_decision(smoothed: np.ndarray, classes: Sequence[str]) -> str:
    """Class name of argmax of the last finite smoothed state, or ``"no face"`` when there is none."""
    s = np.asarray(smoothed, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != len(classes):
        raise ValueError(f"smoothed scores must be T×{len(classes)}, got shape {s.shape}")
    finite = np.flatnonzero(np.isfinite(s).all(axis=1))
    if finite.size == 0:
        return NO_FACE
    return str(classes[int(np.argmax(s[finite[-1]]))])
