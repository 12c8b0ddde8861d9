"""Engine jobs: plain callables with a progress callback and a cancel token.

A job knows nothing of Qt. The GUI runs jobs on a QThread worker (``vidxai_gui.worker``) and the
CLI runs them in the foreground with a progress bar; both pass the same two objects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class Cancelled(Exception):
    """Raised inside a job when its cancel token was set; the runner reports "cancelled"."""


class CancelToken:
    """Thread-safe flag a runner sets and a job polls between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled()


class Progress(Protocol):
    def __call__(self, done: int, total: int, message: str = "") -> None: ...


def no_progress(done: int, total: int, message: str = "") -> None:
    """Default progress callback for library calls made outside a job."""


ProgressFn = Callable[[int, int, str], None]
