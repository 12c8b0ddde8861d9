"""The player's frame view on its own: the heatmap's colour bar never covers the analysed face."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QRectF

from vidxai_gui.frame_view import FrameOverlays, FrameView

pytestmark = pytest.mark.gui


def face_rect(view: FrameView, box: np.ndarray) -> QRectF:
    x0, y0, x1, y1 = (float(v) for v in box)
    return view.vb.mapViewToDevice(QRectF(x0, y0, x1 - x0, y1 - y0)).boundingRect()


@pytest.mark.parametrize(("box", "corner"), [
    ((1500, 300, 1700, 550), "bottom-right"),    # a face up and right: the colour bar stays put
    ((1500, 800, 1750, 1060), "bottom-left"),    # a face in the bottom-right corner (a wide shot)
    ((100, 780, 400, 1070), "bottom-right"),
])
def test_colour_bar_moves_off_the_face(qtbot, box, corner: str) -> None:
    view = FrameView()
    qtbot.addWidget(view)
    view.resize(800, 450)
    view.show()
    qtbot.waitExposed(view)
    view.show_frame(np.zeros((1080, 1920, 3), np.uint8))
    view.legend.set_heat("intrinsic", top_x=False, smooth=False)
    qtbot.wait(20)
    box = np.asarray(box, np.float64)
    heat = np.ones((int(box[3] - box[1]), int(box[2] - box[0])), np.float32)
    view.set_overlays(FrameOverlays(box=box, heatmap=heat, heat_origin=(int(box[0]), int(box[1]))))
    assert view.legend.isVisible()
    assert view.legend_corner == corner
    assert not QRectF(view.legend.geometry()).intersects(face_rect(view, box))
    assert view.rect().contains(view.legend.geometry())
