"""engine.video: frame k is the k-th sequentially decoded frame, on real clips and on awkward files.

References are decoded here with plain PyAV loops, independently of the reader under test.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engine.video import DecodeCancelled, ReaderOptions, VideoError, VideoReader, open_video

N_RANDOM = 20
BITS = 10  # frame numbers drawn as 10 black/white blocks: up to 1023 frames
BLOCK = 16
W, H = BITS * BLOCK, 64


# -- independent references -------------------------------------------------------------------
def plain_decode(path: Path) -> list[np.ndarray]:
    """Every frame a plain sequential PyAV decode presents, as RGB."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def tolerant_decode(path: Path) -> list[np.ndarray]:
    """What is decodable from a damaged file: skip rejected packets, stop at a demux error."""
    frames: list[np.ndarray] = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        packets = c.demux(stream)
        while True:
            try:
                pkt = next(packets)
            except StopIteration:
                break
            except av.FFmpegError:
                pkt = None
            try:
                frames += [f.to_ndarray(format="rgb24") for f in stream.codec_context.decode(pkt)]
            except av.FFmpegError:
                pass
            if pkt is None:
                break
    return frames


def ks_to_check(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [0, n - 1] + [rng.randrange(n) for _ in range(N_RANDOM)]


def assert_matches(reader: VideoReader, ref: list[np.ndarray], ks: list[int]) -> None:
    assert reader.frame_count == len(ref) == len(reader)
    for k in ks:
        got = reader.frame(k)
        assert got.dtype == np.uint8 and got.shape == ref[k].shape
        assert np.array_equal(got, ref[k]), f"{reader.path.name}: frame({k}) differs from decode #{k}"


# -- synthetic files with a visible frame number ----------------------------------------------
def numbered_image(k: int) -> np.ndarray:
    img = np.full((H, W, 3), 128, np.uint8)
    for b in range(BITS):
        img[8:56, b * BLOCK + 2:(b + 1) * BLOCK - 2] = 255 if (k >> b) & 1 else 0
    # A moving gradient gives the encoder real motion, so P/B-frames are not all skips.
    img[56:, :, 0] = (np.arange(W) * 3 + k * 7) % 256
    return img


def read_number(img: np.ndarray) -> int:
    row = img[32, :, :].mean(axis=1)
    return sum(1 << b for b in range(BITS) if row[b * BLOCK + BLOCK // 2] > 128)


def write_numbered(path: Path, pts: list[int], time_base: Fraction, codec: str, options: dict[str, str],
                   gop: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(1, 1) / time_base if codec == "mpeg4" else None,
                                options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.codec_context.gop_size = gop
        for k, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(numbered_image(k), format="rgb24")
            frame.pts, frame.time_base = t, time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.fixture(scope="module")
def long_gop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """H.264, 300 frames, GOP 120 (so seeks land mid-file), 3 B-frames."""
    path = tmp_path_factory.mktemp("video") / "long_gop.mp4"
    write_numbered(path, list(range(300)), Fraction(1, 30), "libx264",
                   {"bf": "3", "crf": "12", "preset": "ultrafast", "scenecut": "0", "b-pyramid": "normal"},
                   gop=120)
    return path


def vfr_pts(n: int) -> list[int]:
    rng = random.Random(7)
    t, out = 0, []
    for _ in range(n):
        out.append(t)
        t += rng.choice([17, 33, 33, 40, 100, 250])  # ms: irregular gaps, including long stalls
    return out


@pytest.fixture(scope="module", params=["mkv", "mp4"])
def vfr(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("video") / f"vfr.{request.param}"
    pts = vfr_pts(90)
    write_numbered(path, pts, Fraction(1, 1000), "libx264",
                   {"bf": "2", "crf": "12", "preset": "ultrafast", "scenecut": "0"}, gop=30)
    return path, pts


# -- shared real clips ------------------------------------------------------------------------
def test_every_shared_clip_is_frame_exact(all_clips: list[Path]) -> None:
    assert all_clips, "no clips found in the shared data"
    for i, clip in enumerate(all_clips):
        ref = plain_decode(clip)
        with open_video(clip) as reader:
            assert_matches(reader, ref, ks_to_check(len(ref), seed=i))
            seq = list(reader)
            assert len(seq) == len(ref)
            assert all(np.array_equal(a, b) for a, b in zip(seq, ref, strict=True))
            ts = reader.timestamps
            assert ts.dtype == np.float64 and ts.shape == (len(ref),)
            assert ts[0] == 0.0 and np.all(np.diff(ts) > 0)


def test_crema_metadata(crema_clips: list[Path]) -> None:
    assert len(crema_clips) == 6
    for clip in crema_clips:
        with open_video(clip) as r:
            info = r.info
            assert info.path == str(clip)
            assert (info.width, info.height) == (r.width, r.height) == (480, 360)
            assert info.fps == pytest.approx(29.97, abs=0.01) and r.fps == info.fps
            assert 56 <= info.frame_count <= 70 and info.frame_count == r.frame_count
            assert info.rotation == 0 and info.codec
            assert info.duration == pytest.approx(info.frame_count / info.fps, abs=1.5 / info.fps)
            assert r.timestamps[-1] == pytest.approx((info.frame_count - 1) / info.fps, abs=0.01)


def test_packet_index_path_agrees_with_decode_index(edge_dir: Path) -> None:
    # Force the packet-index path (normally only for long videos) on a clip with B-frames.
    clip = edge_dir / "single_face.mp4"
    ref = plain_decode(clip)
    with open_video(clip, ReaderOptions(full_decode_max_packets=0, cache_frames=4)) as r:
        assert_matches(r, ref, ks_to_check(len(ref), seed=3))


def test_iter_frames_range_and_stepping(edge_dir: Path) -> None:
    clip = edge_dir / "face_noface.mov"  # HEVC, keyframe every 30 frames, B-frames
    ref = plain_decode(clip)
    with open_video(clip, ReaderOptions(cache_frames=4)) as r:
        got = list(r.iter_frames(45, 95))
        assert [k for k, _ in got] == list(range(45, 95))
        assert all(np.array_equal(img, ref[k]) for k, img in got)
        assert list(r.iter_frames(160, 10_000))[-1][0] == len(ref) - 1
        # GUI stepping: forward across a keyframe, then backward across one.
        for k in [*range(55, 65), *range(64, 25, -1)]:
            assert np.array_equal(r.frame(k), ref[k]), k


# -- files written here -----------------------------------------------------------------------
def test_long_gop_bframes(long_gop: Path) -> None:
    ref = plain_decode(long_gop)
    assert len(ref) == 300
    assert [read_number(img) for img in ref] == list(range(300))  # the drawing survives encoding
    for opts in (ReaderOptions(), ReaderOptions(full_decode_max_packets=0)):
        with open_video(long_gop, opts) as r:
            ks = ks_to_check(300, seed=11) + [119, 120, 121, 239, 240, 241]
            assert_matches(r, ref, ks)
            assert all(read_number(r.frame(k)) == k for k in ks)
            assert r.fps == pytest.approx(30.0)
            assert r.timestamps == pytest.approx(np.arange(300) / 30.0)


def test_cache_resize_keeps_frames_exact(long_gop: Path) -> None:
    """The GUI grows the cache to hold a whole short clip; cached frames must be the same pictures."""
    ref = plain_decode(long_gop)
    with open_video(long_gop) as r:
        r.set_cache_frames(300)
        for k in range(300):  # sequential: one decode pass fills the cache
            r.frame(k)
        assert all(r.is_cached(k) for k in range(300))
        assert_matches(r, ref, ks_to_check(300, seed=5))
        r.set_cache_frames(10)
        assert sum(r.is_cached(k) for k in range(300)) == 10
        assert_matches(r, ref, [0, 150, 299, 7])


def test_cache_centre_evicts_the_farthest_frames(long_gop: Path) -> None:
    """Scrubbing: with a cache centre the frames farthest from the cursor go first, whatever order they were
    decoded in (least-recently-used evicted the first frames of the window around the cursor once the warm-up
    decoded past it); without one, least recently used as before. Frames stay exact."""
    ref = plain_decode(long_gop)
    with open_video(long_gop) as r:
        r.set_cache_frames(40)
        r.set_cache_center(150)
        for k in [*range(140, 170), *range(100, 120), *range(200, 210)]:  # the window, then frames far from it
            r.frame(k)
        cached = {k for k in range(300) if r.is_cached(k)}
        assert len(cached) == 40 and set(range(140, 170)) <= cached  # all of the window stays
        assert_matches(r, ref, [140, 155, 169])
        r.set_cache_center(None)
        for k in range(250, 290):  # least recently used: the 40 newest stay
            r.frame(k)
        assert {k for k in range(300) if r.is_cached(k)} == set(range(250, 290))


def test_variable_frame_rate(vfr: tuple[Path, list[int]]) -> None:
    path, pts = vfr
    ref = plain_decode(path)
    assert len(ref) == len(pts)
    with open_video(path) as r:
        assert_matches(r, ref, ks_to_check(len(pts), seed=5))
        assert all(read_number(r.frame(k)) == k for k in ks_to_check(len(pts), seed=6))
        expected = (np.asarray(pts) - pts[0]) / 1000.0
        assert r.timestamps == pytest.approx(expected, abs=1e-3)
        assert r.info.duration >= expected[-1]


def test_display_rotation_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25, options={"crf": "12", "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.set_display_rotation(90)  # display matrix: turn 90° counter-clockwise to show
        for k in range(12):
            f = av.VideoFrame.from_ndarray(numbered_image(k), format="rgb24")
            f.pts = k
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    ref = [np.rot90(img, 1) for img in plain_decode(path)]
    with open_video(path) as r:
        assert r.info.rotation == 270  # clockwise, like the `rotate` tag
        assert (r.width, r.height) == (H, W)
        assert_matches(r, ref, [0, 11, 5, 3])
        assert read_number(np.rot90(r.frame(7), -1)) == 7


def write_cfr(path: Path, codec: str, options: dict[str, str], n: int = 150, gop: int = 12) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.gop_size = gop
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(numbered_image(k), format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


X264 = {"bf": "3", "crf": "12", "preset": "ultrafast"}


@pytest.mark.parametrize(
    ("ext", "codec", "options"),
    [
        ("avi", "mpeg4", {"bf": "2", "qscale": "2"}),
        ("mov", "mpeg4", {"bf": "2", "qscale": "2"}),
        ("webm", "libvpx", {"crf": "4", "b": "2M"}),
        ("flv", "flv", {"qscale": "2"}),
        ("ts", "libx264", X264),  # MPEG-TS: seeking by pts lands past the keyframe
        ("h264", "libx264", X264),  # raw stream: no timestamps at all
    ],
)
def test_container_zoo(ext: str, codec: str, options: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / f"numbered.{ext}"
    write_cfr(path, codec, options)
    ref = plain_decode(path)
    assert len(ref) == 150
    for opts in (ReaderOptions(), ReaderOptions(full_decode_max_packets=0)):
        with open_video(path, opts) as r:
            ks = ks_to_check(150, seed=9)
            assert_matches(r, ref, ks)
            assert all(read_number(r.frame(k)) == k for k in ks)
            assert [k for k, _ in r.iter_frames(30, 40)] == list(range(30, 40))
            assert r.fps == pytest.approx(25.0, rel=1e-3)
            assert r.timestamps == pytest.approx(np.arange(150) / 25.0, abs=1e-3)


# -- bad input --------------------------------------------------------------------------------
def assert_video_error(path: Path, *words: str) -> VideoError:
    with pytest.raises(VideoError) as err:
        open_video(path)
    msg = str(err.value)
    assert path.name in msg
    for w in words:
        assert w in msg.lower()
    return err.value


def test_bad_inputs(tmp_path: Path) -> None:
    assert_video_error(tmp_path / "missing.mp4", "not found")
    assert_video_error(tmp_path, "folder")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert_video_error(tmp_path / "empty.mp4", "empty")
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 50)
    assert_video_error(tmp_path / "notes.mp4", "not a readable video")


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "voice.wav"
    with av.open(str(path), "w") as out:
        s = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        for p in s.encode(frame):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    assert_video_error(path, "no video stream")


@pytest.mark.parametrize("name", ["crema-d/1001_DFA_ANG_XX.flv", "edge/single_face.mp4", "edge/face_noface.mov"])
@pytest.mark.parametrize("fraction", [0.3, 0.7])
def test_truncated_copy(name: str, fraction: float, all_clips: list[Path], tmp_path: Path) -> None:
    src = next((c for c in all_clips if c.as_posix().endswith(name)), None)
    if src is None:
        pytest.skip(f"{name} not in the shared data")
    data = src.read_bytes()
    cut = tmp_path / f"cut_{src.name}"
    cut.write_bytes(data[: int(len(data) * fraction)])
    try:
        reader = open_video(cut)
    except VideoError as err:
        assert cut.name in str(err)
        return
    ref = tolerant_decode(cut)
    with reader:
        assert 0 < reader.frame_count == len(ref) < len(plain_decode(src))
        assert_matches(reader, ref, ks_to_check(len(ref), seed=1))
        assert sum(1 for _ in reader) == len(ref)


def test_truncated_long_gop_mkv(tmp_path: Path) -> None:
    # mkv keeps its headers in front, so a cut copy opens and the packet index sees a partial tail.
    full = tmp_path / "long.mkv"
    write_numbered(full, list(range(300)), Fraction(1, 30), "libx264",
                   {"bf": "3", "crf": "12", "preset": "ultrafast", "scenecut": "0"}, gop=100)
    data = full.read_bytes()
    cut = tmp_path / "long_cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    ref = tolerant_decode(cut)
    assert 100 < len(ref) < 300
    for opts in (ReaderOptions(), ReaderOptions(full_decode_max_packets=10_000)):
        with open_video(cut, opts) as r:
            assert_matches(r, ref, ks_to_check(len(ref), seed=2))
            assert all(read_number(r.frame(k)) == k for k in (0, 99, 100, 101, len(ref) // 2))
            assert sum(1 for _ in r) == len(ref)


def test_closed_reader_and_range(edge_dir: Path) -> None:
    r = open_video(edge_dir / "single_face.mp4")
    with pytest.raises(IndexError):
        r.frame(r.frame_count)
    with pytest.raises(IndexError):
        r.frame(-1)
    r.close()
    with pytest.raises(VideoError, match="single_face.mp4"):
        r.frame(0)


# -- the sample-table index (no scan of the file at open) --------------------------------------
@pytest.mark.parametrize("ext", ["mp4", "mov"])
def test_sample_table_index_equals_packet_scan(ext: str, tmp_path: Path) -> None:
    """An MP4/MOV without B-frames is indexed from the container's sample table; the index, the keyframes
    and every frame must be what the packet scan (and a plain decode) give."""
    path = tmp_path / f"no_bframes.{ext}"
    write_numbered(path, list(range(0, 3 * 400, 3)), Fraction(1, 90), "libx264",
                   {"bf": "0", "crf": "12", "preset": "ultrafast", "scenecut": "0"}, gop=45)
    ref = plain_decode(path)
    assert len(ref) == 400
    with open_video(path, ReaderOptions(cache_frames=4)) as fast:
        assert fast.indexed_from == "sample table"
        ks = ks_to_check(400, seed=21) + [44, 45, 46, 359, 360, 399]
        assert_matches(fast, ref, ks)
        assert all(read_number(fast.frame(k)) == k for k in ks)
        with open_video(path, ReaderOptions(sample_table=False, cache_frames=4)) as scan:
            assert scan.indexed_from == "packets"
            assert scan.frame_count == fast.frame_count
            assert np.array_equal(scan.timestamps, fast.timestamps)
            assert scan._keys == fast._keys and scan._seek_at == fast._seek_at
        assert fast.timestamps == pytest.approx(np.arange(400) / 30.0)
        assert len(fast._keys) == 9  # a keyframe every 45 frames


def test_sample_table_not_used_with_bframes(long_gop: Path) -> None:
    """B-frames: the sample table's dts are not the pts, so the packets are scanned as before."""
    with open_video(long_gop) as r:
        assert r.indexed_from == "packets"


# -- frames scaled to the player's view, full-size on demand, cancelled warm-up ----------------------------
def test_scaled_frames_are_frame_k_for_every_seek(long_gop: Path) -> None:
    """Scaled output (the player's view of a big video) is still exactly frame k for every seek order, on a
    long-GOP B-frame clip: equal to the k-th plainly decoded frame scaled by the same swscale call."""
    with av.open(str(long_gop)) as c:
        ref = [f.reformat(width=W // 2, height=H // 2, format="rgb24", interpolation="AREA").to_ndarray()
               for f in c.decode(video=0)]
    full_ref = plain_decode(long_gop)
    rng = random.Random(4)
    order = list(range(300))
    rng.shuffle(order)
    with open_video(long_gop, ReaderOptions(cache_frames=24)) as r:
        r.set_output_size((W // 2, H // 2))
        assert r.output_size == (W // 2, H // 2)
        for k in [*order, *range(100, 140), *range(250, 200, -1)]:
            got = r.frame(k)
            assert got.shape == (H // 2, W // 2, 3)
            assert np.array_equal(got, ref[k]), k
            # The drawn number survives halving: 8-px blocks, read at their centres.
            row = got[16].mean(axis=1)
            assert sum(1 << b for b in range(BITS) if row[b * BLOCK // 2 + BLOCK // 4] > 128) == k
        for k in (0, 121, 299, 7):
            assert np.array_equal(r.frame(k, full=True), full_ref[k])
            assert np.array_equal(r.cached(k) if r.cached(k) is not None else r.frame(k), ref[k])
        r.set_output_size(None)
        assert np.array_equal(r.frame(150), full_ref[150])


def test_cancelled_decoding_leaves_the_reader_exact(long_gop: Path) -> None:
    ref = plain_decode(long_gop)
    with open_video(long_gop, ReaderOptions(cache_frames=8)) as r:
        r.frame(10)
        with pytest.raises(DecodeCancelled):
            r.frame(230, stop=lambda: True)  # from keyframe 120: gives up after the first frame
        for k in (231, 229, 12, 230, 119):
            assert np.array_equal(r.frame(k), ref[k]), k


def test_threaded_sequential_decode_is_frame_exact(long_gop: Path) -> None:
    """The analysis decodes HD+ on FFmpeg's threads: the same frames, k for k, from any start."""
    ref = plain_decode(long_gop)
    with open_video(long_gop, ReaderOptions(threaded_min_pixels=0)) as r:
        for start, stop in ((0, 300), (121, 190), (250, 300)):
            got = list(r.iter_frames(start, stop))
            assert [k for k, _ in got] == list(range(start, stop))
            assert all(np.array_equal(img, ref[k]) for k, img in got)


def test_frame_without_caching_between(long_gop: Path) -> None:
    ref = plain_decode(long_gop)
    with open_video(long_gop, ReaderOptions(cache_frames=64)) as r:
        assert np.array_equal(r.frame(200, between=False), ref[200])
        assert r.is_cached(200) and not any(r.is_cached(k) for k in range(120, 200))
        assert np.array_equal(r.frame(150), ref[150])  # back: seek and decode again, frames between cached
        assert all(r.is_cached(k) for k in range(130, 151))
        assert all(np.array_equal(r.frame(k), ref[k]) for k in (199, 201, 149))
