"""Frame-exact video reading with PyAV.

``open_video(path)`` returns a :class:`VideoReader` whose frame ``k`` is always the same picture:
the k-th frame that plain sequential decoding presents, whatever the container, B-frames, edit
lists or variable frame rate. On open the reader indexes the presentation timestamps (pts) of
the video stream:

* normally by demuxing packets only (cheap: no decoding), sorting their pts, and checking the
  start and the end of the stream against a real decode;
* by a full decode pass when the packet index cannot be trusted (missing or duplicate pts,
  demux errors in a truncated file, decoders that drop frames) or the clip is short enough that
  decoding it is as cheap as checking it.

``frame(k)`` seeks to the nearest keyframe at or before frame k, decodes forward to the frame
whose pts is the k-th in the index, and keeps the decoder where it stopped, so stepping forward
(k, k+1, ...) continues decoding instead of seeking again. A small LRU cache holds recent frames.

Thread safety: a reader holds one demuxer/decoder state and is **not** thread-safe. Use one
reader per thread (opening another reader on the same file is cheap). Iterators returned by
``__iter__`` / ``iter_frames`` use their own decoder and do not disturb ``frame(k)``.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Self

import av
import cv2
import numpy as np

log = logging.getLogger(__name__)

# Errors PyAV raises for unreadable input; av.FFmpegError covers InvalidDataError & co.
_AV_ERRORS: tuple[type[BaseException], ...] = (av.FFmpegError, OSError, ValueError, EOFError)


class VideoError(Exception):
    """A video that cannot be opened or read; the message names the file and what to do."""


class DecodeCancelled(Exception):
    """``frame(k, stop=...)`` gave up because ``stop()`` said so (a newer request is waiting)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    frame_count: int
    width: int  # as displayed (rotation applied)
    height: int  # as displayed (rotation applied)
    duration: float  # seconds, frame_count frames of presentation time
    rotation: int  # degrees clockwise applied for display: 0, 90, 180 or 270
    codec: str


@dataclass(frozen=True)
class ReaderOptions:
    """How a reader indexes and caches; the defaults suit the GUI and the analysis jobs."""

    cache_frames: int = 16
    # Streams with at most this many packets are indexed by a full decode pass: for short clips
    # that costs about as much as checking the packet index, and it is exact by construction.
    full_decode_max_packets: int = 120
    # Frames decoded at the start of a long stream to check the packet index against the decoder.
    head_check_frames: int = 24
    # Index MP4/MOV streams without B-frames from the container's sample table instead of a packet scan.
    sample_table: bool = True
    # `iter_frames` (the analysis's sequential decode) uses FFmpeg's decoder threads from this many pixels
    # per frame on (HD and up): there decoding is a large share of the work; below it a thread is plenty.
    threaded_min_pixels: int = 1280 * 720
    # `iter_frames(analysis=True)` gives frames of at least this many pixels as AnalysisFrames (luma, and
    # colour only where asked) instead of converting all of a 1080p or 4K frame to RGB; below it the RGB
    # conversion costs next to nothing and the analysis reads the RGB frame as before.
    analysis_min_pixels: int = 1280 * 720


@dataclass
class _Packet:
    pts: int | None
    dts: int | None
    key: bool
    discard: bool


def _err(path: Path, what: str, todo: str) -> VideoError:
    return VideoError(f"{path}: {what}. {todo}")


_DAMAGED = "Check that the file plays in a media player; re-export or re-copy it if it is damaged."


class _Decoder:
    """One demuxer + decoder on the file, with the presented index of the next frame it returns.

    ``pts_to_k`` maps a frame's pts to its presented index; when it is None the reader works in
    ordinal mode (timestamps not usable) and frames are counted from the start of the file.
    """

    def __init__(self, path: Path, stream_index: int, pts_to_k: dict[int, int] | None, threads: bool = False) -> None:
        self.path = path
        self.threads = threads  # let FFmpeg decode on several threads (frame and slice threading)
        self.stream_index = stream_index
        self.pts_to_k = pts_to_k
        self.container: av.container.InputContainer | None = None
        self._gen: Iterator[av.VideoFrame] | None = None
        self.next_k = 0  # presented index of the next frame read() returns (best knowledge)
        self._ordinal = 0
        self._trusted_from: int | None = None  # after a seek, pts below the keyframe are unreliable
        self.restart()

    def _open(self) -> None:
        self.close()
        try:
            self.container = av.open(str(self.path))
        except _AV_ERRORS as exc:
            raise _err(self.path, f"cannot be reopened ({exc})", _DAMAGED) from exc
        self.stream = self.container.streams[self.stream_index]
        if self.threads:
            # Same frames in the same order, with pts; only decoded ahead on FFmpeg's own threads.
            self.stream.thread_type = "AUTO"

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
        self._gen = None

    def restart(self) -> None:
        """Back to the first frame; reopening is more robust than seeking to 0 (edit lists)."""
        self._open()
        self._gen = _decode_packets(self.container, self.stream, self.path)
        self.next_k = 0
        self._ordinal = 0
        self._trusted_from = None

    def seek(self, ts: int, key_pts: int, first_k: int) -> bool:
        """Seek to the keyframe at or before ``ts``; frames before ``key_pts`` are then ignored."""
        assert self.container is not None
        try:
            self.container.seek(ts, stream=self.stream, backward=True, any_frame=False)
        except _AV_ERRORS as exc:
            log.debug("%s: seek to %d failed (%s)", self.path, ts, exc)
            return False
        self._gen = _decode_packets(self.container, self.stream, self.path)
        self.next_k = first_k
        self._trusted_from = key_pts
        return True

    def read(self) -> tuple[int, av.VideoFrame] | None:
        """Next presented frame as (k, frame), or None at the end of the stream."""
        assert self._gen is not None
        for frame in self._gen:
            if self.pts_to_k is None:
                k = self._ordinal
                self._ordinal += 1
            else:
                if frame.pts is None:
                    continue
                k_found = self.pts_to_k.get(frame.pts)
                if k_found is None:
                    continue
                if self._trusted_from is not None and frame.pts < self._trusted_from:
                    # A leading picture decoded without its references after a seek.
                    continue
                k = k_found
            self.next_k = k + 1
            return k, frame
        self._gen = iter(())
        return None


def _decode_packets(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order; a damaged packet or a cut-off file ends nothing early.

    A packet the decoder rejects is skipped (its frame is simply not presented) and a demux error
    (truncated file) is treated as the end of the file, after draining the decoder.
    """
    ctx = stream.codec_context
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except _AV_ERRORS as exc:
            log.debug("%s: demux stopped (%s); treating as end of file", path, exc)
            packet = None
        try:
            frames = ctx.decode(packet)
        except _AV_ERRORS as exc:
            log.debug("%s: decoder rejected a packet (%s)", path, exc)
            frames = []
        yield from frames
        if packet is None:
            return


def _rotation_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Clockwise display rotation in degrees (0/90/180/270), from the display matrix or `rotate` tag."""
    ccw = 0.0
    try:
        ccw = float(frame.rotation or 0)
    except _AV_ERRORS:
        ccw = 0.0
    if ccw == 0.0:
        tag = stream.metadata.get("rotate")
        if tag is not None:
            try:
                return round(float(tag) / 90.0) % 4 * 90
            except ValueError:
                return 0
    # The display matrix angle is counter-clockwise; the player turns the picture that way.
    return round(-ccw / 90.0) % 4 * 90


# Pixel formats an AnalysisFrame reads directly: 8-bit 4:2:0 planar (what cameras and phones write).
_PLANAR_420 = ("yuv420p", "yuvj420p")


class AnalysisFrame:
    """One decoded frame as the analysis reads it, without converting all of it to RGB.

    A 4K frame is 8 M pixels; the face tracker needs grey, and colour only around faces (the model's
    crop, face descriptors). This holds the decoder's frame and gives

    * ``luma``: the Y plane (H×W uint8, a read-only view, no copy) for the face detector's whole-frame
      passes, with ``grey_of_luma`` mapping luma values to the grey of a neutral pixel;
    * ``rgb(rect)``: the RGB of any rectangle, exactly the pixels ``VideoReader`` frames have there (the
      same FFmpeg conversion, on a sub-frame cut from the planes at even offsets, so chroma lines up);
    * ``grey(rect)``: exactly ``cv2.cvtColor(rgb, RGB2GRAY)`` of that rectangle.

    Only for 8-bit 4:2:0 frames of even width and height shown as stored (no rotation); see ``VideoReader.iter_frames``. Read-only and
    safe to read from several threads (each call converts its own sub-frame).
    """

    def __init__(self, frame: av.VideoFrame, lut: np.ndarray) -> None:
        self._frame = frame
        self._format = frame.format.name
        self._planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[: p.height, : p.width]
                        for p in frame.planes]
        self.luma = self._planes[0]
        self.height, self.width = int(frame.height), int(frame.width)
        self.shape = (self.height, self.width, 3)  # as the RGB frame would be
        self.lut = lut
        self._kept: list[tuple[int, int, int, int, np.ndarray]] = []  # regions converted with keep=True

    def grey_of_luma(self, img: np.ndarray) -> np.ndarray:
        """Luma values (e.g. a scaled copy of ``luma``) as grey: what RGB2GRAY gives a neutral pixel."""
        return cv2.LUT(img, self.lut)

    def clip(self, rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """``rect`` (x0, y0, x1, y1, x1/y1 exclusive) cut to the frame, x0/y0 rounded down to even."""
        x0, y0, x1, y1 = (int(v) for v in rect)
        x0, y0 = max(0, x0) & ~1, max(0, y0) & ~1
        return x0, y0, max(x0, min(self.width, x1)), max(y0, min(self.height, y1))

    def rgb(self, rect: tuple[int, int, int, int] | None = None, keep: bool = False) -> np.ndarray:
        """RGB uint8 of ``rect`` cut to the frame (the whole frame without one). Read-only where it comes from a
        region converted before with ``keep`` (the tracker keeps the region around each face, which then also
        holds the model's crop of it)."""
        if rect is None:
            return self._frame.to_ndarray(format="rgb24")
        x0, y0, x1, y1 = (int(v) for v in rect)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(self.width, x1), min(self.height, y1)
        if x1 <= x0 or y1 <= y0:
            return np.zeros((max(y1 - y0, 0), max(x1 - x0, 0), 3), np.uint8)
        for kx0, ky0, kx1, ky1, kept in self._kept:
            if kx0 <= x0 and ky0 <= y0 and x1 <= kx1 and y1 <= ky1:
                return kept[y0 - ky0:y1 - ky0, x0 - kx0:x1 - kx0]
        # Chroma samples cover 2×2 pixels from even offsets; FFmpeg converts even sizes as it does the whole
        # (even-sized) frame, odd ones another way.
        ex, ey = x0 & ~1, y0 & ~1
        w, h = (x1 - ex + 1) & ~1, (y1 - ey + 1) & ~1
        sub = av.VideoFrame(w, h, self._format)
        sub.colorspace = self._frame.colorspace  # the conversion reads the matrix from the frame
        cuts = ((ey, ey + h, ex, ex + w), (ey // 2, (ey + h) // 2, ex // 2, (ex + w) // 2))
        for i, (plane, src) in enumerate(zip(sub.planes, self._planes, strict=True)):
            r0, r1, c0, c1 = cuts[min(i, 1)]
            np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: r1 - r0, : c1 - c0] = src[r0:r1, c0:c1]
        # One thread: swscale's own threads (its default) cost more to start than such a region takes to convert.
        rgb = sub.to_ndarray(format="rgb24", threads=1)[y0 - ey:y1 - ey, x0 - ex:x1 - ex]
        if keep:
            rgb.setflags(write=False)
            self._kept.append((x0, y0, x1, y1, rgb))  # a list append: safe beside readers on other threads
        return rgb

    def grey(self, rect: tuple[int, int, int, int] | None = None, keep: bool = False) -> np.ndarray:
        """Grey uint8 of ``rect`` cut to the frame: RGB2GRAY of ``rgb(rect, keep)``."""
        return cv2.cvtColor(np.ascontiguousarray(self.rgb(rect, keep)), cv2.COLOR_RGB2GRAY)


_luts: dict[tuple[str, int], np.ndarray] = {}


def _luma_lut(frame: av.VideoFrame) -> np.ndarray:
    """Grey (RGB2GRAY of FFmpeg's RGB) of a neutral pixel for each luma value, in this frame's format and
    colour matrix: measured through the same conversion once, so limited/full range and the matrix are
    whatever FFmpeg applies."""
    key = (frame.format.name, int(frame.colorspace))
    lut = _luts.get(key)
    if lut is None:
        ramp = av.VideoFrame(512, 2, frame.format.name)
        ramp.colorspace = frame.colorspace
        values = (np.repeat(np.arange(256, dtype=np.uint8), 2)[None], 128, 128)
        for plane, v in zip(ramp.planes, values, strict=True):
            np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[: plane.height, : plane.width] = v
        grey = cv2.cvtColor(ramp.to_ndarray(format="rgb24"), cv2.COLOR_RGB2GRAY)
        lut = _luts[key] = np.ascontiguousarray(grey[0, ::2])
    return lut


class VideoReader:
    """Frame-exact access to one video file; see the module docstring. Not thread-safe."""

    def __init__(self, path: str | Path, options: ReaderOptions | None = None) -> None:
        self.path = Path(path)
        self.options = options or ReaderOptions()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._dec: _Decoder | None = None
        self._closed = False
        self._seek_by_dts = False
        self._out_size: tuple[int, int] | None = None
        self._stop_fn: Callable[[], bool] | None = None
        self._keep_between = True
        self._center: int | None = None  # set_cache_center
        self.indexed_from = "packets"  # or "sample table" (see _sample_table)
        self._build_index()

    # -- opening and indexing -------------------------------------------------------------
    def _check_path(self) -> None:
        p = self.path
        if not p.exists():
            raise _err(p, "file not found", "Check the path, or choose the video again.")
        if p.is_dir():
            raise _err(p, "is a folder, not a video file", "Choose a video file inside it.")
        if p.stat().st_size == 0:
            raise _err(p, "file is empty (0 bytes)", "Copy or export the video again.")

    def _build_index(self) -> None:
        self._check_path()
        path = self.path
        try:
            container = av.open(str(path))
        except _AV_ERRORS as exc:
            raise _err(
                path,
                f"not a readable video: FFmpeg cannot open it ({exc.__class__.__name__}); it is not a video "
                "or it is incomplete (an mp4/mov cut off before its index at the end cannot be read)",
                "Choose a video file (mp4, mov, avi, mkv, flv, webm) that plays in a media player, "
                "or copy/download it again",
            ) from exc
        try:
            self._index_container(container)
        finally:
            container.close()

    def _index_container(self, container: av.container.InputContainer) -> None:
        path = self.path
        if not container.streams.video:
            raise _err(path, "contains no video stream", "Choose a file with a video track.")
        stream = container.streams.video[0]
        self._stream_index = stream.index
        ctx = stream.codec_context
        if ctx is None:
            raise _err(path, "uses a video codec this build cannot decode",
                       "Convert it to H.264 mp4, e.g. `ffmpeg -i in -c:v libx264 out.mp4`.")
        self.codec = ctx.name
        self.time_base: Fraction | None = stream.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate

        packets = self._sample_table(container, stream)
        if packets is not None:
            index = [p.pts for p in packets if not p.discard]  # increasing: checked in _sample_table
            self._set_keys(packets)
            if self._sample_table_agrees(index):  # type: ignore[arg-type]
                log.debug("%s: indexed from the container's sample table", path)
            else:
                log.debug("%s: the sample table disagrees with the decoder; scanning the packets", path)
                packets = None
        if packets is None:
            packets, demux_ok = self._demux_packets(container, stream)
        else:
            demux_ok = True
        shown = [p for p in packets if not p.discard]
        pts = [p.pts for p in shown]
        pts_ok = bool(pts) and all(t is not None for t in pts) and len(set(pts)) == len(pts)
        self._set_keys(packets)

        index: list[int] | None = sorted(pts) if pts_ok else None  # type: ignore[type-var]
        reason = ""
        if not demux_ok:
            reason = "demuxing stopped early (truncated or damaged file)"
        elif not pts_ok:
            reason = "packet timestamps are missing or repeated"
        elif len(packets) <= self.options.full_decode_max_packets:
            reason = "short clip"
        elif self.indexed_from == "sample table":
            pass  # checked above, head and whole tail against the decoder
        elif not self._packet_index_agrees(index):
            reason = "the decoder presents other frames than the packets announce"
        n = len(index) if index is not None else 0
        if reason:
            log.debug("%s: indexing by decoding (%s)", path, reason)
            decoded = self._decoded_pts()
            n = len(decoded)
            usable = all(t is not None for t in decoded) and all(
                b > a for a, b in itertools.pairwise(decoded)  # type: ignore[operator]
            )
            index = decoded if usable else None  # type: ignore[assignment]

        if index is None:
            # Ordinal mode: frames are counted, timestamps come from the nominal rate.
            self._pts_to_k: dict[int, int] | None = None
            self._index_pts: list[int] | None = None
            fps = float(rate) if rate else 25.0
            self.timestamps = np.arange(n, dtype=np.float64) / fps
            log.warning("%s: no usable timestamps; random access decodes from the start", path)
        else:
            self._index_pts = index
            self._pts_to_k = {t: k for k, t in enumerate(index)}
            tb = float(self.time_base) if self.time_base else 1.0
            self.timestamps = (np.asarray(index, dtype=np.float64) - index[0]) * tb
            # The mean rate of the frames actually presented: container rates can count frames
            # an edit list hides, or be a nominal rate for variable-rate phone video.
            if n > 1 and self.timestamps[-1] > 0:
                fps = (n - 1) / float(self.timestamps[-1])
            else:
                fps = float(rate) if rate else 25.0
        if n == 0:
            raise _err(path, "contains no decodable video frames",
                       "The file may be damaged or cut off; export or copy it again.")
        self.frame_count = n

        self._dec = _Decoder(path, self._stream_index, self._pts_to_k)
        first = self._dec.read()
        if first is None:
            raise _err(path, "contains no decodable video frames", _DAMAGED)
        self.rotation = _rotation_of(first[1], self._dec.stream)
        rgb = self._to_rgb(first[1])
        self._remember(first[0], rgb)
        self.height, self.width = int(rgb.shape[0]), int(rgb.shape[1])
        self.fps = fps
        # Presentation time covered: last frame's start plus one nominal frame.
        duration = float(self.timestamps[-1]) + 1.0 / fps
        self.info = VideoInfo(
            path=str(path), fps=fps, frame_count=n, width=self.width, height=self.height,
            duration=duration, rotation=self.rotation, codec=self.codec,
        )
        log.debug("%s: %d frames, %.3f fps, %dx%d, %s", path, n, fps, self.width, self.height, self.codec)

    def _set_keys(self, packets: list[_Packet]) -> None:
        """Keyframes by pts, each with the timestamp to seek to. Some demuxers (mp4/mov) seek by dts, which
        is <= pts for a keyframe; with backward=True the lower value can only land on this keyframe or an
        earlier one, never past it."""
        self._seek_at: dict[int, int] = {}
        for p in packets:
            if p.key and p.pts is not None:
                self._seek_at[p.pts] = min(p.pts, p.dts) if p.dts is not None else p.pts
        self._keys = sorted(self._seek_at)

    def _sample_table(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> list[_Packet] | None:
        """The packets of an MP4/MOV video stream from the index FFmpeg builds out of the container's sample
        table at open (no scan of the file: an hour of 1080p is ~350 MB to read otherwise), or None where
        that index cannot stand in for the packets.

        FFmpeg's MOV index holds every sample with its dts (edit lists applied, discarded samples flagged)
        but not the composition offsets, so it is used only for streams the decoder presents in decoding
        order (no B-frames: pts = dts) and whose every sample is indexed (not fragmented MP4). The
        caller still checks it against real decoding (`_sample_table_agrees`)."""
        self.indexed_from = "packets"
        if not self.options.sample_table:
            return None
        try:
            if "mp4" not in container.format.name.split(",") and "mov" not in container.format.name.split(","):
                return None
            ctx = stream.codec_context
            if ctx.has_b_frames or not stream.frames:
                return None
            entries = stream.index_entries
            n = len(entries)
            if n != stream.frames or n <= self.options.full_decode_max_packets:
                return None
            packets = [_Packet(e.timestamp, e.timestamp, bool(e.is_keyframe), bool(e.is_discard)) for e in entries]
        except (*_AV_ERRORS, AttributeError) as exc:  # an older PyAV without index_entries
            log.debug("%s: no usable sample table (%s)", self.path, exc)
            return None
        ts = [p.pts for p in packets]
        if any(b <= a for a, b in itertools.pairwise(ts)) or not packets[0].key:  # type: ignore[operator]
            return None
        self.indexed_from = "sample table"
        return packets

    def _sample_table_agrees(self, index: list[int]) -> bool:
        """The sample-table index against the decoder: the first frames, and every frame from the last
        keyframe to the end of the stream, must be presented with exactly the indexed pts (no extra frame
        after the last indexed one, none missing)."""
        self._keys = sorted(self._seek_at)
        if not index or not self._keys:
            return False
        head = self._decoded_pts(self.options.head_check_frames)
        if head != index[: len(head)]:
            return False
        last_key = self._keys[-1]
        tail_start = bisect.bisect_left(index, last_key)
        dec = _Decoder(self.path, self._stream_index, None)
        try:
            if not dec.seek(last_key, last_key, tail_start):
                return False
            seen: list[int | None] = []
            while (got := dec.read()) is not None:
                seen.append(got[1].pts)
        finally:
            dec.close()
        return seen == index[tail_start:]

    def _demux_packets(
        self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> tuple[list[_Packet], bool]:
        packets: list[_Packet] = []
        try:
            for pkt in container.demux(stream):
                if pkt.size == 0:  # the flush packet PyAV appends, or an empty one
                    continue
                packets.append(_Packet(pkt.pts, pkt.dts, bool(pkt.is_keyframe), bool(pkt.is_discard)))
        except _AV_ERRORS as exc:
            log.debug("%s: demux error after %d packets: %s", self.path, len(packets), exc)
            return packets, False
        return packets, True

    def _decoded_pts(self, limit: int | None = None) -> list[int | None]:
        dec = _Decoder(self.path, self._stream_index, None)
        out: list[int | None] = []
        try:
            while limit is None or len(out) < limit:
                got = dec.read()
                if got is None:
                    break
                out.append(got[1].pts)
        finally:
            dec.close()
        return out

    def _packet_index_agrees(self, index: list[int]) -> bool:
        """Check a long stream's packet index at its start and its end against real decoding."""
        head = self._decoded_pts(self.options.head_check_frames)
        if head != index[: len(head)]:
            return False
        # The tail catches truncation and decoders that drop the last frames.
        if not self._keys:
            return False
        last_key = self._keys[bisect.bisect_right(self._keys, index[-1]) - 1]
        tail_start = bisect.bisect_left(index, last_key)
        pts_to_k = {t: k for k, t in enumerate(index)}
        # Seek by the keyframe's pts first, then by its dts for demuxers (MPEG-TS) that land past it.
        for by_dts, ts in ((False, last_key), (True, self._seek_at[last_key])):
            dec = _Decoder(self.path, self._stream_index, pts_to_k)
            try:
                if not dec.seek(ts, last_key, tail_start):
                    continue
                seen: list[int] = []
                while (got := dec.read()) is not None:
                    seen.append(got[0])
            finally:
                dec.close()
            if seen and seen[0] <= tail_start:
                self._seek_by_dts = by_dts
                return seen == list(range(seen[0], len(index)))
        return False

    # -- frames ---------------------------------------------------------------------------
    def set_output_size(self, size: tuple[int, int] | None) -> None:
        """Frames from ``frame(k)`` scaled to ``size`` (width, height as displayed) instead of full size; None:
        full size. For a player showing a 1080p or 4K video in a smaller view: a scaled frame is converted
        in the same pass as its colours, cached at a fraction of the memory, and drawn faster. The cache is
        dropped when the size changes (it holds frames of one size only). ``frame(k, full=True)`` still
        gives the full-size picture."""
        if size is not None:
            w, h = max(int(size[0]), 2), max(int(size[1]), 2)
            size = None if (w, h) == (self.width, self.height) else (w, h)
        if size != self._out_size:
            self._out_size = size
            self._cache.clear()

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames ``frame(k)`` returns."""
        return self._out_size or (self.width, self.height)

    def _to_rgb(self, frame: av.VideoFrame, full: bool = False) -> np.ndarray:
        if self._out_size is not None and not full:
            w, h = self._out_size
            if self.rotation in (90, 270):
                w, h = h, w  # scaled before it is turned
            # AREA: a proper downscale (each output pixel averages the ones it covers), in swscale's one pass.
            rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
        else:
            rgb = frame.to_ndarray(format="rgb24")
        if self.rotation:
            # np.rot90 turns counter-clockwise; rotation is clockwise.
            rgb = np.ascontiguousarray(np.rot90(rgb, k=-(self.rotation // 90)))
        return rgb

    def set_cache_frames(self, frames: int) -> None:
        """Keep up to ``frames`` decoded frames (the GUI sizes this by bytes once it knows the frame size)."""
        self.options = replace(self.options, cache_frames=max(int(frames), 0))
        while len(self._cache) > self.options.cache_frames:
            self._cache.popitem(last=False)

    def set_cache_center(self, k: int | None) -> None:
        """Evict the cached frame farthest from frame k first (a player's cursor: the frames around it are the
        ones a reviewer scrubs to) instead of the least recently used; None: least recently used again."""
        self._center = None if k is None else int(k)

    def is_cached(self, k: int) -> bool:
        """Whether frame k would come from the cache (no decoding)."""
        return int(k) in self._cache

    def _remember(self, k: int, rgb: np.ndarray) -> None:
        if self.options.cache_frames <= 0:
            return
        self._cache[k] = rgb
        self._cache.move_to_end(k)
        while len(self._cache) > self.options.cache_frames:
            if self._center is None:
                self._cache.popitem(last=False)
            else:
                c = self._center
                del self._cache[max(self._cache, key=lambda j: abs(j - c))]

    def _check_k(self, k: int) -> int:
        if self._closed:
            raise VideoError(f"{self.path}: the video reader was closed. Open the video again.")
        k = int(k)
        if not 0 <= k < self.frame_count:
            raise IndexError(f"{self.path}: frame {k} out of range 0..{self.frame_count - 1}")
        return k

    def _seek_plan(self, k: int) -> list[tuple[int, int, int] | None]:
        """Ways to reach frame k, cheapest first: (seek ts, keyframe pts, keyframe's k) or None = start.

        The keyframe's pts comes first (mp4, mov, mkv seek by pts); if the demuxer lands past the
        target, the previous keyframe's dts (demuxers that seek by dts land at or before it), and
        finally decoding from the start of the file, which is always right.
        """
        if self._index_pts is None or not self._keys:
            return [None]
        i = bisect.bisect_right(self._keys, self._index_pts[k]) - 1
        plan: list[tuple[int, int, int] | None] = []
        for j in (i, i - 1):
            if j >= 1:  # keyframe 0 is the start of the file: reopening is more robust there
                key = self._keys[j]
                ts = key if j == i and not self._seek_by_dts else self._seek_at[key]
                plan.append((ts, key, bisect.bisect_left(self._index_pts, key)))
        plan.append(None)
        return plan

    def cached(self, k: int) -> np.ndarray | None:
        """Frame k from the cache, or None; no decoding. The array is the cache's own: do not modify it.

        The one call that may come from another thread than the reader's: it is a single dict lookup
        (atomic in CPython) and cached arrays are never written, only dropped."""
        return self._cache.get(int(k))

    def frame(self, k: int, full: bool = False, stop: Callable[[], bool] | None = None,
              between: bool = True) -> np.ndarray:
        """The k-th presented frame, RGB uint8 H×W×3 as displayed (a copy the caller may modify), at the
        output size (`set_output_size`), or at full size with ``full`` (not cached then). With ``stop``,
        decoding gives up between two frames once ``stop()`` is true (raises DecodeCancelled); what it
        decoded so far stays cached and the decoder where it stopped. Frames decoded on the way to k are
        converted and cached too (stepping back is then a cache hit) unless ``between`` is False: a
        caller waiting for k alone gets it sooner (a 1080p conversion costs about what a decode does)."""
        self._stop_fn = stop
        self._keep_between = between
        k = self._check_k(k)
        full = full and self._out_size is not None
        hit = None if full else self._cache.get(k)
        if hit is not None:
            self._cache.move_to_end(k)
            return hit.copy()
        dec = self._dec
        assert dec is not None
        plan = self._seek_plan(k)
        first = plan[0]
        key_k = 0 if first is None else first[2]
        # Continue from where the decoder stands when that is no more work than seeking.
        if key_k <= dec.next_k <= k:
            rgb = self._decode_to(k, full)
            if rgb is not None:
                return rgb.copy()
        for n, step in enumerate(plan):
            if step is None:
                dec.restart()
            elif not dec.seek(*step):
                continue
            rgb = self._decode_to(k, full)
            if rgb is not None:
                if n == 1 and step is not None and not self._seek_by_dts:
                    # This demuxer (e.g. MPEG-TS) lands past a keyframe sought by its pts.
                    self._seek_by_dts = True
                    log.debug("%s: seeking by keyframe dts from now on", self.path)
                return rgb.copy()
            log.debug("%s: reaching frame %d via %s missed; trying the next way", self.path, k, step)
        raise _err(self.path, f"frame {k} could not be decoded", _DAMAGED)

    def _decode_to(self, k: int, full: bool = False) -> np.ndarray | None:
        """Decode forward to frame k; None if the decoder is already past it or the stream ends."""
        dec = self._dec
        assert dec is not None
        keep_from = k - max(self.options.cache_frames // 2, 1) + 1
        while (got := dec.read()) is not None:
            j, frame = got
            if j > k:
                return None
            if j != k and self._stop_fn is not None and self._stop_fn():
                raise DecodeCancelled(f"{self.path}: decoding frame {k} cancelled at frame {j}")
            if j == k:
                if full:
                    return self._to_rgb(frame, full=True)
                rgb = self._to_rgb(frame)
                self._remember(k, rgb)
                return rgb
            if j >= keep_from and not full and self._keep_between:
                # Cheap now, and it makes stepping backwards a cache hit.
                self._remember(j, self._to_rgb(frame))
        return None

    # -- iteration ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[np.ndarray]:
        for _, rgb in self.iter_frames():
            yield rgb

    def iter_frames(self, start: int = 0, stop: int | None = None, threads: bool | None = None,
                    analysis: bool = False) -> Iterator[tuple[int, np.ndarray | AnalysisFrame]]:
        """Frames ``start <= k < stop`` in order as (k, rgb), decoded with a private decoder (on FFmpeg's
        threads with ``threads``; None: for frames of at least ``options.threaded_min_pixels``).

        With ``analysis``, frames of at least ``options.analysis_min_pixels`` come as :class:`AnalysisFrame`
        (luma, and exact RGB of the regions asked for) where the frame allows it (8-bit 4:2:0, no
        rotation), the others as RGB arrays."""
        if self._closed:
            raise VideoError(f"{self.path}: the video reader was closed. Open the video again.")
        stop = self.frame_count if stop is None else min(int(stop), self.frame_count)
        start = max(int(start), 0)
        if start >= stop:
            return
        if threads is None:
            threads = self.width * self.height >= self.options.threaded_min_pixels
        dec = _Decoder(self.path, self._stream_index, self._pts_to_k, threads=threads)
        try:
            step = self._seek_plan(start)[0]
            restarted = step is None or not dec.seek(*step)
            if restarted:
                dec.restart()
            expected = start
            while expected < stop:
                got = dec.read()
                if got is None or got[0] > expected:
                    if not restarted:
                        restarted = True
                        dec.restart()
                        continue
                    raise _err(self.path, f"frame {expected} could not be decoded", _DAMAGED)
                j, frame = got
                if j < expected:
                    continue
                expected = j + 1
                if analysis and self._analysable(frame):
                    yield j, AnalysisFrame(frame, _luma_lut(frame))
                else:
                    yield j, self._to_rgb(frame, full=True)
        finally:
            dec.close()

    def _analysable(self, frame: av.VideoFrame) -> bool:
        return (not self.rotation and frame.format.name in _PLANAR_420 and frame.width % 2 == 0
                and frame.height % 2 == 0 and frame.width * frame.height >= self.options.analysis_min_pixels)

    def __len__(self) -> int:
        return self.frame_count

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        if self._dec is not None:
            self._dec.close()
            self._dec = None
        self._cache.clear()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter shutdown av may already be gone; a leaked handle is all that is lost.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, {self.frame_count} frames, {self.fps:.3f} fps)"


def open_video(path: str | Path, options: ReaderOptions | None = None) -> VideoReader:
    """Open any video FFmpeg reads; raises :class:`VideoError` naming the file if it cannot."""
    return VideoReader(path, options)


__all__ = ["AnalysisFrame", "DecodeCancelled", "ReaderOptions", "VideoError", "VideoInfo", "VideoReader", "open_video"]
