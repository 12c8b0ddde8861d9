"""Runs engine jobs off the GUI thread and reports back through Qt signals.

An engine job is a plain callable ``fn(progress, cancel)`` (see ``engine.jobs``). ``JobWorker`` runs
one on a ``QThread`` and always ends with exactly one of ``finished``, ``error`` or ``cancelled`` —
the window relies on that to re-enable buttons and drop its references. ``JobRunner`` owns every
worker thread of the window, in lanes (see its docstring); ``vidxai_gui.job_panel`` shows the queue.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

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


class JobRunner(QObject):
    """Owns every worker thread's lifetime (a QThread destroyed while it runs aborts the process), in lanes:

    - ``submit``: the queue, one job at a time in order (two analyses fighting over 2 CPU cores help
      nobody), shown in the Jobs dock (``jobAdded``/``jobStarted``/``jobEnded``/``idle``);
    - ``background``: starts now, beside the queue (reading a session never waits behind an analysis);
    - ``latest(lane, …)``: starts now and cancels the lane's earlier job, whose result is then stale
      (``is_latest``): re-scoring the frame on screen;
    - ``coalesce(lane, …)``: one job at a time per lane; what arrives while one runs replaces the waiting
      one, so a burst costs two runs and the last request always runs (autosave).

    Every worker is kept until its thread has finished; ``shutdown`` cancels and waits for all of them.
    """

    jobAdded = Signal(object)  # JobWorker
    jobStarted = Signal(object)
    jobEnded = Signal(object)
    idle = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pending: list[JobWorker] = []
        self._running: JobWorker | None = None
        self._live: dict[int, JobWorker] = {}  # started workers whose threads have not finished
        self._latest: dict[str, JobWorker] = {}
        self._lane_running: dict[str, JobWorker] = {}
        self._lane_next: dict[str, tuple[JobFn, str, Callable[[JobWorker], Any]]] = {}
        self._background: list[JobWorker] = []

    # ---- the queue
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
            self._pending.remove(worker)
            worker.cancel()
            worker._end("cancelled")  # never started: ends here, still exactly once
            self.jobEnded.emit(worker)
        else:
            worker.cancel()

    def cancel_all(self) -> None:
        for worker in list(self._pending):
            self.cancel(worker)
        for worker in list(self._live.values()):
            worker.cancel()

    @Slot()
    def _start_next(self) -> None:
        if self._running is not None or not self._pending:
            return
        worker = self._pending.pop(0)
        self._running = worker
        worker.done.connect(self._on_done)
        self._start(worker)
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

    # ---- beside the queue
    def _start(self, worker: JobWorker) -> JobWorker:
        thread = worker.start()
        self._live[id(worker)] = worker
        thread.finished.connect(lambda w=worker: self._live.pop(id(w), None))
        return worker

    def background(self, fn: Callable[[], Any], name: str, on_finished: Callable[[Any], Any],
                   on_error: Callable[[str, str], Any]) -> JobWorker:
        """Run ``fn()`` now on its own thread; ``on_finished(result)`` or ``on_error(message, traceback)``."""
        worker = JobWorker(lambda progress, cancel: fn(), name)
        worker.finished.connect(on_finished)
        worker.error.connect(on_error)
        self._background.append(worker)
        worker.done.connect(lambda w=worker: self._background.remove(w) if w in self._background else None)
        return self._start(worker)

    @property
    def loading(self) -> bool:
        """A background read is still running (tests and the self-test wait for the prototypes' crops)."""
        return bool(self._background)

    def latest(self, lane: str, fn: JobFn, name: str) -> JobWorker:
        """Run ``fn`` now; the lane's earlier job is cancelled and no longer ``is_latest``. Connect the
        returned worker's signals at once (it is started)."""
        old = self._latest.get(lane)
        if old is not None:
            old.cancel()  # its result would be stale; the newest request wins
        worker = JobWorker(fn, name)
        self._latest[lane] = worker
        worker.done.connect(lambda w=worker: self._latest.pop(lane) if self._latest.get(lane) is w else None)
        return self._start(worker)

    def current(self, lane: str) -> JobWorker | None:
        """The lane's newest job while it runs (latest-wins or coalescing lanes), else None."""
        return self._latest.get(lane) or self._lane_running.get(lane)

    def is_latest(self, lane: str, worker: JobWorker) -> bool:
        return self._latest.get(lane) is worker

    def coalesce(self, lane: str, fn: JobFn, name: str, setup: Callable[[JobWorker], Any]) -> None:
        """Run ``fn`` when the lane is free; a newer call before then replaces it. ``setup(worker)``
        connects its signals when it starts."""
        self._lane_next[lane] = (fn, name, setup)
        if lane not in self._lane_running:
            self._start_lane(lane)

    def lane_busy(self, lane: str) -> bool:
        return lane in self._lane_running or lane in self._lane_next

    def _start_lane(self, lane: str) -> None:
        item = self._lane_next.pop(lane, None)
        if item is None:
            return
        fn, name, setup = item
        worker = JobWorker(fn, name)
        setup(worker)
        worker.done.connect(lambda: (self._lane_running.pop(lane, None), self._start_lane(lane)))
        self._lane_running[lane] = worker
        self._start(worker)

    def flush(self, lane: str, timeout_ms: int = 10_000) -> tuple[bool, JobFn | None]:
        """Wait for the lane's running job; returns (it stopped in time, the waiting job taken off the
        lane) so a closing window can run that last one itself."""
        worker = self._lane_running.get(lane)
        ok = worker.wait(timeout_ms) if worker is not None else True
        item = self._lane_next.pop(lane, None)
        return ok, (item[0] if item else None)

    def wait_all(self, timeout_ms: int = 5000) -> bool:
        ok = True
        for worker in list(self._live.values()):
            ok = worker.wait(timeout_ms) and ok
        return ok

    def shutdown(self, timeout_ms: int = 5000) -> bool:
        """Cancel everything and wait for every thread; False if one did not stop in time."""
        self.cancel_all()
        self._lane_next.clear()
        return self.wait_all(timeout_ms)
