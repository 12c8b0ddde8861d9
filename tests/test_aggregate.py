"""EWMA video aggregation (METHODS §9)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engine.aggregate import NO_FACE, ewma, frame_predictions, video_decision
from sessions.tracks import runs


def _loop_ewma(y: np.ndarray, alpha: float, valid: np.ndarray) -> np.ndarray:
    # Reference: the recurrence written out literally.
    out = np.full_like(y, np.nan, dtype=np.float64)
    state = None
    for t in range(len(y)):
        if valid[t]:
            state = y[t].astype(np.float64) if state is None else alpha * y[t] + (1 - alpha) * state
        if state is not None:
            out[t] = state
    return out


def test_constant_input_returns_constant() -> None:
    y = np.tile([0.2, 0.5, 0.3], (50, 1))
    assert np.allclose(ewma(y, 0.3), y)


def test_alpha_one_returns_input() -> None:
    y = np.random.default_rng(0).random((40, 4))
    out = ewma(y, 1.0)
    assert np.allclose(out, y)
    assert np.allclose(out[-1], y[-1])


def test_matches_recurrence_with_gaps() -> None:
    rng = np.random.default_rng(1)
    y = rng.random((300, 6))
    valid = rng.random(300) > 0.3
    valid[:5] = False
    out = ewma(y, 0.2, valid)
    first = int(np.flatnonzero(valid)[0])
    assert np.isnan(out[:first]).all() and np.isfinite(out[first:]).all()
    assert np.allclose(out, _loop_ewma(y, 0.2, valid), equal_nan=True)
    assert np.allclose(out[first], y[first])  # ỹ_1 = y_1
    gap = int(np.flatnonzero(~valid[first:])[0]) + first
    assert np.array_equal(out[gap], out[gap - 1])  # a frame without a face carries the state


def test_non_finite_rows_are_skipped() -> None:
    y = np.array([[1.0, 0.0], [np.nan, np.nan], [0.0, 1.0]])
    out = ewma(y, 0.5)
    assert np.allclose(out, [[1, 0], [1, 0], [0.5, 0.5]])


def test_video_decision_and_no_face() -> None:
    classes = ["happy", "sad"]
    y = np.array([[0.9, 0.1]] * 10 + [[0.1, 0.9]] * 10)
    assert video_decision(ewma(y, 0.5), classes) == "sad"
    assert video_decision(ewma(y, 0.01), classes) == "happy"  # slow smoothing remembers the start
    assert video_decision(ewma(y, 0.5, np.zeros(20, bool)), classes) == NO_FACE
    # Trailing faceless frames: the last valid state decides.
    valid = np.ones(20, bool)
    valid[12:] = False
    assert video_decision(ewma(y, 0.9, valid), classes) == "sad"
    with pytest.raises(ValueError):
        ewma(y, 0.0)


def test_decision_runs() -> None:
    smoothed = ewma(np.array([[1, 0]] * 3 + [[0, 1]] * 2 + [[1, 0]]), 1.0, np.array([0, 1, 1, 1, 1, 1], bool))
    pred = frame_predictions(smoothed)
    assert pred.tolist() == [-1, 0, 0, 1, 1, 0]
    assert runs(pred) == [(0, 1, -1), (1, 3, 0), (3, 5, 1), (5, 6, 0)]  # the one run-length helper
    assert runs([]) == []


def test_100k_frames_is_fast() -> None:
    rng = np.random.default_rng(2)
    y = rng.random((100_000, 7))
    valid = rng.random(100_000) > 0.1
    t0 = time.perf_counter()
    out = ewma(y, 0.1, valid)
    elapsed = time.perf_counter() - t0
    assert out.shape == y.shape and np.isfinite(out[np.argmax(valid):]).all()
    assert elapsed < 0.5, f"EWMA over 100k frames took {elapsed:.3f}s"


# --- issue 14: EWMA by a time constant in seconds ----------------------------------------------------


def test_alpha_from_tau_and_back() -> None:
    from engine.aggregate import alpha_from_tau, tau_from_alpha

    assert alpha_from_tau(0.0, 25.0) == 1.0 and tau_from_alpha(1.0, 25.0) == 0.0
    a = alpha_from_tau(0.5, 25.0)
    assert a == pytest.approx(1 - np.exp(-1 / 12.5))
    assert tau_from_alpha(a, 25.0) == pytest.approx(0.5)
    # The old default α = 0.3 at 29.97 fps is a time constant of about 94 ms.
    assert tau_from_alpha(0.3, 29.97) == pytest.approx(0.09355, abs=1e-4)
    with pytest.raises(ValueError):
        alpha_from_tau(-1.0, 25.0)
    with pytest.raises(ValueError):
        alpha_from_tau(0.5, 0.0)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_same_curve_at_k_times_the_frame_rate(k: int) -> None:
    # Every frame shown k times at k× the fps, with the α the same τ gives there: the smoothed value at the
    # end of each original frame (the last of its k copies) equals the original curve; frames without a face
    # are repeated too and still carry the state.
    from engine.aggregate import alpha_from_tau

    rng = np.random.default_rng(k)
    y = rng.random((120, 5))
    valid = rng.random(120) > 0.2
    valid[:3] = False
    tau, fps = 0.4, 29.97
    base = ewma(y, alpha_from_tau(tau, fps), valid)
    fast = ewma(np.repeat(y, k, axis=0), alpha_from_tau(tau, k * fps), np.repeat(valid, k))
    np.testing.assert_allclose(fast[k - 1::k], base, atol=1e-12, equal_nan=True)
    assert video_decision(fast, list("abcde")) == video_decision(base, list("abcde"))
    # The α that is right at 1× is wrong at k×: the curves then differ.
    wrong = ewma(np.repeat(y, k, axis=0), alpha_from_tau(tau, fps), np.repeat(valid, k))
    assert np.nanmax(np.abs(wrong[k - 1::k] - base)) > 1e-3


def test_ewma_settings_reads_old_and_new_sessions() -> None:
    from engine.aggregate import alpha_from_tau, ewma_settings

    assert ewma_settings({"alpha": 0.3}, 29.97) == pytest.approx((0.3, 0.09355), abs=1e-4)  # α only (old)
    a, tau = ewma_settings({"alpha": alpha_from_tau(0.25, 50.0), "ewma_tau_s": 0.25, "ewma_fps": 50.0}, 25.0)
    assert tau == 0.25 and a == pytest.approx(alpha_from_tau(0.25, 50.0))
