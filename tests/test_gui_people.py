"""The People dock: two people side by side, a thumbnail and screen time each; choosing the other one
re-runs the analysis for them as a job, and the session, the timeline and the dock follow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sessions import Session
from sessions import people as people_store
from tests.test_faces_scale import frames_of, write_video
from vidxai_gui.app import save_screenshot
from vidxai_gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(300)]


@pytest.fixture
def two_people_video(tmp_path: Path, hap_clip: Path, edge_dir: Path) -> Path:
    left = frames_of(hap_clip, 24)
    right = [f[:, 52:532] for f in frames_of(edge_dir / "single_face.mp4", 24)]
    return write_video(tmp_path / "two_people.mkv", [np.concatenate([a, b], 1) for a, b in zip(left, right, strict=True)],
                       lossless=True)


def test_people_dock_lists_and_switches_person(window: MainWindow, qtbot, two_people_video: Path,
                                               artifacts_dir: Path) -> None:
    from engine.resources import default_model_dir

    window.analyze_overrides = {"spray": False}
    window.open_video(two_people_video, analyse_with=default_model_dir())
    qtbot.waitUntil(lambda: window.data is not None and bool(window.data.analysis)
                    and window.data.analysis.get("complete") is True and window.analysis_worker is None,
                    timeout=240_000)
    panel = window.people_panel
    qtbot.waitUntil(lambda: len(panel.entries) == 2, timeout=30_000)
    assert all(e.thumb is not None and e.thumb.width() > 0 for e in panel.entries)
    assert all(e.frames == 24 for e in panel.entries)
    first = next(e.id for e in panel.entries if e.analysed)
    other = 1 - first
    assert window.review.person == first, "the review model knows who the session follows"
    window.docks["people"].raise_()
    window.player.seek(10)
    qtbot.wait(300)
    save_screenshot(window, artifacts_dir / "people_dock.png")
    with Session.open(window.session_path) as s:
        assert people_store.analysed_person(s) == first
        box_before = s.faces().box.copy()

    panel.list.setCurrentRow(other)
    assert panel.button.isEnabled()
    panel.button.click()
    qtbot.waitUntil(lambda: window.analysis_worker is not None, timeout=10_000)
    qtbot.waitUntil(lambda: window.analysis_worker is None and window.data is not None
                    and bool(window.data.analysis) and window.data.analysis.get("complete") is True,
                    timeout=240_000)
    qtbot.waitUntil(lambda: any(e.analysed and e.id == other for e in panel.entries), timeout=30_000)
    assert window.review.person == other
    with Session.open(window.session_path) as s:
        assert s.info()["person"] == other and s.attrs("")["person"] == other
        box_after = s.faces().box
        probs = s.read("probs")
    # The other half of the frame: the face boxes moved by about the 480 px between the two people.
    assert abs(float(np.nanmean(box_after[:, 0] - box_before[:, 0]))) > 300
    np.testing.assert_array_equal(window.timeline.raw_curves[0].getData()[1], probs[:, 0].astype(np.float64))
    assert not panel.button.isEnabled(), "the analysed person cannot be chosen again"
    window.docks["people"].raise_()
    qtbot.wait(200)
    save_screenshot(window, artifacts_dir / "people_dock_switched.png")
