"""Sound for the player: a video's audio decoded on its own thread (engine.audio), fed to an audio sink, and
the audio clock that playback follows.

The sink is a small interface (`AudioSink`): `QtSink` plays through Qt Multimedia's `QAudioSink` (push mode,
fed from the GUI thread a few milliseconds at a time); `FakeSink` keeps every sample it is given and plays
them on the wall clock, for tests, benchmarks and machines without an audio device. The clock is the media
time of the sample being heard: ``t0 + played × speed / rate``, interpolated between the sink's updates and
never ahead of what was written; the video follows it (vidxai_gui.player). At other speeds the pitch is kept
(engine.audio.Tempo, FFmpeg's atempo).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal

from engine.audio import AudioInfo, AudioReader, Tempo, audio_info, sample_at

log = logging.getLogger(__name__)

_QUEUE_S = 1.0  # decoded seconds kept ahead of the sink
_SINK_S = 0.25  # the sink's own buffer


class AudioSink(Protocol):
    """Where samples go. `open` may refuse (no device, format unsupported)."""

    def open(self, sample_rate: int, channels: int) -> bool: ...
    def write(self, x: np.ndarray) -> int: ...  # float32 (n, channels); returns how many frames it took
    def free(self) -> int: ...  # frames it takes now
    def played(self) -> int: ...  # frames heard since open
    def stop(self) -> None: ...  # drop what is buffered; `open` starts again
    def set_volume(self, volume: float) -> None: ...


class FakeSink:
    """A sink without a device: keeps what it is given (`samples`) and 'plays' it on the wall clock."""

    def __init__(self, capacity_s: float = _SINK_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity_s, self.clock = capacity_s, clock
        self.rate, self.channels, self.volume = 0, 0, 1.0
        self.chunks: list[np.ndarray] = []
        self.written = 0
        self.opens = 0
        self.passes: list[int] = []  # frames written between one open and the next
        self._t0 = 0.0

    def open(self, sample_rate: int, channels: int) -> bool:
        if self.opens:
            self.passes.append(self.written)
        self.rate, self.channels = sample_rate, channels
        self.chunks, self.written, self._t0 = [], 0, self.clock()
        self.opens += 1
        return True

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros((0, max(self.channels, 1)), np.float32)

    def played(self) -> int:
        return min(self.written, int((self.clock() - self._t0) * self.rate)) if self.rate else 0

    def free(self) -> int:
        return max(int(self.capacity_s * self.rate) - (self.written - self.played()), 0)

    def write(self, x: np.ndarray) -> int:
        n = min(len(x), self.free())
        if n:
            self.chunks.append(np.array(x[:n], np.float32))
            self.written += n
        return n

    def stop(self) -> None:
        self.rate = 0

    def set_volume(self, volume: float) -> None:
        self.volume = volume


class QtSink:
    """Qt Multimedia's QAudioSink on the default output device, 32-bit float or 16-bit samples."""

    def __init__(self) -> None:
        self.sink = None
        self.io = None
        self.volume = 1.0
        self.frame_bytes = 0
        self.rate = 0
        self.int16 = False

    def open(self, sample_rate: int, channels: int) -> bool:
        from PySide6.QtMultimedia import QAudioFormat, QAudioSink, QMediaDevices

        self.stop()
        device = QMediaDevices.defaultAudioOutput()
        if device.isNull():
            return False
        fmt = QAudioFormat()
        fmt.setSampleRate(sample_rate)
        fmt.setChannelCount(channels)
        fmt.setSampleFormat(QAudioFormat.SampleFormat.Float)
        self.int16 = not device.isFormatSupported(fmt)
        if self.int16:
            fmt.setSampleFormat(QAudioFormat.SampleFormat.Int16)
            if not device.isFormatSupported(fmt):
                return False
        self.rate, self.frame_bytes = sample_rate, channels * (2 if self.int16 else 4)
        self.sink = QAudioSink(device, fmt)
        self.sink.setBufferSize(int(_SINK_S * sample_rate) * self.frame_bytes)
        self.sink.setVolume(self.volume)
        self.io = self.sink.start()
        return self.io is not None

    def write(self, x: np.ndarray) -> int:
        n = min(len(x), self.free())
        if n <= 0 or self.io is None:
            return 0
        data = (np.clip(x[:n], -1, 1) * 32767).astype(np.int16) if self.int16 else np.asarray(x[:n], np.float32)
        return max(int(self.io.write(data.tobytes())), 0) // self.frame_bytes

    def free(self) -> int:
        return self.sink.bytesFree() // self.frame_bytes if self.sink is not None and self.frame_bytes else 0

    def played(self) -> int:
        return int(self.sink.processedUSecs() * self.rate // 1_000_000) if self.sink is not None else 0

    def stop(self) -> None:
        if self.sink is not None:
            self.sink.stop()
            self.sink.deleteLater()
        self.sink, self.io = None, None

    def set_volume(self, volume: float) -> None:
        self.volume = volume
        if self.sink is not None:
            self.sink.setVolume(volume)


def has_output_device() -> bool:
    try:
        from PySide6.QtMultimedia import QMediaDevices
    except ImportError:  # PySide6-Addons missing: play silently
        return False
    return not QMediaDevices.defaultAudioOutput().isNull()


class AudioPlayer(QObject):
    """One video's sound: `start(t, speed)` plays from media time t, `clock()` says where it is."""

    infoReady = Signal(object)  # AudioInfo or None, once per `set_video`

    def __init__(self, sink: AudioSink | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.sink: AudioSink | None = sink  # None: the default device, chosen at the first start
        self.info: AudioInfo | None = None
        self.path: Path | None = None
        self.volume, self.muted = 1.0, False
        self.active = False  # sound is playing and its clock leads
        self._cond = threading.Condition()
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0
        self._eof = False
        self._gen = 0  # one per start: a stopped decode thread's samples are never queued
        self._probe = 0  # one per set_video
        self._stop_ev = threading.Event()
        self._t0, self._speed, self._written = 0.0, 1.0, 0
        self._last_played, self._last_change = -1, 0.0
        self._drained_at: float | None = None
        self._pump = QTimer(self)
        self._pump.setInterval(5)
        self._pump.timeout.connect(self.pump)

    # --- the video --------------------------------------------------------------------------
    def set_video(self, path: str | Path | None) -> None:
        """A new video: its audio stream is looked up on a thread; `infoReady` says what was found."""
        self.stop()
        self.info, self.path = None, Path(path) if path else None
        self._probe += 1
        if self.path is None:
            return
        probe_id, p = self._probe, self.path

        def probe() -> None:
            info = audio_info(p)
            if probe_id == self._probe:
                self.info = info
                self.infoReady.emit(info)

        threading.Thread(target=probe, name=f"audio-probe:{p.name}", daemon=True).start()

    def ensure_sink(self) -> bool:
        if self.sink is None:
            if not has_output_device():
                return False
            self.sink = QtSink()
        return True

    # --- playing ----------------------------------------------------------------------------
    def start(self, t: float, speed: float = 1.0, stop_t: float | None = None) -> bool:
        """Play from media time t (to stop_t); False (and silent) without audio, device or tempo."""
        self.stop()
        info = self.info
        if info is None or self.path is None or not self.ensure_sink():
            return False
        assert self.sink is not None
        if not self.sink.open(info.sample_rate, info.channels):
            return False
        self.sink.set_volume(0.0 if self.muted else self.volume)
        raw = round((t - info.offset) * info.sample_rate)
        pad, n0 = max(-raw, 0), max(raw, 0)
        n1 = None if stop_t is None else max(sample_at(info, stop_t), n0)
        self._gen += 1
        self._stop_ev = threading.Event()
        with self._cond:
            self._queue.clear()
            self._queued, self._eof = 0, False
        self._t0, self._speed, self._written = t, float(speed), 0
        self._last_played, self._last_change, self._drained_at = -1, time.monotonic(), None
        self.active = True
        threading.Thread(target=self._decode, args=(self._gen, self.path, info, n0, n1, pad, float(speed),
                                                    self._stop_ev), name="audio-decode", daemon=True).start()
        self.pump()
        self._pump.start()
        return True

    def stop(self) -> None:
        self._stop_ev.set()
        with self._cond:
            self._gen += 1
            self._queue.clear()
            self._queued = 0
            self._cond.notify_all()
        self._pump.stop()
        if self.active and self.sink is not None:
            self.sink.stop()
        self.active = False

    def set_volume(self, volume: float, muted: bool) -> None:
        self.volume, self.muted = float(volume), bool(muted)
        if self.sink is not None:
            self.sink.set_volume(0.0 if self.muted else self.volume)

    @property
    def finished(self) -> bool:
        """Everything decoded was handed to the sink and heard."""
        with self._cond:
            done = self._eof and not self._queue
        return done and self.sink is not None and self.sink.played() >= self._written

    def clock(self) -> float:
        """The media time being heard now (s). Between the sink's position updates it runs on the wall clock,
        never past what was written; once the sound ran out it keeps running on the wall clock."""
        if not self.active or self.sink is None:
            return self._t0
        now = time.monotonic()
        played = self.sink.played()
        if played != self._last_played:
            self._last_played, self._last_change = played, now
        rate = self.info.sample_rate if self.info else 1
        if self.finished:
            if self._drained_at is None:
                self._drained_at = now
            return self._t0 + (self._written / rate + (now - self._drained_at)) * self._speed
        # Nothing heard yet (a device starts late: 0.05–0.5 s): the clock waits for the first sample heard.
        ahead = min((now - self._last_change) * rate, max(self._written - played, 0), 0.05 * rate) if played else 0
        return self._t0 + (played + ahead) / rate * self._speed

    def pump(self) -> None:
        """Hand decoded samples to the sink as far as it has room (GUI thread, every few ms)."""
        if not self.active or self.sink is None:
            return
        while True:
            with self._cond:
                if not self._queue:
                    break
                x = self._queue[0]
            free = self.sink.free()
            if free <= 0:
                break
            n = self.sink.write(x[:free])
            if n <= 0:
                break
            self._written += n
            with self._cond:
                if n >= len(x):
                    self._queue.popleft()
                else:
                    self._queue[0] = x[n:]
                self._queued -= n
                self._cond.notify_all()

    # --- decode thread ----------------------------------------------------------------------
    def _put(self, gen: int, x: np.ndarray, cap: int) -> bool:
        with self._cond:
            while self._queued > cap and gen == self._gen and not self._stop_ev.is_set():
                self._cond.wait(0.05)
            if gen != self._gen:
                return False
            self._queue.append(x)
            self._queued += len(x)
            return True

    def _decode(self, gen: int, path: Path, info: AudioInfo, n0: int, n1: int | None, pad: int, speed: float,
                stop: threading.Event) -> None:
        cap = int(_QUEUE_S * info.sample_rate)
        try:
            tempo = Tempo(info.sample_rate, info.channels, speed) if abs(speed - 1.0) > 1e-9 else None
            if pad and not self._put(gen, np.zeros((pad, info.channels), np.float32), cap):
                return
            for x in AudioReader(path, info).chunks(n0, n1, stopped=stop.is_set):
                for y in (tempo.process(x) if tempo is not None else [x]):
                    if not self._put(gen, y, cap):
                        return
            for y in (tempo.process(None) if tempo is not None else []):
                if not self._put(gen, y, cap):
                    return
        except Exception:  # a bad sound track must not take the player down
            log.exception("decoding the audio of %s failed", path)
        finally:
            with self._cond:
                if gen == self._gen:
                    self._eof = True
