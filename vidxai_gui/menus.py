"""The window's menus, built by small setup functions (labelme's `_setup_actions` / `_setup_menus` shape).

Each function adds one menu to the window's menu bar and keeps on the window the actions that are enabled
or disabled later (`MainWindow._update_actions`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMenu

from vidxai_gui import report_export


def add_action(menu: QMenu, text: str, slot: Callable[[], Any], shortcut: QKeySequence | str | None = None,
               tip: str = "") -> QAction:
    action = menu.addAction(text)
    action.triggered.connect(lambda _checked=False: slot())
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    if tip:
        action.setStatusTip(tip)
    return action


def setup_menus(w: Any) -> None:
    """File, Edit, Analysis, Playback, View and Help on the window `w`."""
    bar = w.menuBar()
    for setup in (_file_menu, _edit_menu, _analysis_menu, _playback_menu, _view_menu, _help_menu):
        setup(w, bar)


def _file_menu(w: Any, bar: Any) -> None:
    m = bar.addMenu("&File")
    add_action(m, "Open video…", w.choose_video, QKeySequence.StandardKey.Open)
    add_action(m, "Open session…", w.choose_session, "Ctrl+Shift+O")
    w.recent_menu = m.addMenu("Recent files")
    w.recent_menu.aboutToShow.connect(w._fill_recent)
    m.addSeparator()
    w.save_action = add_action(m, "Save session", w.save_session, QKeySequence.StandardKey.Save,
                                    "Write annotations and review settings into the session file")
    exp = m.addMenu("Export")
    w.export_actions = [
        add_action(exp, "CSV (one row per frame)…", lambda: w.export("csv")),
        add_action(exp, "ELAN (.eaf)…", lambda: w.export("eaf")),
        add_action(exp, "JSON summary…", lambda: w.export("json")),
        report_export.add_action(w, exp),  # case report and figures as jobs (vidxai_gui/report_export.py)
    ]
    w.import_annotations_action = add_action(
        m, "Import annotations…", w.import_annotations,
        tip="Add the tiers of an ELAN .eaf file to this session's annotations (snapped to frames)")
    m.addSeparator()
    add_action(m, "Quit", w.close, QKeySequence.StandardKey.Quit)


def _edit_menu(w: Any, bar: Any) -> None:
    e = bar.addMenu("&Edit")
    w.undo_action = w.notes.undo_stack.createUndoAction(w, "Undo")
    w.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
    w.redo_action = w.notes.undo_stack.createRedoAction(w, "Redo")
    w.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
    e.addAction(w.undo_action)
    e.addAction(w.redo_action)
    e.addSeparator()
    w.mark_in_action = add_action(e, "Mark in", w.set_mark_in, "I",
                                       "Start an annotation at the current frame")
    w.mark_out_action = add_action(e, "Mark out", w.set_mark_out, "O",
                                        "End the annotation at the current frame and describe it")
    w.annotate_action = add_action(e, "Annotate marked range…\tEnter", w.annotate_marked,
                                        tip="Describe the range between the in and out points")
    add_action(e, "Clear marks", w.clear_marks)
    e.addSeparator()
    w.loop_action = add_action(e, "Loop selected annotation", w.toggle_annotation_loop, "L",
                               "Play the selected annotation's frames with sound, again and again (L again stops)")
    w.stop_loop_action = add_action(e, "Stop the loop", w.player.stop_range, "Esc")
    w.stop_loop_action.setEnabled(False)  # Esc belongs to the editor and dialogs except while a loop plays
    w.player.playingChanged.connect(lambda on: w.stop_loop_action.setEnabled(on and w.player.looping))
    for action in (w.mark_in_action, w.mark_out_action, w.loop_action, w.stop_loop_action):
        w.addAction(action)  # the keys work while the menu bar is hidden too


def _analysis_menu(w: Any, bar: Any) -> None:
    a = bar.addMenu("&Analysis")
    w.analyse_action = add_action(a, "Analyse with model…", w.choose_model_and_analyse, "Ctrl+R")
    w.faces_action = add_action(a, "Find faces only", w.find_faces,
                                     tip="Face boxes and landmarks for every frame, without a model")
    a.addSeparator()
    add_action(a, "Train…", w.train_dialog)
    add_action(a, "Evaluate…", w.evaluate_dialog)
    a.addSeparator()
    w.heat_menu = a.addMenu("Heatmap method")
    w.heat_menu.aboutToShow.connect(w._fill_heat_menu)


def _playback_menu(w: Any, bar: Any) -> None:
    p = bar.addMenu("&Playback")
    for action in w.player.actions_transport:
        p.addAction(action)
        w.addAction(action)


def _view_menu(w: Any, bar: Any) -> None:
    v = w.view_menu = bar.addMenu("&View")
    smooth = w.smooth_maps_action = v.addAction("Smooth heatmaps over time")
    smooth.setCheckable(True)
    smooth.setChecked(w.review.smooth_maps)
    smooth.setToolTip("Show each frame's map averaged with its neighbours' (Gaussian, σ 0.1 s, aligned by the "
                      "face landmarks): less flicker (README, issue 14). Display only: the stored maps are "
                      "not changed.")
    smooth.toggled.connect(lambda on: w.review.set_heat(smooth=on))
    w.review.heatChanged.connect(lambda: smooth.setChecked(w.review.smooth_maps))
    au = w.au_regions_action = v.addAction("Show expected AU regions")
    au.setCheckable(True)
    au.setToolTip("Outline, over the face, the action units the FACS codebook expects for the predicted class, "
                  "with the frame's AU agreement (cosine with the shown relevance; the timeline's AU track).")
    au.toggled.connect(w.review.set_au_regions)
    v.addSeparator()
    for dock in w.docks.values():
        v.addAction(dock.toggleViewAction())
    v.addSeparator()
    add_action(v, "Reset layout", w.reset_layout)


def _help_menu(w: Any, bar: Any) -> None:
    h = bar.addMenu("&Help")
    add_action(h, "About VidXAI", w.about)
