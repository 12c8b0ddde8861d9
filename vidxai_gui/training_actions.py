"""Analysis ▸ Train… / Evaluate…: engine.train and engine.evaluate as queued jobs, and the list of models.

A mixin of the main window (labelme's shape: the window is wiring; each group of actions is its own
module). Training reports structured records (``on_record``), which the dialog plots as they come.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from vidxai_gui.worker import JobWorker

log = logging.getLogger(__name__)

MAX_RECENT = 10


class TrainingActions:
    """Train…, Evaluate… and the models Analyse with model… offers (needs the window's `jobs`, `settings`)."""

    def train_dialog(self) -> None:
        from vidxai_gui.dialogs import TrainDialog

        dialog = TrainDialog(self, self.settings.value("train/data_dir", "", str),
                             self.settings.value("train/out_dir", "", str))
        dialog.startRequested.connect(
            lambda: dialog.attach(self.train(dialog.data.path, dialog.config(), **dialog.data_options())))
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)  # it follows a run after Close
        dialog.show()  # not modal: reviewing goes on while a model trains
        self.train_dialog_widget = dialog

    def train(self, data_dir: str, config: dict[str, Any], per_class: int | None = None,
              face_crops: bool = False) -> JobWorker:
        """engine.train.train as a job; its records (``on_record``: running loss, each step's metrics) arrive
        as ``partial``; the new model joins the list of Analysis ▸ Analyse with model…"""
        from engine.data import DataConfig, SamplingConfig
        from engine.train import TrainConfig, train

        self.settings.setValue("train/data_dir", data_dir)
        self.settings.setValue("train/out_dir", config.get("out_dir", ""))
        data = DataConfig(path=data_dir, sampling=SamplingConfig(fast=face_crops),
                          max_per_class={"train": per_class, "val": per_class} if per_class else {})
        cfg = TrainConfig(**config)

        def job(progress: Any, cancel: Any, partial: Callable[[object], None]) -> Path:
            return train(data, cfg, progress=progress, cancel=cancel, on_record=partial)

        worker = self.jobs.submit(job, f"Train {config.get('arch', '')} on {Path(data_dir).name}", partial=True)
        worker.finished.connect(self._on_trained)
        worker.error.connect(lambda msg, tb: self.show_error(
            "Training stopped with an error", msg, "Check the data folder and the settings, then train again.", tb))
        worker.cancelled.connect(lambda: self.statusBar().showMessage(
            "Training cancelled; the last completed step is kept in the output folder's last/.", 8000))
        return worker

    def _on_trained(self, folder: Any) -> None:
        self.model_dir = Path(folder)
        self._remember_model(Path(folder))
        self.statusBar().showMessage(f"Model saved to {folder}; Analysis ▸ Analyse with model… lists it.", 10000)

    def known_models(self) -> list[Path]:
        """Models for Analyse with model…: used or trained here (newest first), then the shipped ones."""
        try:
            from engine.resources import shipped_models

            shipped = shipped_models()
        except Exception as exc:  # noqa: BLE001 - no shipped models is not a reason to list none
            log.info("no shipped models: %s", exc)
            shipped = []
        value = self.settings.value("models/recent", [])
        recent = [Path(v) for v in ([value] if isinstance(value, str) else value or [])]
        current = [self.model_dir] if self.model_dir is not None else []
        seen: dict[str, Path] = {}
        for folder in current + recent + shipped:
            if (folder / "model.json").is_file():
                seen.setdefault(str(folder.resolve()), folder)
        return list(seen.values())

    def _remember_model(self, folder: Path) -> None:
        value = self.settings.value("models/recent", [])
        recent = [str(v) for v in ([value] if isinstance(value, str) else value or [])]
        entry = str(folder.resolve())
        self.settings.setValue("models/recent", [entry] + [r for r in recent if r != entry][: MAX_RECENT - 1])

    def evaluate_dialog(self) -> None:
        from vidxai_gui.dialogs import EvaluateDialog

        dialog = EvaluateDialog(self, str(self.model_dir or ""), self.settings.value("train/data_dir", "", str))
        dialog.accepted.connect(lambda: self.evaluate(**dialog.arguments()))
        dialog.open()
        self.evaluate_dialog_widget = dialog

    def evaluate(self, model_dir: str, data: str, split: str = "test", limit: int | None = None) -> JobWorker:
        """engine.evaluate.evaluate as a job; the result is shown in a dialog."""
        from engine.evaluate import evaluate

        def job(progress: Any, cancel: Any) -> Any:
            return evaluate(model_dir, data, split=split, progress=progress, cancel=cancel, limit=limit)

        worker = self.jobs.submit(job, f"Evaluate {Path(model_dir).name} on {Path(data).name}")
        worker.finished.connect(self._on_evaluated)
        worker.error.connect(lambda msg, tb: self.show_error(
            "Evaluation stopped with an error", msg, "Check that the data folder is labelled by class folders.", tb))
        return worker

    def _on_evaluated(self, result: Any) -> None:
        from vidxai_gui.dialogs import evaluation_summary

        box = QMessageBox(QMessageBox.Icon.Information, f"Evaluation of {Path(result.model_dir).name}",
                          evaluation_summary(result), QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.evaluation_box = box
