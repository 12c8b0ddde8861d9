"""Sound (issue 18): decoding a CREMA-D clip's speech with PyAV, the player feeding exactly the played frames'
samples to the sink (a FakeSink that records them; CI has no audio device), the audio clock leading the video,
the waveform envelope, and videos without sound playing as before with a status note."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from engine.audio import AudioReader, audio_info, envelope, sample_at


def _pyav_samples(path: Path) -> np.ndarray:
    """The whole sound track decoded straight through with PyAV (no seeking), float32 (n, channels)."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        parts = []
        for frame in c.decode(s):
            a = frame.to_ndarray()
            parts.append(a.T if frame.format.is_planar else a.reshape(-1, s.channels))
    return np.concatenate(parts).astype(np.float32)


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, np.float32).tobytes()).hexdigest()


def test_decode_the_speech_of_a_crema_clip(hap_clip: Path) -> None:
    info = audio_info(hap_clip)
    assert info is not None and info.sample_rate == 44100 and info.channels == 1
    assert info.offset == pytest.approx(-0.027)  # audio at 0 ms, video at 27 ms (FLV)
    ref = _pyav_samples(hap_clip)
    got = AudioReader(hap_clip, info).read()
    assert got.shape == ref.shape and _digest(got) == _digest(ref)
    assert np.abs(ref).max() > 0.1  # speech, not silence
    # A stretch from the middle (seeks to a keyframe, then counts samples) is the same stretch.
    for start in (30_000, 61_234):
        part = AudioReader(hap_clip, info).read(start, start + 9_000)
        assert _digest(part) == _digest(ref[start:start + 9_000])


def _open_player(qtbot, clip: Path, sink):
    from vidxai_gui.player import Player

    player = Player()
    qtbot.addWidget(player)
    player.audio.sink = sink
    with qtbot.waitSignals([player.videoOpened, player.audio.infoReady], timeout=10_000):
        player.open(clip)
    qtbot.waitUntil(lambda: player.current == 0, timeout=5000)
    return player


def test_the_sink_gets_exactly_the_samples_of_the_played_frames(qtbot, hap_clip: Path) -> None:
    from vidxai_gui.audio import FakeSink

    sink = FakeSink()
    player = _open_player(qtbot, hap_clip, sink)
    shown: list[tuple[int, float]] = []
    player.frameShown.connect(lambda k: shown.append((k, player.audio.clock())))
    a, b = 12, 40
    player.play_range(a, b)
    qtbot.waitUntil(lambda: player.sound_on, timeout=5000)  # once frame a is decoded (pre-roll)
    qtbot.waitUntil(lambda: not player.playing, timeout=10_000)
    ts, info = player.timestamps, player.audio.info
    ref = _pyav_samples(hap_clip)[sample_at(info, ts[a]):sample_at(info, ts[b])]
    got = sink.samples
    assert len(got) == len(ref) == sample_at(info, ts[b]) - sample_at(info, ts[a])
    assert _digest(got) == _digest(ref)
    # The video followed the audio clock: frames in order, inside the range, each shown once its time came.
    frames = [k for k, _ in shown]
    assert frames == sorted(frames) and frames[0] == a and frames[-1] == b - 1
    assert all(c >= ts[k] - 1e-3 for k, c in shown[1:])
    assert player.current == b - 1


def test_loop_plays_the_range_again_until_stopped(qtbot, hap_clip: Path) -> None:
    from vidxai_gui.audio import FakeSink
    from vidxai_gui.player_sound import SNIPPET_S

    sink = FakeSink()
    player = _open_player(qtbot, hap_clip, sink)
    player.play_range(20, 26, loop=True)
    qtbot.waitUntil(lambda: sink.opens >= 3, timeout=10_000)  # started twice again
    assert player.playing and player.looping
    player.stop_range()
    assert not player.playing and not player.audio.active and player.loop_range is None
    # Stepping is silent, or plays a short snippet from the frame's time when that setting is on.
    opens = sink.opens
    player.step(1)
    assert sink.opens == opens
    player.snippet_action.setChecked(True)
    player.seek(30)
    qtbot.waitUntil(lambda: player.audio.finished, timeout=5000)
    info, ts = player.audio.info, player.timestamps
    n0 = sample_at(info, ts[30])
    assert sink.opens == opens + 1 and sink.written == sample_at(info, ts[30] + SNIPPET_S) - n0
    assert _digest(sink.samples) == _digest(_pyav_samples(hap_clip)[n0:n0 + sink.written])


def test_volume_mute_and_snippets_are_remembered(qtbot, tmp_path: Path) -> None:
    from PySide6.QtCore import QSettings

    from vidxai_gui.audio import FakeSink
    from vidxai_gui.player import Player

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    first = Player()
    qtbot.addWidget(first)
    first.bind_settings(settings)
    first.audio.sink = sink = FakeSink()
    first.volume.setValue(35)
    first.mute_button.setChecked(True)
    first.snippet_action.setChecked(True)
    assert first.audio.volume == pytest.approx(0.35) and first.audio.muted
    settings.sync()
    again = Player()
    qtbot.addWidget(again)
    again.bind_settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert again.volume.value() == 35 and again.mute_button.isChecked() and again.snippets
    assert sink.volume == 0.0  # muted: the sink plays at volume 0, the samples stay as they are


def test_other_speeds_keep_the_pitch(hap_clip: Path) -> None:
    from engine.audio import Tempo

    rate = 44_100
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate).astype(np.float32)[:, None]
    for speed in (0.5, 2.0):
        t = Tempo(rate, 1, speed)
        out = np.concatenate([*(y for i in range(0, len(tone), 4096) for y in t.process(tone[i:i + 4096])),
                              *t.process(None)])
        assert len(out) == pytest.approx(len(tone) / speed, rel=0.02)
        spectrum = np.abs(np.fft.rfft(out[:, 0] * np.hanning(len(out))))
        assert np.fft.rfftfreq(len(out), 1 / rate)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_waveform_of_the_demo_clip_is_the_envelope_of_pyav_samples(tmp_path: Path) -> None:
    from engine.resources import demo_clip
    from engine.video import open_video
    from sessions import Session

    clip = demo_clip()
    wave = envelope(clip)
    x = _pyav_samples(clip)
    assert wave is not None and wave.samples == len(x)
    mono_lo, mono_hi = x.min(axis=1), x.max(axis=1)
    for level, b in enumerate(wave.bins):  # every level: min/max of each run of b samples, straight from PyAV
        starts = np.arange(0, len(x), b)
        assert np.array_equal(wave.mins[level], np.minimum.reduceat(mono_lo, starts))
        assert np.array_equal(wave.maxs[level], np.maximum.reduceat(mono_hi, starts))
    # Per pixel column: whatever level is drawn, each column spans whole bins and holds their extremes.
    xs, lo, hi = wave.columns(0, wave.samples, 97)
    assert len(xs) == len(lo) == 97 and lo.min() == mono_lo.min() and hi.max() == mono_hi.max()
    # Cached in the session through its typed writer and reader.
    with open_video(clip) as r:
        info, ts = r.info, r.timestamps
    with Session.create(tmp_path / "demo.vxs", info, ts) as s:
        s.write_waveform(wave)
    with Session.open(tmp_path / "demo.vxs") as s:
        back = s.waveform()
    assert back is not None and back.bins == wave.bins and back.samples == wave.samples
    assert back.sample_rate == 44100 and back.offset == pytest.approx(wave.offset)
    assert all(np.array_equal(a, b) for a, b in zip(back.mins + back.maxs, wave.mins + wave.maxs, strict=True))


def _without_sound(src: Path, out: Path) -> Path:
    """The clip's video stream alone (stream copy with PyAV): a video that has no sound track."""
    with av.open(str(src)) as inp, av.open(str(out), "w", format="flv") as dst:
        vs = inp.streams.video[0]
        o = dst.add_stream_from_template(vs, opaque=True)
        for packet in inp.demux(vs):
            if packet.dts is None:
                continue
            packet.stream = o
            dst.mux(packet)
    return out


@pytest.mark.gui
def test_window_draws_the_waveform_cached_in_the_session(window, qtbot, analysed_session: Path, hap_clip: Path,
                                                        tmp_path: Path) -> None:
    import hashlib as hl
    import shutil

    from sessions import Session

    session = tmp_path / analysed_session.name
    shutil.copy(analysed_session, session)
    with Session.open(session) as s:  # the analysis cached it (engine.pipeline.cache_waveform)
        cached = s.waveform()
    direct = envelope(hap_clip)
    assert cached is not None and all(np.array_equal(a, b) for a, b in
                                      zip(cached.mins + cached.maxs, direct.mins + direct.maxs, strict=True))
    digest = hl.sha256(session.read_bytes()).hexdigest()
    window.open_path(session)
    qtbot.waitUntil(lambda: window.waveform_loader.loaded == 1, timeout=20_000)
    assert window.waveform_loader.from_session
    tl = window.timeline
    assert tl.wave_plot.isVisible() and tl.wave_plot in tl.plots
    x, lo, hi = tl.wave_columns()
    assert len(x) > 50 and hi.max() > 0.1 and lo.min() < -0.1  # speech
    assert -1 <= x[0] and x[-1] <= window.player.frame_count  # on the frames' axis
    from vidxai_gui.audio import has_output_device

    if not has_output_device():  # CI, offscreen: the video plays silently and the status bar says so
        qtbot.waitUntil(lambda: window.player.sound_note.startswith("No audio output device"), timeout=5000)
    # A click on the waveform seeks like the rest of the timeline.
    with qtbot.waitSignal(tl.seekRequested, timeout=2000) as sig:
        tl.wave_plot.vb.sigScrub.emit(30.0)
    assert sig.args == [30]
    # An annotation, selected, loops with its sound on L; the range is shaded over the waveform; Esc stops.
    from PySide6.QtCore import Qt

    from vidxai_gui.audio import FakeSink

    window.player.audio.sink = sink = FakeSink()
    window.add_annotation_segment("happy", 20, 28, tier="reviewer emotion")
    assert tl.wave_ranges.isVisible()
    window.annotation_panel.table.selectRow(0)
    qtbot.keyClick(window, Qt.Key.Key_L)
    assert window.player.looping and window.stop_loop_action.isEnabled()
    qtbot.waitUntil(lambda: sink.opens >= 2, timeout=10_000)  # the range came round again
    info, ts = window.player.audio.info, window.player.timestamps
    assert sink.passes[-1] == sample_at(info, ts[28]) - sample_at(info, ts[20])  # the whole range, each pass
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert not window.player.playing and not window.player.looping and not window.stop_loop_action.isEnabled()
    window.autosaver.wait()
    assert hl.sha256(session.read_bytes()).hexdigest() == digest  # reviewing never rewrote the session file


@pytest.mark.gui
def test_a_video_without_sound_plays_with_a_status_note(window, qtbot, hap_clip: Path, tmp_path: Path) -> None:
    silent = _without_sound(hap_clip, tmp_path / "silent.flv")
    assert audio_info(silent) is None
    window.open_path(silent)
    qtbot.waitUntil(lambda: "no sound track" in window.statusBar().currentMessage(), timeout=10_000)
    assert not hasattr(window, "last_error")  # a note, never a dialog
    qtbot.waitUntil(lambda: window.waveform_loader.loaded == 1, timeout=10_000)
    assert not window.timeline.wave_plot.isVisible()
    window.player.play()
    qtbot.waitUntil(lambda: window.player.current >= 20, timeout=10_000)  # plays on the wall clock
    assert not window.player.sound_on
    window.player.pause()


def test_self_test_checks_the_demo_clip_sound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.resources import DEMO_CLIP, demo_clip
    from vidxai_gui.selftest import check_audio

    assert check_audio() == []
    res = tmp_path / "res"
    res.mkdir()
    _without_sound(demo_clip(), res / DEMO_CLIP)
    monkeypatch.setenv("VIDXAI_RESOURCES", str(res))
    assert check_audio() == [f"no audio stream found in the demo clip {res / DEMO_CLIP} (PyAV)"]


def test_an_hour_of_sound_draws_from_its_levels_at_once() -> None:
    import time

    from sessions import Waveform

    rate, hour = 48_000, 3600
    rng = np.random.default_rng(0)
    n = hour * rate // 128
    hi = rng.random(n, dtype=np.float32)
    wave = Waveform.from_finest(-hi, hi, 128, 8, 5, rate, 0.0, hour * rate)
    assert wave.bins == [128, 1024, 8192, 65536, 524288]
    t0 = time.perf_counter()
    for width in (1600, 800):
        xs, lo, top = wave.columns(0, wave.samples, width)  # the whole hour on screen
        assert len(xs) == width and top.max() == hi.max() and lo.min() == -hi.max()
        xs, lo, top = wave.columns(1000 * rate, 1002 * rate, width)  # two seconds of it
        assert 0 < len(xs) <= width and np.all(np.diff(xs) > 0) and np.all(lo <= top)
    assert time.perf_counter() - t0 < 0.1  # per redraw: the track's width, not the hour
