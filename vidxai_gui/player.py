"""The player widget: the frame view, the transport bar and playback on the video's clock.

Decoding never runs on the GUI thread (``vidxai_gui.frame_source.FrameSource``). Playback follows the
sound's clock while sound plays (``vidxai_gui.player_sound``), else the wall clock: the frame due is the one
whose timestamp is the latest at or before the clock's media time (``t0 + elapsed × speed`` without sound);
when decoding falls behind the player skips to the newest decoded frame and counts the frames
it dropped, it never lags the clock. The frame view and its overlays are ``vidxai_gui.frame_view``, the
transport bar and keys ``vidxai_gui.player_controls``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QElapsedTimer, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import QStyle, QVBoxLayout, QWidget

from engine.video import VideoInfo
from vidxai_gui.frame_source import FrameSource
from vidxai_gui.frame_view import FrameOverlays, FrameView, face_crops
from vidxai_gui.player_controls import SPEEDS, PlayerControls, format_time
from vidxai_gui.player_sound import PlayerSound

log = logging.getLogger(__name__)

# Videos of at least this many pixels (about 1 MP: 1280×720 and up) are decoded at the size the view shows them.
_SCALE_MIN_PIXELS = 1280 * 720


class Player(PlayerSound, PlayerControls, QWidget):
    """Frame view, overlay controls and transport for one video at a time."""

    frameShown = Signal(int)  # after frame k and its overlays are on screen
    videoOpened = Signal(object)  # VideoInfo
    videoFailed = Signal(str)
    playingChanged = Signal(bool)
    soundNote = Signal(str)  # why the video plays silently (vidxai_gui.player_sound)

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
        self._build_sound()
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

    def full_image_at_hand(self) -> np.ndarray | None:
        """The frame on screen at full size if that costs nothing now (decoded at full size, or fetched
        before), else None: `current_image` would wait for a full-size decode."""
        img = self._shown_image
        if img is None or self.info is None or img.shape[:2] == (self.info.height, self.info.width):
            return img
        if self._full_image is not None and self._full_image[0] == self.current:
            return self._full_image[1]
        return None

    def remember_full_image(self, k: int, frame: np.ndarray) -> None:
        """Frame k at full size, decoded elsewhere (a worker): `current_image` returns it while k is on screen."""
        self._full_image = (int(k), frame)

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
        self.audio.set_video(path)
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
        self.audio.set_video(None)
        self.info = None
        self.current = -1
        self._shown_image = None
        self._full_image = None
        self._display_size = None
        self._set_enabled(False)

    def _from_current_source(self) -> bool:
        """Whether the signal being handled comes from the open video's source. A queued signal can arrive
        after the video was closed (then sender() is None and so is the source: not current)."""
        return self.source is not None and self.sender() is self.source

    @Slot(object, object, object)
    def _on_opened(self, info: VideoInfo, timestamps: np.ndarray, first: np.ndarray | None = None) -> None:
        if not self._from_current_source():
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
        if not self._from_current_source():
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
        self._snippet(k)

    def hold_background(self) -> None:
        """The window is busy with something else (a zoom, τ): background decoding waits a moment."""
        if self.source is not None:
            self.source.hold()

    def step(self, n: int) -> None:
        if self._playing:
            self.pause()
        # From the last requested frame, not the one on screen, so fast key repeats never lose a step.
        self.seek(self.requested + n)

    def step_seconds(self, seconds: float) -> None:
        self.step(round(seconds * self.fps))

    @Slot(int, object, object, int)
    def _on_frame_ready(self, k: int, frame: np.ndarray, extras: Any, generation: int) -> None:
        if not self._from_current_source() or generation != self._pending_generation or self._playing:
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
        self.audio.stop()
        self.sound_on = False
        self._preroll = None
        self.loop_range = None
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
        self._start_sound(k)

    def due_frame(self) -> int:
        """The frame the clock (the sound's while it plays, else the wall clock) says should be on screen now."""
        t = self._media_time()
        return int(min(np.searchsorted(self.timestamps, t + 1e-9, side="right") - 1, self.last_frame))

    @Slot()
    def _tick(self) -> None:
        if not self._playing or self.source is None or not self._preroll_done():
            return
        due = self._range_end(max(self.due_frame(), self._clock_start_frame))
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
        if self._range_done():
            return
        if self.loop_range is None and self._last_played >= self.last_frame:
            self.pause()

    def shutdown(self) -> None:
        self.close_video()
