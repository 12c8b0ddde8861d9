"""Train and Evaluate dialogs: they only collect settings; the window runs engine.train / engine.evaluate as jobs.

The choices offered (architectures, backbones) come from the engine's model description, so a new
architecture appears here without GUI changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
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
    """Settings of a training run, then the run itself: progress, live loss and accuracy, Cancel.

    Not modal: the reviewer keeps using the window while a model trains. The dialog does not run the job;
    it asks the window (``startRequested``) and then follows the worker it is given (``attach``).
    """

    startRequested = Signal()

    def __init__(self, parent: QWidget | None = None, data_dir: str = "", out_dir: str = "") -> None:
        super().__init__("Train a model", "Trains on a folder of labelled images or videos (e.g. FER2013's "
                         "train/<class>/ layout). Training runs as a job; the window stays usable and the job "
                         "can be cancelled, keeping the last completed step.", parent)
        from engine.model_card import ARCHS, BACKBONES

        self.setModal(False)
        self.worker: Any = None
        self.data = _FolderField("Training data folder", data_dir)
        self.arch = QComboBox()
        self.arch.addItems(list(ARCHS))
        self.backbone = QComboBox()
        self.backbone.addItems(list(BACKBONES))
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 500)
        self.epochs.setValue(20)
        self.per_class = QSpinBox()
        self.per_class.setRange(0, 1_000_000)
        self.per_class.setSingleStep(50)
        self.per_class.setSpecialValueText("all")
        self.per_class.setToolTip("Train (and validate) on at most this many items per class: a quick first "
                                  "run, or balanced classes (0 = all)")
        self.crops = QCheckBox("Images are already face crops (FER2013, CK+): skip face detection")
        self.crops.setToolTip("Much faster to prepare; the crop margin then differs a little from the video "
                              "path's")
        self.out = _FolderField("Folder for the trained model", out_dir or str(Path.home() / "vidxai-models" / "model"))
        self.form.addRow("Data folder", self.data)
        self.form.addRow("Architecture", self.arch)
        self.form.addRow("Backbone", self.backbone)
        self.form.addRow("Epochs", self.epochs)
        self.form.addRow("Items per class", self.per_class)
        self.form.addRow("", self.crops)
        self.form.addRow("Save to", self.out)

        # --- the run ---------------------------------------------------------------------------
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.status = QLabel("Not started.")
        self.status.setWordWrap(True)
        self.loss_plot = pg.PlotWidget(background="w")
        self.acc_plot = pg.PlotWidget(background="w")
        # The key is in the title: a legend inside the plot would sit on top of the points.
        # Short: a title wider than the plot pushes its right edge, and the newest points, out of view.
        loss_title = ("loss  <span style='color:#1f77b4'>● running mean</span>"
                      "  <span style='color:#d62728'>■ epoch</span>")
        acc_title = ("accuracy  <span style='color:#1f77b4'>● train</span>"
                     "  <span style='color:#2ca02c'>■ validation</span>")
        for plot, title in ((self.loss_plot, loss_title), (self.acc_plot, acc_title)):
            plot.setTitle(title, size="9pt", color="#202020")
            plot.setMouseEnabled(x=False, y=False)
            plot.hideButtons()
            plot.setMinimumHeight(150)
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.loss_plot.setLabel("bottom", "batches")
        self.acc_plot.setLabel("bottom", "epoch")
        self.acc_plot.setYRange(0, 1, padding=0.02)
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen("#1f77b4", width=1.5), symbol="o", symbolSize=4,
                                              symbolBrush="#1f77b4", name="running mean", connect="finite")
        self.epoch_loss_curve = self.loss_plot.plot(pen=pg.mkPen("#d62728", width=2), symbol="s", symbolSize=7,
                                                    symbolBrush="#d62728", name="epoch mean")
        self.train_acc_curve = self.acc_plot.plot(pen=pg.mkPen("#1f77b4", width=2), symbol="o", symbolSize=7,
                                                  symbolBrush="#1f77b4", name="train")
        self.val_acc_curve = self.acc_plot.plot(pen=pg.mkPen("#2ca02c", width=2), symbol="s", symbolSize=7,
                                                symbolBrush="#2ca02c", name="validation")
        self.loss_points: list[tuple[float, float]] = []
        self.epoch_records: list[dict[str, Any]] = []
        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.acc_plot)
        self.form.addRow(self.bar)
        self.form.addRow(self.status)
        self.form.addRow(plots)
        self.form.addRow(self.error)
        buttons = QDialogButtonBox()
        self.start_button = buttons.addButton("Train", QDialogButtonBox.ButtonRole.ActionRole)
        self.cancel_button = buttons.addButton("Cancel run", QDialogButtonBox.ButtonRole.ActionRole)
        self.close_button = buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.start_button.setDefault(True)
        self.cancel_button.setEnabled(False)
        self.cancel_button.setToolTip("Stop after the current batch; the last completed epoch is kept in last/")
        self.start_button.clicked.connect(self._start)
        self.cancel_button.clicked.connect(self.cancel_run)
        self.close_button.clicked.connect(self.close)
        self.form.addRow(buttons)
        self.setMinimumWidth(640)

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

    def data_options(self) -> dict[str, Any]:
        """How the data folder becomes samples (keyword arguments of MainWindow.train)."""
        return {"per_class": self.per_class.value() or None, "face_crops": self.crops.isChecked()}

    def _start(self) -> None:
        problem = self.problem()
        self.error.setText(problem)
        if not problem and self.worker is None:
            self.startRequested.emit()

    def attach(self, worker: Any) -> None:
        """Follow a training job: its progress, its live metrics (``partial``) and how it ends."""
        self.worker = worker
        self.loss_points, self.epoch_records = [], []
        for curve in (self.loss_curve, self.epoch_loss_curve, self.train_acc_curve, self.val_acc_curve):
            curve.setData([], [])
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.bar.setRange(0, 0)
        self.status.setText("Waiting for the job queue…")
        worker.progress.connect(self._on_progress)
        worker.partial.connect(self._on_metrics)
        worker.finished.connect(lambda folder: self._ended(f"Finished: the model is in {folder}. "
                                                           "Analysis ▸ Analyse with model… lists it."))
        worker.error.connect(lambda msg, _tb: self._ended(f"Stopped with an error: {msg}"))
        worker.cancelled.connect(lambda: self._ended("Cancelled; the last completed epoch is kept in "
                                                     f"{Path(self.out.path) / 'last'}."))

    def cancel_run(self) -> None:
        if self.worker is not None:
            self.status.setText("Cancelling after the current batch…")
            self.cancel_button.setEnabled(False)
            self.worker.cancel()

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if total > 0:
            self.bar.setRange(0, total)
            self.bar.setValue(min(done, total))
        self.status.setText(message)

    def _on_metrics(self, value: dict[str, Any]) -> None:
        """One record of engine.train's ``on_record``: a running loss, or a finished step's metrics."""
        if value.get("kind") == "batch":
            self.loss_points.append((float(value["batch"]), float(value["loss"])))
            xs, ys = zip(*self.loss_points, strict=True)
            self.loss_curve.setData(list(xs), list(ys))
            return
        self.epoch_records.append(value)
        if value.get("kind") == "epoch" and "end_batch" in value:
            # The running mean starts afresh each epoch: a gap, so the reset does not read as a sudden drop.
            self.loss_points.append((float(value["end_batch"]) + 0.5, float("nan")))
        epochs = [r for r in self.epoch_records if r.get("kind") == "epoch"]
        x = [float(r["epoch"]) + 1 for r in epochs]
        with_loss = [(r["end_batch"], r["loss"]) for r in epochs if "loss" in r and "end_batch" in r]
        if with_loss:
            self.epoch_loss_curve.setData([b for b, _ in with_loss], [v for _, v in with_loss])
        self.train_acc_curve.setData([e for e, r in zip(x, epochs, strict=True) if "train_acc" in r],
                                     [r["train_acc"] for r in epochs if "train_acc" in r])
        self.val_acc_curve.setData([e for e, r in zip(x, epochs, strict=True) if "val_acc" in r],
                                   [r["val_acc"] for r in epochs if "val_acc" in r])
        self.acc_plot.setXRange(0.5, max(len(epochs), 4) + 1.5, padding=0)  # grows with the run

    def _ended(self, text: str) -> None:
        self.worker = None
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1)
        self.status.setText(text)


class ModelChooser(QDialog):
    """The models the window knows (shipped, trained here, used before), or any folder: analyse with one."""

    chosen = Signal(str)

    def __init__(self, models: list[Path], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Analyse with model")
        self.list = QListWidget()
        self.list.setWordWrap(True)
        for folder in models:
            self.add_model(folder)
        if self.list.count():
            self.list.setCurrentRow(0)
        self.list.itemDoubleClicked.connect(lambda _item: self._accept())
        note = QLabel("Models shipped with VidXAI, trained in this window and used before. "
                      "Browse… for another folder holding model.json.")
        note.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Analyse")
        browse = buttons.addButton("Browse…", QDialogButtonBox.ButtonRole.ActionRole)
        browse.clicked.connect(self._browse)
        buttons.accepted.connect(self._accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.list, 1)
        layout.addWidget(buttons)
        self.setMinimumSize(520, 320)

    def add_model(self, folder: Path) -> None:
        item = QListWidgetItem(model_summary(folder))
        item.setData(Qt.ItemDataRole.UserRole, str(folder))
        item.setToolTip(str(folder))
        self.list.addItem(item)

    def paths(self) -> list[str]:
        return [self.list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.list.count())]

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder (holding model.json)")
        if folder:
            self.add_model(Path(folder))
            self.list.setCurrentRow(self.list.count() - 1)

    def _accept(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.chosen.emit(str(item.data(Qt.ItemDataRole.UserRole)))
            self.accept()


def model_summary(folder: Path) -> str:
    """One line per model for the chooser: name, architecture, classes (model.json only, no weights)."""
    try:
        from engine.model_card import ARCHS, read_model_json

        spec = read_model_json(folder, ARCHS).get("spec", {})
    except Exception as exc:  # noqa: BLE001 - a broken folder is listed with why, not hidden
        return f"{folder.name} — cannot be read: {exc}"
    name = folder.parent.name if folder.name == "model" else folder.name
    classes = ", ".join(spec.get("classes", []))
    return f"{name} — {spec.get('arch', '?')} / {spec.get('backbone', '?')}\n{classes}\n{folder}"


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
    """Rich text for the result box: accuracy, per-class recall and the confusion matrix."""
    rows = "".join(f"<tr><td>{c}</td><td align='right'>{'–' if r is None else f'{100 * r:.1f} %'}</td></tr>"
                   for c, r in result.per_class_recall.items())
    text = (f"<p><b>Accuracy {100 * result.accuracy:.1f} %</b> on {result.n} samples ({result.split} split)."
            f"</p><table cellspacing='0' cellpadding='2'><tr><th align='left'>class</th><th>recall</th></tr>"
            f"{rows}</table>")
    text += confusion_table(result.classes, result.confusion)
    if result.video_accuracy is not None:
        text += f"<p>Video decisions (EWMA α = {result.alpha}): {100 * result.video_accuracy:.1f} % of " \
                f"{result.videos} videos.</p>"
    return text


def confusion_table(classes: list[str], confusion: list[list[int]]) -> str:
    """The confusion matrix as an HTML table: rows the true class, columns the predicted one."""
    head = "".join(f"<th>{c}</th>" for c in classes)
    body = ""
    for i, (c, row) in enumerate(zip(classes, confusion, strict=True)):
        cells = "".join(
            f"<td align='right' style='{'background:#dff0d8;font-weight:bold' if i == j else ''}'>{n}</td>"
            for j, n in enumerate(row))
        body += f"<tr><th align='left'>{c}</th>{cells}</tr>"
    return (f"<p><b>Confusion matrix</b> (rows: true class, columns: predicted)</p>"
            f"<table border='1' cellspacing='0' cellpadding='3'><tr><th></th>{head}</tr>{body}</table>")
