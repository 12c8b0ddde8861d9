"""Bounded producer/consumer stages for the video pipeline (decode ∥ faces ∥ model).

Each stage runs on its own thread and hands items on through a bounded queue, so memory stays flat in
video length and the slowest stage sets the pace. PyAV decoding and torch release the GIL; dlib's
detector mostly does not, which is why decoding and face work are separate stages: decode overlaps
with faces, and the model overlaps with both.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.jobs import CancelToken

_END = object()


@dataclass
class StageTimer:
    """Busy time of one stage (seconds spent in its own work, not waiting on queues)."""

    name: str
    busy: float = 0.0
    items: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, seconds: float, n: int = 1) -> None:
        with self._lock:
            self.busy += seconds
            self.items += n

    @property
    def rate(self) -> float:
        return self.items / self.busy if self.busy > 0 else float("inf")


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Stage:
    """Runs ``fn(item) -> item`` (or a source iterable) on a thread, feeding a bounded output queue."""

    def __init__(self, name: str, source: Iterable[Any] | None = None, fn: Callable[[Any], Any] | None = None,
                 upstream: Stage | None = None, maxsize: int = 32, cancel: CancelToken | None = None) -> None:
        self.name = name
        self.timer = StageTimer(name)
        self.out: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._source, self._fn, self._upstream = source, fn, upstream
        self._cancel = cancel or CancelToken()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vidxai-{name}", daemon=True)

    def start(self) -> Stage:
        self._thread.start()
        return self

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _inputs(self) -> Iterator[Any]:
        if self._upstream is not None:
            yield from self._upstream
        else:
            assert self._source is not None
            it = iter(self._source)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                self.timer.add(time.perf_counter() - t0)
                yield item

    def _run(self) -> None:
        try:
            for item in self._inputs():
                if self._stop.is_set() or self._cancel.cancelled:
                    break
                if self._fn is not None:
                    t0 = time.perf_counter()
                    item = self._fn(item)
                    self.timer.add(time.perf_counter() - t0)
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put(_Failure(exc))
            return
        self._put(_END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                item = self.out.get(timeout=0.1)
            except queue.Empty:
                if self._cancel.cancelled:
                    self._cancel.raise_if_cancelled()
                continue
            if item is _END:
                # A stage stops early only when cancelled: say so rather than look like the end.
                self._cancel.raise_if_cancelled()
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def stop(self) -> None:
        """Ask this stage and everything upstream to end, and wait for the threads."""
        self._stop.set()
        if self._upstream is not None:
            self._upstream.stop()
        # Drain so a producer blocked on put() sees the stop flag.
        while self._thread.is_alive():
            try:
                self.out.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.05)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
