"""The player's heatmap colour bar (issue 14): what the overlay's colours mean, in a corner of the frame.

It names the map (method, and whether it is smoothed over time or a Top-X projection), shows the colour
ramp the overlay uses (engine.figures.OVERLAY_CMAP, transparent at 0) from no evidence to the value drawn
at full colour (the frame's 99th percentile of the positive relevance, engine.overlay.heat_level), and says
that a brighter colour is more evidence for the frame's predicted class. The frame view places it and hides
it when no map is drawn.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter
from PySide6.QtWidgets import QWidget

from engine.figures import OVERLAY_ALPHA_FULL, OVERLAY_CMAP
from engine.overlay import TOP_X

# How each method's map is named on the frame (the Heatmap menu lists the session's method keys).
METHOD_NAMES = {
    "intrinsic": "intrinsic (the model's own evidence)",
    "gradcam": "Grad-CAM",
    "gxi": "gradient × input",
    "lrp": "LRP",
    "ig": "integrated gradients",
    "prp": "PRP (prototype relevance)",
}
WIDTH, HEIGHT, BAR_H = 270, 76, 10


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def legend_lines(method: str, top_x: bool, smooth: bool) -> tuple[str, str]:
    """(title, note) the colour bar shows for a heatmap of `method` with the Top-X and smoothing choices."""
    if top_x:
        note = f"Top-{TOP_X:.0%}: only the strongest {TOP_X:.0%} of the positive relevance"
    else:
        note = "all positive relevance (negative is not drawn)"
    return f"Heatmap: {method_name(method)}", note + ("; smoothed over time (σ 0.1 s)" if smooth else "")


def ramp(width: int, lut: np.ndarray) -> np.ndarray:
    """width×BAR_H RGBA image of the overlay's colours as drawn: colour and opacity rising with the value."""
    v = np.linspace(0.0, 1.0, width)
    rgb = lut[np.round(v * 255).astype(int)][:, :3]
    alpha = np.clip(v / OVERLAY_ALPHA_FULL, 0, 1) * 255
    row = np.concatenate([rgb, alpha[:, None]], axis=1).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(row[None], BAR_H, axis=0))


class HeatLegend(QWidget):
    """A small colour bar drawn over the frame view's corner."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.method, self.top_x, self.smooth = "", False, False
        self.level = 1.0
        lut = pg.colormap.get(OVERLAY_CMAP).getLookupTable(0.0, 1.0, 256)
        self._ramp = ramp(WIDTH - 16, lut)
        self._image = QImage(self._ramp.data, self._ramp.shape[1], BAR_H, 4 * self._ramp.shape[1],
                             QImage.Format.Format_RGBA8888)
        self.setFixedSize(WIDTH, HEIGHT)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, False)
        self.set_heat("", False, False)

    def set_heat(self, method: str, top_x: bool, smooth: bool) -> None:
        """The map now drawn (method "" : none, the bar hides)."""
        self.method, self.top_x, self.smooth = method, bool(top_x), bool(smooth)
        title, note = legend_lines(method, top_x, smooth)
        self.setToolTip(f"Heatmap: {title}.\nColour and opacity rise with the relevance: transparent at 0, full "
                        "colour at this frame's 99th percentile of the positive relevance (the value at the "
                        f"right end). Brighter = more evidence for the predicted class.\n{note}.")
        self.update()

    def set_level(self, level: float) -> None:
        self.level = float(level)
        self.update()

    def texts(self) -> tuple[str, str, str]:
        """(title, the bar's end labels, note) as drawn; for tests and screenshots."""
        title, note = legend_lines(self.method, self.top_x, self.smooth)
        return title, f"0 · low → high evidence · {self.level:.3g}", note

    def paintEvent(self, _event) -> None:
        title, ends, note = self.texts()
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 170))
        p.drawRoundedRect(QRectF(self.rect()), 5, 5)
        font = QFont(self.font())
        font.setPointSizeF(max(6.5, font.pointSizeF() * 0.85))
        p.setFont(font)
        p.setPen(QColor("#f0f0f0"))
        x, w = 8, self.width() - 16
        p.drawText(QRectF(x, 3, w, 15), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   p.fontMetrics().elidedText(title, Qt.TextElideMode.ElideRight, w))
        p.fillRect(QRectF(x, 20, w, BAR_H), QColor(128, 128, 128))  # a mid grey shows the opacity ramp
        p.drawImage(QRectF(x, 20, w, BAR_H), self._image)
        p.setPen(QColor("#d0d0d0"))
        p.drawText(QRectF(x, 31, w, 14), Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter, ends)
        p.setPen(QColor("#b0b0b0"))
        p.drawText(QRectF(x, 45, w, HEIGHT - 47), Qt.AlignmentFlag.AlignLeft | Qt.TextFlag.TextWordWrap, note)
        p.end()
