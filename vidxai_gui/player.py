"""The frame view with its overlays, the background decoder and the transport bar.

Decoding never runs on the GUI thread: ``FrameSource`` owns one ``VideoReader`` on its own thread and
answers random-access requests (latest wins, so scrubbing never queues up stale frames) and, while
playing, fills a bounded read-ahead buffer. Playback follows the video's clock: the frame due is the
one whose timestamp is the latest at or before ``t0 + elapsed × speed``; when decoding falls behind the
player skips to the newest decoded frame and counts the frames it dropped, it never lags the clock.
When it has nothing else to do the decode thread fills the reader's frame cache (bounded in bytes)
around the last requested frame, so scrubbing back and forth is a cache hit instead of a seek and a
decode from the previous keyframe.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QElapsedTimer, QObject, QRectF, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QColor, QKeySequence, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsRectItem,
    QHBoxLayout,
    QLabel,
    QSlider,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engine.video import VideoError, VideoInfo, open_video

log = logging.getLogger(__name__)

SPEEDS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
_READAHEAD_BYTES = 128 * 1024 * 1024
# Decoded frames kept around the reviewer's position; a short clip fits whole (480×360: ~500 frames).
_CACHE_BYTES = 256 * 1024 * 1024
# Overlay data (a frame-sized float32 heatmap each) kept for the frames nearest the reviewer's position.
_EXTRAS_BYTES = 128 * 1024 * 1024
_EXTRAS_WARM = 160  # the frame cache's window around the cursor (−1…+3 s at 30 fps), so cache hits have them too


def _nbytes(value: Any) -> int:
    """Bytes of the arrays an extras value holds (a FrameExtras: the face region's heatmap)."""
    if value is None:
        return 0
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    fields = getattr(value, "__dict__", {})
    return 64 + sum(int(v.nbytes) for v in fields.values() if isinstance(v, np.ndarray))
# Videos of at least this many pixels (about 1 MP: 1280×720 and up) are decoded at the size the view shows them.
_SCALE_MIN_PIXELS = 1280 * 720


def format_time(seconds: float) -> str:
    """mm:ss.cc — the precision a reviewer needs to find a frame again at 25–30 fps."""
    seconds = max(seconds, 0.0)
    minutes = int(seconds // 60)
    return f"{minutes:02d}:{seconds - 60 * minutes:05.2f}"


def face_crops(box: np.ndarray, found: np.ndarray, frame_hw: tuple[int, int], fps: float,
               aspect: float = 4 / 3, zoom: float = 2.4, window_s: float = 1.0) -> np.ndarray:
    """The face view's crop of every frame: T×4 int (x0, y0, x1, y1), x1/y1 exclusive; −1 rows when the
    video has no face at all. Computed once for a session, vectorised.

    The tracked box's centre and size are filled across frames without a face (linear between the faces
    either side, held before the first and after the last), then smoothed by a centred moving average
    over `window_s` seconds, so the view glides with the person instead of jittering with the detector.
    The crop is `zoom` × the face's size tall, `aspect` wide:tall, kept inside the frame."""
    box = np.asarray(box, np.float64).reshape(-1, 4)
    T = len(box)
    out = np.full((T, 4), -1, np.int64)
    ok = np.asarray(found, bool)[:T] & np.isfinite(box).all(axis=1)
    if T == 0 or not ok.any():
        return out
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    idx = np.flatnonzero(ok)
    frames = np.arange(T, dtype=np.float64)
    cx = np.interp(frames, idx, (box[idx, 0] + box[idx, 2]) / 2)
    cy = np.interp(frames, idx, (box[idx, 1] + box[idx, 3]) / 2)
    size = np.interp(frames, idx, np.maximum(box[idx, 2] - box[idx, 0], box[idx, 3] - box[idx, 1]))
    n = max(1, round(window_s * fps) | 1)  # odd: centred

    def smooth(v: np.ndarray) -> np.ndarray:
        if n == 1 or T == 1:
            return v
        padded = np.pad(v, (n // 2, n // 2), mode="edge")
        c = np.cumsum(np.concatenate(([0.0], padded)))
        return (c[n:] - c[:-n]) / n

    cx, cy, size = smooth(cx), smooth(cy), smooth(size)
    h = np.minimum(np.maximum(zoom * size, 16.0), fh)
    w = np.minimum(h * aspect, fw)
    h = np.minimum(h, w / aspect) if aspect > 0 else h
    x0 = np.clip(np.round(cx - w / 2), 0, np.maximum(fw - np.round(w), 0))
    y0 = np.clip(np.round(cy - h / 2), 0, np.maximum(fh - np.round(h), 0))
    out[:, 0], out[:, 1] = x0, y0
    out[:, 2], out[:, 3] = np.minimum(x0 + np.round(w), fw), np.minimum(y0 + np.round(h), fh)
    return out


@dataclass
class FrameOverlays:
    """What to draw over one frame; every field is in full-frame pixel coordinates."""

    box: np.ndarray | None = None  # (4,) x0, y0, x1, y1
    landmarks: np.ndarray | None = None  # (68, 2) x, y
    heatmap: np.ndarray | None = None  # h×w float over the frame region starting at heat_origin
    heat_origin: tuple[int, int] = (0, 0)  # frame pixel (x, y) of heatmap[0, 0]
    heat_level: float = 1.0  # the heat value drawn at full colour (computed with the map, off the GUI thread)
    proto_box: np.ndarray | None = None  # (4,) the top prototype's 95th-percentile box
    proto_label: str = ""
    note: str = ""  # one line drawn on the frame, e.g. "no face found in this frame"


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
            self._cond.notify()
            return frame, extras, self._generation

    def _interrupted(self) -> bool:
        """Whether the decode thread should drop what it caches for something the window waits for."""
        return self._stop or self._seek is not None or self._full_request is not None or self._display_dirty

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
                or self._full_request is not None or (self._play_next is None and bool(self._warm)))

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
                        self._cond.wait()
                    if self._stop:
                        return
                    full, self._full_request = self._full_request, None
                    if self._display_dirty:
                        self._display_dirty = False
                        reader.set_output_size(self._display_size)
                        # The cache and read-ahead are bounded in bytes: 32 frames of 4K video would be 800 MB.
                        frame_bytes = max(reader.output_size[0] * reader.output_size[1] * 3, 1)
                        capacity = self._capacity = max(16, min(self.frame_count, int(_CACHE_BYTES // frame_bytes)))
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
                        if self._play_next is not None or not self._warm:
                            continue  # woken for the display size or a full frame only
                        warm = self._warm.popleft()  # idle: one frame into the cache, then look again
                    else:
                        warm = None
                        if seek is not None:
                            self._plan_warm(seek, capacity)
                    k = seek if seek is not None else self._play_next
                if warm is not None:
                    try:
                        if not reader.is_cached(warm):
                            reader.frame(warm, stop=self._interrupted)
                        if warm in self._warm_extras:
                            self._extras_for(warm)
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
                    self.frameReady.emit(k, frame, extras, generation)
                    continue
                with self._cond:
                    # Keep it only if playback was not restarted elsewhere while we decoded.
                    if generation == self._generation and self._play_next == k:
                        self._buffer.append((k, frame, extras))
                        self._play_next = k + 1


class FrameView(pg.GraphicsView):
    """A frame in a ViewBox with locked aspect and y pointing down, plus its overlays."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="#1e1e1e")
        self.vb = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.setCentralItem(self.vb)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.vb.addItem(self.image_item)

        # Transparent where relevance is zero, so the face stays visible under a sparse map.
        lut = pg.colormap.get("inferno").getLookupTable(0.0, 1.0, 256, alpha=True)
        lut[:, 3] = np.clip(np.linspace(0, 400, 256), 0, 255).astype(np.uint8)
        self.heat_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item.setLookupTable(lut)
        self.heat_item.setOpacity(0.6)
        self.heat_item.setZValue(10)
        self.vb.addItem(self.heat_item)

        self.box_item = QGraphicsRectItem()
        pen = QPen(QColor("#00e676"), 2)
        pen.setCosmetic(True)  # width in screen pixels, whatever the zoom
        self.box_item.setPen(pen)
        self.box_item.setZValue(20)
        self.vb.addItem(self.box_item)

        self.landmark_item = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(0, 230, 118, 220))
        self.landmark_item.setZValue(21)
        self.vb.addItem(self.landmark_item)

        self.proto_item = QGraphicsRectItem()
        ppen = QPen(QColor("#ffd600"), 2, Qt.PenStyle.DashLine)
        ppen.setCosmetic(True)
        self.proto_item.setPen(ppen)
        self.proto_item.setZValue(22)
        self.vb.addItem(self.proto_item)
        self.proto_label = pg.TextItem("", color="#ffd600", anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
        self.proto_label.setZValue(23)
        self.vb.addItem(self.proto_label)

        self.message = pg.TextItem("", color="#dddddd", anchor=(0.5, 0.5))
        self.vb.addItem(self.message)
        self.note = pg.TextItem("", color="#ffffff", anchor=(0, 0), fill=pg.mkBrush(160, 0, 0, 170))
        self.note.setZValue(30)
        self.vb.addItem(self.note)
        self.frame_shape: tuple[int, int] | None = None
        self.crop: np.ndarray | None = None  # (x0, y0, x1, y1) shown in the face view, None: the whole frame
        self.set_overlays(FrameOverlays())

    def show_message(self, text: str) -> None:
        """A line of text in the middle of the empty view (e.g. "drop a video here")."""
        self.message.setText(text)
        self.message.setPos(0, 0)
        self.message.setVisible(bool(text))
        if self.frame_shape is None:
            self.vb.setRange(QRectF(-200, -60, 400, 120), padding=0)

    def show_frame(self, frame: np.ndarray, crop: np.ndarray | None = None,
                   size: tuple[int, int] | None = None) -> None:
        """Show a frame; with `crop` (x0, y0, x1, y1) only that part of it, filling the view (the face view).

        `size` (width, height) is the video's full frame size when `frame` was decoded smaller (scaled to
        the view): the picture is stretched over the full frame's rectangle. The image item always sits at
        full-frame coordinates (a crop is placed at its origin), so every overlay stays in full-frame pixels
        and lands on the same picture pixel in both views and at any decoded size."""
        shape = (int(size[1]), int(size[0])) if size is not None else frame.shape[:2]
        sy, sx = frame.shape[0] / shape[0], frame.shape[1] / shape[1]  # decoded px per frame px
        self.message.setVisible(False)
        if shape != self.frame_shape:
            self.frame_shape = shape
            self.vb.setLimits(xMin=-shape[1], xMax=2 * shape[1], yMin=-shape[0], yMax=2 * shape[0])
            if crop is None:
                self.vb.setRange(QRectF(0, 0, shape[1], shape[0]), padding=0.01)
        if crop is not None:
            x0, y0, x1, y1 = (int(v) for v in crop)
            self.image_item.setImage(frame[round(y0 * sy):max(round(y1 * sy), round(y0 * sy) + 1),
                                           round(x0 * sx):max(round(x1 * sx), round(x0 * sx) + 1)], autoLevels=False)
            rect = QRectF(x0, y0, x1 - x0, y1 - y0)
            self.image_item.setRect(rect)
            self.vb.setRange(rect, padding=0)
        else:
            # No levels: uint8 RGB then goes to a QImage as it is (levels (0, 255) made pyqtgraph rescale
            # every pixel through a lookup table, ~8 ms a 1080p frame).
            self.image_item.setImage(frame, autoLevels=False)
            self.image_item.setRect(QRectF(0, 0, shape[1], shape[0]))
            if self.crop is not None:  # back from the face view: the whole frame again
                self.vb.setRange(QRectF(0, 0, shape[1], shape[0]), padding=0.01)
        self.crop = None if crop is None else np.asarray(crop, np.int64).copy()

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        """Frame pixel coordinates → coordinates in the picture shown (the crop in the face view)."""
        xy = np.asarray(xy, np.float64)
        return xy if self.crop is None else xy - self.crop[:2].astype(np.float64)

    def set_overlays(self, ov: FrameOverlays) -> None:
        if ov.heatmap is not None:
            # Prepared on the decode thread (HeatmapReader): finite, ≥ 0, with its level.
            self.heat_item.setImage(ov.heatmap, autoLevels=False, levels=(0.0, ov.heat_level))
            h, w = ov.heatmap.shape[:2]
            self.heat_item.setRect(QRectF(float(ov.heat_origin[0]), float(ov.heat_origin[1]), w, h))
            self.heat_item.setVisible(True)
        else:
            self.heat_item.setVisible(False)
        self._set_rect(self.box_item, ov.box)
        self._set_rect(self.proto_item, ov.proto_box)
        if ov.proto_box is not None and np.isfinite(ov.proto_box).all() and ov.proto_label:
            self.proto_label.setText(ov.proto_label)
            self.proto_label.setPos(float(ov.proto_box[0]), float(ov.proto_box[1]))
            self.proto_label.setVisible(True)
        else:
            self.proto_label.setVisible(False)
        self.note.setText(ov.note)
        self.note.setPos(*(4.0 + (self.crop[:2] if self.crop is not None else np.zeros(2))))
        self.note.setVisible(bool(ov.note))
        lm = ov.landmarks
        if lm is not None and np.isfinite(lm).all():
            self.landmark_item.setData(pos=np.asarray(lm, dtype=np.float64))
        else:
            self.landmark_item.setData(pos=np.zeros((0, 2)))

    @staticmethod
    def _set_rect(item: QGraphicsRectItem, box: np.ndarray | None) -> None:
        if box is None or not np.isfinite(box).all():
            item.setVisible(False)
            return
        x0, y0, x1, y1 = (float(v) for v in box)
        item.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        item.setVisible(True)


class Player(QWidget):
    """Frame view, overlay controls and transport for one video at a time."""

    frameShown = Signal(int)  # after frame k and its overlays are on screen
    videoOpened = Signal(object)  # VideoInfo
    videoFailed = Signal(str)
    playingChanged = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.source: FrameSource | None = None
        self.info: VideoInfo | None = None
        self.timestamps = np.zeros(0)
        self.current = -1  # index of the frame on screen
        self.requested = 0  # the frame the user asked for last
        self.dropped = 0
        self.shown_count = 0
        # Called on the GUI thread for the frame about to be shown: the window's overlay data.
        self.overlay_provider: Callable[[int, Any], FrameOverlays] | None = None
        self.extras_provider: Callable[[int], Any] | None = None
        self._pending_generation = 0
        self._playing = False
        self._clock = QElapsedTimer()
        self._clock_start_frame = 0
        self._last_played = -1
        self.speed = 1.0
        # The face view: the analysed person's face, cropped and smoothed (see face_crops).
        self.face_view = False
        self._face_track: tuple[np.ndarray, np.ndarray] | None = None  # the session's boxes and found flags
        self._crops: np.ndarray | None = None  # computed from it on first use
        self._crops_aspect = 0.0
        self._current_extras: Any = None
        self._shown_image: np.ndarray | None = None  # as decoded: scaled to the view for big videos
        self._full_image: tuple[int, np.ndarray] | None = None  # (k, full-size frame) asked for by current_image
        self._display_size: tuple[int, int] | None = None

        self.view = FrameView()
        self.view.show_message("Open a video (File ▸ Open video…) or drop one here")
        self._build_transport()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.view, 1)
        layout.addLayout(self.transport)

        # Big videos are decoded at the size the view shows them (see _update_display_size), re-judged a
        # moment after the view is resized or zoomed.
        self._size_timer = QTimer(self)
        self._size_timer.setSingleShot(True)
        self._size_timer.setInterval(150)
        self._size_timer.timeout.connect(self._update_display_size)
        self.view.vb.sigRangeChanged.connect(lambda *_: self._size_timer.start())
        self.view.vb.sigResized.connect(lambda *_: self._size_timer.start())

        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.timeout.connect(self._tick)
        self._build_actions()
        self._set_enabled(False)

    # --- construction -------------------------------------------------------------------------
    def _tool(self, icon: QStyle.StandardPixmap, tip: str, slot: Callable[[], None]) -> QToolButton:
        button = QToolButton()
        button.setIcon(self.style().standardIcon(icon))
        button.setToolTip(tip)
        button.setAutoRaise(True)
        button.clicked.connect(slot)
        return button

    def _build_transport(self) -> None:
        sp = QStyle.StandardPixmap
        self.home_button = self._tool(sp.SP_MediaSkipBackward, "First frame (Home)", lambda: self.seek(0))
        self.back_button = self._tool(sp.SP_MediaSeekBackward, "Back one frame (Left); one second: Shift+Left",
                                      lambda: self.step(-1))
        self.play_button = self._tool(sp.SP_MediaPlay, "Play / pause (Space)", self.toggle_play)
        self.forward_button = self._tool(sp.SP_MediaSeekForward,
                                         "Forward one frame (Right); one second: Shift+Right", lambda: self.step(1))
        self.end_button = self._tool(sp.SP_MediaSkipForward, "Last frame (End)", lambda: self.seek(self.last_frame))
        self.position = QSlider(Qt.Orientation.Horizontal)
        self.position.setToolTip("Scrub through the video")
        self.position.valueChanged.connect(self._on_slider)
        self.readout = QLabel("frame – / – · 00:00.00")
        self.readout.setMinimumWidth(200)
        self.readout.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.readout.setStyleSheet("font-family: monospace")
        self.speed_combo = QComboBox()
        for s in SPEEDS:
            self.speed_combo.addItem(f"{s:g}×", s)
        self.speed_combo.setCurrentIndex(SPEEDS.index(1.0))
        self.speed_combo.setToolTip("Playback speed")
        self.speed_combo.currentIndexChanged.connect(lambda _i: self.set_speed(self.speed_combo.currentData()))
        # Keys go to the window's shortcuts, not to the combo or slider (arrow keys would change them).
        self.speed_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.position.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setFixedWidth(90)
        self.opacity.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.opacity.setToolTip("Heatmap opacity")
        self.opacity.valueChanged.connect(lambda v: self.view.heat_item.setOpacity(v / 100))
        self.face_button = QToolButton()
        self.face_button.setText("Face")
        self.face_button.setCheckable(True)
        self.face_button.setAutoRaise(True)
        self.face_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.face_button.setToolTip("Face view (F): follow the analysed person's face, cropped and steadied, "
                                    "with the overlays; again for the whole frame")
        self.face_button.toggled.connect(self.set_face_view)
        self.transport = QHBoxLayout()
        self.transport.setContentsMargins(4, 0, 4, 2)
        for w in (self.home_button, self.back_button, self.play_button, self.forward_button, self.end_button):
            self.transport.addWidget(w)
        self.transport.addWidget(self.position, 1)
        self.transport.addWidget(self.readout)
        self.transport.addWidget(self.speed_combo)
        self.transport.addWidget(self.face_button)
        self.transport.addWidget(QLabel("heatmap"))
        self.transport.addWidget(self.opacity)

    def _build_actions(self) -> None:
        """Transport keys as actions, so the window can list them in a menu and they work from anywhere."""
        def act(text: str, key: QKeySequence | Qt.Key | str, slot: Callable[[], None]) -> QAction:
            a = QAction(text, self)
            a.setShortcut(QKeySequence(key))
            a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.triggered.connect(slot)
            self.addAction(a)
            return a

        mod = Qt.KeyboardModifier.ShiftModifier
        self.actions_transport = [
            act("Play / pause", Qt.Key.Key_Space, self.toggle_play),
            act("Next frame", Qt.Key.Key_Right, lambda: self.step(1)),
            act("Previous frame", Qt.Key.Key_Left, lambda: self.step(-1)),
            act("Forward 1 s", QKeySequence(mod | Qt.Key.Key_Right), lambda: self.step_seconds(1.0)),
            act("Back 1 s", QKeySequence(mod | Qt.Key.Key_Left), lambda: self.step_seconds(-1.0)),
            act("First frame", Qt.Key.Key_Home, lambda: self.seek(0)),
            act("Last frame", Qt.Key.Key_End, lambda: self.seek(self.last_frame)),
            act("Face view", Qt.Key.Key_F, lambda: self.set_face_view(not self.face_view)),
        ]
        self.face_action = self.actions_transport[-1]
        self.face_action.setCheckable(True)

    def _set_enabled(self, on: bool) -> None:
        for w in (self.home_button, self.back_button, self.play_button, self.forward_button, self.end_button,
                  self.position, self.speed_combo, self.face_button):
            w.setEnabled(on)
        for a in self.actions_transport:
            a.setEnabled(on)

    # --- properties -----------------------------------------------------------------------------
    @property
    def frame_count(self) -> int:
        return self.info.frame_count if self.info is not None else 0

    @property
    def last_frame(self) -> int:
        return max(self.frame_count - 1, 0)

    @property
    def fps(self) -> float:
        return self.info.fps if self.info is not None and self.info.fps > 0 else 25.0

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def current_image(self) -> np.ndarray | None:
        """The frame on screen at full size (RGB), or None. A big video is shown decoded at the view's size;
        its full-size picture is then decoded on the decode thread on first use (the caller waits)."""
        img = self._shown_image
        if img is None or self.info is None or img.shape[:2] == (self.info.height, self.info.width):
            return img
        if self._full_image is not None and self._full_image[0] == self.current:
            return self._full_image[1]
        full = self.source.full_frame(self.current) if self.source is not None else None
        if full is not None:
            self._full_image = (self.current, full)
        return full

    def wanted_display_size(self) -> tuple[int, int] | None:
        """The size to decode frames at: the video's picture as big as the view shows it (device pixels),
        or None (full size) for videos under _SCALE_MIN_PIXELS, in the face view (a crop of the picture
        needs its pixels) and when the view is zoomed in to 80 % or more of full size."""
        if self.info is None or self.face_view:
            return None
        W, H = self.info.width, self.info.height
        if W * H < _SCALE_MIN_PIXELS:
            return None
        vb = self.view.vb
        (x0, x1), (y0, y1) = vb.viewRange()
        dpr = self.view.devicePixelRatioF()
        scale = max(vb.width() * dpr / max(x1 - x0, 1e-6), vb.height() * dpr / max(y1 - y0, 1e-6))
        scale = np.ceil(scale * 16) / 16  # in steps, so a small resize keeps what is cached
        if not 0 < scale < 0.8:
            return None
        return max(int(np.ceil(W * scale)), 16), max(int(np.ceil(H * scale)), 16)

    @Slot()
    def _update_display_size(self) -> None:
        size = self.wanted_display_size()
        if size == self._display_size or self.source is None:
            return
        self._display_size = size
        self.source.set_display_size(size)
        shown = self._shown_image
        want = (size or (self.info.width, self.info.height)) if self.info is not None else None
        if shown is not None and want is not None and shown.shape[1] < want[0] and not self._playing:
            # Zoomed in (or the view grew) beyond what the frame on screen was decoded at: a sharper one.
            self._pending_generation = self.source.request(self.requested)

    # --- face view ----------------------------------------------------------------------------
    def set_face_track(self, box: np.ndarray | None, found: np.ndarray | None) -> None:
        """The analysed person's box per frame (full-frame px) and whether it was found, for the face view.

        The arrays are kept by reference (a streaming analysis fills them in place); call again when they
        changed, and the crops are recomputed at the next frame shown in the face view."""
        self._face_track = None if box is None or found is None else (box, found)
        self._crops = None
        if self.face_view and self._shown_image is not None:
            self._show(self.current, self._shown_image, self._current_extras, count=False)

    def face_crop(self, k: int) -> np.ndarray | None:
        """The face view's crop (x0, y0, x1, y1) of frame k, or None when there is no face to follow."""
        if self._face_track is None or self.info is None:
            return None
        # The crop takes the view's shape, so the face view fills it (recomputed when that changes).
        aspect = round(min(max(self.view.width() / max(self.view.height(), 1), 0.5), 3.0), 1)
        if self._crops is None or aspect != self._crops_aspect:
            box, found = self._face_track
            self._crops = face_crops(box, found, (self.info.height, self.info.width), self.fps, aspect=aspect)
            self._crops_aspect = aspect
        if not 0 <= k < len(self._crops) or self._crops[k, 0] < 0:
            return None
        return self._crops[k]

    @Slot(bool)
    def set_face_view(self, on: bool) -> None:
        """Toggle the face view (F); the frame on screen is shown again at once, in the chosen view."""
        self.face_view = bool(on)
        for w in (self.face_button, self.face_action):
            w.blockSignals(True)
            w.setChecked(self.face_view)
            w.blockSignals(False)
        self._update_display_size()  # the face view decodes at full size
        if self._shown_image is not None:
            # The face view crops the full-size picture (fetched once if the view showed a scaled one).
            image = self.current_image if self.face_view else self._shown_image
            self._show(self.current, image if image is not None else self._shown_image, self._current_extras,
                       count=False)

    # --- opening ------------------------------------------------------------------------------
    def open(self, path: str | Path) -> None:
        """Start decoding ``path``; ``videoOpened`` then frame 0 follow, or ``videoFailed``."""
        self.close_video()
        self.set_face_track(None, None)
        self.view.show_message(f"Opening {Path(path).name}…")
        source = FrameSource(path, extras=self.extras_provider)
        source.opened.connect(self._on_opened)
        source.failed.connect(self._on_failed)
        source.frameReady.connect(self._on_frame_ready)
        source.decodeFailed.connect(self._on_decode_failed)
        self.source = source
        source.start()

    def set_extras_provider(self, fn: Callable[[int], Any] | None) -> None:
        """Per-frame data read on the decode thread (heatmaps); applies to the open video and later ones."""
        self.extras_provider = fn
        if self.source is not None:
            self.source.set_extras(fn)

    def close_video(self) -> None:
        self.pause()
        if self.source is not None:
            source, self.source = self.source, None
            for sig in (source.opened, source.failed, source.frameReady, source.decodeFailed):
                sig.disconnect()
            source.close()
        self.info = None
        self.current = -1
        self._shown_image = None
        self._full_image = None
        self._display_size = None
        self._set_enabled(False)

    @Slot(object, object, object)
    def _on_opened(self, info: VideoInfo, timestamps: np.ndarray, first: np.ndarray | None = None) -> None:
        if self.sender() is not self.source:
            return
        self.info = info
        ts = np.asarray(timestamps, dtype=np.float64)
        self.timestamps = ts if len(ts) == info.frame_count else np.arange(info.frame_count) / self.fps
        self.position.blockSignals(True)
        self.position.setRange(0, self.last_frame)
        self.position.setValue(0)
        self.position.blockSignals(False)
        self._set_enabled(True)
        log.info("opened %s: %d frames at %.3f fps", info.path, info.frame_count, info.fps)
        # Requested first, so a listener's own seek (a reopened session's frame) is the latest request; through
        # the decode thread (not `seek`'s cache peek), so frame 0 with its overlays comes after the listeners.
        self.requested = 0
        self._pending_generation = self.source.request(0)
        if first is not None:
            # The picture now, painted before the listeners build their views (a long session's timeline takes
            # a while); its overlays come with the regular frame 0 the seek above brings.
            self._show(0, first, None, count=False, overlays=False)
            self.view.viewport().repaint()
        self._update_display_size()  # the view now frames the video: decode big ones at the size it shows
        self.videoOpened.emit(info)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        if self.sender() is not self.source:
            return
        self.close_video()
        self.view.show_message("The video could not be opened")
        self.videoFailed.emit(message)

    @Slot(int, str)
    def _on_decode_failed(self, k: int, message: str) -> None:
        log.warning("frame %d: %s", k, message)
        self.view.show_message(f"frame {k} could not be decoded")

    # --- seeking ------------------------------------------------------------------------------
    @Slot(int)
    def seek(self, k: int) -> None:
        """Show frame k (clamped); while playing, playback continues from there."""
        if self.source is None or self.info is None:
            return
        k = int(min(max(k, 0), self.last_frame))
        self.requested = k
        if self._playing:
            self._restart_clock(k)
            return
        hit = self.source.peek(k)
        if hit is not None:  # cached with its overlay data: on screen now, no round trip to the decoder
            frame, extras, self._pending_generation = hit
            self._show(k, frame, extras)
        else:
            self._pending_generation = self.source.request(k)

    def step(self, n: int) -> None:
        if self._playing:
            self.pause()
        # From the last requested frame, not the one on screen, so fast key repeats never lose a step.
        self.seek(self.requested + n)

    def step_seconds(self, seconds: float) -> None:
        self.step(round(seconds * self.fps))

    @Slot(int, object, object, int)
    def _on_frame_ready(self, k: int, frame: np.ndarray, extras: Any, generation: int) -> None:
        if self.sender() is not self.source or generation != self._pending_generation or self._playing:
            return  # a newer request is on its way; showing this one would make the view jump back
        self._show(k, frame, extras)

    def _show(self, k: int, frame: np.ndarray, extras: Any = None, count: bool = True, overlays: bool = True) -> None:
        crop = self.face_crop(k) if self.face_view else None
        size = (self.info.width, self.info.height) if self.info is not None else None
        self.view.show_frame(frame, crop, size)
        self.current = k
        self._shown_image = frame
        self._current_extras = extras
        self.shown_count += count
        if not overlays:
            self.view.set_overlays(FrameOverlays())
        elif self.overlay_provider is not None:
            ov = self.overlay_provider(k, extras)
            if self.face_view and crop is None and not ov.note:
                ov.note = "face view: no face tracked in this video yet — whole frame"
            self.view.set_overlays(ov)
        self.position.blockSignals(True)
        self.position.setValue(k)
        self.position.blockSignals(False)
        t = self.timestamps[k] - self.timestamps[0] if len(self.timestamps) > k else k / self.fps
        self.readout.setText(f"frame {k} / {self.last_frame} · {format_time(t)}")
        if overlays:
            self.frameShown.emit(k)

    def refresh_overlays(self) -> None:
        """Redraw the current frame's overlays (new analysis data or a changed overlay choice)."""
        if self.source is not None:
            self.source.invalidate_extras()
        if self.current >= 0 and self.source is not None and not self._playing:
            # Re-request so extras (read on the decode thread) are fresh too; the frame is a cache hit.
            # The last *requested* frame: a seek still on its way must not be undone by a refresh.
            self._pending_generation = self.source.request(self.requested)

    @Slot(int)
    def _on_slider(self, value: int) -> None:
        self.seek(value)

    # --- playback -----------------------------------------------------------------------------
    def set_speed(self, speed: float) -> None:
        self.speed = float(min(max(speed, SPEEDS[0]), SPEEDS[-1]))
        idx = min(range(len(SPEEDS)), key=lambda i: abs(SPEEDS[i] - self.speed))
        if self.speed_combo.currentIndex() != idx:
            self.speed_combo.blockSignals(True)
            self.speed_combo.setCurrentIndex(idx)
            self.speed_combo.blockSignals(False)
        if self._playing:
            self._restart_clock(max(self.current, 0))  # re-anchor so the new speed starts from here

    def toggle_play(self) -> None:
        if self._playing:
            self.pause()
        else:
            self.play()

    def play(self) -> None:
        if self.source is None or self.info is None or self._playing:
            return
        start = self.requested if self.requested < self.last_frame else 0  # at the end: play again
        self._playing = True
        self.play_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPause))
        self._restart_clock(start)
        # Half a frame period at the playing speed, so a due frame waits at most that long.
        self._timer.start(max(4, int(500 / (self.fps * self.speed))))
        self.playingChanged.emit(True)

    def pause(self) -> None:
        if not self._playing:
            return
        self._playing = False
        self._timer.stop()
        if self.source is not None:
            self.source.stop_readahead()
        self.requested = max(self.current, 0)
        self.play_button.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.playingChanged.emit(False)
        log.debug("paused at %d; %d frames dropped so far", self.current, self.dropped)

    def _restart_clock(self, k: int) -> None:
        assert self.source is not None
        self._clock_start_frame = k
        self._last_played = k - 1
        self.requested = k
        self.source.start_readahead(k)
        self._clock.start()
        self._timer.setInterval(max(4, int(500 / (self.fps * self.speed))))

    def due_frame(self) -> int:
        """The frame the video clock says should be on screen now."""
        t0 = self.timestamps[self._clock_start_frame]
        t = t0 + self._clock.elapsed() / 1000.0 * self.speed
        return int(min(np.searchsorted(self.timestamps, t + 1e-9, side="right") - 1, self.last_frame))

    @Slot()
    def _tick(self) -> None:
        if not self._playing or self.source is None:
            return
        due = max(self.due_frame(), self._clock_start_frame)
        got = self.source.take_upto(due)
        if got is not None:
            k, frame, extras = got
            # Every frame between the last one shown and this one had its moment and missed it.
            self.dropped += max(0, k - self._last_played - 1)
            self._last_played = k
            self.requested = k
            self._show(k, frame, extras)
        else:
            nxt = self.source.next_readahead()
            # Decoding fell more than a second behind the clock: jump ahead instead of crawling.
            # The clock keeps running (it is the truth); only where the decoder reads moves.
            if nxt is not None and due - nxt > self.fps:
                log.debug("decoder %d frames behind; restarting read-ahead at %d", due - nxt, due)
                self.source.start_readahead(due)
        if self._last_played >= self.last_frame:
            self.pause()

    def shutdown(self) -> None:
        self.close_video()
