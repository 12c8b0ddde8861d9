"""Train and Evaluate dialogs: they only collect settings; the window runs engine.train / engine.evaluate as jobs.

The choices offered (architectures, backbones) come from the engine's model description, so a new
architecture appears here without GUI changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)


class _FolderField(QWidget):
    def __init__(self, caption: str, value: str = "") -> None:
        super().__init__()
        self.caption = caption
        self.edit = QLineEdit(value)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(browse)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, self.caption, self.edit.text() or str(Path.home()))
        if folder:
            self.edit.setText(folder)

    @property
    def path(self) -> str:
        return self.edit.text().strip()


class _Dialog(QDialog):
    def __init__(self, title: str, intro: str, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.form = QFormLayout(self)
        note = QLabel(intro)
        note.setWordWrap(True)
        self.form.addRow(note)
        self.error = QLabel()
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)

    def _finish_layout(self, ok_text: str) -> None:
        self.form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText(ok_text)
        buttons.accepted.connect(self._accept_if_valid)
        buttons.rejected.connect(self.reject)
        self.form.addRow(buttons)
        self.setMinimumWidth(520)

    def problem(self) -> str:
        return ""

    def _accept_if_valid(self) -> None:
        problem = self.problem()
        self.error.setText(problem)
        if not problem:
            self.accept()


class TrainDialog(_Dialog):
    """Data folder, architecture, backbone, epochs and output folder of a training run."""

    def __init__(self, parent: QWidget | None = None, data_dir: str = "", out_dir: str = "") -> None:
        super().__init__("Train a model", "Trains on a folder of labelled images or videos (e.g. FER2013's "
                         "train/<class>/ layout). Training runs as a job; the window stays usable and the job "
                         "can be cancelled, keeping the last completed step.", parent)
        from engine.models.spec import ARCHS, BACKBONES

        self.data = _FolderField("Training data folder", data_dir)
        self.arch = QComboBox()
        self.arch.addItems(list(ARCHS))
        self.backbone = QComboBox()
        self.backbone.addItems(list(BACKBONES))
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 500)
        self.epochs.setValue(20)
        self.out = _FolderField("Folder for the trained model", out_dir or str(Path.home() / "vidxai-models" / "model"))
        self.form.addRow("Data folder", self.data)
        self.form.addRow("Architecture", self.arch)
        self.form.addRow("Backbone", self.backbone)
        self.form.addRow("Epochs", self.epochs)
        self.form.addRow("Save to", self.out)
        self._finish_layout("Train")

    def problem(self) -> str:
        if not self.data.path or not Path(self.data.path).is_dir():
            return "Choose the folder that holds the training data."
        if not self.out.path:
            return "Choose where to save the model."
        return ""

    def config(self) -> dict[str, Any]:
        """Keyword arguments for engine.train.TrainConfig."""
        return {"arch": self.arch.currentText(), "backbone": self.backbone.currentText(),
                "epochs": self.epochs.value(), "out_dir": self.out.path}


class EvaluateDialog(_Dialog):
    """A model folder, a data folder and the split to score."""

    def __init__(self, parent: QWidget | None = None, model_dir: str = "", data_dir: str = "") -> None:
        super().__init__("Evaluate a model", "Scores a labelled data set with a model folder and reports "
                         "accuracy, per-class recall and the confusion matrix. Runs as a job.", parent)
        self.model = _FolderField("Model folder (holding model.json)", model_dir)
        self.data = _FolderField("Labelled data folder", data_dir)
        self.split = QComboBox()
        self.split.addItems(["test", "val", "train"])
        self.limit = QSpinBox()
        self.limit.setRange(0, 1_000_000)
        self.limit.setSpecialValueText("all")
        self.limit.setToolTip("Score a seeded random subset of this many samples (0 = all)")
        self.form.addRow("Model folder", self.model)
        self.form.addRow("Data folder", self.data)
        self.form.addRow("Split", self.split)
        self.form.addRow("Samples", self.limit)
        self._finish_layout("Evaluate")

    def problem(self) -> str:
        if not (Path(self.model.path) / "model.json").is_file():
            return "Choose a model folder: it holds model.json and model.safetensors."
        if not self.data.path or not Path(self.data.path).is_dir():
            return "Choose the folder that holds the labelled data."
        return ""

    def arguments(self) -> dict[str, Any]:
        """Keyword arguments for engine.evaluate.evaluate (besides progress and cancel)."""
        return {"model_dir": self.model.path, "data": self.data.path, "split": self.split.currentText(),
                "limit": self.limit.value() or None}


def evaluation_summary(result: Any) -> str:
    """Rich text for a message box: accuracy, per-class recall, the video-level result if any."""
    rows = "".join(f"<tr><td>{c}</td><td align='right'>{'–' if r is None else f'{100 * r:.1f} %'}</td></tr>"
                   for c, r in result.per_class_recall.items())
    text = (f"<p><b>Accuracy {100 * result.accuracy:.1f} %</b> on {result.n} samples ({result.split} split)."
            f"</p><table><tr><th align='left'>class</th><th>recall</th></tr>{rows}</table>")
    if result.video_accuracy is not None:
        text += f"<p>Video decisions (EWMA α = {result.alpha}): {100 * result.video_accuracy:.1f} % of " \
                f"{result.videos} videos.</p>"
    return text
