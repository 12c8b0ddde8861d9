"""The "Input" dock: the model input mode and facial-part occlusion toggles, and the frame's
scores (stored in the session, or re-scored with the toggles on a worker by the window).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from vidxai_gui.docks import array_to_pixmap, hint_label


class PreprocessPanel(QWidget):
    """Input mode and occluded parts for re-scoring the current frame; shows the model's view."""

    changed = Signal()
    applyToVideo = Signal()

    MODES = (("face", "Face crop (default)"), ("original", "Whole frame"), ("reassembled", "Eyes · nose · mouth"))

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        mode_box = QGroupBox("Model input")
        mode_layout = QVBoxLayout(mode_box)
        self.mode_group = QButtonGroup(self)
        self.mode_buttons: dict[str, QRadioButton] = {}
        for mode, text in self.MODES:
            b = QRadioButton(text)
            b.setProperty("mode", mode)
            self.mode_group.addButton(b)
            self.mode_buttons[mode] = b
            mode_layout.addWidget(b)
        self.mode_buttons["face"].setChecked(True)
        occ_box = QGroupBox("Occlude")
        occ_layout = QHBoxLayout(occ_box)
        self.part_boxes: dict[str, QCheckBox] = {}
        for part in ("eyes", "nose", "mouth"):
            cb = QCheckBox(part)
            self.part_boxes[part] = cb
            occ_layout.addWidget(cb)
            cb.toggled.connect(lambda _on: self.changed.emit())
        self.mode_group.buttonToggled.connect(lambda _b, on: on and self.changed.emit())
        self.input_view = QLabel()
        self.input_view.setFixedSize(112, 112)
        self.input_view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.input_view.setStyleSheet("background: #202020; color: #aaaaaa")
        self.input_view.setText("model\ninput")
        self.input_view.setToolTip("What the model sees for the current frame")
        self.scores = QTableWidget(0, 2)
        self.scores.setHorizontalHeaderLabels(["class", "p"])
        self.scores.verticalHeader().setVisible(False)
        self.scores.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.scores.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.status = hint_label("Choose a model (Analysis ▸ Analyse with model…) to re-score frames here.")
        self.rescored_frame = -1
        view_row = QHBoxLayout()
        view_row.addWidget(self.input_view)
        view_row.addWidget(self.scores, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(mode_box)
        layout.addWidget(occ_box)
        layout.addLayout(view_row, 1)
        self.apply_button = QPushButton("Apply to the whole video")
        self.apply_button.setToolTip(
            "Analyse every frame with this input mode (a new analysis), and with any part checked, add the "
            "seven facial-part occlusions as a timeline track. Runs as a job; the current scores stay until "
            "it finishes.")
        self.apply_button.clicked.connect(self.applyToVideo.emit)
        layout.addWidget(self.apply_button)
        layout.addWidget(self.status)

    @property
    def mode(self) -> str:
        b = self.mode_group.checkedButton()
        return str(b.property("mode")) if b is not None else "face"

    def is_default(self) -> bool:
        """The model's own input (face crop, nothing hidden): the session's scores apply as they are."""
        return self.mode == "face" and not self.occluded

    @property
    def occluded(self) -> frozenset[str]:
        return frozenset(p for p, cb in self.part_boxes.items() if cb.isChecked())

    def show_scores(self, classes: list[str], probs: np.ndarray, input_image: np.ndarray | None,
                    note: str = "") -> None:
        self.scores.setRowCount(len(classes))
        best = int(np.nanargmax(probs)) if np.isfinite(probs).any() else -1
        for i, (c, p) in enumerate(zip(classes, probs, strict=False)):
            name = QTableWidgetItem(c)
            value = QTableWidgetItem(f"{p:.3f}")
            if i == best:
                font = name.font()
                font.setBold(True)
                name.setFont(font)
                value.setFont(font)
            self.scores.setItem(i, 0, name)
            self.scores.setItem(i, 1, value)
        if input_image is not None:
            self.input_view.setPixmap(array_to_pixmap(input_image).scaled(
                self.input_view.size(), Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.FastTransformation))
        else:  # never the previous frame's input beside this frame's scores
            self.input_view.setPixmap(QPixmap())
            self.input_view.setText("model\ninput")
        self.status.setText(note)


class ScrollPanel(QScrollArea):
    """Lets a dock shrink below its content's height without squashing the content."""

    def __init__(self, inner: QWidget) -> None:
        super().__init__()
        self.setWidget(inner)
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)

