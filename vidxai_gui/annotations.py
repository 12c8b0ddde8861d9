"""Reviewer annotations: the undoable edit history, the autosave, the inline editor and the list dock.

The segments themselves are ``sessions.Annotations`` (the session's own records); this module only
changes them through ``QUndoCommand`` s, so every change can be undone, and writes them back on a
worker thread, so saving never holds up the player.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QColor, QKeySequence, QShortcut, QUndoCommand, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from sessions import Annotations, Segment, Session, Tier
from vidxai_gui.worker import JobRunner, JobWorker

log = logging.getLogger(__name__)

DEFAULT_TIERS = ("reviewer emotion", "notes")
AGREEMENT_CHOICES = (("", "no verdict"), ("agree", "agree with the model"), ("disagree", "disagree with the model"))
AGREEMENT_COLOURS = {"agree": "#2e8b57", "disagree": "#c0392b", "": "#4682b4"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def copy_annotations(ann: Annotations) -> Annotations:
    """A deep copy (the autosave writes a snapshot while the reviewer keeps editing)."""
    return Annotations([dataclasses.replace(t) for t in ann.tiers], [dataclasses.replace(s) for s in ann.segments])


def model_verdict(classes: list[str], probs: np.ndarray | None, valid: np.ndarray | None, start: int,
                  end: int) -> str:
    """The class the model picks most often over frames [start, end), e.g. "happy in 9 of 11 frames"."""
    if probs is None or not classes or end <= start:
        return ""
    p = np.asarray(probs[start:end], dtype=np.float64)
    ok = np.isfinite(p).all(axis=1)
    if valid is not None:
        ok &= np.asarray(valid[start:end], dtype=bool)
    if not ok.any():
        return "no face or no scores in these frames"
    votes = np.bincount(np.argmax(p[ok], axis=1), minlength=len(classes))
    best = int(np.argmax(votes))
    return f"{classes[best]} in {int(votes[best])} of {end - start} frames"


# ------------------------------------------------------------------------------------------ history


class _SegmentCommand(QUndoCommand):
    """Segment ``index`` goes from ``before`` to ``after`` (None: absent), adding a new tier if needed."""

    def __init__(self, store: AnnotationStore, text: str, index: int, before: Segment | None,
                 after: Segment | None) -> None:
        super().__init__(text)
        self.store, self.index, self.before, self.after = store, index, before, after
        known = {t.name for t in store.annotations.tiers}
        self.new_tier = Tier(after.tier) if after is not None and after.tier not in known else None

    def _put(self, value: Segment | None, other: Segment | None, tier_added: bool) -> None:
        ann = self.store.annotations
        if value is None:
            del ann.segments[self.index]
        elif other is None:
            ann.segments.insert(self.index, value)
        else:
            ann.segments[self.index] = value
        if self.new_tier is not None:
            if tier_added:
                ann.tiers.append(self.new_tier)
            else:
                ann.tiers[:] = [t for t in ann.tiers if t is not self.new_tier]
        self.store.changed.emit()
        self.store.edited.emit()

    def redo(self) -> None:
        self._put(self.after, self.before, True)

    def undo(self) -> None:
        self._put(self.before, self.after, False)


class AnnotationStore(QObject):
    """The session's annotations and their undo history.

    ``changed`` after anything that alters what is shown (a new session too); ``edited`` only after the
    reviewer's own changes, undo and redo (what needs saving).
    """

    changed = Signal()
    edited = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.annotations = Annotations()
        self.undo_stack = QUndoStack(self)

    def reset(self, annotations: Annotations) -> None:
        """Another session: its annotations, and no history to undo into the previous one."""
        self.annotations = annotations
        self.undo_stack.clear()
        self.changed.emit()

    @property
    def segments(self) -> list[Segment]:
        return self.annotations.segments

    def tier_names(self) -> list[str]:
        names = [t.name for t in self.annotations.tiers]
        return names + [t for t in DEFAULT_TIERS if t not in names]

    def add(self, segment: Segment) -> None:
        self.undo_stack.push(_SegmentCommand(self, f"add “{segment.label}”", len(self.segments), None, segment))

    def edit(self, index: int, segment: Segment) -> None:
        before = self.segments[index]
        if before != segment:
            self.undo_stack.push(_SegmentCommand(self, f"edit “{segment.label}”", index, before, segment))

    def edit_field(self, index: int, name: str, value: str) -> None:
        if 0 <= index < len(self.segments) and getattr(self.segments[index], name) != value:
            self.edit(index, dataclasses.replace(self.segments[index], **{name: value}))

    def delete(self, index: int) -> None:
        if 0 <= index < len(self.segments):
            seg = self.segments[index]
            self.undo_stack.push(_SegmentCommand(self, f"delete “{seg.label}”", index, seg, None))


# ------------------------------------------------------------------------------------------ autosave


class Autosaver(QObject):
    """Writes annotations and review state into the session on the runner's coalescing "autosave" lane.

    Edits that arrive while a write is running are coalesced into one more write of the newest state,
    so a burst of edits costs two writes, and the file never lags behind the last edit for long.
    """

    LANE = "autosave"
    saved = Signal(str)
    failed = Signal(str, str)

    def __init__(self, runner: JobRunner, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.writes = 0  # completed writes (tests wait on it)

    @property
    def busy(self) -> bool:
        return self.runner.lane_busy(self.LANE)

    def save(self, path: Path, annotations: Annotations, state: dict[str, Any]) -> None:
        ann, state = copy_annotations(annotations), dict(state)
        self.runner.coalesce(self.LANE, lambda progress, cancel: _write(path, ann, state), f"save {path.name}",
                             self._connect)

    def _connect(self, worker: JobWorker) -> None:
        worker.finished.connect(self._on_saved)
        worker.error.connect(self.failed)

    @Slot(object)
    def _on_saved(self, path: object) -> None:
        self.writes += 1
        self.saved.emit(str(path))

    def wait(self, timeout_ms: int = 10_000) -> bool:
        """Finish every write before the window closes: the running one, then the newest queued one here."""
        ok, last = self.runner.flush(self.LANE, timeout_ms)
        if last is not None:
            try:
                last(None, None)  # the window is closing: a short wait beats losing the last edit
            except Exception:  # at shutdown there is no window left to show it in
                log.exception("the last annotations could not be saved")
                return False
        return ok


def _write(path: Path, ann: Annotations, state: dict[str, Any]) -> str:
    with Session.open(path, writable=True) as s:
        s.save_annotations(ann, review_state=state)  # one small atomic write beside the session file
    return str(path)


# ------------------------------------------------------------------------------------------ editor


class AnnotationEditor(QGroupBox):
    """Tier, label, note, verdict and target of one segment; inline in the dock, never a modal dialog."""

    confirmed = Signal(int, object)  # index of the edited segment (-1: a new one), sessions.Segment
    cancelled = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("New annotation", parent)
        self.start, self.end, self.index = 0, 1, -1
        self._base: Segment | None = None
        self.range_label = QLabel()
        self.model_label = QLabel()
        self.model_label.setWordWrap(True)
        self.model_label.setStyleSheet("color: #555555")
        self.tier = QComboBox()
        self.tier.setEditable(True)
        self.tier.setToolTip("Type a new name to start a new tier")
        self.label = QComboBox()
        self.label.setEditable(True)
        self.label.setToolTip("One of the model's classes, or any text")
        self.note = QLineEdit()
        self.note.setPlaceholderText("what you see, why you disagree…")
        self.agreement = QComboBox()
        for value, text in AGREEMENT_CHOICES:
            self.agreement.addItem(text, value)
        self.target = QComboBox()
        self.target.setEditable(True)
        self.target.setToolTip("What the note is about: frame:K, prototype:J or stage:NAME (optional)")
        self.ok_button = QPushButton("Add")
        self.ok_button.setDefault(True)
        self.ok_button.clicked.connect(self.confirm)
        cancel = QPushButton("Cancel")
        cancel.clicked.connect(self.cancel)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Frames", self.range_label)
        form.addRow("Tier", self.tier)
        form.addRow("Label", self.label)
        form.addRow("Note", self.note)
        form.addRow("Model says", self.model_label)
        form.addRow("Verdict", self.agreement)
        form.addRow("Refers to", self.target)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(cancel)
        buttons.addWidget(self.ok_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addLayout(buttons)
        # Enter anywhere in the editor confirms, Escape cancels (the editable combos swallow neither).
        for key, slot in (("Return", self.confirm), ("Enter", self.confirm), ("Escape", self.cancel)):
            sc = QShortcut(QKeySequence(key), self, slot)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.hide()

    def begin(self, start: int, end: int, fps: float, tiers: list[str], labels: list[str], targets: list[str],
              verdict: str, segment: Segment | None = None, index: int = -1) -> None:
        """Show the editor for frames [start, end): a new segment, or ``segment`` (number ``index``)."""
        self.start, self.end, self.index, self._base = start, end, index, segment
        self.setTitle("New annotation" if segment is None else "Edit annotation")
        self.ok_button.setText("Add" if segment is None else "Save")
        self.range_label.setText(f"{start}–{end - 1}  ({start / fps:.2f}–{end / fps:.2f} s)")
        self.model_label.setText(verdict or "no model scores in this session")
        current_tier = segment.tier if segment is not None else (self.tier.currentText() or tiers[0])
        _fill(self.tier, tiers, current_tier)
        _fill(self.label, labels, segment.label if segment is not None else "")
        _fill(self.target, [""] + targets, segment.target if segment is not None else "")
        self.note.setText(segment.note if segment is not None else "")
        self.agreement.setCurrentIndex(self.agreement.findData(segment.agreement if segment is not None else ""))
        self.show()
        self.label.setFocus()
        self.label.lineEdit().selectAll()

    def values(self) -> Segment:
        base = self._base
        tier = self.tier.currentText().strip() or DEFAULT_TIERS[0]
        fields = {"tier": tier, "start_frame": self.start, "end_frame": self.end,
                  "label": self.label.currentText().strip(), "note": self.note.text().strip(),
                  "agreement": str(self.agreement.currentData() or ""), "target": self.target.currentText().strip()}
        if base is not None:
            return dataclasses.replace(base, **fields)
        return Segment(author=os.environ.get("USER", ""), created=now_iso(), **fields)

    @Slot()
    def confirm(self) -> None:
        if not self.isVisible():
            return
        self.hide()
        self.confirmed.emit(self.index, self.values())

    @Slot()
    def cancel(self) -> None:
        self.hide()
        self.cancelled.emit()


def _fill(combo: QComboBox, items: list[str], current: str) -> None:
    combo.clear()
    combo.addItems(list(dict.fromkeys(items)))
    combo.setCurrentText(current)


# ------------------------------------------------------------------------------------------ list dock


class AnnotationPanel(QWidget):
    """The list of segments (sorted by time) above the inline editor.

    Double-click or Enter jumps to a segment, Delete removes it; label and note are edited in place
    (F2, or click a selected cell). Signals carry the segment's index in ``sessions.Annotations``.
    """

    COLUMNS = ("tier", "frames", "label", "verdict", "note", "refers to")
    EDITABLE: ClassVar[dict[int, str]] = {2: "label", 4: "note"}
    TARGET_COLUMN = 5

    seekRequested = Signal(int)
    targetRequested = Signal(str)
    deleteRequested = Signal(int)
    editRequested = Signal(int)
    fieldEdited = Signal(int, str, str)  # index, field name, new text
    markInRequested = Signal()
    markOutRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.segments: list[Segment] = []
        self.order: list[int] = []  # row → index into segments
        self.fps = 25.0
        self._filling = False
        self.editor = AnnotationEditor()
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.EditKeyPressed
                                   | QAbstractItemView.EditTrigger.SelectedClicked)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        # A dock column is ~350 px: frames and times share a cell on two lines, long text wraps.
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(36)
        self.table.setColumnWidth(0, 78)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.cellDoubleClicked.connect(self._on_activated)
        self.table.activated.connect(lambda index: self._on_activated(index.row(), index.column()))
        self.table.itemChanged.connect(self._on_item_changed)
        delete = QShortcut(QKeySequence(QKeySequence.StandardKey.Delete), self.table, self.delete_selected)
        delete.setContext(Qt.ShortcutContext.WidgetShortcut)
        self.hint = QLabel("I / O mark in and out at the current frame; Shift+drag on the annotation track "
                           "marks a range.")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("color: gray")
        self.in_button = QPushButton("Mark in (I)")
        self.in_button.clicked.connect(self.markInRequested)
        self.out_button = QPushButton("Mark out (O)")
        self.out_button.clicked.connect(self.markOutRequested)
        self.edit_button = QPushButton("Edit…")
        self.edit_button.clicked.connect(self._edit_selected)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        buttons = QHBoxLayout()
        for b in (self.in_button, self.out_button, self.edit_button, self.delete_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.editor)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.hint)
        self.setEnabled(False)

    def set_segments(self, segments: list[Segment], fps: float) -> None:
        self.segments, self.fps = list(segments), fps
        self.order = sorted(range(len(self.segments)),
                            key=lambda i: (self.segments[i].start_frame, self.segments[i].tier))
        self._filling = True
        try:
            self.table.setRowCount(len(self.order))
            for r, i in enumerate(self.order):
                s = self.segments[i]
                span = f"{s.start_frame}–{s.end_frame - 1}\n{s.start_frame / fps:.2f}–{s.end_frame / fps:.2f} s"
                texts = (s.tier, span, s.label, s.agreement or "–", s.note, s.target)
                for c, text in enumerate(texts):
                    item = QTableWidgetItem(text)
                    item.setToolTip(text)
                    if c not in self.EDITABLE:
                        item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                    if c == 3 and s.agreement:
                        item.setForeground(QColor(AGREEMENT_COLOURS[s.agreement]))
                    self.table.setItem(r, c, item)
            # "refers to" takes room only once some note refers to something.
            self.table.setColumnHidden(self.TARGET_COLUMN, not any(s.target for s in self.segments))
            self.table.resizeRowsToContents()
        finally:
            self._filling = False

    def row_of(self, index: int) -> int:
        return self.order.index(index) if index in self.order else -1

    def selected_index(self) -> int:
        rows = {i.row() for i in self.table.selectedItems()}
        return self.order[min(rows)] if rows else -1

    def _on_activated(self, row: int, column: int) -> None:
        if not 0 <= row < len(self.order):
            return
        seg = self.segments[self.order[row]]
        if column == self.TARGET_COLUMN and seg.target:
            self.targetRequested.emit(seg.target)  # the note points elsewhere: go there
        else:
            self.seekRequested.emit(seg.start_frame)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._filling or item.column() not in self.EDITABLE or not 0 <= item.row() < len(self.order):
            return
        self.fieldEdited.emit(self.order[item.row()], self.EDITABLE[item.column()], item.text().strip())

    @Slot()
    def delete_selected(self) -> None:
        index = self.selected_index()
        if index >= 0:
            self.deleteRequested.emit(index)

    def _edit_selected(self) -> None:
        index = self.selected_index()
        if index >= 0:
            self.editRequested.emit(index)

