"""Runs engine jobs off the GUI thread and reports back through Qt signals.

An engine job is a plain callable ``fn(progress, cancel)`` (see ``engine.jobs``). ``JobWorker`` runs
one on a ``QThread`` and always ends with exactly one of ``finished``, ``error`` or ``cancelled`` —
the window relies on that to re-enable buttons and drop its references. ``JobQueue`` runs jobs one
at a time (two analyses fighting over 2 CPU cores help nobody) and ``JobPanel`` shows them.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot
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

from engine.jobs import Cancelled, CancelToken

log = logging.getLogger(__name__)

JobFn = Callable[..., Any]
"""``fn(progress, cancel)``, or ``fn(progress, cancel, partial)`` for a worker built with partial=True."""

# Progress callbacks can fire per frame; more than ~20 repaints a second only costs the GUI thread time.
_PROGRESS_INTERVAL_S = 0.05


class _Runner(QObject):
    """Lives on the job's QThread and calls the job; its signals cross to the GUI thread queued."""

    progress = Signal(int, int, str)
    partial = Signal(object)
    ended = Signal(str, object, str)  # state, result or message, traceback

    def __init__(self, fn: JobFn, name: str, token: CancelToken, passes_partial: bool) -> None:
        super().__init__()
        self.fn, self.name, self.token, self.passes_partial = fn, name, token, passes_partial
        self._last_progress = 0.0

    def report_progress(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if done >= total or now - self._last_progress >= _PROGRESS_INTERVAL_S:
            self._last_progress = now
            self.progress.emit(int(done), int(total), str(message))

    @Slot()
    def run(self) -> None:
        log.info("job %r started", self.name)
        try:
            args: tuple[Any, ...] = (self.report_progress, self.token)
            if self.passes_partial:
                args += (self.partial.emit,)
            result = self.fn(*args)
        except Cancelled:
            self.ended.emit("cancelled", None, "")
        except BaseException as exc:  # a worker must report every failure, never die silently
            log.exception("job %r failed", self.name)
            self.ended.emit("error", str(exc) or type(exc).__name__, traceback.format_exc())
        else:
            self.ended.emit("finished", result, "")


class JobWorker(QObject):
    """One engine job on its own QThread; the object itself stays in the GUI thread.

    ``progress``, ``partial``, then exactly one of ``finished`` / ``error`` / ``cancelled``, then
    ``done``. The job runs in an inner runner on the thread; this object re-emits its signals from the
    GUI thread, so any slot connected here — lambdas included — runs on the GUI thread and may touch
    widgets. (A lambda connected straight to an object living on the worker thread would run there.)
    """

    progress = Signal(int, int, str)
    partial = Signal(object)
    finished = Signal(object)
    error = Signal(str, str)
    cancelled = Signal()
    done = Signal()

    def __init__(self, fn: JobFn, name: str = "job", *, partial: bool = False) -> None:
        super().__init__()
        self.fn = fn
        self.name = name
        self.token = CancelToken()
        self.state = "queued"  # queued → running → finished | error | cancelled
        self._passes_partial = partial
        self._thread: QThread | None = None
        self._runner: _Runner | None = None

    def cancel(self) -> None:
        """Ask the job to stop; it stops at its next ``raise_if_cancelled``. Safe from any thread."""
        log.info("cancel requested for job %r", self.name)
        self.token.cancel()

    def start(self) -> QThread:
        """Run on a fresh QThread, which quits after the job ends."""
        thread = QThread()
        thread.setObjectName(f"job:{self.name}")
        runner = _Runner(self.fn, self.name, self.token, self._passes_partial)
        runner.moveToThread(thread)
        thread.started.connect(runner.run)
        runner.progress.connect(self._on_progress)
        runner.partial.connect(self._on_partial)
        runner.ended.connect(self._on_ended)
        # Direct: QThread.quit is thread-safe, and a queued quit would wait for the GUI loop, so a
        # GUI thread blocked in wait() (shutdown) would deadlock.
        runner.ended.connect(thread.quit, Qt.ConnectionType.DirectConnection)
        self._thread, self._runner = thread, runner
        self.state = "running"
        thread.start()
        return thread

    def wait(self, timeout_ms: int = 5000) -> bool:
        """Block until the thread has stopped (used at shutdown and in tests)."""
        if self._thread is None:
            return True
        return self._thread.wait(timeout_ms)

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, message: str) -> None:
        self.progress.emit(done, total, message)

    @Slot(object)
    def _on_partial(self, value: object) -> None:
        self.partial.emit(value)

    @Slot(str, object, str)
    def _on_ended(self, state: str, payload: object, tb: str) -> None:
        self._end(state, payload, tb)

    def _end(self, state: str, payload: object = None, tb: str = "") -> None:
        self.state = state
        log.info("job %r ended: %s", self.name, state)
        if state == "finished":
            self.finished.emit(payload)
        elif state == "error":
            self.error.emit(str(payload), tb)
        else:
            self.cancelled.emit()
        self.done.emit()


class JobQueue(QObject):
    """Runs submitted jobs one at a time, in order."""

    jobAdded = Signal(object)  # JobWorker
    jobStarted = Signal(object)
    jobEnded = Signal(object)
    idle = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: list[JobWorker] = []
        self._running: JobWorker | None = None
        self._threads: dict[int, QThread] = {}

    @property
    def running(self) -> JobWorker | None:
        return self._running

    @property
    def pending(self) -> list[JobWorker]:
        return list(self._pending)

    def is_busy(self) -> bool:
        return self._running is not None or bool(self._pending)

    def submit(self, fn: JobFn, name: str, *, partial: bool = False) -> JobWorker:
        """Queue ``fn``; connect to the returned worker's signals before control returns to Qt."""
        worker = JobWorker(fn, name, partial=partial)
        self._pending.append(worker)
        self.jobAdded.emit(worker)
        # Deferred start: the caller connects its slots first, so it cannot miss a fast job's end.
        QTimer.singleShot(0, self, self._start_next)
        return worker

    def cancel(self, worker: JobWorker) -> None:
        if worker in self._pending:
            # Never started: report it ended here so every worker ends with exactly one signal.
            self._pending.remove(worker)
            worker.cancel()
            worker._end("cancelled")  # never started: ends here, still exactly once
            self.jobEnded.emit(worker)
        else:
            worker.cancel()

    def cancel_all(self) -> None:
        for worker in list(self._pending):
            self.cancel(worker)
        if self._running is not None:
            self._running.cancel()

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything and wait for the running job's thread; False if it did not stop in time."""
        self.cancel_all()
        ok = True
        for thread in list(self._threads.values()):
            ok = thread.wait(timeout_ms) and ok
        return ok

    @Slot()
    def _start_next(self) -> None:
        if self._running is not None or not self._pending:
            return
        worker = self._pending.pop(0)
        self._running = worker
        worker.done.connect(self._on_done)
        thread = worker.start()
        self._threads[id(worker)] = thread
        thread.finished.connect(lambda w=worker: self._threads.pop(id(w), None))
        self.jobStarted.emit(worker)

    @Slot()
    def _on_done(self) -> None:
        worker = self._running
        self._running = None
        if worker is not None:
            self.jobEnded.emit(worker)
        if self._pending:
            self._start_next()
        else:
            self.idle.emit()


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

    def __init__(self, worker: JobWorker, queue: JobQueue) -> None:
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

    def __init__(self, queue: JobQueue, parent: QWidget | None = None) -> None:
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
