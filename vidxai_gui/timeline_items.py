"""The timeline's building blocks: frame strips, on-screen label pools, segments and plots that seek on click.

Everything here is in frame units on x (see vidxai_gui.timeline); the Timeline and its tracks
(vidxai_gui.timeline_tracks) are made of these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGraphicsItem

from engine.colours import CLASS_COLOURS, FALLBACK  # shared with figures and the case report


def class_colour(name: str, index: int) -> QColor:
    return QColor(CLASS_COLOURS.get(name.lower(), FALLBACK[index % len(FALLBACK)]))


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


def make_plot(layout: pg.GraphicsLayout, row: int, height: int | None) -> pg.PlotItem:
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


def per_pixel(curve: pg.PlotDataItem, factor: float = 1.0) -> pg.PlotDataItem:
    """Draw about one downsampled sample per screen pixel (pyqtgraph's default is five): with "peak" each
    pixel still shows the min and max of the frames it covers, so spikes stay visible, and a long video's
    curves cost what the screen's width costs, not the video's length. Display only: data stay as given."""
    curve.opts["autoDownsampleFactor"] = factor  # samples per pixel: 0.5 = one per two pixels
    # Painted once into a pixmap and blitted after that: moving the cursor over the plot (every frame shown)
    # or changing another curve repaints the strip under it from the pixmap instead of drawing the curve again.
    # (Off while the x range changes: see vidxai_gui.timeline.Timeline._range_changing.)
    curve.curve.setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    return curve


def short_name(name: str, width: int = 13) -> str:
    """A tier name for the 78-px axis: wrapped onto two lines, cut with an ellipsis beyond that."""
    if len(name) <= width:
        return name
    head, _, tail = name.partition(" ")
    if tail and len(head) <= width:
        return f"{head}\n{tail if len(tail) <= width else tail[: width - 1] + '…'}"
    return name[: width - 1] + "…"


def track_ticks(plot: pg.PlotItem, ticks: list[tuple[float, str]]) -> None:
    # Thin tracks have no room for a rotated axis title, so the title is written as a horizontal tick.
    plot.getAxis("left").setTicks([ticks])
