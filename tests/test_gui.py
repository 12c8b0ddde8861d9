"""The real main window, offscreen, on real CREMA-D clips (STYLE.md 5).

Every test compares what the window shows with what engine.video decodes independently, so a player
that showed the wrong frame, or overlays a frame apart, fails. Screenshots of each state go to
tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtTest import QTest

from engine.aggregate import alpha_from_tau
from engine.video import open_video
from vidxai_gui.app import SETTINGS_ENV, app_settings, save_screenshot
from vidxai_gui.main_window import ABOUT_TEXT, MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]

SIZES = {"1280x800": (1280, 800), "1920x1080": (1920, 1080)}


@pytest.fixture
def settings_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings in a temporary INI file, never the user's; new sessions in tmp too."""
    folder = tmp_path / "settings"
    monkeypatch.setenv(SETTINGS_ENV, str(folder))
    s = app_settings()
    s.setValue("sessions_dir", str(tmp_path / "sessions"))
    s.sync()
    return folder


@pytest.fixture(scope="module")
def clip(hap_clip: Path) -> Path:
    return hap_clip


@pytest.fixture(scope="module")
def reference(clip: Path):
    with open_video(clip) as r:
        yield r


def open_clip(qtbot, w: MainWindow, path: Path) -> None:
    w.open_path(path)
    qtbot.waitUntil(lambda: w.player.current == 0 and w.player.info is not None, timeout=10_000)


def wait_frame(qtbot, w: MainWindow, k: int) -> None:
    qtbot.waitUntil(lambda: w.player.current == k, timeout=10_000)


def assert_shows(w: MainWindow, reference, k: int) -> None:
    """The image item holds exactly frame k as engine.video decodes it (not k±1)."""
    assert w.player.current == k
    np.testing.assert_array_equal(w.player.view.image_item.image, reference.frame(k))
    assert w.timeline.cursors[0].value() == k


def shoot(w: MainWindow, artifacts_dir: Path, qtbot, name: str) -> None:
    for label, (width, height) in SIZES.items():
        w.resize(width, height)
        qtbot.wait(150)  # let the layout settle and pyqtgraph repaint at the new size
        out = save_screenshot(w, artifacts_dir / f"gui_{name}_{label}.png")
        assert out.stat().st_size > 10_000
    w.resize(1280, 800)


def test_empty_window_screenshot(window: MainWindow, qtbot, artifacts_dir: Path) -> None:
    assert not window.player.play_button.isEnabled()
    assert not window.analyse_action.isEnabled()
    shoot(window, artifacts_dir, qtbot, "empty")


def test_dock_tabs_show_whole_titles_at_1280_px(window: MainWindow, qtbot) -> None:
    """At a 1280 px window every dock tab's title is readable (elided "Sta…" told a reviewer nothing)."""
    from PySide6.QtWidgets import QTabBar

    window.resize(1280, 800)
    qtbot.wait(50)
    bars = [b for b in window.findChildren(QTabBar) if b.parent() is window and b.isVisible()]
    assert bars
    for bar in bars:
        assert bar.elideMode() == Qt.TextElideMode.ElideNone
        for i in range(bar.count()):
            assert bar.tabRect(i).width() >= bar.fontMetrics().horizontalAdvance(bar.tabText(i).replace("&&", "&"))


def test_open_clip_shows_frame_zero(window: MainWindow, qtbot, clip: Path, reference, artifacts_dir: Path) -> None:
    open_clip(qtbot, window, clip)
    assert_shows(window, reference, 0)
    assert window.player.frame_count == reference.frame_count == 56
    assert window.timeline.frame_count == 56
    assert window.player.readout.text() == "frame 0 / 55 · 00:00.00"
    assert window.analyse_action.isEnabled()
    assert clip.name in window.windowTitle()
    shoot(window, artifacts_dir, qtbot, "opened")


def test_timeline_seek_shows_that_frame(window: MainWindow, qtbot, clip: Path, reference) -> None:
    open_clip(qtbot, window, clip)
    for k in (37, 5, 55, 12):
        window.timeline.seekRequested.emit(k)
        wait_frame(qtbot, window, k)
        assert_shows(window, reference, k)
    t = reference.timestamps[12] - reference.timestamps[0]
    assert window.player.readout.text() == f"frame 12 / 55 · 00:{t:05.2f}"


def test_click_on_timeline_seeks(window: MainWindow, qtbot, clip: Path, reference) -> None:
    open_clip(qtbot, window, clip)
    plot = window.timeline.scores_plot
    scene_pos = plot.vb.mapViewToScene(QPointF(30, 0.5))
    pos = window.timeline.view.mapFromScene(scene_pos)
    with qtbot.waitSignal(window.timeline.seekRequested, timeout=3000) as blocker:
        QTest.mouseClick(window.timeline.view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))
    assert abs(blocker.args[0] - 30) <= 1  # one screen pixel may round to the neighbouring frame
    wait_frame(qtbot, window, blocker.args[0])
    assert_shows(window, reference, blocker.args[0])


def test_step_keys_move_exactly_one_frame(window: MainWindow, qtbot, clip: Path, reference) -> None:
    open_clip(qtbot, window, clip)
    window.activateWindow()
    window.player.view.setFocus()
    for expected in (1, 2, 3):
        QTest.keyClick(window, Qt.Key.Key_Right)
        wait_frame(qtbot, window, expected)
        assert_shows(window, reference, expected)
    QTest.keyClick(window, Qt.Key.Key_Left)
    wait_frame(qtbot, window, 2)
    assert_shows(window, reference, 2)
    QTest.keyClick(window, Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)  # +1 s = 30 frames at 29.97
    wait_frame(qtbot, window, 32)
    assert_shows(window, reference, 32)
    QTest.keyClick(window, Qt.Key.Key_End)
    wait_frame(qtbot, window, 55)
    QTest.keyClick(window, Qt.Key.Key_Right)  # past the end stays at the end
    qtbot.wait(100)
    assert window.player.current == 55
    QTest.keyClick(window, Qt.Key.Key_Left, Qt.KeyboardModifier.ShiftModifier)
    wait_frame(qtbot, window, 25)
    QTest.keyClick(window, Qt.Key.Key_Home)
    wait_frame(qtbot, window, 0)
    assert_shows(window, reference, 0)


def test_space_plays_in_order_on_the_video_clock(window: MainWindow, qtbot, clip: Path, reference) -> None:
    open_clip(qtbot, window, clip)
    window.activateWindow()
    shown: list[int] = []
    window.player.frameShown.connect(shown.append)
    QTest.keyClick(window, Qt.Key.Key_Space)
    assert window.player.playing
    qtbot.waitUntil(lambda: len(shown) >= 10, timeout=10_000)
    QTest.keyClick(window, Qt.Key.Key_Space)
    assert not window.player.playing
    stopped_at = window.player.current
    qtbot.wait(200)
    assert window.player.current == stopped_at  # paused means paused
    assert shown == sorted(shown) and len(set(shown)) == len(shown)  # forward, never repeated
    assert shown[0] <= 2
    # Frames never shown were counted as dropped, and nothing ran ahead of the clock.
    assert len(shown) + window.player.dropped >= shown[-1] - shown[0] + 1
    np.testing.assert_array_equal(window.player.view.image_item.image, reference.frame(stopped_at))
    # Playing to the end stops on the last frame.
    shown.clear()
    window.player.set_speed(2.0)
    QTest.keyClick(window, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: not window.player.playing, timeout=10_000)
    assert window.player.current == 55
    assert shown == sorted(shown)
    assert_shows(window, reference, 55)


def test_playback_speed_follows_the_clock(window: MainWindow, qtbot, clip: Path) -> None:
    open_clip(qtbot, window, clip)
    for speed in (0.5, 2.0):
        window.player.seek(0)
        wait_frame(qtbot, window, 0)
        window.player.set_speed(speed)
        window.player.play()
        qtbot.wait(600)
        due = window.player.due_frame()
        window.player.pause()
        expected = 0.6 * 29.97 * speed
        # The frame on screen is the one the clock asks for (give or take the decoder and timer slack).
        assert abs(window.player.current - expected) <= max(4, 0.35 * expected), (speed, window.player.current)
        assert window.player.current <= due + 1
    assert window.player.speed_combo.currentText() == "2×"


def closed_form_ewma(y: np.ndarray, alpha: float, valid: np.ndarray) -> np.ndarray:
    """METHODS §9 written out: ỹ₁ = y₁, ỹₜ = α yₜ + (1 − α) ỹₜ₋₁ over valid frames; others carry it."""
    out = np.full_like(y, np.nan, dtype=float)
    state = None
    for t in range(len(y)):
        if valid[t]:
            state = y[t].astype(float) if state is None else alpha * y[t] + (1 - alpha) * state
        if state is not None:
            out[t] = state
    return out


def test_alpha_slider_recomputes_ewma_closed_form(window: MainWindow, qtbot, clip: Path) -> None:
    open_clip(qtbot, window, clip)
    tl = window.timeline
    rng = np.random.default_rng(7)
    T, classes = 56, ["angry", "happy", "sad"]
    probs = rng.dirichlet(np.ones(3), size=T)
    valid = np.ones(T, bool)
    valid[:3] = False  # no face yet: NaN state
    valid[20:25] = False  # a dropout carries the state
    probs[~valid] = np.nan
    tl.set_scores(classes, probs, valid)
    for value in (1, 10, 40, 0, 4):  # τ = 0.05, 0.5, 2, 0 (raw scores), 0.2 s
        tl.tau_slider.setValue(value)
        alpha = alpha_from_tau(value * tl.TAU_STEP, tl.fps)
        assert tl.tau_s == pytest.approx(value * tl.TAU_STEP) and tl.alpha == pytest.approx(alpha)
        expected = closed_form_ewma(probs, alpha, valid)
        for i, curve in enumerate(tl.ewma_curves):
            x, y = curve.getData()
            np.testing.assert_array_equal(x, np.arange(T))
            np.testing.assert_allclose(y, expected[:, i], rtol=1e-12, atol=1e-12, equal_nan=True)
        assert tl.tau_value.text() == f"{value * tl.TAU_STEP:.2f} s · α {alpha:.3f}"
        assert classes[int(np.argmax(expected[-1]))].upper() in tl.decision_label.text()
    # Raw curves are left untouched by α.
    np.testing.assert_array_equal(tl.raw_curves[1].getData()[1], probs[:, 1])


def test_unreadable_video_shows_a_dialog(window: MainWindow, qtbot, tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    window.open_path(bad)
    qtbot.waitUntil(lambda: getattr(window, "last_error", None) is not None and window.last_error.isVisible(),
                    timeout=10_000)
    box = window.last_error
    assert "broken.mp4" in box.text()
    assert "convert" in box.informativeText()
    assert not window.player.play_button.isEnabled()
    box.close()
    window.open_path(tmp_path / "missing.mp4")
    assert "does not exist" in window.last_error.text()
    window.last_error.close()


def test_drop_opens_file_and_recent_files_persist(window: MainWindow, qtbot, clip: Path, settings_dir: Path
                                                  ) -> None:
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(clip))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: window.player.current == 0, timeout=10_000)
    assert window.recent_files()[0] == str(clip.resolve())
    window.resize(1100, 700)
    window.shutdown()
    assert (settings_dir / "vidxai.ini").exists()
    again = MainWindow(app_settings())
    qtbot.addWidget(again)
    again.show()
    qtbot.waitExposed(again)
    assert again.recent_files()[0] == str(clip.resolve())
    # Restored, not the 1280×800 default (the offscreen screen may clamp the width to what it offers).
    assert again.height() == 700 and again.width() <= 1100
    again.shutdown()


def test_about_box_credits_crema_d(window: MainWindow) -> None:
    assert "Demo clip from CREMA-D (Cao et al., 2014), Open Database License 1.0 / Database Contents " \
           "License 1.0" in ABOUT_TEXT
    window.about()
    assert window.about_box.isVisible()
    assert "CREMA-D" in window.about_box.text()
    window.about_box.close()


def test_overlay_refresh_never_undoes_a_pending_seek(window: MainWindow, qtbot, clip: Path, reference) -> None:
    """New analysis data arriving while a seek is on its way must not send the view back."""
    open_clip(qtbot, window, clip)
    window.timeline.seekRequested.emit(40)
    window.player.refresh_overlays()  # what a streamed chunk does
    wait_frame(qtbot, window, 40)
    qtbot.wait(200)
    assert_shows(window, reference, 40)


def test_stage_strip_click_goes_to_the_stage_start(window: MainWindow, qtbot, clip: Path, reference) -> None:
    from vidxai_gui.timeline_items import Segment

    open_clip(qtbot, window, clip)
    tl = window.timeline
    tl.set_stages([Segment(0, 20, "NONE"), Segment(20, 45, "HAPPY_A"), Segment(45, 56, "HAPPY_B")])
    assert tl.stage_plot.isVisible()
    qtbot.wait(100)
    pos = tl.view.mapFromScene(tl.stage_plot.vb.mapViewToScene(QPointF(33, 0.5)))
    with qtbot.waitSignal(tl.seekRequested, timeout=3000) as blocker:
        QTest.mouseClick(tl.view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))
    assert blocker.args == [20]
    wait_frame(qtbot, window, 20)
    assert_shows(window, reference, 20)
    assert tl.stage_at(50).label == "HAPPY_B"


def test_run_opens_the_file_and_returns_on_close(settings_dir: Path, clip: Path, tmp_path: Path) -> None:
    """vidxai_gui.app.run, as the launcher calls it, in its own process: app.exec() would leave this test
    process's Qt in the "quitting" state, after which every QEventLoop returns at once."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run_app.py"
    script.write_text(
        "import sys\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from vidxai_gui.app import ensure_app, run\n"
        "ensure_app()  # the timer below needs the application that run() will use\n"
        "from vidxai_gui.main_window import MainWindow\n"
        "def poll():\n"
        "    ws = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]\n"
        "    if ws and ws[0].player.current == 0:\n"
        "        print('FRAME0', ws[0].player.frame_count, flush=True)\n"
        "        ws[0].close()\n"
        "    else:\n"
        "        QTimer.singleShot(50, poll)\n"
        "QTimer.singleShot(50, poll)\n"
        "sys.exit(run([sys.argv[1]], demo=False, model_dir=None, analyze=False))\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    r = subprocess.run([sys.executable, str(script), str(clip)], check=False, capture_output=True, text=True,
                       timeout=60,
                       env=env, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "FRAME0 56" in r.stdout
    assert (settings_dir / "vidxai.ini").read_text().count("1001_DFA_HAP_XX.flv") >= 1  # recent files saved


def test_prototype_source_reads_the_training_file_or_says_it_is_not_here(clip: Path, reference,
                                                                         tmp_path: Path) -> None:
    """'Open source' of a prototype: a video frame comes back exactly, a missing file is named."""
    from vidxai_gui.docks import PrototypeInfo, describe_source
    from vidxai_gui.prototype_source import load_source_image

    info = PrototypeInfo(3, "happy", describe_source(str(clip), 5), None, str(clip), 5, "happy")
    assert info.source == f"{clip.name} frame 5"
    np.testing.assert_array_equal(load_source_image(info), reference.frame(5))
    gone = tmp_path / "elsewhere" / "Training_1.jpg"
    with pytest.raises(FileNotFoundError, match="Training_1.jpg is not on this machine"):
        load_source_image(PrototypeInfo(0, "angry", gone.name, None, str(gone), -1))


def test_a_late_opened_signal_after_close_is_ignored(qtbot, hap_clip: Path) -> None:
    """The decode thread's `opened` can be delivered after the video was closed (closing the window while a
    video opens): the player then has no source and must drop it, not fail on it."""
    from engine.video import VideoInfo
    from vidxai_gui.player import Player

    player = Player()
    qtbot.addWidget(player)
    player.open(hap_clip)
    player.close_video()
    info = VideoInfo(str(hap_clip), 30.0, 10, 480, 360, 1 / 3, 0, "flv1")
    player._on_opened(info, np.arange(10) / 30.0)  # no sender, no source: as a queued call after close
    assert player.info is None and player.source is None
