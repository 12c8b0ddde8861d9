"""The People dock: who is in the video (a thumbnail each, time on screen) and who is analysed.

A session tracks every face and groups them into people (sessions.people); scores, maps and the timeline
are of one person. Choosing another person here asks the window to re-run the analysis for them (the same
job as "apply to the whole video"). Thumbnails are decoded and cropped on a worker (`load_people`); the
panel only shows them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal, Slot
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from vidxai_gui.docks import array_to_image

log = logging.getLogger(__name__)

THUMB = 64


@dataclass
class PersonEntry:
    id: int
    frames: int
    seconds: float
    analysed: bool
    thumb: QImage | None  # made on the worker (QImage, unlike QPixmap, may be)


def _crop(frame: np.ndarray, box: np.ndarray, size: int = THUMB) -> np.ndarray:
    """A square crop around the face box (grown by a quarter), resized to size×size."""
    import cv2

    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * 1.25
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    c, d = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    if c - a < 2 or d - b < 2:
        return np.zeros((size, size, 3), np.uint8)
    return cv2.resize(np.ascontiguousarray(frame[b:d, a:c]), (size, size), interpolation=cv2.INTER_AREA)


def load_people(session_path: Path, video_path: Path | None) -> list[PersonEntry]:
    """The session's people with a thumbnail each (worker thread: reads the session and decodes frames)."""
    from sessions import Session
    from sessions import people as people_store

    with Session.open(session_path) as s:
        found = people_store.people(s)
        analysed = people_store.analysed_person(s)
    reader = None
    if video_path is not None and Path(video_path).exists():
        from engine.video import open_video

        reader = open_video(video_path)
    out = []
    try:
        for p in found:
            thumb = None
            if reader is not None and p.thumb_frame >= 0 and p.thumb_box is not None:
                try:
                    thumb = array_to_image(_crop(reader.frame(p.thumb_frame), p.thumb_box))
                except Exception as exc:  # noqa: BLE001 - a missing thumbnail is not worth an error dialog
                    log.warning("no thumbnail for person %d: %s", p.id, exc)
            out.append(PersonEntry(p.id, p.frames, p.seconds, p.id == analysed, thumb))
    finally:
        if reader is not None:
            reader.close()
    return out


class PeoplePanel(QWidget):
    """People found in the video; "Analyse this person" emits personChosen(id)."""

    personChosen = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.list = QListWidget()
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setSpacing(2)
        self.hint = QLabel("Find faces or analyse a video to see who is in it.")
        self.hint.setWordWrap(True)
        self.button = QPushButton("Analyse this person")
        self.button.setToolTip("Scores, maps, exports and the timeline follow the chosen person; "
                               "frames without them are \"no face\". Re-runs the analysis as a job.")
        self.button.setEnabled(False)
        lay = QVBoxLayout(self)
        lay.addWidget(self.hint)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.button)
        self.entries: list[PersonEntry] = []
        self.list.currentRowChanged.connect(self._update_button)
        self.list.itemDoubleClicked.connect(lambda _item: self._choose())
        self.button.clicked.connect(self._choose)

    def set_people(self, entries: list[PersonEntry]) -> None:
        self.entries = list(entries)
        self.list.clear()
        for e in self.entries:
            text = f"Person {e.id}\n{e.seconds:.1f} s on screen ({e.frames} frames)"
            if e.analysed:
                text += "\n● analysed"
            item = QListWidgetItem(text)
            if e.thumb is not None:
                item.setIcon(QIcon(QPixmap.fromImage(e.thumb)))
            item.setData(Qt.ItemDataRole.UserRole, e.id)
            self.list.addItem(item)
            if e.analysed:
                self.list.setCurrentItem(item)
        n = len(self.entries)
        self.hint.setText("Nobody was found in this video." if n == 0 else
                          f"{n} {'person' if n == 1 else 'people'} in this video; choose who to analyse.")
        self._update_button()

    def clear(self) -> None:
        self.entries = []
        self.list.clear()
        self.hint.setText("Find faces or analyse a video to see who is in it.")
        self._update_button()

    def selected(self) -> int | None:
        item = self.list.currentItem()
        return None if item is None else int(item.data(Qt.ItemDataRole.UserRole))

    @Slot()
    def _update_button(self, *_args: object) -> None:
        pid = self.selected()
        analysed = next((e.analysed for e in self.entries if e.id == pid), False)
        self.button.setEnabled(pid is not None and not analysed)

    def _choose(self) -> None:
        pid = self.selected()
        if pid is not None and self.button.isEnabled():
            self.personChosen.emit(pid)
