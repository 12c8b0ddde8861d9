"""Engine jobs: plain callables with a progress callback and a cancel token.

A job knows nothing of Qt. The GUI runs jobs on a QThread worker (``vidxai_gui.worker``) and the
CLI runs them in the foreground with a progress bar; both pass the same two objects.
"""

from __future__ import annotations

import errno
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol


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

RecordFn = Callable[[dict[str, Any]], None]
"""Structured progress: a job hands its numbers (loss, accuracy, …) as a dict, never as text to parse."""


def no_record(record: dict[str, Any]) -> None:
    """Default record callback for library calls made outside a job."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _errno_of(exc: OSError) -> int | None:
    """errno of an OSError, also when h5py only mentions it in the message ("errno = 28")."""
    if exc.errno is not None:
        return exc.errno
    m = re.search(r"errno\s*=\s*(\d+)", str(exc))
    return int(m.group(1)) if m else None


def file_error_message(item: str, exc: OSError, folder: str = "--out folder") -> str | None:
    """One line for a file-system error the user can fix (full disk, read-only or forbidden folder), naming
    the input `item` and what to do; `folder` is what the user calls the output folder. None otherwise."""
    code = _errno_of(exc)
    where = exc.filename or ""
    if code in _NO_SPACE:
        return (f"{item}: no space left on the device to write {where or 'the results'}: "
                f"free some space or choose another {folder}")
    if code in _NO_WRITE:
        why = os.strerror(code).lower()
        if where and Path(where).exists() and not Path(where).is_dir() and os.access(where, os.R_OK) is False:
            return f"{item}: cannot read {where} ({why}): check its permissions"
        return (f"{item}: cannot write {where or 'the results'} ({why}): "
                f"choose a writable {folder}, or make this one writable")
    return None
