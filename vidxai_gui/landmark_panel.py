"""The Landmarks dock (issue 16): a landmark model's evidence at the frame on screen and over the whole clip.

Four horizontal bar charts, each in per cent of its total |IG| (integrated gradients, summed over the window's
frames and x, y: ``engine.frame_au.landmark_frame_evidence``):
  this frame: the top landmarks, grouped by facial part
  this frame: the five parts (they sum to 100 %) | whole clip: the five parts
  whole clip: the top landmarks of the clip ranking
The clip values are the session's record (``Session.landmark_ig_info``: ``clip_relevance`` and ``parts``,
summed |IG| per landmark / part over the video). Bars are coloured by facial part (PART_COLOURS); the
landmark numbers are dlib's 68-point order (0-based) as the session's ``points`` say, grouped into parts as
its ``groups`` say (sessions from before that record: engine.models.landmark.LANDMARK_PARTS).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

PARTS = ("brows", "eyes", "nose", "mouth", "jaw")  # top to bottom, as on a face
PART_COLOURS = {"brows": "#7570b3", "eyes": "#1b9e77", "nose": "#a6761d", "mouth": "#e7298a", "jaw": "#707070"}
TOP = 10  # landmarks shown per chart


def landmark_parts() -> dict[str, list[int]]:
    """engine.models.landmark.LANDMARK_PARTS, for sessions that did not record their grouping (imported when
    first needed: that module loads torch)."""
    from engine.models.landmark import LANDMARK_PARTS

    return {p: list(idx) for p, idx in LANDMARK_PARTS.items()}


def part_of_point(point: int, groups: dict[str, list[int]]) -> str:
    return next(p for p, idx in groups.items() if point in idx)


def part_shares(relevance: np.ndarray, points: list[int], groups: dict[str, list[int]]) -> dict[str, float]:
    """Per-landmark |IG| (over ``points``) → per cent of the total per facial part of ``groups`` (the
    session's grouping; sums to 100; 0s if no IG)."""
    r = np.nan_to_num(np.asarray(relevance, np.float64))
    total = r.sum()
    sums = {p: float(r[[j for j, q in enumerate(points) if q in groups[p]]].sum()) for p in PARTS}
    return {p: (100.0 * v / total if total > 0 else 0.0) for p, v in sums.items()}


def top_landmarks(relevance: np.ndarray, points: list[int], groups: dict[str, list[int]],
                  n: int = TOP) -> list[tuple[int, str, float]]:
    """The n landmarks with the largest |IG|, as (point, part, per cent of the total), grouped by part in
    PARTS order and largest first within a part."""
    r = np.nan_to_num(np.asarray(relevance, np.float64))
    total = r.sum()
    if total <= 0:
        return []
    best = np.argsort(-r, kind="stable")[:n]
    rows = [(int(points[j]), part_of_point(int(points[j]), groups), 100.0 * float(r[j]) / total) for j in best]
    return sorted(rows, key=lambda row: (PARTS.index(row[1]), -row[2]))


def _bar_plot(layout: pg.GraphicsLayout, row: int, col: int, title: str, span: int = 1) -> pg.PlotItem:
    plot = layout.addPlot(row=row, col=col, colspan=span)
    plot.setTitle(title, size="9pt", color="#202020")
    plot.setMenuEnabled(False)
    plot.setMouseEnabled(x=False, y=False)
    plot.hideButtons()
    plot.getAxis("left").setWidth(74 if span > 1 else 46)
    plot.getAxis("bottom").setLabel("% of |IG|")
    plot.showGrid(x=True, y=False, alpha=0.2)
    plot.getViewBox().invertY(True)
    return plot


class LandmarkPanel(QWidget):
    """Landmark IG per frame and over the clip as part-coloured bars; what is drawn stays readable in
    ``frame_top``, ``frame_parts``, ``clip_top``, ``clip_parts`` (for tests)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.header = QLabel()
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground("w")
        # Rows: this frame's top landmarks; the parts of this frame | of the clip; the clip's ranking.
        self.plots = [_bar_plot(self.view.ci, *where) for where in (
            (0, 0, "This frame: top landmarks", 2), (1, 0, "This frame: parts"),
            (2, 0, "Whole clip: landmark ranking", 2), (1, 1, "Whole clip: parts"))]
        self.bars = [pg.BarGraphItem(x0=[], y=[], height=[], width=[]) for _ in self.plots]
        for plot, bars in zip(self.plots, self.bars, strict=True):
            plot.addItem(bars)
        key = " ".join(f"<span style='color:{c}'>■</span> {p}" for p, c in PART_COLOURS.items())
        self.key = QLabel(f"Bar colour = facial part: {key}")
        self.key.setTextFormat(Qt.TextFormat.RichText)
        self.key.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.header)
        layout.addWidget(self.key)
        layout.addWidget(self.view, 1)
        self.frame_top: list[tuple[int, str, float]] = []
        self.frame_parts: dict[str, float] = {}
        self.clip_top: list[tuple[int, str, float]] = []
        self.clip_parts: dict[str, float] = {}
        self.groups: dict[str, list[int]] = {}
        self.clear("Open a session analysed by a landmark model (--arch landmark-lstm) to see which landmarks "
                   "it used.")

    def clear(self, message: str) -> None:
        self.header.setText(message)
        self.view.setVisible(False)  # no empty charts: the message says what would be here
        self.frame_top, self.frame_parts, self.clip_top, self.clip_parts = [], {}, [], {}
        for i in range(4):
            self._draw(i, [])

    def show_clip(self, relevance: np.ndarray, points: list[int], parts: dict[str, float], decision: str,
                  window: int, groups: dict[str, list[int]]) -> None:
        """The clip's record: |IG| summed per landmark (over ``points``) and per part over the video;
        ``groups``: the session's facial parts (dlib indices), used for the frame's bars too."""
        self.view.setVisible(True)
        self.groups = groups
        self.clip_top = top_landmarks(relevance, points, groups)
        total = sum(parts.values())
        self.clip_parts = {p: (100.0 * parts.get(p, 0.0) / total if total > 0 else 0.0) for p in PARTS}
        self._draw(2, [(f"{part} {pt}", part, v) for pt, part, v in self.clip_top])
        self._draw(3, [(p, p, self.clip_parts[p]) for p in PARTS])
        self._clip_note = (f"Integrated gradients of a landmark model over windows of {window} frames; "
                           f"video decision: <b>{decision or '—'}</b>.")

    def show_frame(self, k: int, relevance: np.ndarray | None, points: list[int], predicted: str) -> None:
        """Frame k's |IG| per landmark (None: frame k was not scored)."""
        note = getattr(self, "_clip_note", "")
        if relevance is None or not np.isfinite(relevance).all():
            self.frame_top, self.frame_parts = [], {}
            self._draw(0, [])
            self._draw(1, [])
            self.header.setText(f"Frame {k}: not scored (no face, or fewer frames with a face before it than "
                                f"the model's window). {note}")
            return
        self.frame_top = top_landmarks(relevance, points, self.groups)
        self.frame_parts = part_shares(relevance, points, self.groups)
        self._draw(0, [(f"{part} {pt}", part, v) for pt, part, v in self.frame_top])
        self._draw(1, [(p, p, self.frame_parts[p]) for p in PARTS])
        self.header.setText(f"Frame {k}: evidence for <b>{predicted}</b> (its window of frames). {note}")

    def _draw(self, i: int, rows: list[tuple[str, str, float]]) -> None:
        plot, bars = self.plots[i], self.bars[i]
        n = len(rows)
        bars.setOpts(x0=np.zeros(n), y=np.arange(n, dtype=np.float64), height=np.full(n, 0.7),
                     width=np.array([r[2] for r in rows], np.float64),
                     brushes=[pg.mkBrush(PART_COLOURS[r[1]]) for r in rows], pen=pg.mkPen(None))
        plot.getAxis("left").setTicks([[(j, r[0]) for j, r in enumerate(rows)]])
        plot.setYRange(-0.6, max(n, 1) - 0.4, padding=0)
        plot.setXRange(0, max([r[2] for r in rows], default=1.0) * 1.05, padding=0)
        plot.setFixedHeight(52 + 15 * (TOP if i in (0, 2) else len(PARTS)))
        self.view.setFixedHeight(int(sum(p.height() for p in self.plots[:3])) + 16)

    def widths(self, i: int) -> np.ndarray:
        """The bar lengths of chart i as drawn (per cent), for tests."""
        w = self.bars[i].opts.get("width")
        return np.asarray(w if w is not None else [], np.float64)
