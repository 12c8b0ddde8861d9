"""The Jobs dock: one row per queued job (name, progress, Cancel) and the recent history."""

from __future__ import annotations

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from vidxai_gui.worker import JobRunner, JobWorker


class ElidedLabel(QLabel):
    """One line of plain text that shortens itself in the middle ("Analyse 1001_D…with model") to fit
    its width, the whole text in the tooltip. Word-wrapped labels in a scrolled list get their height
    wrong and clip the second line."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.full_text = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.set_full_text(text)

    def set_full_text(self, text: str) -> None:
        self.full_text = text
        self.setToolTip(text)
        self._elide()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        self.setText(self.fontMetrics().elidedText(self.full_text, Qt.TextElideMode.ElideMiddle,
                                                   max(self.width(), 40)))


class _JobRow(QFrame):
    """One job in the panel: name, message, progress bar, Cancel."""

    def __init__(self, worker: JobWorker, queue: JobRunner) -> None:
        super().__init__()
        self.worker = worker
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.name = ElidedLabel(worker.name)  # long file names shorten instead of widening the dock
        font = self.name.font()
        font.setBold(True)
        self.name.setFont(font)
        self.status = QLabel("waiting…")
        self.status.setWordWrap(True)
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy indicator until the job reports a total
        self.bar.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop this job at its next checkpoint; finished work is kept")
        self.cancel_button.clicked.connect(lambda: queue.cancel(worker))
        top = QHBoxLayout()
        top.addWidget(self.name, 1)
        top.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.addLayout(top)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        worker.progress.connect(self.on_progress)
        worker.finished.connect(lambda _r: self.on_end("done", "finished"))
        worker.error.connect(lambda msg, _tb: self.on_end(f"failed: {msg}", "error"))
        worker.cancelled.connect(lambda: self.on_end("cancelled", "cancelled"))

    @Slot(int, int, str)
    def on_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
        self.status.setText(message or f"{done} / {total}")

    def on_end(self, text: str, state: str) -> None:
        self.cancel_button.setEnabled(False)
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
        if state == "finished":
            self.bar.setValue(self.bar.maximum())
        self.status.setText(text)
        self.setProperty("jobState", state)


class JobPanel(QWidget):
    """The job list shown in the Jobs dock."""

    MAX_ENDED_ROWS = 8  # keep the recent history visible, not every job of the day

    def __init__(self, queue: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self.rows: list[_JobRow] = []
        self._list = QWidget()
        self._list_layout = QVBoxLayout(self._list)
        self._list_layout.setContentsMargins(0, 0, 0, 0)
        self._list_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._list)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.empty_label = QLabel("No jobs. Analyses, training and evaluation run here.")
        self.empty_label.setWordWrap(True)
        self.empty_label.setStyleSheet("color: gray")
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.clicked.connect(self.clear_finished)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.empty_label)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.clear_button)
        queue.jobAdded.connect(self._add_row)
        queue.jobEnded.connect(lambda _w: self._trim())

    def row_for(self, worker: JobWorker) -> _JobRow | None:
        return next((r for r in self.rows if r.worker is worker), None)

    @Slot(object)
    def _add_row(self, worker: JobWorker) -> None:
        row = _JobRow(worker, self.queue)
        self.rows.append(row)
        self._list_layout.insertWidget(self._list_layout.count() - 1, row)
        self.empty_label.hide()

    def _trim(self) -> None:
        ended = [r for r in self.rows if r.worker.state not in ("queued", "running")]
        for row in ended[: max(0, len(ended) - self.MAX_ENDED_ROWS)]:
            self._remove(row)

    def _remove(self, row: _JobRow) -> None:
        self.rows.remove(row)
        self._list_layout.removeWidget(row)
        row.deleteLater()

    @Slot()
    def clear_finished(self) -> None:
        for row in [r for r in self.rows if r.worker.state not in ("queued", "running")]:
            self._remove(row)
        self.empty_label.setVisible(not self.rows)
