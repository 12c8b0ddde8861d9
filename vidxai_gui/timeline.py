"""The timeline: per-class frame scores and their EWMA, with tracks below, all on one x axis in frames.

Data are indexed by frame (x = frame index); the bottom axis shows seconds through ``AxisItem.setScale``
so the reviewer reads time while every item stays in frame units, the unit the player seeks in.
Left click or left drag anywhere seeks; the wheel zooms x, a right or middle drag pans.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QPixmapCache
from PySide6.QtWidgets import QGraphicsItem, QHBoxLayout, QLabel, QSlider, QToolTip, QVBoxLayout, QWidget

from engine.aggregate import DEFAULT_TAU_S, EwmaSmoother, alpha_from_tau, tau_from_alpha, video_decision
from engine.colours import CLASS_COLOURS  # shared with figures and the case report
from engine.colours import FALLBACK as _FALLBACK

log = logging.getLogger(__name__)

def class_colour(name: str, index: int) -> QColor:
    return QColor(CLASS_COLOURS.get(name.lower(), _FALLBACK[index % len(_FALLBACK)]))


def frame_strip(T: int, starts: np.ndarray, ends: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """A 1×T×4 RGBA image: frames [starts[i], ends[i]) in colours[i] (uint8 RGBA), transparent elsewhere.

    Vectorised (no Python loop over segments): a track of thousands of stages over an hour is one image,
    drawn at the cost of one image whatever the zoom."""
    img = np.zeros((1, max(T, 0), 4), np.uint8)
    starts = np.clip(np.asarray(starts, np.int64), 0, T)
    ends = np.clip(np.asarray(ends, np.int64), 0, T)
    lengths = np.maximum(ends - starts, 0)
    if T == 0 or lengths.sum() == 0:
        return img
    seg = np.repeat(np.arange(len(starts)), lengths)  # segment of each covered frame, in order
    first = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    frames = first + np.arange(len(seg))
    img[0, frames] = np.asarray(colours, np.uint8)[seg]
    return img


class StripItem(pg.ImageItem):
    """A frame strip (see `frame_strip`) spanning y ∈ [y0, y0 + height) of a track, x in frames."""

    def __init__(self, y0: float = 0.0, height: float = 1.0) -> None:
        super().__init__(axisOrder="row-major")
        self._y0, self._h = y0, height
        self.setAutoDownsample(True)  # zoomed out: a mean over the frames a screen pixel covers

    def set_strip(self, img: np.ndarray) -> None:
        T = img.shape[1]
        if T == 0 or not img[..., 3].any():
            self.clear()
            self.setVisible(False)
            return
        self.setImage(img, autoLevels=False, levels=(0, 255))
        self.setRect(QRectF(-0.5, self._y0, T, self._h))
        self.setVisible(True)


class LabelPool:
    """Text labels for the segments of a track that are on screen and wide enough for their text.

    Only those get a TextItem (reused from a pool), so a zoom or pan costs O(visible) instead of one
    item per segment of the whole video (thousands of SpRAy stages over an hour)."""

    MAX = 80

    def __init__(self, plot: pg.PlotItem, colour: str) -> None:
        self.plot, self.colour = plot, colour
        self.items: list[pg.TextItem] = []
        self.shown: list[int] = []  # segment index per visible label

    def update(self, starts: np.ndarray, ends: np.ndarray, labels: list[str], ys: np.ndarray, offset: int = 0) -> None:
        """Label the given segments that fit; `offset` is the index of the first one in the whole track."""
        (x0, x1) = self.plot.vb.viewRange()[0]
        px_per_frame = self.plot.vb.width() / max(x1 - x0, 1e-9)
        starts, ends = np.asarray(starts), np.asarray(ends)
        if len(starts):
            lens = np.fromiter((len(t) for t in labels), np.int64, len(labels))
            fits = ((ends - starts) * px_per_frame >= 7 * lens + 8) & (ends - 0.5 > x0) & (starts - 0.5 < x1)
            idx = np.flatnonzero(fits)[: self.MAX]
        else:
            idx = np.zeros(0, np.int64)
        while len(self.items) < len(idx):
            text = pg.TextItem("", color=self.colour, anchor=(0, 0.5))
            self.plot.addItem(text, ignoreBounds=True)
            self.items.append(text)
        for text, i in zip(self.items, idx, strict=False):
            text.setText(labels[i])
            text.setPos(float(starts[i]) - 0.5, float(ys[i]))
            text.setVisible(True)
        for text in self.items[len(idx):]:
            text.setVisible(False)
        self.shown = [int(i) + offset for i in idx]  # indices into the whole track


@dataclass(frozen=True)
class Segment:
    """A labelled frame range [start, end) on a track (a SpRAy stage, an annotation)."""

    start: int
    end: int
    label: str
    note: str = ""
    agreement: str = ""  # annotations: the reviewer's verdict on the model ("agree" | "disagree" | "")


class ScrubViewBox(pg.ViewBox):
    """Left click / left drag report an x position (to seek); other buttons keep pyqtgraph's pan/zoom."""

    sigScrub = Signal(float)
    sigMark = Signal(float, float, bool)  # drag start x, current x, finished

    marks = False  # the annotation track: Shift+left drag marks a range instead of panning

    def mouseClickEvent(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            self.sigScrub.emit(self.mapSceneToView(ev.scenePos()).x())
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None) -> None:
        shift = bool(ev.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        if self.marks and shift and ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            x0 = self.mapSceneToView(ev.buttonDownScenePos()).x()
            self.sigMark.emit(x0, self.mapSceneToView(ev.scenePos()).x(), bool(ev.isFinish()))
        elif ev.button() == Qt.MouseButton.LeftButton and not shift:
            ev.accept()
            self.sigScrub.emit(self.mapSceneToView(ev.scenePos()).x())
        else:
            # Shift+left drag or the middle/right button: pan and zoom as usual (x only, y is locked).
            super().mouseDragEvent(ev, axis)


def _plot(layout: pg.GraphicsLayout, row: int, height: int | None) -> pg.PlotItem:
    plot = layout.addPlot(row=row, col=0, viewBox=ScrubViewBox())
    plot.setMouseEnabled(x=True, y=False)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    plot.showGrid(x=True, y=False, alpha=0.15)
    left = plot.getAxis("left")
    left.setWidth(78)  # equal widths keep the tracks' x axes aligned with each other
    left.enableAutoSIPrefix(False)
    plot.getAxis("bottom").setStyle(showValues=False)
    if height is not None:
        plot.setFixedHeight(height)
    return plot


def _per_pixel(curve: pg.PlotDataItem) -> pg.PlotDataItem:
    """Draw about one downsampled sample per screen pixel (pyqtgraph's default is five): with "peak" each
    pixel still shows the min and max of the frames it covers, so spikes stay visible, and a long video's
    curves cost what the screen's width costs, not the video's length. Display only: data stay as given."""
    curve.opts["autoDownsampleFactor"] = 1.0
    # Painted once into a pixmap and blitted after that: moving the cursor over the plot (every frame shown)
    # or changing another curve repaints the strip under it from the pixmap instead of drawing the curve again.
    # (Off while the x range changes: see Timeline._range_changing.)
    curve.curve.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    return curve


def _short(name: str, width: int = 13) -> str:
    """A tier name for the 78-px axis: wrapped onto two lines, cut with an ellipsis beyond that."""
    if len(name) <= width:
        return name
    head, _, tail = name.partition(" ")
    if tail and len(head) <= width:
        return f"{head}\n{tail if len(tail) <= width else tail[: width - 1] + '…'}"
    return name[: width - 1] + "…"


def _track_ticks(plot: pg.PlotItem, ticks: list[tuple[float, str]]) -> None:
    # Thin tracks have no room for a rotated axis title, so the title is written as a horizontal tick.
    plot.getAxis("left").setTicks([ticks])


class Timeline(QWidget):
    """Scores, EWMA and tracks for one video; emits ``seekRequested(frame)``."""

    seekRequested = Signal(int)
    alphaChanged = Signal(float)  # the α the τ control gives at this video's fps
    tauChanged = Signal(float)  # the EWMA time constant, seconds
    stageClicked = Signal(int)  # index of the clicked stage in `stages`
    rangeMarked = Signal(int, int)  # first and last frame (inclusive) of a Shift+drag on the annotation track

    LEGEND_PX = 22  # the band above the scores that holds the class key
    TAU_STEP = 0.05  # the EWMA control: τ in seconds, 0..TAU_MAX in steps of TAU_STEP (0 = raw scores)
    TAU_MAX = 2.0
    TIER_ROW_PX = 24  # one annotation tier: room for one line of label text
    TIER_AXIS_PX = 40  # the time axis under the annotation track

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # Room for the curves' cached pixmaps (see _per_pixel): ~2 MB each at a full-HD plot size.
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
        self.scores_plot = _plot(self.view.ci, 0, None)
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
        self.face_plot = _plot(self.view.ci, 1, 40)
        self.face_plot.setYRange(0, 1, padding=0.08)
        _track_ticks(self.face_plot, [(0.0, "0"), (0.5, "face conf."), (1.0, "1")])
        self.stage_plot = _plot(self.view.ci, 2, 30)
        self.stage_plot.setYRange(0, 1, padding=0)
        _track_ticks(self.stage_plot, [(0.5, "stages")])
        self.occlusion_plot = _plot(self.view.ci, 3, 50)
        self.occlusion_plot.setYRange(-1, 1, padding=0.05)
        _track_ticks(self.occlusion_plot, [(-1.0, "−1"), (0.0, "occl. Δ"), (1.0, "+1")])
        self.occlusion_legend = self.occlusion_plot.addLegend(offset=(8, 0), labelTextSize="7pt", colCount=7,
                                                              brush=pg.mkBrush(255, 255, 255, 200))
        self.tier_plot = _plot(self.view.ci, 4, self.TIER_AXIS_PX + self.TIER_ROW_PX)
        self.tier_plot.vb.marks = True
        self.tier_plot.vb.sigMark.connect(self._on_mark_drag)
        self.tier_plot.getAxis("bottom").setStyle(showValues=True)
        self.tier_plot.getAxis("bottom").setLabel("time (s)")
        self.tier_plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plots = [self.scores_plot, self.face_plot, self.stage_plot, self.occlusion_plot, self.tier_plot]
        for p in self.plots[1:]:
            p.setXLink(self.scores_plot)
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

        # Frames without a face, shaded grey on the scores and the face track: one image each (1×T).
        self.no_face = np.zeros(0, dtype=bool)
        self.no_face_scores = StripItem(0.0, 1.0)
        self.no_face_track = StripItem(0.0, 1.0)
        self.scores_plot.addItem(self.no_face_scores)
        self.face_plot.addItem(self.no_face_track)
        self.face_curve = _per_pixel(self.face_plot.plot(pen=pg.mkPen("#333333", width=1.5), connect="finite"))
        for plot in (self.face_plot, self.occlusion_plot):
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
        # SpRAy stages: a colour strip (one image), white-edged bars and labels only for what is on screen.
        self.stage_strip = StripItem(0.0, 1.0)
        self.stage_plot.addItem(self.stage_strip)
        self.stage_bars = pg.BarGraphItem(x0=[], x1=[], y0=[], height=[], brushes=[], pen=pg.mkPen("w"))
        self.stage_plot.addItem(self.stage_bars)
        self.stage_labels = LabelPool(self.stage_plot, "#101010")
        self._stage_arrays = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4), np.uint8))
        # The selected stage's range, on the scores and on the strip.
        self.stage_regions = [pg.LinearRegionItem(movable=False, brush=pg.mkBrush(40, 110, 220, 45),
                                                  pen=pg.mkPen(40, 110, 220, 200, width=2))
                              for _ in (self.scores_plot, self.stage_plot)]
        for plot, region in zip((self.scores_plot, self.stage_plot), self.stage_regions, strict=True):
            region.setZValue(-5 if plot is self.scores_plot else 20)
            region.setVisible(False)
            plot.addItem(region, ignoreBounds=True)
        self.occlusion_curves: dict[str, pg.PlotDataItem] = {}
        self.tier_items: list[pg.GraphicsObject] = []
        self.tier_labels = LabelPool(self.tier_plot, "#102030")
        self._tier_arrays: tuple[np.ndarray, np.ndarray, list[str], np.ndarray] = (
            np.zeros(0, np.int64), np.zeros(0, np.int64), [], np.zeros(0))
        # The pending in/out range (I, O or a Shift+drag), drawn over the annotation track until it is used.
        self.pending = pg.LinearRegionItem(values=(0, 0), movable=False, brush=pg.mkBrush(255, 160, 0, 90),
                                           pen=pg.mkPen("#e08000", width=2))
        self.pending.setZValue(50)
        self.pending.hide()
        self.tier_plot.addItem(self.pending, ignoreBounds=True)
        self.pending_range: tuple[int, int | None] | None = None
        self.view.scene().sigMouseMoved.connect(self._on_hover)
        self.stage_plot.vb.sigXRangeChanged.connect(lambda *_: self._fit_stage_labels())
        self.stage_plot.vb.sigResized.connect(lambda *_: self._fit_stage_labels())
        self.tier_plot.vb.sigXRangeChanged.connect(lambda *_: self._fit_tier_labels())
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

    def _curve_items(self) -> list[pg.PlotCurveItem]:
        items = [c.curve for c in (*self.raw_curves, *self.ewma_curves, self.face_curve,
                                   *self.occlusion_curves.values())]
        return items + ([self.trace_curve.curve] if self.trace_curve is not None else [])

    def _set_curve_cache(self, on: bool) -> None:
        self._curves_cached = on
        mode = QGraphicsItem.CacheMode.DeviceCoordinateCache if on else QGraphicsItem.CacheMode.NoCache
        for item in self._curve_items():
            item.setCacheMode(mode)

    def _range_changing(self) -> None:
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
                faint = QColor(colour)
                faint.setAlpha(90)
                raw = _per_pixel(self.scores_plot.plot(pen=pg.mkPen(faint, width=1), connect="finite"))
                # A faint zigzag of min/max per pixel: drawn as line segments it paints ~1.5× faster than as
                # one path (the overlapping segment ends are invisible at this width and opacity).
                raw.curve.setSegmentedLineMode("on")
                smooth = _per_pixel(self.scores_plot.plot(pen=pg.mkPen(colour, width=2.5), connect="finite",
                                                          name=name))
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
        _per_pixel(self.trace_curve)
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

    def set_face_track(self, confidence: np.ndarray | None, found: np.ndarray | None) -> None:
        """Face-detector confidence per frame; frames without a face are shaded grey on the scores too."""
        # Tracks without data are hidden, so the scores keep the room (hidden layout items take none).
        self.face_plot.setVisible(confidence is not None)
        if confidence is None or found is None:
            self.face_curve.setData([], [])
            self.no_face = np.zeros(0, dtype=bool)
            self.no_face_scores.set_strip(np.zeros((1, 0, 4), np.uint8))
            self.no_face_track.set_strip(np.zeros((1, 0, 4), np.uint8))
            return
        conf = np.asarray(confidence, dtype=np.float64)
        found = np.asarray(found, dtype=bool)
        self.face_curve.setData(np.arange(len(conf), dtype=np.float64), np.where(found, conf, np.nan))
        self.no_face = ~found
        for item, alpha in ((self.no_face_scores, 50), (self.no_face_track, 110)):
            img = np.zeros((1, len(found), 4), np.uint8)
            img[0, self.no_face] = (128, 128, 128, alpha)
            item.set_strip(img)

    def set_stages(self, stages: Sequence[Segment]) -> None:
        """SpRAy stages as coloured labelled segments; the colour follows the stage's class."""
        self.stages = sorted(stages, key=lambda s: s.start)
        self.stage_plot.setVisible(bool(self.stages))
        self.highlight_stage(-1)
        colours: dict[str, tuple[int, int, int, int]] = {}
        rgba = np.zeros((len(self.stages), 4), np.uint8)
        for i, st in enumerate(self.stages):  # per stage only a dict lookup: few distinct labels
            if st.label not in colours:
                # "HAPPY_A, SAD_B" → coloured by its first cluster's class; "NONE" stays grey.
                base = st.label.split(",")[0].strip().rsplit("_", 1)[0].lower()
                idx = self.classes.index(base) if base in self.classes else abs(hash(base)) % len(_FALLBACK)
                colour = QColor("#dddddd") if base in ("none", "") else class_colour(base, idx)
                colours[st.label] = (colour.red(), colour.green(), colour.blue(), 170)
            rgba[i] = colours[st.label]
        starts = np.array([st.start for st in self.stages], np.int64)
        ends = np.array([st.end for st in self.stages], np.int64)
        self._stage_arrays = (starts, ends, rgba)
        self.stage_strip.set_strip(frame_strip(self.frame_count or int(ends.max(initial=0)), starts, ends, rgba))
        self._fit_stage_labels()

    BAR_LIMIT = 300  # stages on screen up to which each gets its own white-edged bar

    def _fit_stage_labels(self) -> None:
        """Bars and labels for the stages on screen; a label only where it fits its segment (else: tooltip)."""
        starts, ends, rgba = self._stage_arrays
        (x0, x1) = self.stage_plot.vb.viewRange()[0]
        i0 = int(np.searchsorted(ends, x0 + 0.5, side="right"))
        i1 = int(np.searchsorted(starts, x1 + 0.5, side="left"))
        if 0 < i1 - i0 <= self.BAR_LIMIT:
            sl = slice(i0, i1)
            self.stage_bars.setOpts(x0=starts[sl] - 0.5, x1=ends[sl] - 0.5, y0=np.zeros(i1 - i0),
                                    height=np.ones(i1 - i0), brushes=[pg.mkBrush(*c) for c in rgba[sl]])
            self.stage_bars.setVisible(True)
        else:
            self.stage_bars.setVisible(False)  # the strip alone: more stages than there are pixels for
        labels = [st.label for st in self.stages[i0:i1]]
        self.stage_labels.update(starts[i0:i1], ends[i0:i1], labels, np.full(len(labels), 0.5), offset=i0)

    @property
    def stage_texts(self) -> list[pg.TextItem]:
        """The stage labels on screen now."""
        return [t for t in self.stage_labels.items if t.isVisible()]

    def set_occlusion(self, deltas: dict[str, np.ndarray]) -> None:
        """Score change of the predicted class per occlusion condition (negative: the part mattered)."""
        for c in self.occlusion_curves.values():
            self.occlusion_plot.removeItem(c)
        self.occlusion_legend.clear()
        self.occlusion_plot.setVisible(bool(deltas))
        self.occlusion_curves = {}
        for i, (name, values) in enumerate(deltas.items()):
            v = np.asarray(values, dtype=np.float64)
            pen = pg.mkPen(_FALLBACK[i % len(_FALLBACK)], width=1.5)
            self.occlusion_curves[name] = _per_pixel(self.occlusion_plot.plot(
                np.arange(len(v), dtype=np.float64), v, pen=pen, connect="finite", name=name))

    def set_annotations(self, tiers: dict[str, list[Segment]]) -> None:
        """Reviewer annotation tiers, one row per tier (top row = first tier), coloured by verdict."""
        for item in self.tier_items:
            self.tier_plot.removeItem(item)
        self.tier_items = []
        self.tiers = {k: sorted(v, key=lambda s: s.start) for k, v in tiers.items()}
        n = max(len(self.tiers), 1)
        # Each tier keeps a readable row: the track grows with the tiers instead of squeezing them.
        self.tier_plot.setFixedHeight(self.TIER_AXIS_PX + self.TIER_ROW_PX * n)
        self.tier_plot.setYRange(0, n, padding=0)
        _track_ticks(self.tier_plot, [(n - i - 0.5, _short(name)) for i, name in enumerate(self.tiers)]
                     or [(0.5, "annotations")])
        for i, segments in enumerate(self.tiers.values()):
            y = n - i - 1
            for verdict, colour in (("", "#4682b4"), ("agree", "#2e8b57"), ("disagree", "#c0392b")):
                group = [s for s in segments if s.agreement == verdict]
                if not group:
                    continue
                fill = QColor(colour)
                fill.setAlpha(110)
                bars = pg.BarGraphItem(x0=[s.start - 0.5 for s in group], x1=[s.end - 0.5 for s in group],
                                       y0=[y + 0.1] * len(group), height=[0.8] * len(group),
                                       brush=pg.mkBrush(fill), pen=pg.mkPen(colour))
                self.tier_plot.addItem(bars)
                self.tier_items.append(bars)
        order = [(s.start, s.end, s.label, n - i - 0.5) for i, segs in enumerate(self.tiers.values()) for s in segs]
        order.sort(key=lambda r: r[0])
        self._tier_arrays = (np.array([r[0] for r in order], np.int64), np.array([r[1] for r in order], np.int64),
                             [r[2] for r in order], np.array([r[3] for r in order], np.float64))
        self._fit_tier_labels()

    def _fit_tier_labels(self) -> None:
        """A label shows only where it fits in its segment at this zoom; the tooltip always has it."""
        starts, ends, labels, ys = self._tier_arrays
        self.tier_labels.update(starts, ends, labels, ys)

    @property
    def tier_texts(self) -> list[pg.TextItem]:
        """The annotation labels on screen now."""
        return [t for t in self.tier_labels.items if t.isVisible()]

    def set_pending(self, start: int | None, end: int | None) -> None:
        """Show the marked in point (and out point, inclusive) on the annotation track; None hides it."""
        if start is None:
            self.pending_range = None
            self.pending.hide()
            return
        last = start if end is None else end
        a, b = min(start, last), max(start, last)
        self.pending_range = (start, end)
        self.pending.setRegion((a - 0.5, b + 0.5))
        self.pending.show()

    def _on_mark_drag(self, x0: float, x1: float, finished: bool) -> None:
        if self.frame_count <= 0:
            return
        a, b = sorted((self._clamp(x0), self._clamp(x1)))
        self.set_pending(a, b)
        if finished:
            self.rangeMarked.emit(a, b)

    def tier_segment_at(self, pos: QPointF) -> tuple[str, Segment] | None:
        """The annotation under a scene position (for its tooltip)."""
        p = self.tier_plot.vb.mapSceneToView(pos)
        n = max(len(self.tiers), 1)
        row = n - 1 - int(np.floor(p.y()))
        if not 0 <= row < len(self.tiers):
            return None
        name = list(self.tiers)[row]
        seg = next((s for s in self.tiers[name] if s.start - 0.5 <= p.x() < s.end - 0.5), None)
        return (name, seg) if seg is not None else None

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

    def stage_index_at(self, frame: float) -> int:
        starts, ends, _ = self._stage_arrays
        i = int(np.searchsorted(starts - 0.5, frame, side="right")) - 1
        return i if 0 <= i < len(self.stages) and frame < ends[i] - 0.5 else -1

    def stage_at(self, frame: float) -> Segment | None:
        i = self.stage_index_at(frame)
        return self.stages[i] if i >= 0 else None

    def highlight_stage(self, i: int) -> None:
        """Show stage i's range on the scores and the strip (−1: none)."""
        on = 0 <= i < len(self.stages)
        for region in self.stage_regions:
            if on:
                region.setRegion((self.stages[i].start - 0.5, self.stages[i].end - 0.5))
            region.setVisible(on)

    def _clamp(self, x: float) -> int:
        return int(min(max(round(x), 0), max(self.frame_count - 1, 0)))

    @Slot(float)
    def _on_scrub(self, x: float) -> None:
        if self.frame_count <= 0:
            return
        frame = self._clamp(x)
        self.set_cursor(frame)
        self.seekRequested.emit(frame)

    @Slot(float)
    def _on_stage_click(self, x: float) -> None:
        # A stage is a unit of the temporal prototype: clicking it selects it and goes to where it begins.
        i = self.stage_index_at(x)
        self._on_scrub(float(self.stages[i].start) if i >= 0 else x)
        if i >= 0:
            self.stageClicked.emit(i)

    def _on_hover(self, pos: QPointF) -> None:
        if self.tier_plot.sceneBoundingRect().contains(pos):
            hit = self.tier_segment_at(pos)
            if hit is not None:
                tier, seg = hit
                verdict = {"agree": "agrees with the model", "disagree": "disagrees with the model"}
                tip = (f"{tier}: {seg.label or '(no label)'}, frames {seg.start}–{seg.end - 1} "
                       f"({seg.start / self.fps:.2f}–{seg.end / self.fps:.2f} s)"
                       + (f"\nreviewer {verdict[seg.agreement]}" if seg.agreement else "")
                       + (f"\n{seg.note}" if seg.note else ""))
                QToolTip.showText(self.view.mapToGlobal(self.view.mapFromScene(pos)), tip, self.view)
            return
        if not self.stage_plot.sceneBoundingRect().contains(pos):
            return
        x = self.stage_plot.vb.mapSceneToView(pos).x()
        stage = self.stage_at(x)
        if stage is None:
            return
        t0, t1 = stage.start / self.fps, stage.end / self.fps
        tip = (stage.note or f"{stage.label}: frames {stage.start}–{stage.end - 1} ({t0:.2f}–{t1:.2f} s)") \
            + "\nClick to select the stage: its mean heatmap and prototypes are in the Stage dock"
        view_pos = self.view.mapFromScene(pos)
        QToolTip.showText(self.view.mapToGlobal(view_pos), tip, self.view)

    @Slot(int)
    def _on_tau_slider(self, value: int) -> None:
        self._tau = round(value * self.TAU_STEP, 6)
        self._show_tau()

    def _show_tau(self) -> None:
        self.tau_value.setText(f"{self._tau:.2f} s · α {self.alpha:.3f}")
        self.tau_value.setToolTip(f"at {self.fps:g} fps, τ = {self._tau:.3f} s gives α = {self.alpha:.4f}")
        self._update_ewma()
        self.tauChanged.emit(self._tau)
        self.alphaChanged.emit(self.alpha)
