"""The job runner always reports back exactly once (STYLE.md 2), cancellation really stops a job, and its
lanes (queue, background, latest-wins, coalescing) keep their promises."""

from __future__ import annotations

import threading
import time

import pytest

from engine.jobs import CancelToken
from vidxai_gui.job_panel import JobPanel
from vidxai_gui.worker import JobRunner, JobWorker

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]


class Ends:
    """Records every terminal signal of a worker, to prove there is exactly one."""

    def __init__(self, worker: JobWorker) -> None:
        self.events: list[tuple[str, object]] = []
        worker.finished.connect(lambda r: self.events.append(("finished", r)))
        worker.error.connect(lambda m, tb: self.events.append(("error", (m, tb))))
        worker.cancelled.connect(lambda: self.events.append(("cancelled", None)))


def _settle(qtbot, worker: JobWorker) -> None:
    """Wait for the thread to stop and let any stray queued signal arrive before counting."""
    assert worker.wait(5000)
    qtbot.wait(50)


def test_success_reports_result_progress_and_runs_off_gui_thread(qtbot) -> None:
    gui_thread = threading.get_ident()
    seen_threads: list[int] = []

    def job(progress, cancel: CancelToken) -> int:
        seen_threads.append(threading.get_ident())
        for i in range(5):
            cancel.raise_if_cancelled()
            progress(i + 1, 5, f"step {i + 1}")
        return 42

    worker = JobWorker(job, "sum")
    ends = Ends(worker)
    progress: list[tuple[int, int, str]] = []
    worker.progress.connect(lambda d, t, m: progress.append((d, t, m)))
    with qtbot.waitSignal(worker.finished, timeout=5000) as blocker:
        worker.start()
    _settle(qtbot, worker)
    assert blocker.args == [42]
    assert ends.events == [("finished", 42)]
    assert worker.state == "finished"
    assert progress and progress[-1] == (5, 5, "step 5")  # the final step is never throttled away
    assert seen_threads and seen_threads[0] != gui_thread


def test_slots_and_lambdas_run_on_the_gui_thread(qtbot) -> None:
    """Whoever connects a lambda to a worker may touch widgets in it: it must run on the GUI thread."""
    gui_thread = threading.get_ident()
    where: dict[str, int] = {}

    def job(progress, cancel, partial) -> int:
        progress(1, 2, "half")
        partial("chunk")
        return 1

    worker = JobWorker(job, "threads", partial=True)
    worker.progress.connect(lambda *_: where.setdefault("progress", threading.get_ident()))
    worker.partial.connect(lambda _v: where.setdefault("partial", threading.get_ident()))
    worker.finished.connect(lambda _r: where.setdefault("finished", threading.get_ident()))
    worker.done.connect(lambda: where.setdefault("done", threading.get_ident()))
    with qtbot.waitSignal(worker.done, timeout=5000):
        worker.start()
    _settle(qtbot, worker)
    assert where == {"progress": gui_thread, "partial": gui_thread, "finished": gui_thread, "done": gui_thread}


def test_error_emits_exactly_one_error_with_message_and_traceback(qtbot) -> None:
    def job(progress, cancel) -> None:
        raise FileNotFoundError("clip.mp4 not found: choose another file")

    worker = JobWorker(job, "broken")
    ends = Ends(worker)
    with qtbot.waitSignal(worker.error, timeout=5000) as blocker:
        worker.start()
    _settle(qtbot, worker)
    message, tb = blocker.args
    assert message == "clip.mp4 not found: choose another file"
    assert "FileNotFoundError" in tb and "Traceback" in tb
    assert [e for e, _ in ends.events] == ["error"]


def test_cancel_stops_a_looping_job(qtbot) -> None:
    started = threading.Event()
    iterations: list[int] = []

    def job(progress, cancel: CancelToken) -> str:
        started.set()
        for i in range(10_000):  # ~100 s if cancellation did not work
            cancel.raise_if_cancelled()
            iterations.append(i)
            time.sleep(0.01)
        return "ran to the end"

    worker = JobWorker(job, "loop")
    ends = Ends(worker)
    worker.start()
    assert started.wait(5)
    qtbot.wait(50)
    t0 = time.monotonic()
    with qtbot.waitSignal(worker.cancelled, timeout=5000):
        worker.cancel()
    assert time.monotonic() - t0 < 2
    _settle(qtbot, worker)
    assert [e for e, _ in ends.events] == ["cancelled"]
    assert worker.state == "cancelled"
    assert 0 < len(iterations) < 10_000


def test_partial_results_arrive_before_finished(qtbot) -> None:
    def job(progress, cancel, partial) -> str:
        for start in (0, 10, 20):
            partial((start, start + 10))
        return "done"

    worker = JobWorker(job, "chunks", partial=True)
    order: list[object] = []
    worker.partial.connect(order.append)
    worker.finished.connect(lambda r: order.append(("end", r)))
    with qtbot.waitSignal(worker.finished, timeout=5000):
        worker.start()
    _settle(qtbot, worker)
    assert order == [(0, 10), (10, 20), (20, 30), ("end", "done")]


def test_queue_runs_one_at_a_time_in_order_and_panel_shows_states(qtbot) -> None:
    queue = JobRunner()
    panel = JobPanel(queue)
    qtbot.addWidget(panel)
    active = 0
    max_active = 0
    order: list[str] = []
    lock = threading.Lock()
    release_first = threading.Event()

    def make(name: str, fail: bool = False):
        def job(progress, cancel) -> str:
            nonlocal active, max_active
            with lock:
                active += 1
                max_active = max(max_active, active)
                order.append(name)
            try:
                if name == "a":
                    while not release_first.is_set():
                        cancel.raise_if_cancelled()
                        time.sleep(0.01)
                progress(1, 1, f"{name} done")
                if fail:
                    raise RuntimeError(f"{name} failed on purpose")
                return name
            finally:
                with lock:
                    active -= 1
        return job

    a = queue.submit(make("a"), "a")
    b = queue.submit(make("b", fail=True), "b")
    c = queue.submit(make("c"), "c")
    ends = {w.name: Ends(w) for w in (a, b, c)}
    assert len(panel.rows) == 3 and not panel.empty_label.isVisible()
    qtbot.waitUntil(lambda: a.state == "running", timeout=5000)
    qtbot.wait(100)
    assert b.state == "queued" and c.state == "queued"  # b waits for a
    queue.cancel(c)  # a queued job can be cancelled before it starts
    assert [e for e, _ in ends["c"].events] == ["cancelled"]
    release_first.set()
    with qtbot.waitSignal(queue.idle, timeout=5000):
        pass
    qtbot.wait(50)
    assert order == ["a", "b"]  # c never ran
    assert max_active == 1
    assert [e for e, _ in ends["a"].events] == ["finished"]
    assert [e for e, _ in ends["b"].events] == ["error"]
    row_b = panel.row_for(b)
    assert row_b is not None and row_b.status.text() == "failed: b failed on purpose"
    assert not row_b.cancel_button.isEnabled()
    assert panel.row_for(a).bar.value() == panel.row_for(a).bar.maximum()
    panel.clear_finished()
    assert panel.rows == []
    assert queue.shutdown(2000)


def test_cancel_button_in_panel_cancels_running_job(qtbot) -> None:
    queue = JobRunner()
    panel = JobPanel(queue)
    qtbot.addWidget(panel)

    def job(progress, cancel) -> None:
        n = 0
        while True:
            cancel.raise_if_cancelled()
            n += 1
            progress(n, 1_000_000, "working")
            time.sleep(0.005)

    worker = queue.submit(job, "endless")
    qtbot.waitUntil(lambda: worker.state == "running", timeout=5000)
    row = panel.row_for(worker)
    with qtbot.waitSignal(worker.cancelled, timeout=5000):
        row.cancel_button.click()
    qtbot.waitUntil(lambda: row.status.text() == "cancelled", timeout=2000)
    assert queue.shutdown(2000)


def _blocking(release: threading.Event, result: object = None):
    def job(progress, cancel) -> object:
        while not release.is_set():
            cancel.raise_if_cancelled()
            time.sleep(0.005)
        return result
    return job


def test_latest_wins_cancels_the_older_job_and_only_the_newest_is_current(qtbot) -> None:
    runner = JobRunner()
    hold = threading.Event()
    old = runner.latest("frame", _blocking(hold, "old"), "frame 1")
    old_ends = Ends(old)
    qtbot.waitUntil(lambda: old.state == "running", timeout=5000)
    new = runner.latest("frame", _blocking(hold, "new"), "frame 2")
    new_ends = Ends(new)
    assert runner.current("frame") is new and not runner.is_latest("frame", old)
    qtbot.waitUntil(lambda: old.state == "cancelled", timeout=5000)  # the stale one stops at once
    hold.set()
    with qtbot.waitSignal(new.done, timeout=5000):
        pass
    assert [e for e, _ in old_ends.events] == ["cancelled"]
    assert new_ends.events == [("finished", "new")]
    assert runner.current("frame") is None
    assert runner.shutdown(2000)


def test_coalescing_lane_runs_the_running_job_and_then_only_the_newest_request(qtbot) -> None:
    runner = JobRunner()
    hold = threading.Event()
    ran: list[str] = []

    def request(name: str):
        def job(progress, cancel) -> str:
            if name == "first":
                while not hold.is_set():
                    time.sleep(0.005)
            ran.append(name)
            return name
        return job

    finished: list[object] = []
    for name in ("first", "second", "third", "fourth"):
        runner.coalesce("save", request(name), name, lambda w: w.finished.connect(finished.append))
        qtbot.wait(20)
    assert runner.lane_busy("save")
    hold.set()
    qtbot.waitUntil(lambda: not runner.lane_busy("save"), timeout=5000)
    assert ran == ["first", "fourth"] and finished == ["first", "fourth"]  # a burst costs two runs


def test_flush_hands_back_the_waiting_request_and_shutdown_waits_for_every_thread(qtbot) -> None:
    runner = JobRunner()
    hold = threading.Event()
    runner.coalesce("save", _blocking(hold, 1), "running", lambda w: None)
    runner.coalesce("save", lambda progress, cancel: "last edit", "waiting", lambda w: None)
    loaded: list[object] = []
    runner.background(lambda: "read", "read", loaded.append, lambda m, tb: None)
    qtbot.waitUntil(lambda: loaded == ["read"], timeout=5000)
    hold.set()
    ok, last = runner.flush("save", 5000)
    assert ok and last is not None and last(None, None) == "last edit"
    endless = runner.submit(_blocking(threading.Event()), "endless")
    qtbot.waitUntil(lambda: endless.state == "running", timeout=5000)
    assert runner.shutdown(5000)  # cancelled and joined: no thread outlives the runner
    assert endless.wait(0)
