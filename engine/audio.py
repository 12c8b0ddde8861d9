"""A video's sound: decoded with PyAV as float32 samples addressed by sample index, kept pitch at other speeds
(FFmpeg's ``atempo`` through PyAV's filter graph), and the min/max envelope the timeline draws as a waveform.

Time axis: the player's media time is the video's (``engine.video`` timestamps, 0 at the first frame). Sample n
of the audio stream plays at ``offset + n / sample_rate`` on that axis, where ``offset`` is the audio stream's
start minus the video stream's start (CREMA-D's FLV clips: audio at 0 ms, video at 27 ms, offset −0.027 s).
``sample_at(t)`` is the one rounding rule everything uses (the player, the tests, the waveform). Qt-free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from sessions.store import Waveform

log = logging.getLogger(__name__)

ENVELOPE_BIN = 128  # samples per bin of the finest envelope level (2.9 ms at 44.1 kHz)
ENVELOPE_FACTOR = 8  # each coarser level merges this many bins of the one below
ENVELOPE_LEVELS = 5  # 128 … 524288 samples per bin: an hour at 48 kHz is 330 bins at the coarsest
_CHUNK = 1 << 16  # samples per chunk the envelope is reduced in (an hour never sits in memory)


@dataclass(frozen=True)
class AudioInfo:
    """The first audio stream of a file."""

    sample_rate: int
    channels: int
    offset: float  # seconds on the video's time axis at which sample 0 plays
    codec: str
    duration: float  # seconds, from the container (0 when it does not say)


def audio_info(path: str | Path) -> AudioInfo | None:
    """The file's first audio stream, or None when it has none (or PyAV cannot open the file)."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                return None
            a = c.streams.audio[0]
            if a.codec_context is None or not a.rate:
                return None
            a_start = float(a.start_time * a.time_base) if a.start_time is not None and a.time_base else 0.0
            v_start = 0.0
            if c.streams.video:
                v = c.streams.video[0]
                v_start = float(v.start_time * v.time_base) if v.start_time is not None and v.time_base else 0.0
            duration = float(a.duration * a.time_base) if a.duration and a.time_base else (
                c.duration / av.time_base if c.duration else 0.0)
            return AudioInfo(int(a.rate), int(a.channels or 1), a_start - v_start, a.codec_context.name, duration)
    except (av.FFmpegError, OSError) as exc:
        log.info("%s: no audio (%s)", path, exc)
        return None


def sample_at(info: AudioInfo, t: float) -> int:
    """The index of the sample that plays at media time t (clipped at 0)."""
    return max(round((t - info.offset) * info.sample_rate), 0)


def to_float(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """A decoded frame as float32 samples × channels (interleaved order), whatever its sample format."""
    a = frame.to_ndarray()
    if frame.format.is_planar:
        a = a.T
    else:
        a = a.reshape(-1, channels)
    if a.dtype == np.int16:
        return (a / 32768.0).astype(np.float32)
    if a.dtype == np.int32:
        return (a / 2147483648.0).astype(np.float32)
    if a.dtype == np.uint8:
        return ((a.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)


class AudioReader:
    """Samples [start, stop) of a file's first audio stream, in chunks, exactly by sample index.

    A start past the beginning seeks to the keyframe before it and counts samples from the first frame decoded
    there: its index comes from its timestamp, snapped to the codec's frame grid when the container's time base
    is coarser than a sample (FLV's milliseconds: MP3 frames of 1152 samples), so a seek yields the same
    samples as decoding from the start. Not thread-safe: one per thread."""

    def __init__(self, path: str | Path, info: AudioInfo | None = None) -> None:
        self.path = Path(path)
        info = info or audio_info(path)
        if info is None:
            raise ValueError(f"{self.path} has no audio stream")
        self.info = info

    def chunks(self, start: int = 0, stop: int | None = None,
               stopped: Callable[[], bool] | None = None) -> Iterator[np.ndarray]:
        """Float32 (n, channels) chunks covering samples [start, stop) (stop None: to the end); ends early
        once `stopped()` says so."""
        start = max(int(start), 0)
        with av.open(str(self.path)) as c:
            stream = c.streams.audio[0]
            tb = stream.time_base or Fraction(1, self.info.sample_rate)
            s_start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
            coarse = float(tb) * self.info.sample_rate > 1.0
            if start > self.info.sample_rate // 2:
                # Half a second early: the decoder needs a frame or two before the sample we want.
                t = s_start + max(start / self.info.sample_rate - 0.5, 0.0)
                c.seek(int(t / tb), stream=stream, backward=True, any_frame=False)
            pos: int | None = None
            # Timestamps that differ from the count by less than this are rounding (FLV: 1 ms), not holes.
            tol = max(int(0.02 * self.info.sample_rate), int(2 * float(tb) * self.info.sample_rate))
            for packet in c.demux(stream):
                for frame in packet.decode():
                    if stopped is not None and stopped():
                        return
                    x = to_float(frame, self.info.channels)
                    at = None
                    if frame.pts is not None:
                        at = round((float(frame.pts * tb) - s_start) * self.info.sample_rate)
                        if coarse and frame.samples:
                            at = round(at / frame.samples) * frame.samples
                        at = max(at, 0)
                    if pos is None:
                        pos = at or 0
                    elif at is not None and abs(at - pos) > tol:
                        # A hole in the sound track: silence, so every later sample keeps its time (an
                        # overlap drops the samples that came twice).
                        if at > pos:
                            x = np.concatenate([np.zeros((at - pos, x.shape[1]), np.float32), x])
                        else:
                            x = x[pos - at:]
                    a, b = pos, pos + len(x)
                    pos = b
                    if b <= start:
                        continue
                    lo = max(start - a, 0)
                    hi = len(x) if stop is None else min(len(x), stop - a)
                    if hi > lo:
                        yield x[lo:hi]
                    if stop is not None and b >= stop:
                        return

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        parts = list(self.chunks(start, stop))
        return np.concatenate(parts) if parts else np.zeros((0, self.info.channels), np.float32)


class Tempo:
    """Time-stretch at `speed` with the pitch kept: FFmpeg's atempo (chained for speeds under 0.5)."""

    def __init__(self, sample_rate: int, channels: int, speed: float) -> None:
        self.sample_rate, self.channels, self.speed = sample_rate, channels, float(speed)
        self.layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
        g = av.filter.Graph()
        src = g.add_abuffer(format="flt", sample_rate=sample_rate, layout=self.layout,
                            time_base=Fraction(1, sample_rate))
        node, rest = src, self.speed
        while rest < 0.5 - 1e-9:  # atempo takes 0.5…100 in one stage
            nxt = g.add("atempo", "0.5")
            node.link_to(nxt)
            node, rest = nxt, rest / 0.5
        nxt = g.add("atempo", f"{rest:.6f}")
        node.link_to(nxt)
        sink = g.add("abuffersink")
        nxt.link_to(sink)
        g.configure()
        self.graph = g
        self._pts = 0

    def process(self, x: np.ndarray | None) -> list[np.ndarray]:
        """Push samples (None: the end) and return what the filter has ready."""
        if x is not None and len(x):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, np.float32).reshape(1, -1), format="flt",
                                           layout=self.layout)
            f.sample_rate = self.sample_rate
            f.pts = self._pts
            self._pts += len(x)
            self.graph.push(f)
        elif x is None:
            self.graph.push(None)
        out = []
        while True:
            try:
                frame = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            out.append(to_float(frame, self.channels))
        return out


def envelope(path: str | Path, info: AudioInfo | None = None, bin_samples: int = ENVELOPE_BIN,
             factor: int = ENVELOPE_FACTOR, levels: int = ENVELOPE_LEVELS,
             cancelled: Callable[[], bool] | None = None) -> Waveform | None:
    """The min/max envelope of the whole sound track (over all channels) at `levels` resolutions; None without
    audio. Level 0 has one (min, max) per `bin_samples` samples (the last bin may be short), level i+1 merges
    `factor` bins of level i. Streams the samples: an hour costs its decoding time, not its size in memory."""
    info = info or audio_info(path)
    if info is None:
        return None
    mins: list[np.ndarray] = []
    maxs: list[np.ndarray] = []
    carry = np.zeros(0, np.float32)
    total = 0
    for x in AudioReader(path, info).chunks(stopped=cancelled):
        if cancelled is not None and cancelled():
            return None
        total += len(x)
        lo, hi = x.min(axis=1), x.max(axis=1)
        # Interleave (lo, hi) so bins can be cut from one carried buffer.
        both = np.concatenate([carry, np.stack([lo, hi], axis=1).ravel()])
        n = len(both) // (2 * bin_samples)
        if n:
            b = both[: n * 2 * bin_samples].reshape(n, bin_samples, 2)
            mins.append(b[:, :, 0].min(axis=1))
            maxs.append(b[:, :, 1].max(axis=1))
        carry = both[n * 2 * bin_samples:]
    if len(carry):
        b = carry.reshape(-1, 2)
        mins.append(b[:, 0].min(keepdims=True))
        maxs.append(b[:, 1].max(keepdims=True))
    lo0 = np.concatenate(mins) if mins else np.zeros(0, np.float32)
    hi0 = np.concatenate(maxs) if maxs else np.zeros(0, np.float32)
    return Waveform.from_finest(lo0, hi0, bin_samples, factor, levels, info.sample_rate, info.offset, total)
