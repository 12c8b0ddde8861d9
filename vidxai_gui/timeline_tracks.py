"""The timeline's tracks under the scores: face confidence, SpRAy stages, occlusion Δ, AU agreement, a clip
model's temporal relevance (and its window band on the scores) and annotation tiers.

`TimelineTracks` is a part of `vidxai_gui.timeline.Timeline` (a mixin, like the main window's actions): it
builds the track plots under the class scores and everything drawn on them, and the Timeline's public
`set_face_track`, `set_stages`, `set_occlusion`, `set_annotations`, `set_pending` and stage lookups live
here. All x values are frame indices (see vidxai_gui.timeline).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QToolTip

from vidxai_gui.timeline_items import (
    FALLBACK,
    LabelPool,
    Segment,
    StripItem,
    class_colour,
    frame_strip,
    make_plot,
    per_pixel,
    short_name,
    track_ticks,
)

OCCLUSION_HEADING = "part hidden → Δ score (below 0: it mattered):"  # LabelItem text is HTML: no "<"
OCCLUSION_TIP = ("Occlusion Δ per frame: the predicted class's score with a facial part hidden minus its score "
                 "with the whole face. Below 0: hiding that part lowered the score, so the model used it; near 0: "
                 "the part did not matter; no line: no face (or no score) in that frame.")

AU_TIP = ("AU agreement per frame: the cosine between the relevance the model used (a heatmap method's map, or a "
          "landmark model's landmark relevance) and the expected action-unit regions of the predicted class "
          "(View ▸ Show expected AU regions). 1: the evidence lies where the class's facial action units are; "
          "0: elsewhere; no line: no face, no score, or a class without action units (neutral).")


TEMPORAL_TIP = ("Temporal relevance per frame (clip models): how much the frame mattered to the windows of T frames "
                "that contain it, as its share of each window's relevance for the shown heatmap method, averaged "
                "over those windows (1/T: as much as any other frame). The shaded band on the scores: the frames "
                "of the windows whose mean is the current frame's score.")


class TimelineTracks:
    """Face, stage, occlusion, AU agreement and annotation tracks of the Timeline (x linked to its scores plot)."""

    OCCLUSION_KEY_PX = 16  # the band above the occlusion track that holds its key

    TIER_ROW_PX = 24  # one annotation tier: room for one line of label text
    TIER_AXIS_PX = 40  # the time axis under the annotation track

    def _build_track_plots(self) -> None:
        """The four track plots, rows 2–5 of the timeline's layout (row 0: the scores, 1: the waveform)."""
        self.face_plot = make_plot(self.view.ci, 2, 40)
        self.face_plot.setYRange(0, 1, padding=0.08)
        track_ticks(self.face_plot, [(0.0, "0"), (0.5, "face conf."), (1.0, "1")])
        self.stage_plot = make_plot(self.view.ci, 3, 30)
        self.stage_plot.setYRange(0, 1, padding=0)
        track_ticks(self.stage_plot, [(0.5, "stages")])
        self.occlusion_plot = make_plot(self.view.ci, 4, 50 + self.OCCLUSION_KEY_PX)
        self.occlusion_plot.setYRange(-1, 1, padding=0.05)
        track_ticks(self.occlusion_plot, [(-1.0, "−1"), (0.0, "occl. Δ"), (1.0, "+1")])
        # Its key sits in a band above the track (the plot's title row), as the class key above the scores:
        # what Δ means, then the facial parts that have data, in their curves' colours.
        self.occlusion_legend = self.occlusion_plot.addLegend(offset=(8, 0), labelTextSize="7pt", colCount=8)
        self.occlusion_plot.setTitle(" ", size="7pt")
        self.occlusion_plot.layout.setRowFixedHeight(0, self.OCCLUSION_KEY_PX)
        self.occlusion_legend.setParentItem(self.occlusion_plot)
        self.occlusion_legend.layout.setContentsMargins(0, 0, 0, 0)
        self.occlusion_legend.anchor(itemPos=(0, 0), parentPos=(0, 0), offset=(40, -2))
        self.occlusion_plot.setToolTip(OCCLUSION_TIP)
        self._build_au_plot(5)
        self._build_temporal_plot(6)
        self.tier_plot = make_plot(self.view.ci, 7, self.TIER_AXIS_PX + self.TIER_ROW_PX)
        self.tier_plot.vb.marks = True
        self.tier_plot.vb.sigMark.connect(self._on_mark_drag)
        self.tier_plot.getAxis("bottom").setStyle(showValues=True)
        self.tier_plot.getAxis("bottom").setLabel("time (s)")
        self.tier_plot.getAxis("bottom").enableAutoSIPrefix(False)

    def _build_track_items(self) -> None:
        """What the tracks draw: no-face shading, the face curve, the stage strip, bars, labels and selection,
        the annotation labels and the pending in/out range; plus the hover tooltips and label fitting."""
        # Frames without a face, shaded grey on the scores and the face track: one image each (1×T).
        self.no_face = np.zeros(0, dtype=bool)
        self.no_face_scores = StripItem(0.0, 1.0)
        self.no_face_track = StripItem(0.0, 1.0)
        self.scores_plot.addItem(self.no_face_scores)
        self.face_plot.addItem(self.no_face_track)
        self.face_curve = per_pixel(self.face_plot.plot(pen=pg.mkPen("#333333", width=1.5), connect="finite"))
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
                idx = self.classes.index(base) if base in self.classes else abs(hash(base)) % len(FALLBACK)
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
        if deltas:  # the key's heading: an entry without a line
            self.occlusion_legend.addItem(pg.PlotDataItem(pen=None), OCCLUSION_HEADING)
        for i, (name, values) in enumerate(deltas.items()):
            v = np.asarray(values, dtype=np.float64)
            pen = pg.mkPen(FALLBACK[i % len(FALLBACK)], width=1.5)
            # Only the parts with data are named in the key (a part never scored draws nothing).
            self.occlusion_curves[name] = per_pixel(self.occlusion_plot.plot(
                np.arange(len(v), dtype=np.float64), v, pen=pen, connect="finite",
                name=name if np.isfinite(v).any() else None))

    def _build_au_plot(self, row: int) -> None:
        """The AU agreement track (issue 16): per frame, cos(the shown relevance, the predicted class's AU map)."""
        self.au_plot = make_plot(self.view.ci, row, 40)
        self.au_plot.setYRange(0, 1, padding=0.08)
        track_ticks(self.au_plot, [(0.0, "0"), (0.5, "AU agreem."), (1.0, "1")])
        self.au_plot.setToolTip(AU_TIP)
        self.au_curve = per_pixel(self.au_plot.plot(pen=pg.mkPen("#00838f", width=1.5), connect="finite"))
        self.au_plot.setDownsampling(auto=True, mode="peak")  # an hour: ~one sample per pixel, not 108 k
        self.au_plot.setClipToView(True)
        self.au_plot.setVisible(False)

    def _build_temporal_plot(self, row: int) -> None:
        """A clip model's temporal-relevance track (issue 15) and, on the scores, the span of the windows that
        produced the current frame's score."""
        self.temporal_plot = make_plot(self.view.ci, row, 32)
        self.temporal_plot.setToolTip(TEMPORAL_TIP)
        self.temporal_curve = per_pixel(self.temporal_plot.plot(pen=pg.mkPen("#6a1b9a", width=1.5),
                                                                connect="finite"))
        self.temporal_plot.setDownsampling(auto=True, mode="peak")
        self.temporal_plot.setClipToView(True)
        self.temporal_plot.setVisible(False)
        self.window_region = pg.LinearRegionItem(movable=False, brush=pg.mkBrush(106, 27, 154, 30),
                                                 pen=pg.mkPen(106, 27, 154, 160, width=1))
        self.window_region.setZValue(-6)
        self.window_region.setVisible(False)
        self.scores_plot.addItem(self.window_region, ignoreBounds=True)

    def set_temporal_relevance(self, values: np.ndarray | None, method: str = "") -> None:
        """Per frame, its share of its windows' relevance for the shown method (None: hide the track)."""
        self.temporal_plot.setVisible(values is not None)
        if values is None:
            self.temporal_curve.setData([], [])
            return
        v = np.asarray(values, dtype=np.float64)
        top = float(np.nanmax(v)) if np.isfinite(v).any() else 1.0
        self.temporal_plot.setYRange(0, max(top, 1e-6), padding=0.08)
        track_ticks(self.temporal_plot, [(0.0, "0"), (max(top, 1e-6) / 2, "time rel."), (top, f"{top:.2f}")])
        self.temporal_plot.setToolTip(f"{TEMPORAL_TIP}\nMethod: {method or 'none'}.")
        self.temporal_curve.setData(np.arange(len(v), dtype=np.float64), v)

    def set_window_span(self, first: int | None, last: int | None) -> None:
        """Shade frames first..last (inclusive) on the scores: the windows behind the current frame's score."""
        shown = first is not None and last is not None and first >= 0 and last >= first
        self.window_region.setVisible(shown)
        if shown:
            self.window_region.setRegion((first - 0.5, last + 0.5))

    def set_au_agreement(self, values: np.ndarray | None) -> None:
        """AU agreement per frame (NaN: undefined there); None hides the track."""
        self.au_plot.setVisible(values is not None)
        if values is None:
            self.au_curve.setData([], [])
            return
        v = np.asarray(values, dtype=np.float64)
        self.au_curve.setData(np.arange(len(v), dtype=np.float64), v)
        low = float(np.nanmin(v)) if np.isfinite(v).any() else 0.0
        self.au_plot.setYRange(min(low, 0.0), 1, padding=0.08)  # a signed map's cosine can fall below 0

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
        track_ticks(self.tier_plot, [(n - i - 0.5, short_name(name)) for i, name in enumerate(self.tiers)]
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
