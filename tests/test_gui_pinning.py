"""Pinning tests: what the window draws equals what the session stores, pixel for pixel (issue 13).

Written before the review model / session-reader refactor so that moving code cannot change what a
reviewer sees. Each expected value is computed here from the session file with the engine's own
mapping, independently of the GUI's readers: a heatmap a frame apart, a Top-X applied twice, a box from
another prototype or an occlusion track of another class would fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.preprocess import InputMapping
from sessions import Session
from vidxai_gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(300)]

TOP_X = 0.25


@pytest.fixture(scope="module")
def session_path(analysed_session: Path) -> Path:
    return analysed_session


@pytest.fixture
def opened(window: MainWindow, qtbot, session_path: Path) -> MainWindow:
    window.open_path(session_path)
    qtbot.waitUntil(lambda: window.data is not None and window.player.info is not None
                    and window.player.current == 0, timeout=20_000)
    window.smooth_maps_action.setChecked(False)  # pinned here: the stored maps (smoothing: test_gui_stages.py)
    return window


def _face_frames(path: Path) -> np.ndarray:
    with Session.open(path) as s:
        return np.flatnonzero(s.read("valid"))


def _frame_map(s: Session, k: int, heat: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    mapping = InputMapping.from_json(s.mappings(slice(k, k + 1))[0])
    return np.nan_to_num(mapping.heatmap_to_frame(heat, frame_hw), nan=0.0)


def expected_heat(path: Path, method: str, k: int, frame_hw: tuple[int, int], top_x: float | None) -> np.ndarray:
    """Frame k's stored map for `method`, ≥ 0, optionally Top-X projected, mapped onto the whole frame."""
    from engine.explain.topx import top_x as project

    with Session.open(path) as s:
        heat = np.clip(np.nan_to_num(s.read(f"explanations/{method}/maps", slice(k, k + 1))[0].astype(np.float32)),
                       0, None)
        if top_x is not None:
            heat = project(heat, top_x)
        return _frame_map(s, k, heat, frame_hw)


def expected_proto_box(path: Path, k: int, frame_hw: tuple[int, int]) -> tuple[int, np.ndarray]:
    """METHODS §1: the prototype with the largest W_ĉj·s_j, boxed at the 95th percentile of its map."""
    with Session.open(path) as s:
        w = np.asarray(s.attrs("explanations/intrinsic")["head_weight"], np.float64)
        sims = s.read("explanations/intrinsic/similarities", slice(k, k + 1))[0].astype(np.float64)
        c = int(np.argmax(s.read("probs", slice(k, k + 1))[0]))
        j = int(np.argmax(w[c] * sims))
        sim_map = s.read("explanations/intrinsic/sim_maps", slice(k, k + 1))[0, j].astype(np.float32)
        full = _frame_map(s, k, sim_map - np.nanmin(sim_map) + 1e-6, frame_hw)
    hot = full >= np.percentile(full[full > 0], 95)
    ys, xs = np.nonzero(hot)
    return j, np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def drawn_heat(window: MainWindow, frame_hw: tuple[int, int]) -> np.ndarray:
    """The heat item's image placed where the player draws it, as a frame-sized array (0 elsewhere)."""
    item = window.player.view.heat_item
    rect = item.mapRectToParent(item.boundingRect())
    x0, y0 = round(rect.left()), round(rect.top())
    img = np.asarray(item.image, np.float32)
    h, w = img.shape
    assert (round(rect.width()), round(rect.height())) == (w, h)  # one image pixel per frame pixel
    out = np.zeros(frame_hw, np.float32)
    out[y0:y0 + h, x0:x0 + w] = img
    return out


def _show(window: MainWindow, qtbot, k: int) -> None:
    window.timeline.seekRequested.emit(k)
    qtbot.waitUntil(lambda: window.player.current == k and window.player.view.heat_item.isVisible(),
                    timeout=20_000)
    qtbot.wait(100)


@pytest.mark.parametrize("method", ["gradcam", "intrinsic"])
def test_heatmap_at_frame_k_is_frame_ks_stored_map(opened: MainWindow, qtbot, session_path: Path,
                                                   method: str) -> None:
    w = opened
    frame_hw = (w.player.info.height, w.player.info.width)
    frames = _face_frames(session_path)
    w._pick_heat_method(method)
    for k in (int(frames[len(frames) // 3]), int(frames[2 * len(frames) // 3]), int(frames[-1])):
        _show(w, qtbot, k)
        expected = expected_heat(session_path, method, k, frame_hw, None)
        qtbot.waitUntil(lambda e=expected: np.allclose(drawn_heat(w, frame_hw), e, atol=1e-6), timeout=10_000)
        np.testing.assert_allclose(drawn_heat(w, frame_hw), expected, atol=1e-6)
        level = float(np.percentile(expected[expected > 0], 99))
        assert w.player.view.heat_item.levels[1] == pytest.approx(level, rel=1e-5)
        # Neighbouring frames' maps differ, so a map one frame apart would not pass.
        other = expected_heat(session_path, method, k - 1, frame_hw, None)
        assert not np.allclose(other, expected, atol=1e-6)


def test_top_x_overlay_is_the_projection_of_frame_ks_map(opened: MainWindow, qtbot, session_path: Path) -> None:
    w = opened
    frame_hw = (w.player.info.height, w.player.info.width)
    k = int(_face_frames(session_path)[len(_face_frames(session_path)) // 2])
    w._pick_heat_method("gradcam")
    w._set_top_x(True)
    _show(w, qtbot, k)
    expected = expected_heat(session_path, "gradcam", k, frame_hw, TOP_X)
    full = expected_heat(session_path, "gradcam", k, frame_hw, None)
    assert (expected > 0).sum() < (full > 0).sum()  # the projection removes something here
    qtbot.waitUntil(lambda: np.allclose(drawn_heat(w, frame_hw), expected, atol=1e-6), timeout=10_000)
    w._set_top_x(False)
    qtbot.waitUntil(lambda: np.allclose(drawn_heat(w, frame_hw), full, atol=1e-6), timeout=10_000)


def test_prototype_box_is_the_top_prototypes_95th_percentile_box(opened: MainWindow, qtbot,
                                                                 session_path: Path) -> None:
    w = opened
    frame_hw = (w.player.info.height, w.player.info.width)
    w._pick_heat_method("intrinsic")
    for k in (int(f) for f in _face_frames(session_path)[::17]):
        _show(w, qtbot, k)
        j, box = expected_proto_box(session_path, k, frame_hw)

        def drawn() -> tuple[float, ...]:
            r = w.player.view.proto_item.rect()
            return (r.left(), r.top(), r.right(), r.bottom())

        qtbot.waitUntil(lambda b=box: np.allclose(drawn(), b, atol=1e-3), timeout=10_000)
        assert w.player.view.proto_item.isVisible()
        assert w.player.view.proto_label.toPlainText() == f"prototype #{j}"


def test_occlusion_track_equals_the_stored_deltas(opened: MainWindow, session_path: Path) -> None:
    """Per condition: score of the frame's predicted class occluded minus unoccluded (NaN without a face)."""
    with Session.open(session_path) as s:
        conditions, scores = s.occlusion()
        probs = s.read("probs").astype(np.float64)
    assert len(conditions) == 7
    curves = opened.timeline.occlusion_curves
    assert list(curves) == conditions
    for i, name in enumerate(conditions):
        expected = np.full(len(probs), np.nan)
        for k in range(len(probs)):
            if np.isfinite(probs[k]).all():
                c = int(np.argmax(probs[k]))
                expected[k] = float(scores[k, i, c]) - probs[k, c]
        x, y = curves[name].getData()
        np.testing.assert_array_equal(x, np.arange(len(probs)))
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6, equal_nan=True)
        assert np.isfinite(y).sum() == np.isfinite(probs).all(axis=1).sum() > 0
