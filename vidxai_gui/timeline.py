"""The timeline: per-class frame scores and their EWMA, with tracks below, all on one x axis in frames.

Data are indexed by frame (x = frame index); the bottom axis shows seconds through ``AxisItem.setScale``
so the reviewer reads time while every item stays in frame units, the unit the player seeks in.
Left click or left drag anywhere seeks; the wheel zooms x, a right or middle drag pans. The tracks under
the scores are in vidxai_gui.timeline_tracks (the sound's waveform: vidxai_gui.waveform), the pieces both are made of in vidxai_gui.timeline_items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QPixmapCache
from PySide6.QtWidgets import QGraphicsItem, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from engine.aggregate import DEFAULT_TAU_S, EwmaSmoother, alpha_from_tau, tau_from_alpha, video_decision
from vidxai_gui.timeline_items import Segment, class_colour, make_plot, per_pixel
from vidxai_gui.timeline_tracks import TimelineTracks
from vidxai_gui.waveform import WaveformTrack

__all__ = ["Segment", "Timeline"]


class Timeline(WaveformTrack, TimelineTracks, QWidget):
    """Scores, EWMA and tracks for one video; emits ``seekRequested(frame)``."""

    seekRequested = Signal(int)
    alphaChanged = Signal(float)  # the α the τ control gives at this video's fps
    tauChanged = Signal(float)  # the EWMA time constant, seconds
    interacting = Signal()  # a zoom, pan or τ change is being drawn (the player's background decoding waits)
    stageClicked = Signal(int)  # index of the clicked stage in `stages`
    rangeMarked = Signal(int, int)  # first and last frame (inclusive) of a Shift+drag on the annotation track

    LEGEND_PX = 22  # the band above the scores that holds the class key
    TAU_STEP = 0.05  # the EWMA control: τ in seconds, 0..TAU_MAX in steps of TAU_STEP (0 = raw scores)
    TAU_MAX = 2.0

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # Room for the curves' cached pixmaps (see timeline_items.per_pixel): ~2 MB each at a full-HD plot size.
        QPixmapCache.setCacheLimit(max(QPixmapCache.cacheLimit(), 96 * 1024))
        self.frame_count = 0
        self.fps = 25.0
        self.classes: list[str] = []
        self.probs = np.zeros((0, 0))
        self.frames_done = 0
        self.valid = np.zeros(0, dtype=bool)
        self.smoothed = np.zeros((0, 0))
        self._smoother: EwmaSmoother | None = None
        self._x = np.zeros(0)  # frame indices, the curves' x (shared)
        self.stages: list[Segment] = []
        self.tiers: dict[str, list[Segment]] = {}
        self.raw_curves: list[pg.PlotDataItem] = []
        self.ewma_curves: list[pg.PlotDataItem] = []
        self.trace_curve: pg.PlotDataItem | None = None
        self.current = 0
        self._tau = DEFAULT_TAU_S  # exact (a session's recorded τ need not be on a slider step)

        # --- header: decision and α --------------------------------------------------------
        self.decision_label = QLabel("No analysis yet — open a session or analyse the video with a model")
        self.decision_label.setTextFormat(Qt.TextFormat.RichText)
        self.tau_slider = QSlider(Qt.Orientation.Horizontal)
        self.tau_slider.setRange(0, round(self.TAU_MAX / self.TAU_STEP))
        self.tau_slider.setValue(round(self._tau / self.TAU_STEP))
        self.tau_slider.setFixedWidth(160)
        self.tau_slider.setToolTip("EWMA time constant τ in seconds: larger = smoother and slower, 0 = raw "
                                   "scores; α = 1 − exp(−1/(fps·τ)) at this video's frame rate")
        self.tau_value = QLabel()
        self.tau_value.setMinimumWidth(95)
        self.tau_slider.valueChanged.connect(self._on_tau_slider)
        header = QHBoxLayout()
        header.setContentsMargins(6, 2, 6, 0)
        header.addWidget(self.decision_label, 1)
        header.addWidget(QLabel("EWMA τ"))
        header.addWidget(self.tau_slider)
        header.addWidget(self.tau_value)

        # --- plots ----------------------------------------------------------------------------
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        self.view.ci.setSpacing(2)
        self.view.ci.setContentsMargins(2, 2, 8, 2)
        self.scores_plot = make_plot(self.view.ci, 0, None)
        self.scores_plot.setYRange(0, 1, padding=0.02)
        # Long videos: draw at most ~screen-width points per curve (peak keeps spikes visible).
        self.scores_plot.setDownsampling(auto=True, mode="peak")
        self.scores_plot.setClipToView(True)
        self.scores_plot.getAxis("left").setLabel("class probability")
        self.legend = self.scores_plot.addLegend(offset=(8, 2), labelTextSize="8pt", colCount=8)
        # The key sits in a band above the plotting area (the plot's title row), never on the curves.
        self.scores_plot.setTitle(" ", size="8pt")
        self.scores_plot.layout.setRowFixedHeight(0, self.LEGEND_PX)
        self.legend.setParentItem(self.scores_plot)
        self.legend.layout.setContentsMargins(0, 0, 0, 0)
        self.legend.layout.setVerticalSpacing(0)
        self.legend.anchor(itemPos=(0, 0), parentPos=(0, 0), offset=(40, 0))
        self._build_wave_plot(1)  # the sound, right under the scores (vidxai_gui.waveform)
        self._build_track_plots()
        self.plots = [self.scores_plot, self.wave_plot, self.face_plot, self.stage_plot, self.occlusion_plot,
                      self.au_plot, self.temporal_plot, self.tier_plot]
        for p in self.plots[1:-1]:
            # The thin tracks draw no x grid: each shown axis (its tick lines are the grid) regenerated its ticks
            # on every zoom and pan, a third of a zoom's cost on an hour-long session with all tracks shown.
            p.hideAxis("bottom")
        for p in self.plots[1:]:
            p.setXLink(self.scores_plot)
            # A track that appears or goes keeps the scores' room: the timeline asks for that much height.
            p.visibleChanged.connect(self._fit_minimum_height)
        for p in self.plots:
            p.vb.sigScrub.connect(self._on_stage_click if p is self.stage_plot else self._on_scrub)

        self.cursors: list[pg.InfiniteLine] = []
        for p in self.plots:
            line = pg.InfiniteLine(pos=0, angle=90, movable=p is self.scores_plot,
                                   pen=pg.mkPen("#202020", width=1.5), hoverPen=pg.mkPen("#d00000", width=3))
            line.setZValue(100)
            p.addItem(line, ignoreBounds=True)
            self.cursors.append(line)
        self.cursors[0].sigDragged.connect(lambda line: self._on_scrub(line.value()))

        self._build_track_items()
        # Curve pixmaps pay off while the range stays (cursor moves, α); during a zoom or pan every step would
        # re-render each pixmap, so the curves are drawn directly until the range has rested a moment.
        self._cache_timer = QTimer(self)
        self._cache_timer.setSingleShot(True)
        self._cache_timer.setInterval(1000)
        self._cache_timer.timeout.connect(lambda: self._set_curve_cache(True))
        self._curves_cached = True
        self.scores_plot.vb.sigXRangeChanged.connect(lambda *_: self._range_changing())
        self.tier_plot.vb.sigResized.connect(lambda *_: self._fit_tier_labels())

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(header)
        layout.addWidget(self.view, 1)
        self._show_tau()
        self.set_video(0, self.fps)  # the empty state: scores and annotation rows only, no stray ticks
        self._fit_minimum_height()

    SCORES_MIN_PX = 150  # the class-probability plot never gets less than this (legend band included)

    def _fit_minimum_height(self) -> None:
        """The timeline's minimum height: its header, every shown track's fixed height and the scores'
        minimum. With sound, faces, stages, AU agreement and annotations all shown, the scores were
        squeezed to ~80 px of a 1280×800 window; now the splitter takes the room from the player instead."""
        tracks = sum(p.maximumHeight() + 2 for p in self.plots[1:] if p.isVisible())  # fixed heights + spacing
        header = self.layout().itemAt(0).sizeHint().height() if self.layout() is not None else 30
        self.setMinimumHeight(int(header + tracks + self.SCORES_MIN_PX + 8))

    def _curve_items(self) -> list[pg.PlotCurveItem]:
        items = [c.curve for c in (*self.raw_curves, *self.ewma_curves, self.face_curve, self.au_curve, self.temporal_curve,
                                   *self.occlusion_curves.values())]
        return items + ([self.trace_curve.curve] if self.trace_curve is not None else [])

    def _set_curve_cache(self, on: bool) -> None:
        self._curves_cached = on
        mode = QGraphicsItem.CacheMode.DeviceCoordinateCache if on else QGraphicsItem.CacheMode.NoCache
        for item in self._curve_items():
            item.setCacheMode(mode)

    def _range_changing(self) -> None:
        self.interacting.emit()
        if self._curves_cached:
            self._set_curve_cache(False)
        self._cache_timer.start()

    # --- properties -------------------------------------------------------------------------
    @property
    def tau_s(self) -> float:
        """The EWMA time constant in seconds (what an analysis started here is given)."""
        return self._tau

    @property
    def alpha(self) -> float:
        """The α that τ gives at this video's fps (engine.aggregate.alpha_from_tau)."""
        return alpha_from_tau(self._tau, self.fps)

    def set_tau(self, tau_s: float) -> None:
        """Set τ exactly (the slider shows the nearest step); the curves and decision follow."""
        tau = min(max(float(tau_s), 0.0), self.TAU_MAX)
        if abs(tau - self._tau) < 1e-12:
            return
        self._tau = tau
        self.tau_slider.blockSignals(True)
        self.tau_slider.setValue(round(tau / self.TAU_STEP))
        self.tau_slider.blockSignals(False)
        self._show_tau()

    def set_alpha(self, alpha: float) -> None:
        """An α from an older session or setting: the τ it means at this video's fps."""
        self.set_tau(tau_from_alpha(min(max(float(alpha), 1e-6), 1.0), self.fps))

    # --- data in ---------------------------------------------------------------------------
    def set_video(self, frame_count: int, fps: float) -> None:
        """A new video: clear everything and show its whole length (0 frames: the empty state)."""
        self.frame_count = max(int(frame_count), 0)
        old_fps, self.fps = self.fps, float(fps) if fps and fps > 0 else 25.0
        if self.fps != old_fps:
            self._show_tau()  # the same τ is another α at another frame rate
        for line in self.cursors:
            line.setVisible(self.frame_count > 0)
        self.tier_plot.getAxis("bottom").setScale(1.0 / self.fps)
        self.clear_scores()
        self.set_face_track(None, None)
        self.set_stages([])
        self.set_occlusion({})
        self.set_au_agreement(None)
        self.set_temporal_relevance(None)
        self.set_window_span(None, None)
        self.set_annotations({})
        self.set_pending(None, None)
        shown = self.frame_count if self.frame_count > 0 else round(10 * self.fps)  # empty: a 10 s ruler
        for p in self.plots:
            p.vb.setLimits(xMin=-0.5, xMax=shown - 0.5)
        self.scores_plot.setXRange(-0.5, shown - 0.5, padding=0)
        self.set_cursor(0)

    def clear_scores(self) -> None:
        self.set_trace("", None)
        for item in self.raw_curves + self.ewma_curves:
            self.scores_plot.removeItem(item)
        self.legend.clear()
        self.raw_curves, self.ewma_curves = [], []
        self.classes = []
        self.probs = np.zeros((0, 0))
        self.smoothed = np.zeros((0, 0))
        self._smoother = None
        self.valid = np.zeros(0, dtype=bool)
        self.decision_label.setText("No analysis yet — open a session or analyse the video with a model")

    def set_scores(self, classes: Sequence[str], probs: np.ndarray, valid: np.ndarray | None = None,
                   frames_done: int | None = None) -> None:
        """Per-frame class probabilities (T×C, NaN where not analysed or no face) and face-found flags.

        Called again with the grown arrays while an analysis streams in; the EWMA is recomputed over all
        of it, which is cheap (closed form, one lfilter) and keeps one code path for both cases.
        """
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(classes):
            raise ValueError(f"scores must be T×{len(classes)}, got {probs.shape}")
        if list(classes) != self.classes:
            self.clear_scores()
            self.classes = list(classes)
            for i, name in enumerate(self.classes):
                colour = class_colour(name, i)
                # Faint = the colour at 35 % over the white background, opaque: translucent lines are blended
                # pixel by pixel, ~30× slower to paint than opaque ones (a zoom repaints every raw zigzag).
                c, a = QColor(colour), 90 / 255
                faint = QColor(round(255 + a * (c.red() - 255)), round(255 + a * (c.green() - 255)),
                               round(255 + a * (c.blue() - 255)))
                # Seven classes × (raw + EWMA) curves are what a zoom or the τ slider repaints: one sample per
                # two pixels halves that (peak keeps each pair's min and max, so a one-frame spike still shows;
                # the EWMA line is 2.5 px wide anyway).
                raw = per_pixel(self.scores_plot.plot(pen=pg.mkPen(faint, width=1), connect="finite"), 0.5)
                # A faint zigzag of min/max per pixel: drawn as line segments it paints ~1.5× faster than as
                # one path (the overlapping segment ends are invisible at this width and opacity).
                raw.curve.setSegmentedLineMode("on")
                smooth = per_pixel(self.scores_plot.plot(pen=pg.mkPen(colour, width=2.5), connect="finite",
                                                          name=name), 0.5)
                # EWMA is smooth already: mean-downsampling draws it as it is and paints ~30 % faster.
                smooth.setDownsampling(auto=True, method="mean")
                self.raw_curves.append(raw)
                self.ewma_curves.append(smooth)
        self.probs = probs
        self._smoother = None  # new (or grown) scores: gather the frames that enter the recurrence again
        self.frames_done = len(probs) if frames_done is None else int(frames_done)
        self.valid = (np.ones(len(probs), dtype=bool) if valid is None
                      else np.asarray(valid, dtype=bool)[: len(probs)])
        self._x = np.arange(len(probs), dtype=np.float64)
        for i, curve in enumerate(self.raw_curves):
            curve.setData(self._x, probs[:, i])
        self._update_ewma()

    def set_trace(self, name: str, values: np.ndarray | None) -> None:
        """One extra curve over the scores, e.g. a prototype's similarity over the video (None: remove it).

        Drawn dashed and divided by its maximum over the video, so it shares the 0–1 axis with the
        probabilities: where it peaks is where the frames look most like that prototype."""
        if self.trace_curve is not None:
            self.scores_plot.removeItem(self.trace_curve)
            self.legend.removeItem(self.trace_curve)
            self.trace_curve = None
        if values is None or not len(values):
            return
        y = np.asarray(values, dtype=np.float64)
        top = np.nanmax(y) if np.isfinite(y).any() else 0.0
        y = y / top if top > 0 else y
        self.trace_curve = self.scores_plot.plot(
            np.arange(len(y), dtype=np.float64), y, connect="finite", name=f"{name} (÷ max)",
            pen=pg.mkPen("#202020", width=2, style=Qt.PenStyle.DashLine))
        per_pixel(self.trace_curve)
        self.trace_curve.setZValue(5)

    def _update_ewma(self) -> None:
        if not self.classes or len(self.probs) == 0:
            return
        if self._smoother is None:
            self._smoother = EwmaSmoother(self.probs, self.valid)  # once per set_scores, not per α
        self.smoothed = self._smoother(self.alpha)
        if len(self._x) != len(self.probs):
            self._x = np.arange(len(self.probs), dtype=np.float64)
        for i, curve in enumerate(self.ewma_curves):
            curve.setData(self._x, self.smoothed[:, i])
        decision = self.decision_class() or video_decision(self.smoothed, self.classes)
        done = self.frames_done
        partial = "" if done >= self.frame_count else f" (so far: {done} of {self.frame_count} frames)"
        self.decision_label.setText(f"Video decision: <b>{decision.upper()}</b>{partial} "
                                    f"<span style='color:gray'>— last EWMA state (τ {self._tau:.2f} s)</span>")

    def decision_class(self) -> str:
        """The class the last EWMA state favours ("" before any score)."""
        if not self.classes or len(self.smoothed) == 0:
            return ""
        # The EWMA carries its state over frames without a face, so the last row is the last finite state
        # whenever there is one (and then only that row is looked at, not the hour before it).
        last = self.smoothed[-1:]
        decision = video_decision(last if np.isfinite(last).all() else self.smoothed, self.classes)
        return decision if decision in self.classes else ""

    # --- cursor and seeking ---------------------------------------------------------------
    @Slot(int)
    def set_cursor(self, frame: int) -> None:
        """Follow the player; pans the view when the cursor leaves it (during playback)."""
        self.current = int(frame)
        for line in self.cursors:
            line.blockSignals(True)
            line.setValue(self.current)
            line.blockSignals(False)
        (x0, x1) = self.scores_plot.vb.viewRange()[0]
        if not x0 <= self.current <= x1:
            width = x1 - x0
            self.scores_plot.setXRange(self.current - 0.1 * width, self.current + 0.9 * width, padding=0)

    def _clamp(self, x: float) -> int:
        return int(min(max(round(x), 0), max(self.frame_count - 1, 0)))

    @Slot(float)
    def _on_scrub(self, x: float) -> None:
        if self.frame_count <= 0:
            return
        frame = self._clamp(x)
        self.set_cursor(frame)
        self.seekRequested.emit(frame)

    @Slot(int)
    def _on_tau_slider(self, value: int) -> None:
        self.interacting.emit()
        self._tau = round(value * self.TAU_STEP, 6)
        self._show_tau()

    def _show_tau(self) -> None:
        self.tau_value.setText(f"{self._tau:.2f} s · α {self.alpha:.3f}")
        self.tau_value.setToolTip(f"at {self.fps:g} fps, τ = {self._tau:.3f} s gives α = {self.alpha:.4f}")
        self._update_ewma()
        self.tauChanged.emit(self._tau)
        self.alphaChanged.emit(self.alpha)
