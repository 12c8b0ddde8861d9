"""Crash-safe file replacement and the single-writer lock of a session file.

Kept apart from the HDF5 code because exports use the same atomic write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Linux ioctl that shares the blocks of a file (btrfs, xfs, bcachefs); a copy then costs metadata only.
_FICLONE = 0x40049409


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (POSIX needs the directory itself fsynced)."""
    if os.name != "posix":  # pragma: no cover - NTFS journals renames itself
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def replace_durably(src: Path, dst: Path) -> None:
    """fsync `src`, rename it onto `dst` (atomic on one file system), fsync the directory."""
    fsync_file(src)
    os.replace(src, dst)
    fsync_dir(dst.parent)


def free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the file system of `directory` (None if unknown)."""
    try:
        st = os.statvfs(directory)
    except (OSError, AttributeError):  # pragma: no cover - Windows has no statvfs
        return None
    return st.f_bavail * st.f_frsize


def copy_file(src: Path, dst: Path) -> None:
    """Copy `src` to `dst`, as a reflink when the file system can (then the cost does not grow with size)."""
    if fcntl is not None:
        try:
            with open(src, "rb") as fs, open(dst, "wb") as fd:
                fcntl.ioctl(fd.fileno(), _FICLONE, fs.fileno())
            return
        except OSError:
            pass  # ext4, tmpfs, ...: fall back to an in-kernel copy
    shutil.copyfile(src, dst)


def temp_path_for(path: Path) -> Path:
    """A temp name beside `path` (same file system, so os.replace is atomic); the pid keeps writers apart."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **open_kwargs: object) -> Iterator[IO]:
    """Write a file as all-or-nothing: a temp file beside it, fsync, os.replace.

    A reader (or a crash) sees the old file or the new one, never a half-written one.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        with open(tmp, mode, **open_kwargs) as fh:  # type: ignore[call-overload]
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class WriterLock:
    """Exclusive advisory lock held by the one process writing a session (`<name>.vxs.lock`).

    Whoever holds it may delete working copies left beside the session; without it, a working copy
    may belong to a live writer. The lock file is removed on release; the inode check after locking
    makes that removal race-free.
    """

    def __init__(self, session_path: Path) -> None:
        self.path = session_path.with_name(session_path.name + ".lock")
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if fcntl is None:  # pragma: no cover - Windows: no cross-process check, single-user desktop
            self._fd = -1
            return True
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # the previous holder unlinked it while we waited: lock the new file
        return False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
        self._fd = None
