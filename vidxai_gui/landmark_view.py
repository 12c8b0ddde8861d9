"""Landmark models and expected action-unit regions on the frame (issue 16).

``LandmarkView`` listens to the review model. When a session opens (or the heatmap method changes) it reads,
on a worker thread (``JobRunner.latest``), what ``engine.frame_au`` defines: a landmark model's signed and
|IG| per landmark and frame, and the per-frame AU agreement of the shown relevance; the result is cached per
session file and method. Then, for the frame on screen:
- the landmark model's points, coloured by their signed IG (diverging: blue = against the predicted class,
  white ≈ 0, red = for it; one scale for the whole clip) and sized by |IG| (``LandmarkOverlay``, with a key
  in the frame's bottom-left corner);
- with View ▸ Show expected AU regions: A, the predicted class's AU map drawn from the frame's landmarks
  (``engine.frame_au.expected_au_map``: cyan outline and fill), with its AUs and the frame's cosine
  (``AURegions``, top-right corner);
- the Landmarks dock's bars (``vidxai_gui.landmark_panel``) and the timeline's AU agreement track.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRectF, Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QLabel, QWidget

from engine.frame_au import (
    AU_NAMES,
    BLOCK,
    FACE_PX,
    LANDMARK_METHOD,
    FaceSquare,
    au_agreement,
    expected_au_map,
    expression_aus,
    landmark_frame_evidence,
)
from sessions.tracks import predicted
from vidxai_gui.heat_legend import BAR_H, HeatLegend, method_name
from vidxai_gui.landmark_panel import LandmarkPanel
from vidxai_gui.preprocess_panel import ScrollPanel

# The points' diverging colours: blue (against the predicted class) – near white (≈ 0) – red (for it).
DIVERGING = pg.ColorMap(pos=[0.0, 0.5, 1.0], color=[(33, 102, 172), (247, 247, 247), (178, 24, 43)])
SIZE_MIN, SIZE_MAX = 5.0, 18.0  # screen pixels: a landmark with no |IG| … with the clip's largest
SCALE_PERCENTILE = 99  # colour and size scales: this percentile over the clip's scored frames
COLOUR_LEVELS = 21  # steps of the diverging map the dots are drawn in (0 is the middle one)
PALETTE = DIVERGING.map(np.linspace(0.0, 1.0, COLOUR_LEVELS), mode="byte")
AU_COLOUR = (24, 255, 255)  # the AU regions' outline and fill (cyan: apart from the points and heatmaps)


@dataclass
class LandmarkEvidence:
    """What the window shows of one session and method (read on a worker thread, see ``load_evidence``)."""

    path: Path
    method: str
    classes: list[str]
    pred: np.ndarray  # T, the predicted class per frame (−1: not scored)
    au: np.ndarray | None  # T, AU agreement (engine.frame_au.au_agreement); None: not available
    decision: str = ""
    points: list[int] = field(default_factory=list)  # landmark models: the session's landmark order
    window: int = 0
    signed: np.ndarray | None = None  # T×L signed IG per landmark (NaN: not scored)
    magnitude: np.ndarray | None = None  # T×L |IG| per landmark
    signed_scale: float = 1.0  # |signed IG| drawn at full colour
    size_scale: float = 1.0  # |IG| drawn at SIZE_MAX
    clip_relevance: np.ndarray | None = None  # L, summed |IG| over the video (the session's record)
    clip_parts: dict[str, float] = field(default_factory=dict)
    groups: dict[str, list[int]] = field(default_factory=dict)  # facial part → landmarks (the session's record)

    @property
    def has_landmarks(self) -> bool:
        return self.signed is not None


def _scale(values: np.ndarray) -> float:
    v = np.abs(values[np.isfinite(values)])
    return max(float(np.percentile(v, SCALE_PERCENTILE)), 1e-12) if v.size else 1.0


def load_evidence(path: Path, method: str) -> LandmarkEvidence | None:
    """Read a session's landmark evidence and AU agreement for ``method`` (worker thread)."""
    from sessions import Session

    with Session.open(path) as s:
        info = s.analysis_info()
        if info is None:
            return None
        ev = LandmarkEvidence(Path(path), method, list(info["classes"]), predicted(s.read("probs"), s.read("valid")),
                              au_agreement(s, method), decision=str(info.get("decision") or ""))
        li = s.landmark_ig_info() if method == LANDMARK_METHOD else {}
        if li.get("points"):
            from vidxai_gui.landmark_panel import landmark_parts

            ev.groups = {p: [int(i) for i in idx] for p, idx in (li.get("groups") or landmark_parts()).items()}
            T, L = s.frame_count, len(li["points"])
            ev.points, ev.window = list(li["points"]), int(li.get("window", 0))
            ev.signed, ev.magnitude = np.full((T, L), np.nan, np.float32), np.full((T, L), np.nan, np.float32)
            for a in range(0, T, BLOCK):  # a block at a time: the windows are T×P×L×2
                sl = slice(a, min(a + BLOCK, T))
                ev.signed[sl], ev.magnitude[sl] = landmark_frame_evidence(s.landmark_ig(sl))
            ev.signed_scale, ev.size_scale = _scale(ev.signed), _scale(ev.magnitude)
            ev.clip_relevance = np.asarray(li["clip_relevance"], np.float64)
            ev.clip_parts = {k: float(v) for k, v in li.get("parts", {}).items()}
    return ev


def colour_levels(signed: np.ndarray, scale: float) -> np.ndarray:
    """Signed IG → the index of its colour among COLOUR_LEVELS steps of the diverging map (±scale and beyond
    at the ends). Few distinct colours and sizes let pyqtgraph draw each dot from its symbol cache."""
    t = np.clip(0.5 + 0.5 * np.nan_to_num(np.asarray(signed, np.float64)) / scale, 0.0, 1.0)
    return np.rint(t * (COLOUR_LEVELS - 1)).astype(np.int64)


def point_colours(signed: np.ndarray, scale: float) -> np.ndarray:
    """N×4 uint8 RGBA of the diverging map for signed IG values."""
    return PALETTE[colour_levels(signed, scale)]


def point_sizes(magnitude: np.ndarray, scale: float) -> np.ndarray:
    """|IG| → the dot's size in whole screen pixels, SIZE_MIN … SIZE_MAX."""
    m = np.clip(np.nan_to_num(np.asarray(magnitude, np.float64)) / scale, 0.0, 1.0)
    return np.rint(SIZE_MIN + (SIZE_MAX - SIZE_MIN) * m)


class Corner(QObject):
    """Keeps a widget in a corner of the frame view as the view resizes."""

    def __init__(self, view: QWidget, widget: QWidget, corner: str) -> None:
        super().__init__(view)
        self.view, self.widget, self.corner = view, widget, corner
        view.installEventFilter(self)
        self.place()

    def place(self) -> None:
        w, v = self.widget, self.view
        x = 8 if self.corner.endswith("left") else max(0, v.width() - w.width() - 8)
        y = 8 if self.corner.startswith("top") else max(0, v.height() - w.height() - 8)
        w.move(x, y)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if obj is self.view and event.type() == QEvent.Type.Resize:
            self.place()
        return False


class LandmarkLegend(HeatLegend):
    """The points' key, drawn as the heatmap's colour bar is: the diverging ramp from against to for the
    predicted class, and what a dot's size means."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cls, self.scale, self.window = "", 1.0, 0
        row = DIVERGING.map(np.linspace(0, 1, self.width() - 16), mode="byte")
        self._ramp = np.ascontiguousarray(np.repeat(row[None], BAR_H, axis=0))
        self._image = QImage(self._ramp.data, self._ramp.shape[1], BAR_H, 4 * self._ramp.shape[1],
                             QImage.Format.Format_RGBA8888)
        self.setToolTip("Each dot is a facial landmark (dlib's 68 points). Colour: its integrated gradient "
                        "summed over the model's window and x, y (red pushed the predicted class up, blue pushed "
                        "it down, white ≈ no effect; one scale for the whole clip). Size: its |IG|, how much it "
                        "mattered either way. The Landmarks dock ranks them.")

    def set_state(self, cls: str, scale: float, window: int) -> None:
        self.cls, self.scale, self.window = cls, scale, window
        self.update()

    def texts(self) -> tuple[str, str, str]:
        c = self.cls or "—"
        return (f"Landmarks: integrated gradients, {self.window}-frame window",
                f"against {c} ← −{self.scale:.2g} · 0 · +{self.scale:.2g} → for {c}",
                "dot size = |IG|: how much the landmark mattered")


class LandmarkOverlay:
    """A landmark model's points on the frame view (in frame pixels, like every overlay) and their key."""

    def __init__(self, view: Any) -> None:
        self.view = view
        self.scatter = pg.ScatterPlotItem(pxMode=True, pen=pg.mkPen(20, 20, 20, 200, width=1))
        self.scatter.setZValue(24)
        view.vb.addItem(self.scatter)
        self.legend = LandmarkLegend(view)
        self.corner = Corner(view, self.legend, "bottom-left")
        self.brushes = {tuple(c): pg.mkBrush(*c) for c in PALETTE.tolist()}  # one per colour level
        self.colours = np.zeros((0, 4), np.uint8)  # as drawn (for tests)
        self.sizes = np.zeros(0)
        self.hide()

    def show(self, xy: np.ndarray, colours: np.ndarray, sizes: np.ndarray) -> None:
        self.colours, self.sizes = colours, sizes
        self.scatter.setData(pos=np.asarray(xy, np.float64), size=sizes,
                             brush=[self.brushes[tuple(c)] for c in colours.tolist()])
        self.scatter.setVisible(True)
        self.legend.setVisible(True)
        self.corner.place()

    def hide(self) -> None:
        self.scatter.setData(pos=np.zeros((0, 2)))
        self.scatter.setVisible(False)
        self.legend.setVisible(False)
        self.colours, self.sizes = np.zeros((0, 4), np.uint8), np.zeros(0)


class AURegions:
    """A: the expected AU regions of the predicted class over the face square, with their names and the
    frame's AU agreement (top-right corner)."""

    def __init__(self, view: Any) -> None:
        lut = np.zeros((256, 4), np.uint8)
        lut[:, :3] = AU_COLOUR
        lut[:, 3] = np.clip(np.linspace(0, 90, 256), 0, 255).astype(np.uint8)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(lut)
        self.image.setZValue(15)  # over the heatmap (10), under the box and points
        view.vb.addItem(self.image)
        self.outline = pg.IsocurveItem(level=0.5, pen=pg.mkPen(*AU_COLOUR, width=2))
        self.outline.setParentItem(self.image)
        self.label = QLabel(view)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setWordWrap(True)
        self.label.setFixedWidth(300)
        self.label.setStyleSheet("QLabel { background: rgba(0, 0, 0, 170); color: #f0f0f0; border-radius: 5px;"
                                 " padding: 4px; font-size: 8pt; }")
        self.label.setToolTip("The action units the FACS codebook (METHODS §7) expects for the predicted class, "
                              "drawn from this frame's landmarks. AU agreement: the cosine between this map and "
                              "the relevance the model used (1: same place; 0: elsewhere); its timeline track "
                              "shows it for every frame.")
        self.corner = Corner(view, self.label, "top-right")
        self.map: np.ndarray | None = None  # as drawn (for tests)
        self.hide()

    def show(self, a: np.ndarray | None, square: FaceSquare | None, text: str) -> None:
        self.map = a
        if a is not None and square is not None and a.any():
            self.image.setImage(a, autoLevels=False, levels=(0.0, 1.0))
            self.image.setRect(QRectF(square.x0, square.y0, square.side, square.side))
            self.outline.setData(a)
            self.image.setVisible(True)
        else:
            self.image.setVisible(False)
        self.label.setText(text)
        self.label.adjustSize()
        self.label.setVisible(True)
        self.corner.place()

    def hide(self) -> None:
        self.image.setVisible(False)
        self.label.setVisible(False)
        self.map = None


def au_text(cls: str, cos: float | None, method: str) -> str:
    """The AU label's rich text: the class's expected AUs and the frame's AU agreement."""
    aus = expression_aus(cls)
    if aus is None:
        return f"No AU codebook entry for <b>{cls}</b>: no expected regions."
    if not aus:
        return f"<b>{cls}</b>: no facial action units expected (no regions, no agreement)."
    names = ", ".join(f"AU{a} {AU_NAMES.get(a, '')}" for a in aus)
    shown = "landmark relevance" if method == LANDMARK_METHOD else f"the {method_name(method)} map"
    agree = "—" if cos is None or not np.isfinite(cos) else f"{cos:.2f}"
    return (f"<span style='color:#18ffff'>■</span> Expected AU regions of <b>{cls}</b>: {names}<br>"
            f"AU agreement (cos of {shown} with these regions): <b>{agree}</b> "
            "<span style='color:#b0b0b0'>(1: same place, 0: elsewhere)</span>")


class LandmarkView(QObject):
    """Wires the landmark overlay, AU regions, the Landmarks dock and the AU track to the review model."""

    LANE = "landmark-evidence"

    def __init__(self, window: Any, panel: LandmarkPanel) -> None:
        super().__init__(window)
        self.w, self.model, self.player, self.panel = window, window.review, window.player, panel
        self.points = LandmarkOverlay(self.player.view)
        self.au_regions = AURegions(self.player.view)
        self.evidence: LandmarkEvidence | None = None
        self._cache: dict[tuple, LandmarkEvidence | None] = {}
        self._key: tuple | None = None
        self.model.sessionChanged.connect(self.reload)
        self.model.heatChanged.connect(self.reload)
        self.model.frameChanged.connect(self.on_frame)
        self.model.auRegionsChanged.connect(lambda _on: self.show_frame(self.player.current))
        self.player.playingChanged.connect(lambda on: None if on else self.show_frame(self.player.current))

    def _method(self) -> str:
        methods = self.model.explain_methods
        return LANDMARK_METHOD if LANDMARK_METHOD in methods else self.model.heat_method

    def reload(self) -> None:
        """The session or method changed: read (or take from the cache) its evidence, on a worker thread."""
        d, path = self.model.data, self.model.session_path
        if d is None or d.analysis is None or path is None or not Path(path).exists():
            self._set(None, None)
            return
        method = self._method()
        key = (str(path), os.stat(path).st_mtime_ns, method)
        if key == self._key:
            if self.evidence is not None:
                self._set(key, self.evidence)  # drawn again (a reopened video cleared the timeline)
            return
        if key in self._cache:
            self._set(key, self._cache[key])
            return
        self._key = key
        self.evidence = None
        self.show_frame(self.player.current)
        worker = self.w.jobs.latest(self.LANE, lambda _p, _c: load_evidence(Path(path), method),
                                    "landmark evidence")
        worker.finished.connect(lambda ev, key=key: self._loaded(key, ev))

    def _loaded(self, key: tuple, ev: LandmarkEvidence | None) -> None:
        self._cache = {k: v for k, v in self._cache.items() if k[0] == key[0] and k[1] == key[1]}
        self._cache[key] = ev  # this session file's methods only
        if key == self._key:
            self._set(key, ev)

    def _set(self, key: tuple | None, ev: LandmarkEvidence | None) -> None:
        self._key, self.evidence = key, ev
        self.w.timeline.set_au_agreement(ev.au if ev is not None else None)
        if ev is not None and ev.has_landmarks:
            self.panel.show_clip(ev.clip_relevance, ev.points, ev.clip_parts, ev.decision, ev.window,
                                 ev.groups)
            self.w.docks["landmarks"].raise_()  # a landmark model has no prototypes: show its own dock
        else:
            self.panel.clear("This session's model is not a landmark model: the Landmarks dock shows a "
                             "landmark-lstm model's evidence." if ev is not None else
                             "Open a session analysed by a landmark model (--arch landmark-lstm) to see which "
                             "landmarks it used.")
        self.show_frame(self.player.current)

    def on_frame(self, k: int) -> None:
        if not self.player.playing or k % 3 == 0:  # the dock's bars: a third of the frame rate while playing
            self.show_frame(k, bars=True)
        else:
            self.show_frame(k, bars=False)

    def show_frame(self, k: int, bars: bool = True) -> None:
        """Frame k's points, AU regions and bars (what is known so far)."""
        d, ev = self.model.data, self.evidence
        face = d is not None and 0 <= k < d.faces_done and bool(d.found[k])
        scored = ev is not None and 0 <= k < len(ev.pred) and ev.pred[k] >= 0
        if ev is not None and ev.has_landmarks and face and scored and np.isfinite(ev.signed[k]).all():
            xy = d.landmarks[k][ev.points]
            self.points.legend.set_state(ev.classes[ev.pred[k]], ev.signed_scale, ev.window)
            self.points.show(xy, point_colours(ev.signed[k], ev.signed_scale),
                             point_sizes(ev.magnitude[k], ev.size_scale))
            self.player.view.landmark_item.setVisible(False)
        else:
            self.points.hide()
            self.player.view.landmark_item.setVisible(True)
        if ev is not None and ev.has_landmarks and bars and 0 <= k < len(ev.pred):
            self.panel.show_frame(k, ev.magnitude[k] if scored else None, ev.points,
                                  ev.classes[ev.pred[k]] if scored else "")
        if self.model.au_regions and ev is not None and face and scored:
            cls = ev.classes[ev.pred[k]]
            a = expected_au_map(d.landmarks[k], d.box[k], cls)
            cos = float(ev.au[k]) if ev.au is not None else None
            self.au_regions.show(a, FaceSquare.around(d.box[k]), au_text(cls, cos, ev.method))
        elif self.model.au_regions and d is not None:
            self.au_regions.show(None, None, "Expected AU regions: none here (no face or no score at this "
                                 "frame)." if ev is not None else "Expected AU regions: needs an analysed session.")
        else:
            self.au_regions.hide()


def plug_in(window: Any) -> LandmarkView:
    """The Landmarks dock (tabbed with the prototypes) and its view, on the main window."""
    panel = LandmarkPanel()
    window.add_dock("landmarks", "Landmarks", ScrollPanel(panel))
    window.tabifyDockWidget(window.docks["prototypes"], window.docks["landmarks"])
    window.docks["prototypes"].raise_()
    return LandmarkView(window, panel)


__all__ = ["FACE_PX", "AURegions", "LandmarkEvidence", "LandmarkOverlay", "LandmarkView", "au_text",
           "load_evidence", "plug_in", "point_colours", "point_sizes"]
