"""Reviewer annotations in the real window: keys, Shift+drag, the list dock, undo/redo, autosave, reopen.

The session is a real analysis (engine.pipeline.analyze) of a CREMA-D clip by a small ProtoPNet with
random weights: the model's verdicts are arbitrary, but every segment the window shows is compared with
what sessions.Session reads back from the file, and every jump with the frame engine.video decodes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from engine.video import open_video
from sessions import Segment, Session
from vidxai_gui.app import SETTINGS_ENV, app_settings, save_screenshot
from vidxai_gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(300)]

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def clip(hap_clip: Path) -> Path:
    return hap_clip


@pytest.fixture(scope="module")
def analysed(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete session of the clip (analysed once per module; each test works on a copy)."""
    import torch

    from engine import pipeline
    from engine.checkpoint import save_checkpoint
    from engine.models import build_model
    from engine.models.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(arch="protopnet", backbone="small", classes=CLASSES, prototypes_per_class=2, proto_dim=32)
    rng = np.random.default_rng(0)
    crops = {j: rng.integers(0, 255, (48, 48, 1), dtype=np.uint8) for j in range(2 * len(CLASSES))}
    root = tmp_path_factory.mktemp("annotated")
    model = save_checkpoint(root / "tiny-protopnet", build_model(spec), {"note": "random weights"}, crops)
    return pipeline.analyze(clip, model, root / f"{clip.stem}.vxs")


@pytest.fixture
def session(analysed: Path, clip: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copy(clip, folder / clip.name)  # the session finds its video beside it
    return Path(shutil.copy(analysed, folder / analysed.name))


def make_window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MainWindow:
    monkeypatch.setenv(SETTINGS_ENV, str(tmp_path / "settings"))
    w = MainWindow(app_settings())
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    return w


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    w = make_window(qtbot, tmp_path, monkeypatch)
    yield w
    w.shutdown()


def open_session(qtbot, w: MainWindow, path: Path) -> None:
    w.open_path(path)
    qtbot.waitUntil(lambda: w.data is not None and w.player.info is not None and w.timeline.classes == CLASSES
                    and w.annotation_panel.isEnabled(), timeout=30_000)


def go_to(qtbot, w: MainWindow, k: int) -> None:
    w.timeline.seekRequested.emit(k)
    qtbot.waitUntil(lambda: w.player.current == k, timeout=10_000)


def saved_segments(qtbot, w: MainWindow, path: Path) -> list[Segment]:
    """What the session file holds once the autosave has caught up."""
    qtbot.waitUntil(lambda: not w.autosaver.busy, timeout=20_000)
    with Session.open(path) as s:
        return s.annotations().segments


def shown(w: MainWindow) -> list[tuple[str, int, int, str]]:
    """The segments the timeline draws, tier by tier."""
    return [(tier, s.start, s.end, s.label) for tier, segs in w.timeline.tiers.items() for s in segs]


def double_click(table, row: int, column: int) -> None:
    """What a mouse sends for a double click: press, release, double-click, release (QTest's mouseDClick
    alone sends only the last two, which an item view ignores)."""
    pos = table.visualItemRect(table.item(row, column)).center()
    QTest.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    QTest.mouseDClick(table.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def listed(w: MainWindow) -> list[list[str]]:
    t = w.annotation_panel.table
    return [[t.item(r, c).text() for c in range(t.columnCount())] for r in range(t.rowCount())]


def test_keyboard_annotation_undo_redo_and_reopen(window: MainWindow, qtbot, session: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, artifacts_dir: Path) -> None:
    open_session(qtbot, window, session)
    editor = window.annotation_panel.editor
    go_to(qtbot, window, 10)
    QTest.keyClick(window, Qt.Key.Key_I)
    assert window.mark_in == 10 and window.timeline.pending.isVisible()
    assert window.timeline.pending.getRegion() == pytest.approx((9.5, 10.5))
    go_to(qtbot, window, 20)
    QTest.keyClick(window, Qt.Key.Key_O)
    # The pending range covers frames 10..20 on the annotation track, and the editor is open (not modal).
    assert window.timeline.pending.getRegion() == pytest.approx((9.5, 20.5))
    assert editor.isVisible() and QApplication.activeModalWidget() is None
    assert editor.range_label.text().startswith("10–20")
    assert [editor.label.itemText(i) for i in range(len(CLASSES))] == CLASSES  # the model's classes
    assert editor.tier.currentText() == "reviewer emotion"
    probs = window.data.probs[10:21]
    majority = CLASSES[int(np.bincount(np.argmax(probs, axis=1), minlength=6).argmax())]
    assert editor.model_label.text().startswith(majority)  # what the model said about these frames
    editor.label.lineEdit().selectAll()
    QTest.keyClicks(editor.label.lineEdit(), "happy")
    QTest.keyClicks(editor.note, "smile reaches the eyes")
    shoot(window, qtbot, artifacts_dir, "annotation_editor")
    assert editor.isVisible()
    QTest.keyClick(editor.note, Qt.Key.Key_Return)

    assert not editor.isVisible() and not window.timeline.pending.isVisible()
    assert shown(window) == [("reviewer emotion", 10, 21, "happy")]
    fps = window.player.fps
    assert listed(window) == [["reviewer emotion", f"10–20\n{10 / fps:.2f}–{21 / fps:.2f} s", "happy", "–",
                               "smile reaches the eyes", ""]]
    [seg] = saved_segments(qtbot, window, session)
    assert (seg.tier, seg.start_frame, seg.end_frame, seg.label, seg.note) == \
        ("reviewer emotion", 10, 21, "happy", "smile reaches the eyes")
    assert seg.created  # when and by whom, for the audit trail
    shoot(window, qtbot, artifacts_dir, "annotations")

    # Undo removes it from the track, the list and the file; redo brings all three back.
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert shown(window) == [] and listed(window) == []
    assert saved_segments(qtbot, window, session) == []
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert shown(window) == [("reviewer emotion", 10, 21, "happy")]
    assert saved_segments(qtbot, window, session) == [seg]
    assert window.undo_action.isEnabled() and "happy" in window.undo_action.text()

    # Close the window, open the session in a new one: the same segment, read back from the file.
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
    with Session.open(session) as s:
        assert s.annotations().segments == [seg]
    again = make_window(qtbot, tmp_path / "second", monkeypatch)
    try:
        open_session(qtbot, again, session)
        assert again.data.annotations.segments == [seg]
        assert shown(again) == [("reviewer emotion", 10, 21, "happy")]
        assert listed(again)[0][2] == "happy"
        assert not again.undo_action.isEnabled()  # a reopened session starts a fresh history
    finally:
        again.shutdown()


def test_list_jumps_edits_in_place_and_deletes(window: MainWindow, qtbot, session: Path, clip: Path,
                                               artifacts_dir: Path) -> None:
    open_session(qtbot, window, session)
    window.add_annotation_segment("neutral", 40, 50, tier="notes", note="before the smile")
    window.add_annotation_segment("happy", 12, 30, tier="reviewer emotion")
    assert [row[2] for row in listed(window)] == ["happy", "neutral"]  # listed by time, not by creation
    assert list(window.timeline.tiers) == ["notes", "reviewer emotion"]  # one track row per tier
    window.add_annotation_segment("fear", 31, 38, tier="reviewer emotion", agreement="disagree",
                                  note="model calls it fear; the face looks neutral")
    window.go_to_target("frame:34")
    qtbot.waitUntil(lambda: window.player.current == 34, timeout=10_000)
    shoot(window, qtbot, artifacts_dir, "annotation_tiers")
    window.undo_action.trigger()  # the screenshot shows it; the rest of the test works without it

    table = window.annotation_panel.table
    with open_video(clip) as reference:
        for row, start in ((1, 40), (0, 12)):
            double_click(table, row, 0)
            qtbot.waitUntil(lambda start=start: window.player.current == start, timeout=10_000)
            np.testing.assert_array_equal(window.player.view.image_item.image, reference.frame(start))
        # Enter on the selected row jumps too.
        go_to(qtbot, window, 0)
        table.setFocus()
        table.setCurrentCell(1, 0)
        QTest.keyClick(table, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: window.player.current == 40, timeout=10_000)
        np.testing.assert_array_equal(window.player.view.image_item.image, reference.frame(40))

    # Editing the note in place changes the session (and is one undo step).
    table.item(1, 4).setText("before the smile; eyes closed")
    segs = saved_segments(qtbot, window, session)
    assert [(s.label, s.note) for s in segs] == [("neutral", "before the smile; eyes closed"), ("happy", "")]
    QTest.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert listed(window)[1][4] == "before the smile"

    # Delete removes the selected segment; undo restores it at its place in the file.
    table.setFocus()
    table.selectRow(0)
    QTest.keyClick(table, Qt.Key.Key_Delete)
    assert [row[2] for row in listed(window)] == ["neutral"]
    assert [s.label for s in saved_segments(qtbot, window, session)] == ["neutral"]
    window.undo_action.trigger()
    assert [s.label for s in saved_segments(qtbot, window, session)] == ["neutral", "happy"]


def test_agreement_and_target_round_trip(window: MainWindow, qtbot, session: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    open_session(qtbot, window, session)
    editor = window.annotation_panel.editor
    go_to(qtbot, window, 30)
    window.set_mark_in()
    go_to(qtbot, window, 44)
    window.set_mark_out()
    assert editor.isVisible()
    targets = [editor.target.itemText(i) for i in range(editor.target.count())]
    assert "frame:44" in targets
    editor.tier.setCurrentText("clinician B")  # a new tier, made by typing its name
    editor.label.setCurrentText("masked pain")  # free text, not one of the model's classes
    editor.agreement.setCurrentIndex(editor.agreement.findData("disagree"))
    editor.target.setCurrentIndex(targets.index("frame:44"))
    editor.ok_button.click()

    [seg] = saved_segments(qtbot, window, session)
    assert (seg.tier, seg.start_frame, seg.end_frame, seg.label, seg.agreement, seg.target) == \
        ("clinician B", 30, 45, "masked pain", "disagree", "frame:44")
    with Session.open(session) as s:
        assert [t.name for t in s.annotations().tiers] == ["clinician B"]
    assert listed(window)[0][3] == "disagree" and listed(window)[0][5] == "frame:44"
    # Activating the "refers to" cell follows the reference.
    go_to(qtbot, window, 0)
    table = window.annotation_panel.table
    double_click(table, 0, 5)
    qtbot.waitUntil(lambda: window.player.current == 44, timeout=10_000)

    # Edit… reopens the segment in the editor; the verdict changes, the rest stays.
    table.selectRow(0)
    window.annotation_panel.edit_button.click()
    assert editor.isVisible() and editor.ok_button.text() == "Save"
    assert editor.label.currentText() == "masked pain" and editor.target.currentText() == "frame:44"
    editor.agreement.setCurrentIndex(editor.agreement.findData("agree"))
    editor.ok_button.click()
    [edited] = saved_segments(qtbot, window, session)
    assert edited == Segment(**{**seg.__dict__, "agreement": "agree"})

    # Undoing the new tier's segment takes the tier away too.
    window.undo_action.trigger()
    window.undo_action.trigger()
    qtbot.waitUntil(lambda: not window.autosaver.busy, timeout=20_000)
    with Session.open(session) as s:
        assert s.annotations().segments == [] and s.annotations().tiers == []
    window.redo_action.trigger()
    window.redo_action.trigger()
    window.shutdown()  # waits for the last save
    with Session.open(session) as s:
        assert s.annotations().segments == [edited]
    again = make_window(qtbot, tmp_path / "second", monkeypatch)
    try:
        open_session(qtbot, again, session)
        assert again.data.annotations.segments == [edited]
        assert [(s.start, s.end, s.agreement) for s in again.timeline.tiers["clinician B"]] == [(30, 45, "agree")]
    finally:
        again.shutdown()


def _drag(w: MainWindow, a: QPointF, b: QPointF) -> None:
    """A Shift+left drag on the timeline's viewport (QTest cannot hold a button during a move)."""
    vp = w.timeline.view.viewport()
    shift, left = Qt.KeyboardModifier.ShiftModifier, Qt.MouseButton.LeftButton
    pa = w.timeline.view.mapFromScene(a)
    pb = w.timeline.view.mapFromScene(b)
    steps = [QPoint(round(pa.x() + (pb.x() - pa.x()) * t / 8), pa.y()) for t in range(1, 9)]

    def send(kind: QEvent.Type, p: QPoint, button: Qt.MouseButton, buttons: Qt.MouseButton) -> None:
        ev = QMouseEvent(kind, QPointF(p), QPointF(vp.mapToGlobal(p)), button, buttons, shift)
        QApplication.sendEvent(vp, ev)

    send(QEvent.Type.MouseButtonPress, pa, left, left)
    for p in steps:
        send(QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, left)
    send(QEvent.Type.MouseButtonRelease, steps[-1], left, Qt.MouseButton.NoButton)


def test_shift_drag_on_the_annotation_track_marks_a_range(window: MainWindow, qtbot, session: Path) -> None:
    open_session(qtbot, window, session)
    vb = window.timeline.tier_plot.vb
    _drag(window, vb.mapViewToScene(QPointF(5, 0.5)), vb.mapViewToScene(QPointF(15, 0.5)))
    editor = window.annotation_panel.editor
    qtbot.waitUntil(editor.isVisible, timeout=5000)
    assert (editor.start, editor.end) == (5, 16)
    editor.label.setCurrentText("fear")
    editor.confirm()
    assert [(s.start_frame, s.end_frame, s.label) for s in saved_segments(qtbot, window, session)] == [(5, 16, "fear")]


def test_annotation_made_while_the_finished_analysis_reloads_is_kept(window: MainWindow, qtbot,
                                                                      session: Path) -> None:
    """An analysis ends by reloading its session on a worker; an annotation added before that reload is
    shown must survive it (the reload's older list replaced it and the next autosave wrote that list)."""
    from vidxai_gui.review import load_review

    open_session(qtbot, window, session)
    before = load_review(session)  # what the reload read, before the reviewer's edit
    window.add_annotation_segment("fear", 5, 12)
    window._on_reloaded(before, 0)  # the reload arrives after the edit
    assert [(s.start_frame, s.end_frame, s.label) for s in window.notes.segments] == [(5, 12, "fear")]
    assert shown(window) == [("reviewer", 5, 12, "fear")]
    assert window.notes.undo_stack.canUndo()  # the edit's history too
    window.add_annotation_segment("sad", 20, 25)
    assert [(s.start_frame, s.label) for s in saved_segments(qtbot, window, session)] == [(5, "fear"), (20, "sad")]


def shoot(w: MainWindow, qtbot, artifacts_dir: Path, name: str) -> None:
    w.resize(1280, 800)
    w.docks["annotations"].raise_()
    qtbot.wait(250)
    save_screenshot(w, artifacts_dir / f"gui_{name}_1280x800.png")


def test_import_annotations_from_elan(window: MainWindow, qtbot, session: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """File ▸ Import annotations…: the file dialog, then the same import as `vidxai import-annotations`."""
    pympi = pytest.importorskip("pympi")
    from PySide6.QtWidgets import QFileDialog

    open_session(qtbot, window, session)
    assert window.import_annotations_action.isEnabled()
    with Session.open(session) as s:
        ms = np.round(s.timestamps * 1000).astype(int)
    eaf = pympi.Elan.Eaf()
    eaf.add_tier("elan coding")
    eaf.add_annotation("elan coding", int(ms[5]) + 3, int(ms[9]) - 4, "brow raise")
    coded = tmp_path / "coded.eaf"
    eaf.to_file(str(coded))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(coded), "*.eaf"))
    window.import_annotations_action.trigger()
    assert shown(window) == [("elan coding", 5, 9, "brow raise")]
    assert [(s.tier, s.start_frame, s.end_frame, s.label) for s in saved_segments(qtbot, window, session)] == \
        [("elan coding", 5, 9, "brow raise")]
    bad = tmp_path / "notes.eaf"
    bad.write_text("just some notes")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), "*.eaf"))
    window.import_annotations_action.trigger()
    box = window.last_error
    assert box.windowTitle() == "Import failed" and "notes.eaf is not an ELAN file" in box.text()
    assert "\n" not in box.text()
    assert shown(window) == [("elan coding", 5, 9, "brow raise")]  # nothing changed
