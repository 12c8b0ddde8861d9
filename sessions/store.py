"""The `.vxs` session file: one HDF5 file per analysed video (schema in sessions/SCHEMA.md).

Crash safety: HDF5 edited in place is not crash-safe, so the committed file is never opened for
writing. A writable Session writes into a working copy `<name>.vxs.work` beside it; `commit()` closes
that copy, fsyncs it and `os.replace`s it onto `<name>.vxs`. Readers and crashes therefore only ever
see a complete committed version. After a commit the next write makes a fresh working copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import h5py
import numpy as np

from sessions.atomic import WriterLock, atomic_write, copy_file, free_bytes, fsync_dir, fsync_file
from sessions.tracks import occlusion_deltas, runs

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
APPLICATION = "vidxai"
SUFFIX = ".vxs"
WORK_SUFFIX = ".work"
ANNOTATIONS_SUFFIX = ".annotations.json"  # the autosave sidecar: <name>.vxs.annotations.json
N_LANDMARKS = 68
AGREEMENT_VALUES = ("agree", "disagree", "")

_JSON_ATTRS = "__json__"  # names of attributes stored as JSON text
_VIDEO_KEYS = ("path", "sha256", "fps", "frame_count", "width", "height", "duration", "rotation", "codec")
_CHUNK_BYTES = 256 * 1024
_COMPRESS_ROW_BYTES = 1024  # rows smaller than this (scores, boxes) are not worth gzip's CPU
_BYTES_DS_CHUNK = 16 * 1024
# Free space kept in hand on the session's disk: HDF5 is not safe to use after a write that failed for
# want of space (a later call can crash the process), so writes stop with ENOSPC before the disk is full.
MIN_FREE_BYTES = 16 * 1024 * 1024


class SessionError(Exception):
    """A session file that cannot be used; the message names the file and says what to do."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------- dataclasses


@dataclass
class FaceTrack:
    """Per-frame face results; rows at or after `frames_done` were not computed yet."""

    found: np.ndarray  # bool (T,)
    box: np.ndarray  # float32 (T, 4) x0, y0, x1, y1; NaN without a face
    landmarks: np.ndarray  # float32 (T, 68, 2); NaN without a face
    confidence: np.ndarray  # float32 (T,)
    n_faces: np.ndarray  # uint8 (T,)
    frames_done: int
    start: int = 0  # index of the first row (when read with a frame slice)
    detected: np.ndarray | None = None  # bool (T,): a fresh detection (not tracked); None in older files


@dataclass
class Tier:
    name: str
    kind: str = "label"  # free text for the GUI: "label", "comment", "agreement", ...


@dataclass
class Segment:
    """One annotation: frames [start_frame, end_frame) of a tier."""

    tier: str
    start_frame: int
    end_frame: int  # exclusive
    label: str = ""
    note: str = ""
    author: str = ""
    created: str = ""
    agreement: str = ""  # "agree" | "disagree" | "" (the reviewer's verdict on the model)
    target: str = ""  # optional reference: "frame:120", "prototype:3", "stage:happy/2"

    def __post_init__(self) -> None:
        if self.agreement not in AGREEMENT_VALUES:
            raise ValueError(f"agreement must be one of {AGREEMENT_VALUES}, not {self.agreement!r}")
        if self.end_frame < self.start_frame:
            raise ValueError(f"segment ends ({self.end_frame}) before it starts ({self.start_frame})")


@dataclass
class Annotations:
    tiers: list[Tier] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"tiers": [dataclasses.asdict(t) for t in self.tiers],
                "segments": [dataclasses.asdict(s) for s in self.segments]}

    @classmethod
    def from_json(cls, d: dict) -> Annotations:
        return cls([Tier(**t) for t in d.get("tiers", [])], [Segment(**s) for s in d.get("segments", [])])


@dataclass
class Stage:
    start: int  # first frame
    end: int  # exclusive
    descriptor: str


@dataclass
class SprayResult:
    """SpRAy for one class: per-frame cluster labels (-1 = class not active), stages, cluster maps."""

    labels: np.ndarray  # int16 (T,)
    stages: list[Stage]
    cluster_maps: np.ndarray  # float16 (k, h, w), mean relevance per cluster
    k: int
    eigengap: float
    description_length_reduction: float
    temporal_prototype: str


@dataclass
class Waveform:
    """The sound track's min/max envelope at a few resolutions (the timeline's waveform track).

    ``mins[i]``/``maxs[i]`` (float32, −1…1) hold one value per ``bins[i]`` samples, the finest first; sample n
    plays at ``offset + n / sample_rate`` seconds of the video's time axis (engine.audio)."""

    bins: list[int]
    mins: list[np.ndarray]
    maxs: list[np.ndarray]
    sample_rate: int
    offset: float
    samples: int

    @classmethod
    def from_finest(cls, lo: np.ndarray, hi: np.ndarray, bin_samples: int, factor: int, levels: int,
                    sample_rate: int, offset: float, samples: int) -> Waveform:
        """The pyramid from its finest level: each next level merges `factor` bins of the one before."""
        bins, mins, maxs = [int(bin_samples)], [np.asarray(lo, np.float32)], [np.asarray(hi, np.float32)]
        for _ in range(1, levels):
            a, b = mins[-1], maxs[-1]
            if len(a) <= 1:
                break
            idx = np.arange(0, len(a), factor)
            bins.append(bins[-1] * factor)
            mins.append(np.minimum.reduceat(a, idx))
            maxs.append(np.maximum.reduceat(b, idx))
        return cls(bins, mins, maxs, int(sample_rate), float(offset), int(samples))

    def columns(self, n0: float, n1: float, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-column (x in samples, min, max) for samples [n0, n1) drawn `width` columns wide: from the coarsest
        level with at least one bin per column, so the cost is about `width`, not the stretch's length."""
        width = max(int(width), 1)
        n0, n1 = max(float(n0), 0.0), min(float(n1), float(self.samples))
        if n1 <= n0 or not self.bins:
            z = np.zeros(0, np.float64)
            return z, z.astype(np.float32), z.astype(np.float32)
        per_col = (n1 - n0) / width
        level = 0
        for i, b in enumerate(self.bins):
            if b <= per_col:
                level = i
        b = self.bins[level]
        i0, i1 = int(n0 // b), min(int(np.ceil(n1 / b)), len(self.mins[level]))
        lo, hi = self.mins[level][i0:i1], self.maxs[level][i0:i1]
        if i1 - i0 <= width:  # zoomed in: one column per bin
            return (np.arange(i0, i1) + 0.5) * b, lo, hi
        edges = np.unique(np.linspace(0, i1 - i0, width + 1).astype(np.int64))[:-1]
        x = (i0 + edges + 0.5 * np.diff(np.append(edges, i1 - i0))) * b
        return x, np.minimum.reduceat(lo, edges), np.maximum.reduceat(hi, edges)


# --------------------------------------------------------------------------------------------- attr helpers


def _to_attr(value: Any) -> tuple[Any, bool]:
    """(value for h5py, is_json). Containers and None go in as JSON text."""
    if isinstance(value, (dict, list, tuple)) or value is None:
        return json.dumps(value, default=str), True
    if isinstance(value, Path):
        return str(value), False
    return value, False


def _from_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _set_attrs(obj: h5py.HLObject, attrs: dict[str, Any]) -> None:
    json_names = set(json.loads(obj.attrs.get(_JSON_ATTRS, "[]")))
    for name, value in attrs.items():
        v, is_json = _to_attr(value)
        obj.attrs[name] = v
        (json_names.add if is_json else json_names.discard)(name)
    obj.attrs[_JSON_ATTRS] = json.dumps(sorted(json_names))


def _get_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    json_names = set(json.loads(_from_attr(obj.attrs.get(_JSON_ATTRS, "[]"))))
    out: dict[str, Any] = {}
    for name, value in obj.attrs.items():
        if name == _JSON_ATTRS:
            continue
        v = _from_attr(value)
        out[name] = json.loads(v) if name in json_names else v
    return out


def _write_bytes(parent: h5py.Group, name: str, payload: bytes) -> None:
    """Rewrite a small blob in place: a resizable uint8 dataset reuses its chunks, no heap garbage."""
    data = np.frombuffer(payload, dtype=np.uint8)
    if name not in parent:
        parent.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(_BYTES_DS_CHUNK,))
    ds = parent[name]
    ds.resize((data.size,))
    if data.size:
        ds[:] = data


def _read_bytes(parent: h5py.Group, name: str) -> bytes:
    if name not in parent:
        return b""
    return parent[name][()].tobytes()


def _chunk_rows(row_bytes: int, total: int) -> int:
    return int(max(1, min(total, _CHUNK_BYTES // max(1, row_bytes))))


def _is_text(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "UOS"


# --------------------------------------------------------------------------------------------- Session


class NoSpaceError(OSError):
    """Refused before writing: the disk is nearly full (the working copy is still sound)."""


class _WriteGuard:
    """The session's re-entrant mutex; an OSError/RuntimeError while a working copy is open (disk full,
    I/O error) marks the copy broken. HDF5 is not safe to write to after a failed write (a later write
    can crash the process), so a broken copy is only ever discarded, never written or committed."""

    def __init__(self, session: Session) -> None:
        self._lock = threading.RLock()
        self._session = session

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            s = self._session
            if (exc is not None and isinstance(exc, (OSError, RuntimeError)) and s._dirty
                    and s._broken is None and not isinstance(exc, NoSpaceError)):
                s._broken = exc
        finally:
            self._lock.release()


class Session:
    """One `.vxs` file. Use `Session.create` / `Session.open`; a context manager.

    A writable Session is the only writer of its file (a lock file enforces it); its methods are
    thread-safe, so the GUI can save annotations while a worker thread streams an analysis into it.
    `close()` commits pending writes; leaving the `with` block by an exception discards them, so the
    file keeps its last committed version.
    """

    def __init__(self, path: Path, writable: bool, lock: WriterLock | None) -> None:
        self.path = path
        self.writable = writable
        self._lock = lock
        self._broken: BaseException | None = None  # the write error that made the working copy unusable
        self._mutex = _WriteGuard(self)
        self._h5: h5py.File | None = None
        self._dirty = False
        self._repack = False
        self._closed = False
        self._committed_id: tuple[int, int] | None = None
        self.last_commit_s = 0.0  # seconds the last commit took
        self.last_copy_s = 0.0  # seconds the last working copy took (the other half of a commit's cost)
        self._last_commit_time = time.monotonic()
        self.video: dict[str, Any] = {}
        self.frame_count = 0
        self._timestamps: np.ndarray | None = None

    # ----------------------------------------------------------------------------------- paths / life cycle

    @property
    def work_path(self) -> Path:
        return _work_path(self.path)

    @classmethod
    def create(cls, path: str | os.PathLike[str], video: dict | Any, timestamps: np.ndarray,
               overwrite: bool = False) -> Session:
        """Start a new session for a video and commit it once (the file exists afterwards).

        `video` holds the /video attributes (a dict, or a dataclass such as engine.video.VideoInfo);
        `timestamps` (float64 seconds) has one entry per frame. An existing file is replaced only
        with `overwrite=True`, and only when the new one is committed.
        """
        path = Path(path)
        if dataclasses.is_dataclass(video) and not isinstance(video, type):
            video = dataclasses.asdict(video)
        video = dict(video)
        ts = np.asarray(timestamps, dtype=np.float64)
        missing = [k for k in ("path", "fps", "frame_count", "width", "height") if k not in video]
        if missing:
            raise ValueError(f"video info for {path} lacks {missing}")
        T = int(video["frame_count"])
        if ts.shape != (T,):
            raise ValueError(f"{path}: {ts.shape[0] if ts.ndim else 0} timestamps for {T} frames; "
                             "give one presentation time per frame")
        if T > 1 and not np.all(np.diff(ts) > 0):
            raise ValueError(f"{path}: frame timestamps must increase strictly")
        if path.exists() and not overwrite:
            raise SessionError(f"{path} already exists: open it, or pass overwrite=True to start again")
        lock = _acquire(path)
        s = cls(path, True, lock)
        try:
            _remove_stale(path)
            s._ensure_space(0)
            defaults = {"sha256": "", "duration": float(T / video["fps"]) if video["fps"] else 0.0,
                        "rotation": 0, "codec": ""}
            info = {k: video.get(k, defaults.get(k)) for k in _VIDEO_KEYS}
            info["path"] = str(info["path"])
            for k in ("frame_count", "width", "height", "rotation"):
                info[k] = int(info[k])
            for k in ("fps", "duration"):
                info[k] = float(info[k])
            f = h5py.File(s.work_path, "w", fs_strategy="fsm", fs_persist=True)
            s._h5 = f
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["application"] = APPLICATION
            f.attrs["created"] = _now()
            f.attrs["modified"] = f.attrs["created"]
            f.attrs["session_id"] = uuid.uuid4().hex  # ties the annotation sidecar to this very session
            g = f.create_group("video")
            _set_attrs(g, info)
            g.create_dataset("timestamps", data=ts)
            faces = f.create_group("faces")
            faces.attrs["frames_done"] = 0
            for name, shape, dtype, fill in (
                ("found", (), np.bool_, False),
                ("box", (4,), np.float32, np.nan),
                ("landmarks", (N_LANDMARKS, 2), np.float32, np.nan),
                ("confidence", (), np.float32, 0.0),
                ("n_faces", (), np.uint8, 0),
                ("detected", (), np.bool_, False),
            ):
                _create_frames(faces, name, T, shape, np.dtype(dtype), fillvalue=fill)
            f.create_group("annotations")
            _write_bytes(f["annotations"], "json", json.dumps(Annotations().to_json()).encode())
            f.create_group("review")
            _write_bytes(f["review"], "state", b"{}")
            s.video = info
            s.frame_count = T
            s._timestamps = ts
            s._dirty = True
            s.commit()
            with contextlib.suppress(FileNotFoundError):
                _sidecar_path(path).unlink()  # the replaced session's annotations (another session id)
        except BaseException:
            s.discard()
            s.close()
            raise
        log.info("created session %s (%d frames)", path, T)
        return s

    @classmethod
    def open(cls, path: str | os.PathLike[str], writable: bool = False) -> Session:
        """Open a committed session; refuses newer, foreign or damaged files with SessionError.

        Read-only opens never block and always see the last committed version, even while
        another process writes the session.
        """
        path = Path(path)
        if path.name.endswith(WORK_SUFFIX) or ".tmp-" in path.name:
            raise SessionError(f"{path} is a working copy left by an interrupted write, not a session: "
                               f"open {path.name.split(SUFFIX)[0]}{SUFFIX} instead")
        if not path.exists():
            hint = (f" (a working copy {_work_path(path).name} from an interrupted write exists; "
                    "re-run `vidxai analyze`)") if _work_path(path).exists() else ""
            raise SessionError(f"{path} not found{hint}")
        lock = None
        if writable:
            lock = _acquire(path)
            _remove_stale(path)
        else:
            _clean_if_unused(path)
        s = cls(path, writable, lock)
        try:
            s._open_committed()
        except BaseException:
            s.close()
            raise
        return s

    def _open_committed(self) -> None:
        self._h5 = _open_checked(self.path)
        st = os.stat(self.path)
        self._committed_id = (st.st_ino, st.st_mtime_ns)
        self.video = _get_attrs(self._h5["video"])
        self.frame_count = int(self.video["frame_count"])
        self._timestamps = None
        self._sidecar()  # a damaged annotation sidecar is refused at open, like a damaged file

    # ----------------------------------------------------------------------------------- annotation sidecar

    @property
    def sidecar_path(self) -> Path:
        """`<name>.vxs.annotations.json`: annotations and review state saved since the last commit."""
        return _sidecar_path(self.path)

    def _session_id(self, f: h5py.File) -> str:
        return str(_from_attr(f.attrs.get("session_id", f.attrs.get("created", ""))))

    def _sidecar(self) -> dict | None:
        """The sidecar's content if it belongs to this session (same session id), else None."""
        try:
            raw = self.sidecar_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise SessionError(f"{self.sidecar_path} cannot be read ({e}): check its permissions") from e
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or not isinstance(d.get("annotations"), dict):
                raise TypeError("no annotations object")
            Annotations.from_json(d["annotations"])
        except (ValueError, TypeError) as e:
            raise SessionError(f"{self.sidecar_path} is damaged ({e}): move it away to open the session with "
                               "the annotations of its last commit") from e
        f = self._h5
        if f is None or d.get("session_id") != self._session_id(f):
            return None  # left by an earlier session of the same name: not ours
        return d

    def _write_sidecar(self, ann: Annotations, state: dict) -> None:
        """Commit annotations + review state on their own: temp file, fsync, os.replace, fsync dir."""
        assert self._h5 is not None
        d = {"format_version": FORMAT_VERSION, "session_id": self._session_id(self._h5), "saved": _now(),
             "annotations": ann.to_json(), "review": state}
        with atomic_write(self.sidecar_path, "w", encoding="utf-8") as fh:
            json.dump(d, fh)

    def embed_annotations(self) -> None:
        """Fold the sidecar into the session file itself and commit (e.g. before copying the .vxs alone).
        Every commit does this when it has other changes; this forces one."""
        with self._mutex:
            self._w()
            self.commit()

    def refresh(self) -> bool:
        """Read-only: switch to the newest committed version if a writer committed since. True if so."""
        with self._mutex:
            if self.writable:
                return False
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                return False
            if (st.st_ino, st.st_mtime_ns) == self._committed_id:
                return False
            old = self._h5
            try:
                self._open_committed()
            except SessionError:
                self._h5 = old  # keep showing the version we have
                raise
            if old is not None:
                old.close()
            return True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None and self.writable:
            self.discard()
        self.close()

    def close(self) -> None:
        """Commit pending writes (writable sessions) and release the file."""
        with self._mutex:
            if self._closed:
                return
            try:
                if self.writable and self._dirty:
                    try:
                        self.commit()
                    except BaseException:
                        self.discard()  # leave the last committed version, not a working copy beside it
                        raise
            finally:
                if self._h5 is not None:
                    with contextlib.suppress(Exception):
                        self._h5.close()
                    self._h5 = None
                if self._lock is not None:
                    self._lock.release()
                self._closed = True

    def discard(self) -> None:
        """Drop everything written since the last commit."""
        with self._mutex:
            if not self.writable:
                return
            if self._h5 is not None:
                with contextlib.suppress(Exception):
                    self._h5.close()
                self._h5 = None
            with contextlib.suppress(OSError):
                self.work_path.unlink()
            self._dirty = False
            self._repack = False
            self._broken = None
            if self.path.exists():
                self._open_committed()

    # ----------------------------------------------------------------------------------- commit

    def commit(self) -> None:
        """Make everything written so far durable, atomically (fsync + os.replace of the working copy).

        Costs one fsync of the file and, at the next write, one copy of it (a reflink where the file
        system allows): commit every few seconds or every few hundred frames, not every frame
        (see `maybe_commit`).
        """
        with self._mutex:
            self._need_writable()
            if not self._dirty:
                return
            if self._broken is not None:
                err = os_error(self._broken, self.path)
                self.discard()
                raise err
            t0 = time.perf_counter()
            f = self._h5
            assert f is not None
            side = self._sidecar()
            if side is not None:  # fold the autosaved annotations into the file; the sidecar goes after
                _write_bytes(f["annotations"], "json", json.dumps(side["annotations"]).encode())
                _write_bytes(f["review"], "state", json.dumps(side.get("review") or {}).encode())
            f.attrs["modified"] = _now()
            src = self.work_path
            if self._repack:
                try:
                    self._ensure_space(self.work_path.stat().st_size)
                    src = self._write_repacked()
                except BaseException:
                    with contextlib.suppress(OSError):
                        self.path.with_name(self.path.name + ".repack" + WORK_SUFFIX).unlink()
                    raise
            try:
                f.close()
                self._h5 = None
                fsync_file(src)
                os.replace(src, self.path)
                fsync_dir(self.path.parent)
            except BaseException as exc:
                # Disk full, I/O error...: the working copy cannot become the session. Drop it (it would
                # only hold the disk space the user needs back) and stay on the last committed version.
                self._h5 = None
                for p in {src, self.work_path}:
                    with contextlib.suppress(OSError):
                        p.unlink()
                self._dirty = False
                self._repack = False
                with contextlib.suppress(Exception):
                    self._open_committed()
                err = os_error(exc, self.path)
                if err is exc:
                    raise
                raise err from exc
            if src != self.work_path:
                with contextlib.suppress(FileNotFoundError):
                    self.work_path.unlink()
            if side is not None:
                # The committed file now holds what the sidecar held; a crash before this unlink leaves
                # a sidecar with the same content, which is harmless.
                with contextlib.suppress(FileNotFoundError):
                    self.sidecar_path.unlink()
                fsync_dir(self.path.parent)
            self._dirty = False
            self._repack = False
            self._open_committed()
            self.last_commit_s = time.perf_counter() - t0
            self._last_commit_time = time.monotonic()
            log.debug("committed %s in %.3f s", self.path, self.last_commit_s)

    def maybe_commit(self, min_interval_s: float = 2.0, max_overhead: float = 0.1) -> bool:
        """Commit if enough time passed: at least `min_interval_s`, and long enough that commits take at
        most `max_overhead` of the time (the interval grows with the file). True if it committed."""
        with self._mutex:
            cost = self.last_commit_s + self.last_copy_s
            interval = max(min_interval_s, cost / max(max_overhead, 1e-6))
            if self._dirty and time.monotonic() - self._last_commit_time >= interval:
                self.commit()
                return True
            return False

    def _write_repacked(self) -> Path:
        """Copy every object into a fresh file: HDF5 never returns the space of deleted datasets."""
        assert self._h5 is not None
        out = self.path.with_name(self.path.name + ".repack" + WORK_SUFFIX)
        with h5py.File(out, "w", fs_strategy="fsm", fs_persist=True) as dst:
            for k, v in self._h5.attrs.items():
                dst.attrs[k] = v
            for name in self._h5:
                self._h5.copy(self._h5[name], dst, name=name)
        return out

    def _need_writable(self) -> None:
        if self._closed:
            raise SessionError(f"{self.path} is closed")
        if not self.writable:
            raise SessionError(f"{self.path} was opened read-only: open it with writable=True to change it")

    def _w(self) -> h5py.File:
        """The working copy, made from the committed file at the first write after a commit."""
        self._need_writable()
        if self._broken is not None:
            raise SessionError(f"{self.path}: an earlier write failed ({self._broken}); the changes since the "
                               "last commit are being dropped: free space / fix the disk and run again")
        # Every write goes through here: stop while the disk still has room (copying the file needs its size).
        self._ensure_space(0 if self._dirty else self.path.stat().st_size)
        if not self._dirty:
            assert self._h5 is not None
            self._h5.close()
            self._h5 = None
            t0 = time.perf_counter()
            try:
                copy_file(self.path, self.work_path)
                self._h5 = h5py.File(self.work_path, "r+")
            except BaseException:
                with contextlib.suppress(OSError):  # a partial copy (disk full) is of no use to anyone
                    self.work_path.unlink()
                with contextlib.suppress(Exception):
                    self._open_committed()
                raise
            self.last_copy_s = time.perf_counter() - t0
            self._dirty = True
        assert self._h5 is not None
        return self._h5

    def _ensure_space(self, need: int) -> None:
        free = free_bytes(self.path.parent)
        if free is not None and free < need + MIN_FREE_BYTES:
            raise NoSpaceError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free // 1024} KiB free, VidXAI keeps "
                          f"{MIN_FREE_BYTES // 2**20} MiB in hand)", str(self.path))

    def _r(self) -> h5py.File:
        if self._closed or self._h5 is None:
            raise SessionError(f"{self.path} is closed")
        return self._h5

    # ----------------------------------------------------------------------------------- video

    @property
    def timestamps(self) -> np.ndarray:
        with self._mutex:
            if self._timestamps is None:
                self._timestamps = self._r()["video/timestamps"][()]
            return self._timestamps

    @property
    def fps(self) -> float:
        return float(self.video["fps"])

    # ----------------------------------------------------------------------------------- faces

    def write_faces(self, start: int, found: np.ndarray, box: np.ndarray, landmarks: np.ndarray,
                    confidence: np.ndarray, n_faces: np.ndarray, detected: np.ndarray | None = None) -> None:
        """Store the face results of frames [start, start+n); chunks must come in order (no gaps)."""
        with self._mutex:
            f = self._w()
            g = f["faces"]
            arrays = {"found": np.asarray(found, np.bool_), "box": np.asarray(box, np.float32),
                      "landmarks": np.asarray(landmarks, np.float32),
                      "confidence": np.asarray(confidence, np.float32),
                      "n_faces": np.asarray(n_faces, np.uint8)}
            if detected is not None and "detected" in g:
                arrays["detected"] = np.asarray(detected, np.bool_)
            n = len(arrays["found"])
            done = int(g.attrs["frames_done"])
            self._check_range(start, n, done, "faces")
            for name, arr in arrays.items():
                ds = g[name]
                if arr.shape != (n,) + ds.shape[1:]:
                    raise ValueError(f"faces/{name}: shape {arr.shape}, expected {(n,) + ds.shape[1:]}")
                ds[start:start + n] = arr
            g.attrs["frames_done"] = max(done, start + n)

    def faces(self, frames: slice | None = None) -> FaceTrack:
        with self._mutex:
            g = self._r()["faces"]
            sl = frames if frames is not None else slice(None)
            return FaceTrack(found=g["found"][sl], box=g["box"][sl], landmarks=g["landmarks"][sl],
                             confidence=g["confidence"][sl], n_faces=g["n_faces"][sl],
                             detected=g["detected"][sl] if "detected" in g else None,
                             frames_done=int(g.attrs["frames_done"]),
                             start=sl.indices(self.frame_count)[0])

    def _check_range(self, start: int, n: int, done: int, what: str) -> None:
        if start < 0 or start + n > self.frame_count:
            raise ValueError(f"{self.path}: {what} frames {start}..{start + n} outside 0..{self.frame_count}")
        if start > done:
            raise ValueError(f"{self.path}: {what} chunk starts at frame {start} but only {done} frames "
                             "are done; write chunks in order")

    # ----------------------------------------------------------------------------------- analysis

    def begin_analysis(self, model: dict, classes: list[str], explain: list[str], alpha: float,
                       resume: bool = True) -> int:
        """Start (or resume) the analysis of one model; returns the frame to continue from.

        With `resume`, an existing analysis of the same checkpoint (sha256), classes, preprocessing and
        explanation methods is kept with its frames_done; anything else replaces it.
        """
        with self._mutex:
            f = self._w()
            model = dict(model)
            sha = str(model.get("sha256", ""))
            prep = model.get("preprocess", {})
            if "analysis" in f:
                old = _get_attrs(f["analysis"])
                same = (old.get("model_sha256") == sha and old.get("classes") == list(classes)
                        and old.get("preprocess") == prep and old.get("explain") == list(explain))
                if resume and same:
                    _set_attrs(f["analysis"], {"alpha": float(alpha)})
                    done = int(old.get("frames_done", 0))
                    log.info("%s: resuming analysis at frame %d", self.path, done)
                    return done
                del f["analysis"]
                self._repack = True
            g = f.create_group("analysis")
            _set_attrs(g, {
                "model_name": str(model.get("name", "")), "model_sha256": sha, "model": model,
                "classes": list(classes), "label_setting": str(model.get("label_setting", "")),
                "preprocess": prep, "alpha": float(alpha), "explain": list(explain), "frames_done": 0,
                "complete": False, "decision": "", "started": _now(),
            })
            T, C = self.frame_count, len(classes)
            _create_frames(g, "valid", T, (), np.dtype(np.bool_), fillvalue=False)
            for name in ("logits", "probs", "ewma"):
                _create_frames(g, name, T, (C,), np.dtype(np.float32), fillvalue=np.nan)
            g.create_group("explanations")
            return 0

    def _analysis(self, f: h5py.File) -> h5py.Group:
        if "analysis" not in f:
            raise SessionError(f"{self.path} has no analysis yet: run `vidxai analyze` (begin_analysis first)")
        return f["analysis"]

    def write_scores(self, start: int, valid: np.ndarray, logits: np.ndarray, probs: np.ndarray) -> None:
        """Scores of frames [start, start+n); advances frames_done. Write the chunk's other per-frame
        arrays (maps, similarities, ...) before or after, but before the next commit."""
        with self._mutex:
            g = self._analysis(self._w())
            valid = np.asarray(valid, np.bool_)
            n = len(valid)
            done = int(g.attrs["frames_done"])
            self._check_range(start, n, done, "analysis")
            C = g["probs"].shape[1]
            for name, arr in (("logits", logits), ("probs", probs)):
                arr = np.asarray(arr, np.float32)
                if arr.shape != (n, C):
                    raise ValueError(f"{name}: shape {arr.shape}, expected {(n, C)}")
                g[name][start:start + n] = arr
            g["valid"][start:start + n] = valid
            g.attrs["frames_done"] = max(done, start + n)

    def write_frames(self, path_in_analysis: str, start: int, array: np.ndarray, **dataset_opts: Any) -> None:
        """Store rows [start, start+n) of any per-frame array under /analysis (e.g. "explanations/lrp/maps",
        "prototypes/similarities"). The dataset (T, ...) is created on the first write, chunked along
        time; rows of 1 KiB or more are gzip-compressed. `dataset_opts` go to h5py's create_dataset
        (dtype, fillvalue, compression, ...). Text arrays become UTF-8 strings."""
        with self._mutex:
            g = self._analysis(self._w())
            arr = np.asarray(array)
            n = arr.shape[0]
            if start < 0 or start + n > self.frame_count:
                raise ValueError(f"{path_in_analysis}: frames {start}..{start + n} outside 0..{self.frame_count}")
            if path_in_analysis not in g:
                dtype = dataset_opts.pop("dtype", None)
                dtype = h5py.string_dtype() if _is_text(arr) and dtype is None else np.dtype(dtype or arr.dtype)
                _create_frames(g, path_in_analysis, self.frame_count, arr.shape[1:], dtype, **dataset_opts)
            ds = g[path_in_analysis]
            if arr.shape[1:] != ds.shape[1:]:
                raise ValueError(f"{path_in_analysis}: rows of shape {arr.shape[1:]}, dataset has {ds.shape[1:]}")
            if _is_text(arr):
                arr = arr.astype(object)
            ds[start:start + n] = arr

    def read(self, path_in_analysis: str, frames: slice | None = None) -> np.ndarray:
        """Read a dataset under /analysis (or anywhere, with a leading "/"); text comes back as str."""
        with self._mutex:
            f = self._r()
            full = path_in_analysis if path_in_analysis.startswith("/") else f"/analysis/{path_in_analysis}"
            if full not in f:
                raise KeyError(f"{self.path} has no dataset {full}")
            ds = f[full]
            sl = frames if frames is not None else slice(None)
            if ds.dtype.kind == "O":
                return ds.asstr()[sl] if ds.ndim else np.asarray(ds.asstr()[()])
            return ds[sl] if ds.ndim else ds[()]

    def exists(self, path_in_analysis: str) -> bool:
        with self._mutex:
            full = path_in_analysis if path_in_analysis.startswith("/") else f"/analysis/{path_in_analysis}"
            return full in self._r()

    def set_attrs(self, path_in_analysis: str, **attrs: Any) -> None:
        """Set attributes on a group/dataset under /analysis ("" = /analysis itself); groups are created.
        Lists, dicts and None are stored as JSON text and come back decoded from `attrs`."""
        with self._mutex:
            f = self._w()
            full = "/" + path_in_analysis.lstrip("/") if path_in_analysis.startswith("/") else \
                "/analysis/" + path_in_analysis
            full = full.rstrip("/")
            if full not in f:
                f.require_group(full)
            _set_attrs(f[full], attrs)

    def attrs(self, path: str = "") -> dict[str, Any]:
        with self._mutex:
            f = self._r()
            full = path if path.startswith("/") else ("/analysis/" + path).rstrip("/")
            if full not in f:
                raise KeyError(f"{self.path} has no object {full}")
            return _get_attrs(f[full])

    def write_explanation(self, method: str, start: int, maps: np.ndarray) -> None:
        """Relevance maps of frames [start, start+n) in MODEL-INPUT space (float16 n×h×w, gzip)."""
        self.write_frames(f"explanations/{method}/maps", start, np.asarray(maps, np.float16))

    # Typed readers/writers of the explanations: the only place their dataset paths are spelled out.
    def has_maps(self, method: str) -> bool:
        return bool(method) and self.exists(f"explanations/{method}/maps")

    def explanation_maps(self, method: str, frames: slice | None = None) -> np.ndarray | None:
        """Relevance maps of one method (float16 n×h×w, model-input space); None if not computed."""
        name = f"explanations/{method}/maps"
        with self._mutex:
            return self.read(name, frames) if method and self.exists(name) else None

    def write_intrinsic(self, name: str, start: int, rows: np.ndarray) -> None:
        """A per-frame array of the intrinsic explanation ("similarities", "sim_maps", "top_latents", ...)."""
        self.write_frames(f"explanations/intrinsic/{name}", start, rows)

    def intrinsic(self, name: str, frames: slice | None = None) -> np.ndarray | None:
        """ProtoPNet s_j ("similarities", T×K) and their maps ("sim_maps", T×K×h×w), PatchSAE's strongest
        latents ("top_latents") and activations ("top_values"); None if this model has none."""
        path = f"explanations/intrinsic/{name}"
        with self._mutex:
            return self.read(path, frames) if self.exists(path) else None

    def set_head(self, weight: np.ndarray, bias: np.ndarray | None, arch: str) -> None:
        """The C×K read-out W (and bias) of the intrinsic terms, as the analysis used them."""
        self.set_attrs("explanations/intrinsic", head_weight=np.asarray(weight).tolist(),
                       head_bias=None if bias is None else np.asarray(bias).tolist(), arch=arch)

    def head(self) -> dict[str, Any]:
        """The intrinsic explanation's read-out as the analysis recorded it: "head_weight" (C×K list),
        "head_bias", "arch"; {} without an intrinsic explanation."""
        with self._mutex:
            return self.attrs("explanations/intrinsic") if self.exists("explanations/intrinsic") else {}

    def head_weight(self) -> np.ndarray | None:
        """W of the logits W·s (C×K float64), None without an intrinsic explanation."""
        w = self.head().get("head_weight")
        return None if w is None else np.asarray(w, dtype=np.float64)

    def write_au_cos(self, method: str, start: int, rows: np.ndarray) -> None:
        self.write_frames(f"explanations/{method}/au_cos", start, rows)

    def au_cos(self, method: str, frames: slice | None = None) -> np.ndarray | None:
        """Cosine of each frame's map with the predicted class's action-unit map; None if not computed."""
        path = f"explanations/{method}/au_cos"
        with self._mutex:
            return self.read(path, frames) if self.exists(path) else None

    # Landmark-sequence models (engine.landmark_analysis): IG over the window that scored each frame.
    def write_landmark_ig(self, start: int, rows: np.ndarray) -> None:
        """IG attributions of frames [start, start+n): float16 n×P×L×2 over the window of the P frames
        ending at each frame (landmark order: ``landmark_ig_info()["points"]``); NaN where unscored."""
        self.write_frames("explanations/landmark_ig/attributions", start, np.asarray(rows, np.float16))

    def landmark_ig(self, frames: slice | None = None) -> np.ndarray | None:
        """The stored landmark IG attributions (float16 T×P×L×2), None if the analysis has none."""
        path = "explanations/landmark_ig/attributions"
        with self._mutex:
            return self.read(path, frames) if self.exists(path) else None

    def set_landmark_ig_info(self, **info: Any) -> None:
        """How the attributions were made: points, window, baseline, steps, max |delta|, ranking…"""
        self.set_attrs("explanations/landmark_ig", **info)

    def landmark_ig_info(self) -> dict[str, Any]:
        with self._mutex:
            return self.attrs("explanations/landmark_ig") if self.exists("explanations/landmark_ig") else {}

    # The sound track's envelope (engine.audio.envelope): a cache, so an hour-long file's waveform draws at once.
    def write_waveform(self, wave: Waveform) -> None:
        """Store the waveform under /audio (replacing one stored before)."""
        with self._mutex:
            f = self._w()
            if "audio" in f:
                del f["audio"]
                self._repack = True
            g = f.create_group("audio")
            _set_attrs(g, {"bins": [int(b) for b in wave.bins], "sample_rate": int(wave.sample_rate),
                           "offset": float(wave.offset), "samples": int(wave.samples)})
            for i, (lo, hi) in enumerate(zip(wave.mins, wave.maxs, strict=True)):
                g.create_dataset(f"min_{i}", data=np.asarray(lo, np.float32), compression="gzip", shuffle=True)
                g.create_dataset(f"max_{i}", data=np.asarray(hi, np.float32), compression="gzip", shuffle=True)

    def waveform(self) -> Waveform | None:
        """The stored waveform, or None when the session has none (older sessions, videos without sound)."""
        with self._mutex:
            f = self._r()
            if "audio" not in f:
                return None
            g = f["audio"]
            a = _get_attrs(g)
            bins = [int(b) for b in a["bins"]]
            return Waveform(bins, [g[f"min_{i}"][()] for i in range(len(bins))],
                            [g[f"max_{i}"][()] for i in range(len(bins))], int(a["sample_rate"]),
                            float(a["offset"]), int(a["samples"]))

    # Clip models (engine.clip_analysis): sliding windows of T face frames, every `stride` of them.
    def write_temporal_relevance(self, method: str, start: int, rows: np.ndarray) -> None:
        """Each frame's temporal relevance for one method, frames [start, start+n): float32, the mean over
        the windows containing the frame of its share of the window's relevance; NaN where unscored."""
        self.write_frames(f"explanations/{method}/temporal", start, np.asarray(rows, np.float32), fillvalue=np.nan)

    def temporal_relevance(self, method: str, frames: slice | None = None) -> np.ndarray | None:
        """A clip model's per-frame temporal relevance of one method (float32 T,); None if not computed."""
        path = f"explanations/{method}/temporal"
        with self._mutex:
            return self.read(path, frames) if method and self.exists(path) else None

    def temporal_methods(self) -> list[str]:
        """The methods that have temporal relevance (clip models only), in the order asked for."""
        info = self.analysis_info() or {}
        return [m for m in info.get("explain", []) if self.exists(f"explanations/{m}/temporal")]

    def write_window_spans(self, start: int, spans: np.ndarray) -> None:
        """Frames [start, start+n): (first, last) frame index of the windows that produced each frame's
        score (the first frame of its first window, the last of its last; inclusive); -1 where unscored."""
        self.write_frames("clip/window_span", start, np.asarray(spans, np.int32), fillvalue=-1)

    def window_spans(self, frames: slice | None = None) -> np.ndarray | None:
        """int32 (n, 2) from write_window_spans; None for a frame model's analysis."""
        with self._mutex:
            return self.read("clip/window_span", frames) if self.exists("clip/window_span") else None

    def set_clip_windows(self, **info: Any) -> None:
        """The window geometry of a clip model's analysis: frames (T), stride, fusion, rule, methods."""
        self.set_attrs("clip", **info)

    def clip_windows(self) -> dict[str, Any]:
        """The geometry set_clip_windows stored ({} for a frame model's analysis)."""
        with self._mutex:
            return self.attrs("clip") if self.exists("clip") else {}

    def write_mappings(self, start: int, mappings: Sequence[dict | None]) -> None:
        """The per-frame input→frame mapping (engine.preprocess.InputMapping.to_json()), shared by every
        map of that frame since all are in the same model-input space; None where no input was made."""
        text = np.array(["" if m is None else json.dumps(m) for m in mappings], dtype=object)
        self.write_frames("input_mapping", start, text)

    def mappings(self, frames: slice | None = None) -> list[dict | None]:
        if not self.exists("input_mapping"):
            return []
        return [json.loads(t) if t else None for t in self.read("input_mapping", frames)]

    def write_occlusion(self, start: int, scores: np.ndarray, conditions: Sequence[str]) -> None:
        """Class scores under each occlusion condition for frames [start, start+n): float32 n×K×C."""
        with self._mutex:
            scores = np.asarray(scores, np.float32)
            if scores.shape[1] != len(conditions):
                raise ValueError(f"occlusion scores have {scores.shape[1]} conditions, names {len(conditions)}")
            self.write_frames("occlusion/scores", start, scores, fillvalue=np.nan)
            self.set_attrs("occlusion", conditions=list(conditions))

    def occlusion(self, frames: slice | None = None) -> tuple[list[str], np.ndarray] | None:
        with self._mutex:
            if not self.exists("occlusion/scores"):
                return None
            return list(self.attrs("occlusion")["conditions"]), self.read("occlusion/scores", frames)

    def occlusion_deltas(self, frames: slice | None = None) -> tuple[list[str], np.ndarray] | None:
        """(conditions, n×C): the predicted class's score occluded minus unoccluded (sessions.tracks)."""
        with self._mutex:
            occ = self.occlusion(frames)
            if occ is None:
                return None
            return occ[0], occlusion_deltas(self.read("probs", frames), occ[1], self.read("valid", frames))

    def write_spray(self, class_name: str, result: SprayResult) -> None:
        """SpRAy clusters and temporal-prototype stages of one class (replaces earlier ones)."""
        with self._mutex:
            g = self._analysis(self._w())
            classes = _get_attrs(g)["classes"]
            if class_name not in classes:
                raise ValueError(f"{class_name!r} is not one of the model's classes {classes}")
            labels = np.asarray(result.labels, np.int16)
            if labels.shape != (self.frame_count,):
                raise ValueError(f"SpRAy labels: shape {labels.shape}, expected ({self.frame_count},)")
            sp = g.require_group("spray")
            if class_name in sp:
                del sp[class_name]
                self._repack = True
            c = sp.create_group(class_name)
            c.create_dataset("labels", data=labels, chunks=(_chunk_rows(2, len(labels)),))
            c.create_dataset("stage_start", data=np.array([s.start for s in result.stages], np.int32))
            c.create_dataset("stage_end", data=np.array([s.end for s in result.stages], np.int32))
            c.create_dataset("stage_descriptor", data=np.array([s.descriptor for s in result.stages], object),
                             dtype=h5py.string_dtype())
            maps = np.asarray(result.cluster_maps, np.float16)
            c.create_dataset("cluster_maps", data=maps, compression="gzip" if maps.size else None)
            _set_attrs(c, {"k": int(result.k), "eigengap": float(result.eigengap),
                           "description_length_reduction": float(result.description_length_reduction),
                           "temporal_prototype": str(result.temporal_prototype)})

    def spray(self) -> dict[str, SprayResult]:
        with self._mutex:
            f = self._r()
            if "analysis/spray" not in f:
                return {}
            out = {}
            for name, c in f["analysis/spray"].items():
                a = _get_attrs(c)
                stages = [Stage(int(s), int(e), str(d)) for s, e, d in
                          zip(c["stage_start"][()], c["stage_end"][()], c["stage_descriptor"].asstr()[()])]
                out[name] = SprayResult(c["labels"][()], stages, c["cluster_maps"][()], int(a["k"]),
                                        float(a["eigengap"]), float(a["description_length_reduction"]),
                                        str(a["temporal_prototype"]))
            return out

    def write_temporal_prototype(self, descriptors: Sequence[str], method: str) -> list[Stage]:
        """The video's SpRAy temporal prototype: one descriptor per frame ("HAPPY_A, SAD_B" or "NONE");
        stages are its maximal runs. Returns the stages."""
        with self._mutex:
            desc = np.array([str(d) for d in descriptors], dtype=object)
            if desc.shape != (self.frame_count,):
                raise ValueError(f"temporal prototype: {desc.shape[0]} descriptors for {self.frame_count} frames")
            self.write_frames("stages/descriptor", 0, desc)
            stages = runs_of(list(desc))
            self.set_attrs("stages", method=method, n_stages=len(stages),
                           description_length_reduction=1.0 - len(stages) / max(self.frame_count, 1))
            return stages

    def temporal_prototype(self) -> list[Stage]:
        """Stages of the video's temporal prototype ([] before SpRAy ran)."""
        with self._mutex:
            if not self.exists("stages/descriptor"):
                return []
            return runs_of(list(self.read("stages/descriptor")))

    def write_display_stages(self, descriptors: Sequence[str], **figures: Any) -> list[Stage]:
        """The strip's stages (SpRAy's merged to the minimum duration), one descriptor per frame, beside
        SpRAy's own; ``figures`` (settings, reductions, cosines) become attributes of /analysis/stages."""
        with self._mutex:
            desc = np.array([str(d) for d in descriptors], dtype=object)
            if desc.shape != (self.frame_count,):
                raise ValueError(f"display stages: {desc.shape[0]} descriptors for {self.frame_count} frames")
            self.write_frames("stages/merged", 0, desc)
            self.set_attrs("stages", **figures)
            return runs_of(list(desc))

    def display_stages(self) -> list[Stage]:
        """The stages to show in a strip: SpRAy's stages merged to the minimum duration
        (/analysis/stages/merged) when the session has them, else SpRAy's own ([] before SpRAy ran)."""
        with self._mutex:
            if self.exists("stages/merged"):
                return runs_of(list(self.read("stages/merged")))
            return self.temporal_prototype()

    def finish_analysis(self, ewma: np.ndarray, alpha: float, decision: str) -> None:
        """Store the smoothed scores and the decision, mark the analysis complete, and commit."""
        with self._mutex:
            g = self._analysis(self._w())
            ewma = np.asarray(ewma, np.float32)
            self._ensure_space(2 * ewma.nbytes)
            if ewma.shape != g["ewma"].shape:
                raise ValueError(f"ewma: shape {ewma.shape}, expected {g['ewma'].shape}")
            g["ewma"][...] = ewma
            _set_attrs(g, {"alpha": float(alpha), "decision": str(decision), "complete": True,
                           "finished": _now()})
            self.commit()

    def analysis_info(self) -> dict | None:
        with self._mutex:
            f = self._r()
            if "analysis" not in f:
                return None
            g = f["analysis"]
            a = _get_attrs(g)
            return {
                "model": a.get("model", {}), "model_name": a.get("model_name", ""),
                "model_sha256": a.get("model_sha256", ""), "classes": a.get("classes", []),
                "label_setting": a.get("label_setting", ""), "preprocess": a.get("preprocess", {}),
                "alpha": a.get("alpha"), "ewma_tau_s": a.get("ewma_tau_s"), "explain": a.get("explain", []),
                "decision": a.get("decision", ""), "complete": bool(a.get("complete", False)),
                "frames_done": int(a.get("frames_done", 0)),
                "explanations": sorted(g["explanations"]) if "explanations" in g else [],
                "spray": sorted(g["spray"]) if "spray" in g else [],
                "occlusion": "occlusion" in g,
            }

    # ----------------------------------------------------------------------------------- annotations / review

    def annotations(self) -> Annotations:
        with self._mutex:
            side = self._sidecar()
            if side is not None:
                return Annotations.from_json(side["annotations"])
            raw = _read_bytes(self._r()["annotations"], "json")
            return Annotations.from_json(json.loads(raw or b"{}"))

    def save_annotations(self, ann: Annotations, review_state: dict | None = None) -> None:
        """Replace all annotations (and the review state, if given) durably at once (autosave).

        Writes only the small sidecar `<name>.vxs.annotations.json` (atomically), never the session
        file, so it costs the same on a one-hour session as on a clip; the next commit folds it in."""
        with self._mutex:
            self._need_writable()
            names = {t.name for t in ann.tiers}
            orphans = sorted({s.tier for s in ann.segments} - names)
            if orphans:
                raise ValueError(f"segments refer to tiers {orphans} that are not in the tier list")
            state = self.review_state() if review_state is None else dict(review_state)
            self._write_sidecar(ann, state)

    def set_review_state(self, state: dict) -> None:
        """GUI state (alpha, method, overlays, current frame); committed with the next commit (and at once
        into the sidecar when there is one, which holds the newest annotations and state)."""
        with self._mutex:
            _write_bytes(self._w()["review"], "state", json.dumps(state).encode())
            if self._sidecar() is not None:
                self._write_sidecar(self.annotations(), dict(state))

    def review_state(self) -> dict:
        with self._mutex:
            side = self._sidecar()
            if side is not None:
                return dict(side.get("review") or {})
            return json.loads(_read_bytes(self._r()["review"], "state") or b"{}")

    # ----------------------------------------------------------------------------------- summary

    def face_found_frames(self) -> int:
        with self._mutex:
            ds = self._r()["faces/found"]
            step = 1 << 16
            return int(sum(int(np.count_nonzero(ds[i:i + step])) for i in range(0, self.frame_count, step)))

    def info(self) -> dict:
        """Summary for `vidxai info --json`."""
        with self._mutex:
            a = self.analysis_info()
            faces_done = int(self._r()["faces"].attrs["frames_done"])
            # The stages a reviewer sees in the strip (merged to the minimum duration), and SpRAy's own.
            stages = [dataclasses.asdict(s) for s in self.display_stages()]
            spray_stages = [dataclasses.asdict(s) for s in self.temporal_prototype()]
            complete = bool(a["complete"]) if a else faces_done == self.frame_count
            from sessions.people import summary as people_summary

            people, person = people_summary(self)
            return {
                "path": str(self.path), "video": dict(self.video), "format_version": FORMAT_VERSION,
                "frame_count": self.frame_count, "fps": self.fps,
                "duration": float(self.video.get("duration", 0.0)),
                "faces_done": faces_done, "face_found_frames": self.face_found_frames(),
                "model": a["model_name"] if a else None,
                "complete": complete, "analysed": bool(a and a["complete"]),
                "frames_done": a["frames_done"] if a else 0,
                "classes": a["classes"] if a else [], "decision": a["decision"] if a else "",
                "explanations": a["explanations"] if a else [], "stages": stages,
                "spray_stages": spray_stages,
                "annotations": len(self.annotations().segments),
                "people": people, "person": person,
                **({"clip_windows": self.clip_windows()} if a and self.clip_windows() else {}),
            }


# --------------------------------------------------------------------------------------------- module helpers


def runs_of(labels: Sequence[str]) -> list[Stage]:
    """Maximal runs of equal consecutive labels as stages [start, end)."""
    return [Stage(a, b, str(lab)) for a, b, lab in runs(labels)]


def os_error(exc: BaseException, path: Path) -> BaseException:
    """h5py reports a failed file write (disk full...) as a RuntimeError that only mentions the errno in
    its text; give it back as the OSError it is, so callers can tell the user what to do."""
    if isinstance(exc, RuntimeError) and (m := re.search(r"errno\s*=\s*(\d+)", str(exc))):
        code = int(m.group(1))
        return OSError(code, os.strerror(code), str(path))
    return exc


def _work_path(path: Path) -> Path:
    return path.with_name(path.name + WORK_SUFFIX)


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ANNOTATIONS_SUFFIX)


def _create_frames(g: h5py.Group, name: str, T: int, row_shape: Iterable[int], dtype: np.dtype,
                   **opts: Any) -> h5py.Dataset:
    """A (T, ...) dataset chunked along time; chunks are allocated only when written."""
    row_shape = tuple(int(x) for x in row_shape)
    itemsize = 16 if dtype.kind == "O" else dtype.itemsize
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * itemsize
    rows = _chunk_rows(row_bytes, max(T, 1))
    opts.setdefault("chunks", (rows,) + row_shape)
    if row_bytes >= _COMPRESS_ROW_BYTES and dtype.kind != "O" and "compression" not in opts:
        opts.update(compression="gzip", compression_opts=4, shuffle=True)
    if "fillvalue" not in opts and dtype.kind == "f":
        opts["fillvalue"] = np.nan
    return g.create_dataset(name, shape=(T,) + row_shape, dtype=dtype, **opts)


def _acquire(path: Path) -> WriterLock:
    lock = WriterLock(path)
    if not lock.try_acquire():
        raise SessionError(f"{path} is being written by another VidXAI process: wait for it to finish "
                           "(or open it read-only)")
    return lock


def _stale_files(path: Path) -> list[Path]:
    return [p for p in path.parent.glob(path.name + ".*")
            if p.name.endswith(WORK_SUFFIX) or ".tmp-" in p.name]


def _remove_stale(path: Path) -> None:
    """Delete working copies of a crashed writer; only call while holding the writer lock."""
    for p in _stale_files(path):
        log.warning("removing %s, left by an interrupted write of %s", p, path)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _clean_if_unused(path: Path) -> None:
    if not _stale_files(path):
        return
    lock = WriterLock(path)
    try:
        if lock.try_acquire():
            _remove_stale(path)
    except OSError:
        pass  # read-only folder: leave them, they are never mistaken for the session
    finally:
        lock.release()


def _open_checked(path: Path) -> h5py.File:
    """Open the committed file read-only and check it is a complete VidXAI session of a known version."""
    size = path.stat().st_size
    if size == 0:
        raise SessionError(f"{path} is empty (damaged): re-run `vidxai analyze` to rebuild it")
    if not h5py.is_hdf5(path):
        raise SessionError(f"{path} is not a VidXAI session (not an HDF5 file): choose a .vxs file")
    try:
        # Committed files are never written in place, so HDF5's file lock is not needed; skipping it lets
        # readers open a file a writer process also holds.
        f = h5py.File(path, "r", locking=False)
    except OSError as e:
        raise SessionError(f"{path} is damaged (truncated or corrupt HDF5: {e}): "
                           "re-run `vidxai analyze` to rebuild it") from e
    try:
        _validate(f, path)
    except BaseException:
        f.close()
        raise
    return f


def _validate(f: h5py.File, path: Path) -> None:
    app = _from_attr(f.attrs.get("application", ""))
    if app != APPLICATION or "format_version" not in f.attrs:
        raise SessionError(f"{path} is an HDF5 file but not a VidXAI session: choose a .vxs file made by VidXAI")
    version = int(f.attrs["format_version"])
    if version > FORMAT_VERSION:
        raise SessionError(f"{path} was made by a newer VidXAI (format {version} > {FORMAT_VERSION}): "
                           "update VidXAI to open it")
    if version < 1:
        raise SessionError(f"{path} has an invalid format version {version}: re-run `vidxai analyze`")

    def damaged(what: str) -> SessionError:
        return SessionError(f"{path} is damaged ({what}): re-run `vidxai analyze` to rebuild it")

    try:
        for grp in ("video", "faces", "annotations", "review"):
            if grp not in f:
                raise damaged(f"/{grp} missing")
        T = int(_from_attr(f["video"].attrs["frame_count"]))
        if f["video/timestamps"].shape != (T,):
            raise damaged("timestamps do not match frame_count")
        _check_frames(f["faces"], T, ("found", "box", "landmarks", "confidence", "n_faces"), damaged)
        if "analysis" in f:
            g = f["analysis"]
            _check_frames(g, T, ("valid", "logits", "probs", "ewma"), damaged)
            classes = json.loads(_from_attr(g.attrs["classes"]))
            if g["probs"].shape[1:] != (len(classes),):
                raise damaged("probs do not match the classes")
            # every per-frame array must cover the video; visiting also reads each object header
            def check(name: str, obj: h5py.HLObject) -> None:
                if isinstance(obj, h5py.Dataset) and "spray" not in name and obj.shape[:1] != (T,):
                    raise damaged(f"/analysis/{name} has {obj.shape[:1]} rows for {T} frames")
            g.visititems(check)
        json.loads(_read_bytes(f["annotations"], "json") or b"{}")
        json.loads(_read_bytes(f["review"], "state") or b"{}")
    except SessionError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise damaged(f"{type(e).__name__}: {e}") from e


def _check_frames(g: h5py.Group, T: int, names: Sequence[str], damaged: Any) -> None:
    done = int(_from_attr(g.attrs.get("frames_done", 0)))
    if not 0 <= done <= T:
        raise damaged(f"{g.name} frames_done {done} outside 0..{T}")
    for n in names:
        if n not in g or g[n].shape[:1] != (T,):
            raise damaged(f"{g.name}/{n} missing or not {T} frames long")
