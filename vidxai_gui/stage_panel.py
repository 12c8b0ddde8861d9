"""The Stage dock: the selected stage of the strip (issue 14) — its name and span, what was predicted in it,
its mean heatmap and, for a ProtoPNet, its most active prototypes.

What it shows is `engine.temporal.stage_details` (computed on a background job by the window, kept in the
review model's `stage_info`); this widget only draws it.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from vidxai_gui.docks import PrototypeInfo, array_to_pixmap, hint_label
from vidxai_gui.review_model import ReviewModel

MAP_PX = 160  # the mean map's side on screen
_LUT = pg.colormap.get("inferno").getLookupTable(0.0, 1.0, 256)  # perceptual, as the player's overlay


def mean_map_rgb(mean_map: np.ndarray) -> tuple[np.ndarray, float]:
    """The positive part of a mean map as an inferno RGB image scaled to its 99th percentile (the level)."""
    pos = np.clip(np.nan_to_num(mean_map.astype(np.float64)), 0.0, None)
    level = float(np.percentile(pos, 99)) if pos.any() else 1.0
    idx = np.clip(pos / (level or 1.0) * 255.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(_LUT[idx][..., :3]), level


class StagePanel(QWidget):
    """Shows the review model's selected stage; `prototypes` (index → PrototypeInfo) gives crops."""

    def __init__(self, model: ReviewModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.prototypes: dict[int, PrototypeInfo] = {}
        self.hint = hint_label("Click a stage in the timeline's stage strip to see its mean heatmap and, for a "
                               "ProtoPNet, the prototypes most active in it.")
        self.title = QLabel()
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.map_label = QLabel()
        self.map_label.setFixedSize(MAP_PX, MAP_PX)
        self.map_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.colour_bar = QLabel()
        self.colour_bar.setFixedSize(14, MAP_PX)
        self.bar_text = QLabel()
        self.bar_text.setStyleSheet("color: gray")
        self.map_caption = QLabel()
        self.map_caption.setStyleSheet("color: gray")
        self.map_caption.setWordWrap(True)
        self.proto_list = QListWidget()
        self.proto_list.setIconSize(QPixmap(48, 48).size())
        maps = QHBoxLayout()
        maps.addWidget(self.map_label)
        maps.addWidget(self.colour_bar)
        maps.addWidget(self.bar_text)
        maps.addStretch(1)
        layout = QVBoxLayout(self)
        for w in (self.hint, self.title, self.summary):
            layout.addWidget(w)
        layout.addLayout(maps)
        layout.addWidget(self.map_caption)
        self.proto_caption = QLabel("Most active prototypes (mean W·s for the stage's most predicted class):")
        self.proto_caption.setWordWrap(True)
        layout.addWidget(self.proto_caption)
        layout.addWidget(self.proto_list, 1)
        bar = np.ascontiguousarray(np.repeat(_LUT[::-1][:, None, :3], 14, axis=1))
        self.colour_bar.setPixmap(array_to_pixmap(bar).scaled(14, MAP_PX))
        model.stageSelected.connect(lambda _i: self.show_stage())
        model.sessionChanged.connect(self.show_stage)
        self.show_stage()

    def set_prototypes(self, protos: list[PrototypeInfo]) -> None:
        self.prototypes = {p.index: p for p in protos}
        self.show_stage()

    def show_stage(self) -> None:
        info = self.model.stage_info
        shown = info is not None
        self.hint.setVisible(not shown)
        for w in (self.title, self.summary, self.map_label, self.colour_bar, self.bar_text, self.map_caption):
            w.setVisible(shown)
        self.proto_list.clear()
        has_protos = bool(info and info.get("prototypes"))
        self.proto_caption.setVisible(has_protos)
        self.proto_list.setVisible(has_protos)
        if info is None:
            return
        self.title.setText(f"<b>{info['name']}</b> — frames {info['start']}–{info['end'] - 1}, "
                           f"{info['t0']:.2f}–{info['t1']:.2f} s")
        said = ", ".join(f"{c} {100 * v:.0f} %" for c, v in info["classes"]) or "no face in this stage"
        # The stage's name is the class whose relevance maps SpRAy grouped (the decided class's), not what
        # the model predicted over those frames: say so, next to what it did predict.
        self.summary.setText(f"Named after the class whose explanations were grouped, not a prediction. "
                             f"Predicted over these frames: {said}")
        self.summary.setToolTip(info["tooltip"])
        method = info.get("method", "")
        if info["mean_map"] is None:
            self.map_label.setPixmap(QPixmap())
            self.map_label.setText("no map")
            self.bar_text.setText("")
            self.map_caption.setText(f"No {method or 'relevance'} maps in this stage.")
        else:
            rgb, level = mean_map_rgb(info["mean_map"])
            face = info.get("face")  # (the map over the stage's most typical face, its full-colour value)
            k = info.get("key_frame", -1)
            shown, level = (rgb, level) if face is None else face
            self.map_label.setPixmap(array_to_pixmap(shown).scaled(MAP_PX, MAP_PX,
                                                                   Qt.AspectRatioMode.KeepAspectRatio,
                                                                   Qt.TransformationMode.SmoothTransformation))
            self.bar_text.setText(f"{level:.3g}\n\n\n\n\n\n\n\n0")
            where = (f"laid over the model input of frame {k}, the stage's most typical frame (its map is the "
                     "most like the mean)" if face is not None else "model input space")
            self.map_caption.setText(f"Mean {method} map over the stage's frames with a face, {where}; "
                                     "positive part, brighter and more opaque = more relevant.")
        for j, contrib in info.get("prototypes", []):
            p = self.prototypes.get(j)
            text = f"#{j}" + (f" ({p.class_name})" if p is not None and p.class_name else "") + f": {contrib:+.3f}"
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, j)
            if p is not None and p.image is not None:
                item.setIcon(QPixmap.fromImage(p.image).scaled(48, 48))
            self.proto_list.addItem(item)
