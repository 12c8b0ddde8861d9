"""Training and evaluation from the window: the Train dialog runs engine.train as a job on real FER2013 images.

A tiny run (CNN, small backbone, 1 epoch, 40 images per class) trains for real; the test checks that the
dialog's live curves show the numbers the trainer wrote to metrics.jsonl, that the model joins the list
of Analysis ▸ Analyse with model…, and that the Evaluate dialog reports what engine.evaluate computed.
A second run is cancelled from the dialog and must stop within seconds.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialogButtonBox

from vidxai_gui.app import save_screenshot
from vidxai_gui.dialogs import TrainDialog
from vidxai_gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(600)]

FER_CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def tiny_run(dialog: TrainDialog, data: Path, out: Path, epochs: int) -> None:
    dialog.data.edit.setText(str(data))
    dialog.arch.setCurrentText("cnn")
    dialog.backbone.setCurrentText("small")
    dialog.epochs.setValue(epochs)
    dialog.per_class.setValue(40)
    dialog.crops.setChecked(True)  # FER2013 images are face crops already
    dialog.out.edit.setText(str(out))


def test_train_in_the_dialog_then_analyse_and_evaluate(window: MainWindow, qtbot, fer_dir: Path, tmp_path: Path,
                                                       artifacts_dir: Path) -> None:
    window.train_dialog()
    dialog = window.train_dialog_widget
    qtbot.waitExposed(dialog)
    assert not dialog.isModal()  # the window stays usable while a model trains
    dialog.start_button.click()
    assert "training data" in dialog.error.text() and dialog.worker is None  # says what is missing
    tiny_run(dialog, fer_dir, tmp_path / "tiny", epochs=1)
    assert dialog.problem() == ""
    dialog.start_button.click()
    worker = dialog.worker
    assert worker is not None and not dialog.start_button.isEnabled() and dialog.cancel_button.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=480_000) as done:
        pass
    folder = Path(done.args[0])
    assert folder == tmp_path / "tiny" / "model" and (folder / "model.safetensors").is_file()
    meta = json.loads((folder / "model.json").read_text())
    assert meta["spec"]["arch"] == "cnn" and meta["spec"]["backbone"] == "small"
    assert meta["spec"]["classes"] == FER_CLASSES

    # The live curves got points, and they are the trainer's own numbers.
    [record] = [json.loads(line) for line in (tmp_path / "tiny" / "metrics.jsonl").read_text().splitlines()]
    lx, ly = dialog.loss_curve.getData()
    losses = [v for v in ly if math.isfinite(v)]  # NaN: the gap where the next epoch's mean starts
    assert lx is not None and len(losses) >= 1 and all(v > 0 for v in losses)
    _, ey = dialog.epoch_loss_curve.getData()
    assert list(ey) == pytest.approx([record["loss"]])
    tx, ty = dialog.train_acc_curve.getData()
    vx, vy = dialog.val_acc_curve.getData()
    assert list(tx) == [1.0] and list(ty) == pytest.approx([record["train_acc"]])
    assert list(vx) == [1.0] and list(vy) == pytest.approx([record["val_acc"]])
    assert "Finished" in dialog.status.text() and dialog.start_button.isEnabled()

    # The new model is offered by Analysis ▸ Analyse with model…
    assert folder.resolve() in [p.resolve() for p in window.known_models()]
    window.choose_model_and_analyse()
    chooser = window.model_chooser
    assert str(folder.resolve()) in [str(Path(p).resolve()) for p in chooser.paths()]
    assert "cnn / small" in chooser.list.item(0).text()
    chooser.reject()
    dialog.close()

    # Evaluate… on a small limit: accuracy, per-class recall and the confusion matrix of that model.
    window.evaluate_dialog()
    ev = window.evaluate_dialog_widget
    assert ev.model.path == str(folder)  # the model just trained is the default
    ev.data.edit.setText(str(fer_dir))
    ev.limit.setValue(35)
    workers: list = []
    window.jobs.jobAdded.connect(workers.append)
    ev.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert len(workers) == 1
    with qtbot.waitSignal(workers[0].finished, timeout=300_000) as evaluated:
        pass
    result = evaluated.args[0]
    qtbot.waitUntil(lambda: getattr(window, "evaluation_box", None) is not None, timeout=5000)
    text = window.evaluation_box.text()
    assert result.n == 35 and sum(map(sum, result.confusion)) == 35
    assert f"Accuracy {100 * result.accuracy:.1f} %" in text and "on 35 samples" in text
    for i, c in enumerate(result.classes):
        recall = result.per_class_recall[c]
        shown = "–" if recall is None else f"{100 * recall:.1f} %"
        assert f"<td>{c}</td><td align='right'>{shown}</td>" in text
        row = re.search(rf"<tr><th align='left'>{c}</th>(.*?)</tr>", text)
        assert row is not None and [int(n) for n in re.findall(r">(\d+)</td>", row.group(1))] == result.confusion[i]
    window.evaluation_box.resize(520, 560)
    qtbot.wait(100)
    save_screenshot(window.evaluation_box, artifacts_dir / "gui_evaluation.png")


def test_cancel_stops_a_training_run_within_seconds(window: MainWindow, qtbot, fer_dir: Path, tmp_path: Path,
                                                    artifacts_dir: Path) -> None:
    window.train_dialog()
    dialog = window.train_dialog_widget
    tiny_run(dialog, fer_dir, tmp_path / "long", epochs=50)
    dialog.start_button.click()
    worker = dialog.worker
    ends: list[str] = []
    worker.finished.connect(lambda _r: ends.append("finished"))
    worker.error.connect(lambda _m, _tb: ends.append("error"))
    worker.cancelled.connect(lambda: ends.append("cancelled"))
    # Mid-run: after the first epoch the curves have points; that is the screenshot a person looks at.
    qtbot.waitUntil(lambda: len(dialog.epoch_records) >= 1 and len(dialog.loss_points) >= 2, timeout=300_000)
    dialog.resize(760, 720)
    qtbot.wait(200)
    save_screenshot(dialog, artifacts_dir / "gui_train_dialog_running.png")
    assert "epoch" in dialog.status.text()
    started = time.monotonic()
    with qtbot.waitSignal(worker.done, timeout=10_000):
        dialog.cancel_button.click()
    assert time.monotonic() - started < 5.0
    qtbot.wait(50)
    assert ends == ["cancelled"]  # exactly one ending, and the right one
    assert "Cancelled" in dialog.status.text() and dialog.start_button.isEnabled()
    assert (tmp_path / "long" / "last").is_dir()  # the completed epoch is kept
    assert not (tmp_path / "long" / "model").exists()
    assert (tmp_path / "long" / "model").resolve() not in [p.resolve() for p in window.known_models()]
