"""Issue 16 in the window: a landmark model's points coloured by their IG, the Landmarks dock's bars, the expected
AU regions and the AU agreement track.

Real main window offscreen; the CREMA-D happy clip analysed end to end by the tiny landmark model that
tests/test_landmark.py trains on the shared CREMA-D clips (its fixtures, reused). Expected values come from
the session file (``Session`` readers) and the engine's AU codebook (``engine.explain.au``), computed here
directly, not through the window's readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.explain.au import au_map, cam_cos
from engine.models.landmark import LANDMARK_PARTS
from sessions import Session
from vidxai_gui.app import save_screenshot
from vidxai_gui.landmark_panel import PARTS
from vidxai_gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(300)]

K = 30  # a frame the model scored (its window of 8 frames has faces)


@pytest.fixture(scope="module")
def landmark_session(tiny_landmark_model: Path, hap_clip: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.landmark_analysis import LandmarkAnalyzeSettings
    from engine.pipeline import AnalyzeSettings, analyze

    out = tmp_path_factory.mktemp("lmk-session") / f"{hap_clip.stem}.vxs"
    analyze(hap_clip, tiny_landmark_model, out, AnalyzeSettings())
    assert LandmarkAnalyzeSettings().steps == 50
    return out


def _open(qtbot, w: MainWindow, path: Path, k: int) -> None:
    w.open_path(path)
    qtbot.waitUntil(lambda: w.data is not None and w.player.info is not None and bool(w.timeline.classes),
                    timeout=30_000)
    qtbot.waitUntil(lambda: w.landmark_view.evidence is not None, timeout=30_000)
    w.player.seek(k)
    qtbot.waitUntil(lambda: w.player.current == k and w.review.frame == k, timeout=10_000)


def _direct_au_cos(lm: np.ndarray, box: np.ndarray, rel: np.ndarray, cls: str) -> tuple[float, np.ndarray]:
    """cos(R, A) over the face square, written out: 96² px around the box (15 % margin), A from the codebook,
    R a Gaussian (σ = 5 % of the face size) per landmark weighted by its |IG|."""
    x0, y0, x1, y1 = box.astype(np.float64)
    side = max(x1 - x0, y1 - y0) * 1.3
    ox, oy = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
    to = 96 / side
    lm96 = (lm.astype(np.float64) - [ox, oy]) * to
    a = au_map(lm96, cls, (96, 96), box=np.array([(x0 - ox) * to, (y0 - oy) * to, (x1 - ox) * to, (y1 - oy) * to]))
    yy, xx = np.mgrid[0:96, 0:96] + 0.5
    sigma = 0.05 * 96 / 1.3
    r = sum(w * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma ** 2)) for (px, py), w in zip(lm96, rel))
    return cam_cos(r, a), a


def test_landmark_session_points_bars_and_au(window: MainWindow, qtbot, landmark_session: Path,
                                            artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from vidxai_gui import landmark_view

    threads = []  # where the evidence and the AU track are computed: never on the GUI thread

    def load(*args):
        threads.append(threading.current_thread())
        return real_load(*args)

    real_load = landmark_view.load_evidence
    monkeypatch.setattr(landmark_view, "load_evidence", load)
    with Session.open(landmark_session) as s:
        attr = s.landmark_ig().astype(np.float64)
        info = s.landmark_ig_info()
        faces = s.faces()
        probs = s.read("probs")
        valid = s.read("valid")
        classes = s.analysis_info()["classes"]
    # The session names its landmark order and grouping; the window groups by what it says.
    assert info["points"] == list(range(68))
    assert {p: list(v) for p, v in info["groups"].items()} == {p: list(v) for p, v in LANDMARK_PARTS.items()}
    _open(qtbot, window, landmark_session, K)
    lv = window.landmark_view
    # Landmark attributions are points, not a heatmap: the Heatmap menu offers no map, nothing reads one.
    window._fill_heat_menu()
    assert next(a.text() for a in window.heat_menu.actions() if a.text()) == "(no maps in this session)"
    assert window.player.extras_provider is None
    assert threads and threading.main_thread() not in threads

    # The points: on frame K's landmarks, coloured by the signed IG of the window ending at K.
    signed = attr[K].sum(axis=(0, 2))
    mag = np.abs(attr[K]).sum(axis=(0, 2))
    pos = lv.points.scatter.getData()
    assert np.allclose(np.c_[pos[0], pos[1]], faces.landmarks[K], atol=1e-3)
    col = lv.points.colours.astype(int)
    assert len(col) == 68 and lv.points.legend.isVisible() and not window.player.view.landmark_item.isVisible()
    strong = np.abs(signed) > 0.2 * np.abs(signed).max()
    assert strong.sum() >= 3
    assert (col[strong & (signed > 0), 0] > col[strong & (signed > 0), 2]).all()  # red: for the class
    assert (col[strong & (signed < 0), 2] > col[strong & (signed < 0), 0]).all()  # blue: against it
    red_minus_blue = col[:, 0] - col[:, 2]
    order = np.argsort(signed)
    assert (np.diff(red_minus_blue[order]) >= -2).all()  # the colour follows the signed IG monotonically
    assert lv.points.sizes[np.argmax(mag)] == lv.points.sizes.max() > lv.points.sizes[np.argmin(mag)]
    assert lv.points.legend.cls == classes[int(np.argmax(probs[K]))]

    # The dock's bars: this frame's parts are its |IG| per part in per cent (they sum to 100), the top
    # landmarks are the largest |IG|, the clip's parts are the session's record (= |IG| summed over the video).
    panel = lv.panel
    want = {p: 100 * mag[list(LANDMARK_PARTS[p])].sum() / mag.sum() for p in PARTS}
    assert np.allclose(panel.widths(1), [want[p] for p in PARTS], atol=1e-4)
    assert abs(panel.widths(1).sum() - 100) < 1e-6
    assert {pt for pt, _p, _v in panel.frame_top} == set(np.argsort(-mag)[:10].tolist())
    clip = np.abs(attr[valid]).sum(axis=(0, 1, 3))
    assert np.allclose(clip, info["clip_relevance"], rtol=2e-3)
    clip_want = [100 * clip[list(LANDMARK_PARTS[p])].sum() / clip.sum() for p in PARTS]
    assert np.allclose(panel.widths(3), clip_want, atol=0.05)
    assert {pt for pt, _p, _v in panel.clip_top} == set(info["ranking"][:10])
    save_screenshot(window, artifacts_dir / "gui_landmarks_1280x800.png")

    # The AU agreement track: every frame's value equals cos(R, A) computed here.
    _x, track = window.timeline.au_curve.getData()
    assert window.timeline.au_plot.isVisible() and len(track) == len(valid)
    assert np.isnan(track[~valid]).all()
    for t in np.flatnonzero(valid):
        cls = classes[int(np.argmax(probs[t]))]
        want_cos, _a = _direct_au_cos(faces.landmarks[t], faces.box[t], np.abs(attr[t]).sum(axis=(0, 2)), cls)
        assert abs(track[t] - want_cos) < 1e-4, (t, track[t], want_cos)

    # View ▸ Show expected AU regions: frame K's A of the predicted class, and its cosine in words.
    window.au_regions_action.setChecked(True)
    regions = lv.au_regions
    assert regions.image.isVisible() and regions.label.isVisible()
    cos_k, a_k = _direct_au_cos(faces.landmarks[K], faces.box[K], mag, classes[int(np.argmax(probs[K]))])
    assert np.allclose(regions.map, a_k, atol=1e-6)
    assert f"{cos_k:.2f}" in regions.label.text() and "AU12" in regions.label.text()
    window.player.set_face_view(True)
    qtbot.wait(100)
    save_screenshot(window, artifacts_dir / "gui_au_regions_1280x800.png")
    window.au_regions_action.setChecked(False)
    assert not regions.image.isVisible() and not regions.label.isVisible()

    # A frame the model did not score (the first 7: no full window): no coloured points, no bars.
    window.player.seek(2)
    qtbot.waitUntil(lambda: window.review.frame == 2, timeout=10_000)
    assert not lv.points.scatter.isVisible() and panel.frame_parts == {}


def test_frame_model_session_regions_without_a_stored_cosine(window: MainWindow, qtbot,
                                                             analysed_session: Path) -> None:
    """A frame model's session (the shared tiny ProtoPNet analysis, recorded without AU cosines): no landmark
    points or bars, no AU track; the AU regions of the predicted class are still drawn, agreement "—"."""
    with Session.open(analysed_session) as s:
        assert s.au_cos("intrinsic") is None
        faces, probs = s.faces(), s.read("probs")
        classes = s.analysis_info()["classes"]
    _open(qtbot, window, analysed_session, K)
    lv = window.landmark_view
    assert not window.timeline.au_plot.isVisible() and lv.evidence.au is None
    assert lv.panel.frame_parts == {} and not lv.points.scatter.isVisible()
    assert window.player.view.landmark_item.isVisible()
    window.au_regions_action.setChecked(True)
    cls = classes[int(np.argmax(probs[K]))]
    text = lv.au_regions.label.text()
    assert cls in text and ("<b>—</b>" in text or "no facial action units" in text or "No AU codebook" in text)
    if lv.au_regions.map is not None and lv.au_regions.map.any():
        x0, y0, x1, y1 = faces.box[K].astype(np.float64)
        side = max(x1 - x0, y1 - y0) * 1.3
        ox, oy = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
        lm96 = (faces.landmarks[K].astype(np.float64) - [ox, oy]) * 96 / side
        box96 = (np.array([x0, y0, x1, y1]) - [ox, oy, ox, oy]) * 96 / side
        assert np.allclose(lv.au_regions.map, au_map(lm96, cls, (96, 96), box=box96), atol=1e-6)
