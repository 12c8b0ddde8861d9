"""The frame view: a frame in a pyqtgraph ViewBox and what is drawn over it (box, landmarks, heatmap,
prototype box, note), plus the face view's crops (``face_crops``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsRectItem, QWidget

from vidxai_gui.heat_legend import HeatLegend


def face_crops(box: np.ndarray, found: np.ndarray, frame_hw: tuple[int, int], fps: float,
               aspect: float = 4 / 3, zoom: float = 2.4, window_s: float = 1.0) -> np.ndarray:
    """The face view's crop of every frame: T×4 int (x0, y0, x1, y1), x1/y1 exclusive; −1 rows when the
    video has no face at all. Computed once for a session, vectorised.

    The tracked box's centre and size are filled across frames without a face (linear between the faces
    either side, held before the first and after the last), then smoothed by a centred moving average
    over `window_s` seconds, so the view glides with the person instead of jittering with the detector.
    The crop is `zoom` × the face's size tall, `aspect` wide:tall, kept inside the frame."""
    box = np.asarray(box, np.float64).reshape(-1, 4)
    T = len(box)
    out = np.full((T, 4), -1, np.int64)
    ok = np.asarray(found, bool)[:T] & np.isfinite(box).all(axis=1)
    if T == 0 or not ok.any():
        return out
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    idx = np.flatnonzero(ok)
    frames = np.arange(T, dtype=np.float64)
    cx = np.interp(frames, idx, (box[idx, 0] + box[idx, 2]) / 2)
    cy = np.interp(frames, idx, (box[idx, 1] + box[idx, 3]) / 2)
    size = np.interp(frames, idx, np.maximum(box[idx, 2] - box[idx, 0], box[idx, 3] - box[idx, 1]))
    n = max(1, round(window_s * fps) | 1)  # odd: centred

    def smooth(v: np.ndarray) -> np.ndarray:
        if n == 1 or T == 1:
            return v
        padded = np.pad(v, (n // 2, n // 2), mode="edge")
        c = np.cumsum(np.concatenate(([0.0], padded)))
        return (c[n:] - c[:-n]) / n

    cx, cy, size = smooth(cx), smooth(cy), smooth(size)
    h = np.minimum(np.maximum(zoom * size, 16.0), fh)
    w = np.minimum(h * aspect, fw)
    h = np.minimum(h, w / aspect) if aspect > 0 else h
    x0 = np.clip(np.round(cx - w / 2), 0, np.maximum(fw - np.round(w), 0))
    y0 = np.clip(np.round(cy - h / 2), 0, np.maximum(fh - np.round(h), 0))
    out[:, 0], out[:, 1] = x0, y0
    out[:, 2], out[:, 3] = np.minimum(x0 + np.round(w), fw), np.minimum(y0 + np.round(h), fh)
    return out


@dataclass
class FrameOverlays:
    """What to draw over one frame; every field is in full-frame pixel coordinates."""

    box: np.ndarray | None = None  # (4,) x0, y0, x1, y1
    landmarks: np.ndarray | None = None  # (68, 2) x, y
    heatmap: np.ndarray | None = None  # h×w float over the frame region starting at heat_origin
    heat_origin: tuple[int, int] = (0, 0)  # frame pixel (x, y) of heatmap[0, 0]
    heat_level: float = 1.0  # the heat value drawn at full colour (computed with the map, off the GUI thread)
    proto_box: np.ndarray | None = None  # (4,) the top prototype's 95th-percentile box
    proto_label: str = ""
    note: str = ""  # one line drawn on the frame, e.g. "no face found in this frame"


class FrameView(pg.GraphicsView):
    """A frame in a ViewBox with locked aspect and y pointing down, plus its overlays."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent, background="#1e1e1e")
        self.vb = pg.ViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.setCentralItem(self.vb)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.vb.addItem(self.image_item)

        # Transparent where relevance is zero, so the face stays visible under a sparse map.
        lut = pg.colormap.get("inferno").getLookupTable(0.0, 1.0, 256, alpha=True)
        lut[:, 3] = np.clip(np.linspace(0, 400, 256), 0, 255).astype(np.uint8)
        self.heat_item = pg.ImageItem(axisOrder="row-major")
        self.heat_item.setLookupTable(lut)
        self.heat_item.setOpacity(0.6)
        self.heat_item.setZValue(10)
        self.vb.addItem(self.heat_item)

        self.box_item = QGraphicsRectItem()
        pen = QPen(QColor("#00e676"), 2)
        pen.setCosmetic(True)  # width in screen pixels, whatever the zoom
        self.box_item.setPen(pen)
        self.box_item.setZValue(20)
        self.vb.addItem(self.box_item)

        self.landmark_item = pg.ScatterPlotItem(size=4, pen=None, brush=pg.mkBrush(0, 230, 118, 220))
        self.landmark_item.setZValue(21)
        self.vb.addItem(self.landmark_item)

        self.proto_item = QGraphicsRectItem()
        ppen = QPen(QColor("#ffd600"), 2, Qt.PenStyle.DashLine)
        ppen.setCosmetic(True)
        self.proto_item.setPen(ppen)
        self.proto_item.setZValue(22)
        self.vb.addItem(self.proto_item)
        self.proto_label = pg.TextItem("", color="#ffd600", anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 150))
        self.proto_label.setZValue(23)
        self.vb.addItem(self.proto_label)

        self.message = pg.TextItem("", color="#dddddd", anchor=(0.5, 0.5))
        self.vb.addItem(self.message)
        self.note = pg.TextItem("", color="#ffffff", anchor=(0, 0), fill=pg.mkBrush(160, 0, 0, 170))
        self.note.setZValue(30)
        self.vb.addItem(self.note)
        self.frame_shape: tuple[int, int] | None = None
        self.crop: np.ndarray | None = None  # (x0, y0, x1, y1) shown in the face view, None: the whole frame
        # The colour bar in a corner clear of the face: what the heatmap's colours mean (shown with a map).
        self.legend = HeatLegend(self)
        self.legend_corner = self.LEGEND_CORNERS[0]
        self._face_box: np.ndarray | None = None
        self.set_overlays(FrameOverlays())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if getattr(self, "legend", None) is not None:  # pyqtgraph resizes the view while it is being built
            self._place_legend(self._face_box, force=True)

    LEGEND_CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")  # in order of preference

    def legend_rect(self, corner: str) -> QRectF:
        """Where the colour bar sits in that corner of the view (widget pixels, 8 px from the edges)."""
        lw, lh, m = self.legend.width(), self.legend.height(), 8
        x = m if corner.endswith("left") else max(0, self.width() - lw - m)
        y = m if corner.startswith("top") else max(0, self.height() - lh - m)
        return QRectF(x, y, lw, lh)

    def _place_legend(self, box: np.ndarray | None, force: bool = False) -> None:
        """The colour bar stays in its corner unless it would cover the analysed face: then it moves to
        the first corner (bottom-right, bottom-left, top-right, top-left) clear of it, or the one that
        covers least of it (in a wide shot the face may sit in any corner of the picture)."""
        self._face_box = box
        face = None
        if box is not None and np.isfinite(box).all():
            x0, y0, x1, y1 = (float(v) for v in box)
            mapped = self.vb.mapViewToDevice(QRectF(x0, y0, x1 - x0, y1 - y0))
            face = None if mapped is None else mapped.boundingRect().adjusted(-6, -6, 6, 6)

        def covered(corner: str) -> float:
            if face is None:
                return 0.0
            r = self.legend_rect(corner).intersected(face)
            return r.width() * r.height() if r.isValid() else 0.0

        if not force and covered(self.legend_corner) == 0.0:
            return
        clear = [c for c in self.LEGEND_CORNERS if covered(c) == 0.0]
        self.legend_corner = clear[0] if clear else min(self.LEGEND_CORNERS, key=covered)
        self.legend.move(self.legend_rect(self.legend_corner).topLeft().toPoint())

    def show_message(self, text: str) -> None:
        """A line of text in the middle of the empty view (e.g. "drop a video here")."""
        self.message.setText(text)
        self.message.setPos(0, 0)
        self.message.setVisible(bool(text))
        if self.frame_shape is None:
            self.vb.setRange(QRectF(-200, -60, 400, 120), padding=0)

    def show_frame(self, frame: np.ndarray, crop: np.ndarray | None = None,
                   size: tuple[int, int] | None = None) -> None:
        """Show a frame; with `crop` (x0, y0, x1, y1) only that part of it, filling the view (the face view).

        `size` (width, height) is the video's full frame size when `frame` was decoded smaller (scaled to
        the view): the picture is stretched over the full frame's rectangle. The image item always sits at
        full-frame coordinates (a crop is placed at its origin), so every overlay stays in full-frame pixels
        and lands on the same picture pixel in both views and at any decoded size."""
        shape = (int(size[1]), int(size[0])) if size is not None else frame.shape[:2]
        sy, sx = frame.shape[0] / shape[0], frame.shape[1] / shape[1]  # decoded px per frame px
        self.message.setVisible(False)
        if shape != self.frame_shape:
            self.frame_shape = shape
            self.vb.setLimits(xMin=-shape[1], xMax=2 * shape[1], yMin=-shape[0], yMax=2 * shape[0])
            if crop is None:
                self.vb.setRange(QRectF(0, 0, shape[1], shape[0]), padding=0.01)
        if crop is not None:
            x0, y0, x1, y1 = (int(v) for v in crop)
            self.image_item.setImage(frame[round(y0 * sy):max(round(y1 * sy), round(y0 * sy) + 1),
                                           round(x0 * sx):max(round(x1 * sx), round(x0 * sx) + 1)], autoLevels=False)
            rect = QRectF(x0, y0, x1 - x0, y1 - y0)
            self.image_item.setRect(rect)
            self.vb.setRange(rect, padding=0)
        else:
            # No levels: uint8 RGB then goes to a QImage as it is (levels (0, 255) made pyqtgraph rescale
            # every pixel through a lookup table, ~8 ms a 1080p frame).
            self.image_item.setImage(frame, autoLevels=False)
            self.image_item.setRect(QRectF(0, 0, shape[1], shape[0]))
            if self.crop is not None:  # back from the face view: the whole frame again
                self.vb.setRange(QRectF(0, 0, shape[1], shape[0]), padding=0.01)
        self.crop = None if crop is None else np.asarray(crop, np.int64).copy()

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        """Frame pixel coordinates → coordinates in the picture shown (the crop in the face view)."""
        xy = np.asarray(xy, np.float64)
        return xy if self.crop is None else xy - self.crop[:2].astype(np.float64)

    def set_overlays(self, ov: FrameOverlays) -> None:
        if ov.heatmap is not None:
            # Prepared on the decode thread (HeatmapReader): finite, ≥ 0, with its level.
            self.heat_item.setImage(ov.heatmap, autoLevels=False, levels=(0.0, ov.heat_level))
            h, w = ov.heatmap.shape[:2]
            self.heat_item.setRect(QRectF(float(ov.heat_origin[0]), float(ov.heat_origin[1]), w, h))
            self.heat_item.setVisible(True)
            self.legend.set_level(ov.heat_level)
        else:
            self.heat_item.setVisible(False)
        self.legend.setVisible(ov.heatmap is not None and bool(self.legend.method))
        if self.legend.isVisible():
            self._place_legend(ov.box)
        self._set_rect(self.box_item, ov.box)
        self._set_rect(self.proto_item, ov.proto_box)
        if ov.proto_box is not None and np.isfinite(ov.proto_box).all() and ov.proto_label:
            self.proto_label.setText(ov.proto_label)
            self.proto_label.setPos(float(ov.proto_box[0]), float(ov.proto_box[1]))
            self.proto_label.setVisible(True)
        else:
            self.proto_label.setVisible(False)
        self.note.setText(ov.note)
        self.note.setPos(*(4.0 + (self.crop[:2] if self.crop is not None else np.zeros(2))))
        self.note.setVisible(bool(ov.note))
        lm = ov.landmarks
        if lm is not None and np.isfinite(lm).all():
            self.landmark_item.setData(pos=np.asarray(lm, dtype=np.float64))
        else:
            self.landmark_item.setData(pos=np.zeros((0, 2)))

    @staticmethod
    def _set_rect(item: QGraphicsRectItem, box: np.ndarray | None) -> None:
        if box is None or not np.isfinite(box).all():
            item.setVisible(False)
            return
        x0, y0, x1, y1 = (float(v) for v in box)
        item.setRect(QRectF(x0, y0, x1 - x0, y1 - y0))
        item.setVisible(True)
