"""The background decoder: one ``VideoReader`` on its own thread, its frame cache and read-ahead.

Decoding never runs on the GUI thread: ``FrameSource`` owns one ``VideoReader`` on its own thread and
answers random-access requests (latest wins, so scrubbing never queues up stale frames) and, while
playing, fills a bounded read-ahead buffer. When it has nothing else to do the decode thread fills the
reader's frame cache (bounded in bytes) around the last requested frame, so scrubbing back and forth is a
cache hit instead of a seek and a decode from the previous keyframe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from engine.video import DecodeCancelled, VideoError, open_video

log = logging.getLogger(__name__)

_READAHEAD_BYTES = 128 * 1024 * 1024
# Decoded frames kept around the reviewer's position; a short clip fits whole (480×360: ~500 frames).
_CACHE_BYTES = 256 * 1024 * 1024
# ... but at least the frames of the scrub window the warm-up fills (−1…+3 s, and half a second of margin), up
# to this much: at a 1280×720 view 256 MB held 97 frames, less than the window's 121 at 30 fps, so a fifth of
# the seeks near the cursor missed the cache and decoded from the keyframe.
_CACHE_MAX_BYTES = 512 * 1024 * 1024
_SCRUB_WINDOW_S = 4.5
# Overlay data (a frame-sized float32 heatmap each) kept for the frames nearest the reviewer's position.
_EXTRAS_BYTES = 128 * 1024 * 1024
_EXTRAS_WARM = 160  # the frame cache's window around the cursor (−1…+3 s at 30 fps), so cache hits have them too
# After the window shows a frame (a cache hit or a decoded seek) or the reviewer zooms the timeline or moves τ,
# the warm-up waits this long before it decodes again: the window's painting then has the CPU (and Python's
# GIL) to itself. Sharing them with the warm-up doubled the wall time of a cached seek on two cores (p95 21 ms
# of GUI CPU took 45–60 ms).
WARM_HOLD_S = 0.25


def _nbytes(value: Any) -> int:
    """Bytes of the arrays an extras value holds (a FrameExtras: the face region's heatmap)."""
    if value is None:
        return 0
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    fields = getattr(value, "__dict__", {})
    return 64 + sum(int(v.nbytes) for v in fields.values() if isinstance(v, np.ndarray))


class FrameSource(QObject):
    """One video decoded on a background thread; create one per opened video."""

    opened = Signal(object, object, object)  # VideoInfo, timestamps (float64 seconds), frame 0 (RGB)
    frameReady = Signal(int, object, object, int)  # k, RGB frame, extras, request generation
    failed = Signal(str)  # the video cannot be opened: a message for the user
    decodeFailed = Signal(int, str)  # one frame could not be decoded

    def __init__(self, path: str | Path, readahead: int = 32,
                 extras: Callable[[int], Any] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.readahead = readahead
        # Runs on the decode thread next to each frame so per-frame data read from files (heatmaps)
        # arrive together with their frame and never a frame apart. Results are kept per frame (warmed
        # with the frame cache while idle) until the provider changes or `invalidate_extras` is called.
        self.extras = extras
        self._extras_cache: OrderedDict[int, Any] = OrderedDict()
        self._extras_cap = 16
        self._extras_bytes = 0  # bounded by _EXTRAS_BYTES, the count by _extras_cap
        self._extras_gen = 0
        self.frame_count = 0
        self._cond = threading.Condition()
        self._seek: int | None = None
        self._generation = 0
        self._play_next: int | None = None
        self._buffer: deque[tuple[int, np.ndarray, Any]] = deque()
        self._warm: deque[int] = deque()  # frames to decode into the cache while idle, nearest first
        self._warm_extras: set[int] = set()  # of those, the frames whose extras are cached too
        self._stop = False
        # Frames scaled to the view's size (None: full size), applied on the decode thread.
        self._display_size: tuple[int, int] | None = None
        self._display_dirty = False
        self._last_seek = 0
        # A full-size frame asked for by the GUI thread (`full_frame`), answered before anything else.
        self._full_request: int | None = None
        self._full_result: tuple[int, np.ndarray | None] | None = None
        self._hold_until = 0.0  # time.monotonic() before which the warm-up stays idle (WARM_HOLD_S)
        self.reader: Any = None
        self._capacity = 16
        self._fps = 25.0
        self._thread = threading.Thread(target=self._run, name=f"decode:{self.path.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- requests from the GUI thread ---------------------------------------------------------
    def request(self, k: int) -> int:
        """Decode frame k for display; an older pending request is dropped. Returns its generation."""
        with self._cond:
            self._generation += 1
            self._seek = int(k)
            self._cond.notify()
            return self._generation

    def set_display_size(self, size: tuple[int, int] | None) -> None:
        """Decode frames scaled to `size` (width, height; None: full size) from now on; what is cached at
        another size is dropped and the neighbourhood of the last requested frame is cached again."""
        with self._cond:
            if size != self._display_size:
                self._display_size = size
                self._display_dirty = True
                self._cond.notify()

    def peek(self, k: int) -> tuple[np.ndarray, Any, int] | None:
        """Frame k and its extras at once, if both are cached (no round trip through the decode thread):
        (frame, extras, generation), the request counted as the latest; None otherwise (then `request`).
        The decode thread then caches the neighbourhood of k, as after a request."""
        reader = self.reader
        if reader is None:
            return None
        with self._cond:  # the decode thread changes the cache's frame size under this lock
            if self._display_dirty:
                return None
            frame = reader.cached(k)
            if frame is None:
                return None
            if self.extras is not None:
                if k not in self._extras_cache:
                    return None
                extras = self._extras_cache[k]
            else:
                extras = None
            if self._seek is not None or self._play_next is not None:
                return None  # a request on its way must not overtake this one
            self._generation += 1
            self._last_seek = int(k)
            self._plan_warm(int(k), self._capacity)
            self._hold_locked()
            self._cond.notify()
            return frame, extras, self._generation

    def hold(self) -> None:
        """The window is busy (painting after a zoom, a τ change): the warm-up gives way for WARM_HOLD_S."""
        with self._cond:
            self._hold_locked()

    def _hold_locked(self) -> None:
        self._hold_until = max(self._hold_until, time.monotonic() + WARM_HOLD_S)

    def _interrupted(self) -> bool:
        """Whether the decode thread should drop what it caches for something the window waits for."""
        return (self._stop or self._seek is not None or self._full_request is not None or self._display_dirty
                or time.monotonic() < self._hold_until)

    def full_frame(self, k: int, timeout: float = 10.0) -> np.ndarray | None:
        """Frame k at full size, decoded on the decode thread while the caller waits (None if it failed or
        took longer than `timeout`). For what needs every pixel (re-scoring a frame), not for display."""
        with self._cond:
            if not self._thread.is_alive():
                return None
            self._full_request, self._full_result = int(k), None
            self._cond.notify()
            ok = self._cond.wait_for(lambda: self._full_result is not None or not self._thread.is_alive(), timeout)
            result, self._full_result = self._full_result, None
            if not ok or result is None or result[0] != int(k):
                self._full_request = None
                return None
            return result[1]

    def set_extras(self, fn: Callable[[int], Any] | None) -> None:
        """A new per-frame data provider (another heatmap method, a new session); drops what was kept."""
        with self._cond:
            self.extras = fn
            self.invalidate_extras_locked()

    def invalidate_extras(self) -> None:
        """The provider's data changed (an analysis committed more frames): read everything again."""
        with self._cond:
            self.invalidate_extras_locked()

    def invalidate_extras_locked(self) -> None:
        self._extras_cache.clear()
        self._extras_bytes = 0
        self._extras_gen += 1
        self._cond.notify()

    def _extras_for(self, k: int) -> Any:
        """Frame k's extras, from the cache or the provider (decode thread)."""
        with self._cond:
            fn, gen = self.extras, self._extras_gen
            if fn is None:
                return None
            if k in self._extras_cache:
                self._extras_cache.move_to_end(k)
                return self._extras_cache[k]
        value = fn(k)
        with self._cond:
            if gen == self._extras_gen:  # not computed with a provider that was replaced meanwhile
                if k in self._extras_cache:
                    self._extras_bytes -= _nbytes(self._extras_cache[k])
                self._extras_cache[k] = value
                self._extras_bytes += _nbytes(value)
                self._extras_cache.move_to_end(k)
                while len(self._extras_cache) > 1 and (len(self._extras_cache) > self._extras_cap
                                                       or self._extras_bytes > _EXTRAS_BYTES):
                    self._extras_bytes -= _nbytes(self._extras_cache.popitem(last=False)[1])
        return value

    def start_readahead(self, k: int) -> None:
        """Fill the buffer from frame k on (playback); drops what was buffered."""
        with self._cond:
            self._generation += 1
            self._buffer.clear()
            self._play_next = int(k)
            self._cond.notify()

    def stop_readahead(self) -> None:
        with self._cond:
            self._play_next = None
            self._buffer.clear()

    def take_upto(self, target: int) -> tuple[int, np.ndarray, Any] | None:
        """The newest buffered frame with index ≤ target; older ones are discarded (never shown)."""
        with self._cond:
            latest = None
            while self._buffer and self._buffer[0][0] <= target:
                latest = self._buffer.popleft()
            self._cond.notify()
            return latest

    def buffered(self) -> int:
        with self._cond:
            return len(self._buffer)

    def next_readahead(self) -> int | None:
        with self._cond:
            return self._buffer[0][0] if self._buffer else self._play_next

    def close(self, timeout: float = 3.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("decode thread for %s did not stop within %.1f s", self.path, timeout)

    # --- decode thread ------------------------------------------------------------------------
    def _playback_wants(self) -> bool:
        return (self._play_next is not None and len(self._buffer) < self.readahead
                and self._play_next < self.frame_count)

    def _work_ready(self) -> bool:
        return (self._stop or self._seek is not None or self._playback_wants() or self._display_dirty
                or self._full_request is not None or self._warm_due() == 0.0)

    def _warm_due(self) -> float | None:
        """Seconds until the warm-up may cache the next frame (0: now; None: nothing to warm or playing)."""
        if self._play_next is not None or not self._warm:
            return None
        return max(0.0, self._hold_until - time.monotonic())

    def _plan_warm(self, k: int, capacity: int) -> None:
        """Frames to cache around k (caller holds the lock): first where a reviewer scrubs to, −1…+3 s
        (forward from k, then the second before it), then the rest of what the cache holds around k
        (forward, then back); each stretch in decoding order so one seek serves many."""
        start = max(0, min(k - capacity // 4, self.frame_count - capacity))
        stop = min(self.frame_count, start + capacity)
        ahead = min(stop, k + 1 + round(3 * self._fps))
        behind = max(start, k - round(self._fps))
        self._warm = deque([*range(k + 1, ahead), *range(behind, k), *range(ahead, stop), *range(start, behind)])
        # Overlay data only for the nearest frames (±2 s at 25 fps: it is bigger per frame, and a running
        # analysis invalidates it at every commit, so it must stay cheap to redo); same order.
        near = sorted(self._warm, key=lambda j: abs(j - k))[: min(self._extras_cap - 1, _EXTRAS_WARM)]
        self._warm_extras = set(near)

    def _run(self) -> None:
        try:
            reader = open_video(self.path)
        except VideoError as exc:
            self.failed.emit(str(exc))
            return
        except Exception as exc:  # anything else from the codec stack is still "cannot open"
            log.exception("opening %s failed", self.path)
            self.failed.emit(f"{self.path}: cannot be opened ({exc}). Check that the file plays in a media "
                             "player, or convert it to MP4 (H.264).")
            return
        self.reader = reader  # for tests and benchmarks (is_cached); used only on this thread
        with reader:
            self.frame_count = reader.frame_count
            self._fps = reader.fps if reader.fps > 0 else 25.0
            with self._cond:
                # Heatmaps cover the face region, a fraction of the frame: bounded in bytes as they come.
                self._extras_cap = max(16, min(self.frame_count, 4 * _EXTRAS_WARM))
            readahead = self.readahead
            # Frame 0 was decoded while indexing (and is cached): it goes along, so the window shows a picture
            # before it builds the timeline.
            self.opened.emit(reader.info, np.asarray(reader.timestamps, dtype=np.float64).copy(), reader.frame(0))
            self._display_dirty = True
            while True:
                with self._cond:
                    while not self._work_ready():
                        self._cond.wait(self._warm_due())  # None: until notified
                    if self._stop:
                        return
                    full, self._full_request = self._full_request, None
                    if self._display_dirty:
                        self._display_dirty = False
                        reader.set_output_size(self._display_size)
                        # The cache and read-ahead are bounded in bytes: 32 frames of 4K video would be 800 MB.
                        frame_bytes = max(reader.output_size[0] * reader.output_size[1] * 3, 1)
                        budget = max(_CACHE_BYTES, min(_CACHE_MAX_BYTES, int(_SCRUB_WINDOW_S * self._fps + 1) * frame_bytes))
                        capacity = self._capacity = max(16, min(self.frame_count, int(budget // frame_bytes)))
                        reader.set_cache_frames(capacity)
                        self.readahead = max(4, min(readahead, int(_READAHEAD_BYTES // frame_bytes)))
                        if self._seek is None:
                            self._plan_warm(self._last_seek, capacity)
                if full is not None:
                    try:
                        image: np.ndarray | None = reader.frame(full, full=True)
                    except Exception as exc:  # noqa: BLE001 - the caller gets None
                        log.warning("decoding frame %d of %s at full size failed: %s", full, self.path, exc)
                        image = None
                    with self._cond:
                        self._full_result = (full, image)
                        self._cond.notify_all()
                    continue
                with self._cond:
                    seek, self._seek = self._seek, None
                    if seek is not None:
                        self._last_seek = seek
                    generation = self._generation
                    if seek is None and not self._playback_wants():
                        if self._warm_due() != 0.0:
                            continue  # woken for the display size or a full frame only, or the window paints
                        queue = self._warm
                        warm = queue.popleft()  # idle: one frame into the cache, then look again
                    else:
                        warm = None
                        if seek is not None:
                            self._plan_warm(seek, capacity)
                    k = seek if seek is not None else self._play_next
                    # Scrubbing: keep the frames nearest the cursor; playing: the least recently used go first.
                    center = None if self._play_next is not None else self._last_seek
                reader.set_cache_center(center)
                if warm is not None:
                    try:
                        if not reader.is_cached(warm):
                            reader.frame(warm, stop=self._interrupted)
                        if warm in self._warm_extras:
                            self._extras_for(warm)
                    except DecodeCancelled:
                        with self._cond:
                            if self._warm is queue:  # held, not replanned (a zoom, τ): cache it after the hold
                                queue.appendleft(warm)
                    except Exception as exc:  # noqa: BLE001 - the frame is reported if someone asks for it
                        log.debug("caching frame %d of %s failed: %s", warm, self.path, exc)
                    continue
                assert k is not None
                try:
                    # A seek waits for k alone (the warm-up caches the frames around it next); playback
                    # reads on in order, so nothing lies between.
                    frame = reader.frame(k, between=seek is None)
                    extras = self._extras_for(k)
                except Exception as exc:  # noqa: BLE001 - a bad frame must not kill the decoder
                    log.warning("decoding frame %d of %s failed: %s", k, self.path, exc)
                    self.decodeFailed.emit(k, str(exc))
                    with self._cond:
                        if seek is None and self._play_next == k:
                            self._play_next = k + 1  # skip it rather than retry forever
                    continue
                if seek is not None:
                    with self._cond:
                        self._hold_locked()  # the window paints it now
                    self.frameReady.emit(k, frame, extras, generation)
                    continue
                with self._cond:
                    # Keep it only if playback was not restarted elsewhere while we decoded.
                    if generation == self._generation and self._play_next == k:
                        self._buffer.append((k, frame, extras))
                        self._play_next = k + 1
