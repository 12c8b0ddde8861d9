"""The waveform track under the scores: the sound's min/max envelope per pixel column, the annotation ranges
over it, the cursor; a click seeks like the rest of the timeline.

`WaveformTrack` is a part of `vidxai_gui.timeline.Timeline` (a mixin, like `TimelineTracks`). The envelope
(`sessions.Waveform`, made by `engine.audio.envelope`) is cached in the session by the analysis
(`Session.write_waveform`), else computed on a job thread when the video opens; drawing takes the coarsest of its levels with at least one bin per pixel,
so an hour of sound costs what the track's width costs. `WaveformLoader` does the loading and caching.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QGraphicsItem

from engine.audio import envelope
from sessions import Session, SessionError, Waveform
from vidxai_gui.annotations import AGREEMENT_COLOURS
from vidxai_gui.timeline_items import Segment, StripItem, frame_strip, make_plot, track_ticks

log = logging.getLogger(__name__)


class WaveformTrack:
    """The sound track's envelope on the timeline (x in frames, y −1…1)."""

    WAVE_PX = 44

    def _build_wave_plot(self, row: int) -> None:
        self.wave_plot = make_plot(self.view.ci, row, self.WAVE_PX)
        self.wave_plot.setYRange(-1, 1, padding=0.04)
        track_ticks(self.wave_plot, [(0.0, "sound")])
        self.wave_plot.setToolTip("The sound's envelope (min and max per pixel column, scaled to the loudest "
                                  "moment); shaded: annotations. Click to go there.")
        pen = pg.mkPen("#34495e", width=1)
        self.wave_upper = pg.PlotCurveItem(pen=pen)
        self.wave_lower = pg.PlotCurveItem(pen=pen)
        self.wave_fill = pg.FillBetweenItem(self.wave_upper, self.wave_lower, brush=pg.mkBrush(52, 73, 94, 200))
        self.wave_ranges = StripItem(-1e3, 2e3)  # the track's full height whatever its scale
        self.wave_ranges.setZValue(-10)
        for item in (self.wave_ranges, self.wave_fill, self.wave_upper, self.wave_lower):
            self.wave_plot.addItem(item)
        for item in (self.wave_fill, self.wave_upper, self.wave_lower):
            # Painted once into a pixmap: the cursor moving over the track (every frame played) only blits it.
            item.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
        self.waveform: Waveform | None = None
        self._wave_ts = np.zeros(0)
        self._wave_peak = 1.0
        self.wave_plot.vb.sigXRangeChanged.connect(lambda *_: self._draw_wave())
        self.wave_plot.vb.sigResized.connect(lambda *_: self._draw_wave())
        self.wave_plot.setVisible(False)

    def set_waveform(self, wave: Waveform | None, timestamps: np.ndarray | None = None) -> None:
        """The sound's envelope on the video's frame axis (`timestamps`: the frames' times); None hides it."""
        self.waveform = wave if wave is not None and wave.samples > 0 else None
        if timestamps is not None and len(timestamps):
            ts = np.asarray(timestamps, np.float64)
            step = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0 / self.fps
            self._wave_ts = np.append(ts, ts[-1] + step)  # frame k is on screen over [ts[k], ts[k+1])
        self.wave_plot.setVisible(self.waveform is not None)
        # Scaled to the loudest moment of the whole sound track (speech recorded quietly still reads).
        w = self.waveform
        self._wave_peak = max(float(max(-w.mins[-1].min(), w.maxs[-1].max())), 1e-3) if w is not None else 1.0
        self.wave_plot.setYRange(-self._wave_peak, self._wave_peak, padding=0.04)
        self._draw_wave()

    def _time_to_x(self, t: np.ndarray) -> np.ndarray:
        ts = self._wave_ts
        return np.interp(t, ts, np.arange(len(ts)) - 0.5)

    def _x_to_time(self, x: float) -> float:
        ts = self._wave_ts
        return float(np.interp(x, np.arange(len(ts)) - 0.5, ts))

    def wave_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the track draws now: x (frames), min and max per pixel column of the visible stretch."""
        w = self.waveform
        if w is None or len(self._wave_ts) < 2:
            z = np.zeros(0)
            return z, z, z
        (x0, x1) = self.wave_plot.vb.viewRange()[0]
        n0 = (self._x_to_time(x0) - w.offset) * w.sample_rate
        n1 = (self._x_to_time(x1) - w.offset) * w.sample_rate
        width = max(int(self.wave_plot.vb.width() * self.view.devicePixelRatioF()), 16)
        xs, lo, hi = w.columns(n0, n1, width)
        return self._time_to_x(w.offset + xs / w.sample_rate), lo, hi

    def _draw_wave(self) -> None:
        if self.waveform is None:
            self.wave_upper.setData([], [])
            self.wave_lower.setData([], [])
            return
        x, lo, hi = self.wave_columns()
        # Quiet stretches stay visible as a hairline.
        self.wave_upper.setData(x, np.maximum(hi, 0.01 * self._wave_peak))
        self.wave_lower.setData(x, np.minimum(lo, -0.01 * self._wave_peak))

    def set_annotations(self, tiers: dict[str, list[Segment]]) -> None:
        """The annotation tracks (TimelineTracks) and their ranges shaded over the waveform."""
        super().set_annotations(tiers)
        segments = [s for segs in self.tiers.values() for s in segs]
        colours = np.array([[*pg.mkColor(AGREEMENT_COLOURS.get(s.agreement, "#4682b4")).getRgb()[:3], 70]
                            for s in segments], np.uint8).reshape(-1, 4)
        self.wave_ranges.set_strip(frame_strip(self.frame_count, np.array([s.start for s in segments], np.int64),
                                               np.array([s.end for s in segments], np.int64), colours))


def load_waveform(video: Path, session: Path | None, cancelled: Any = None) -> tuple[Waveform | None, bool]:
    """The waveform from the session's cache, or computed from the video; (waveform, it came from the session)."""
    if session is not None and session.exists():
        try:
            with Session.open(session) as s:
                wave = s.waveform()
            if wave is not None:
                return wave, True
        except (SessionError, OSError) as exc:
            log.info("no waveform from %s: %s", session, exc)
    return envelope(video, cancelled=cancelled), False


class WaveformLoader:
    """Loads the open video's waveform on a job thread: from its session when the analysis cached it there
    (engine.pipeline.cache_waveform), else computed from the video and kept in memory. Reviewing never writes
    the session (a write would copy the whole file, and the reviewer's view is display only)."""

    LANE = "waveform"

    def __init__(self, window: Any) -> None:
        self.w = window
        self.video: Path | None = None
        self.wave: Waveform | None = None
        self.from_session = False
        self.loaded = 0  # waveforms drawn (tests wait on it)
        window.player.videoOpened.connect(self.on_video)

    def on_video(self, info: Any) -> None:
        video = Path(str(info.path))
        self.video, self.wave, self.from_session = video, None, False
        self.w.timeline.set_waveform(None)
        session = self.w.review.session_path

        def job(progress: Any, cancel: Any) -> tuple[Waveform | None, bool]:
            return load_waveform(video, session, lambda: cancel.cancelled)

        worker = self.w.jobs.latest(self.LANE, job, f"waveform of {video.name}")
        worker.finished.connect(lambda result, v=video: self._on_loaded(v, result))
        worker.error.connect(lambda msg, _tb: log.warning("the waveform of %s failed: %s", video, msg))

    def _on_loaded(self, video: Path, result: tuple[Waveform | None, bool]) -> None:
        if video != self.video:
            return
        self.wave, self.from_session = result
        self.w.timeline.set_waveform(self.wave, self.w.player.timestamps)
        self.loaded += 1
