"""The main window: player over timeline, side docks, menus; it shows and asks the engine through jobs.

State lives in three places only: the player (which video, which frame), ``self.data`` (the session's
per-frame arrays, read on worker threads) and the job queue. Everything slow — decoding, reading or
writing session files, models — runs on a worker; this class merges results and draws.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QByteArray, QSettings, QStandardPaths, Qt, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QSplitter,
    QWidget,
)

from engine.overlay import TOP_X, FrameEvidence
from sessions import Annotations
from sessions import Segment as NoteSegment
from sessions.tracks import occlusion_deltas
from vidxai_gui.annotations import AnnotationPanel, AnnotationStore, Autosaver, model_verdict, now_iso
from vidxai_gui.docks import (
    LatentProfile,
    PreprocessPanel,
    PrototypeGallery,
    PrototypeInfo,
    PrototypeSourceDialog,
    ScrollPanel,
    load_latent_patches,
    load_prototypes,
    load_source_image,
)
from vidxai_gui.people import PeoplePanel, load_people
from vidxai_gui.player import FrameOverlays, Player
from vidxai_gui.review import (
    SIMILARITIES,
    TOP_LATENTS,
    TOP_VALUES,
    HeatmapReader,
    ReviewData,
    Rows,
    empty_review,
    load_review,
    read_rows,
    top_contributions,
)
from vidxai_gui.timeline import Segment, Timeline
from vidxai_gui.worker import JobPanel, JobQueue, JobWorker

log = logging.getLogger(__name__)

APP_NAME = "VidXAI"
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
SESSION_SUFFIX = ".vxs"
MAX_RECENT = 10
DATA_FOLDER_KEY = "data/folder"  # where data sets named in model provenance ("fer2013:train/…") are looked for
LOSS_IN_MESSAGE = re.compile(r"\bloss (\d+(?:\.\d+)?(?:e[-+]?\d+)?)")
ABOUT_TEXT = (
    "<h3>VidXAI</h3>"
    "<p>Review face videos with explainable emotion-recognition models: frame scores and their "
    "smoothed decision, prototypes (“this looks like that”), relevance maps, SpRAy stages and "
    "occlusion tests.</p>"
    "<p>The scores are a model's reading of facial movement, not a diagnosis.</p>"
    "<p><b>Demo clip from CREMA-D (Cao et al., 2014), Open Database License 1.0 / Database Contents "
    "License 1.0.</b> CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset, "
    "H. Cao, D. G. Cooper, M. K. Keutmann, R. C. Gur, A. Nenkova, R. Verma, "
    "IEEE Transactions on Affective Computing 5(4), 2014.</p>"
)


@contextlib.contextmanager
def _said_plainly(video: Path) -> Iterator[None]:
    """A full disk or a read-only folder during a job becomes the one line the CLI prints for it."""
    from engine.jobs import file_error_message

    try:
        yield
    except OSError as exc:
        msg = file_error_message(str(video), exc, folder="sessions folder")
        if msg is None:
            raise
        raise OSError(msg) from exc  # str() is the message alone, as the dialog shows it


def sessions_dir(settings: QSettings) -> Path:
    """Where new session files go when the video's own folder is read-only."""
    configured = settings.value("sessions_dir", "", str)
    if configured:
        return Path(configured)
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".vidxai") / "sessions"


def _inside_resources(path: Path) -> bool:
    try:
        from engine.resources import resources_dir

        return path.resolve().is_relative_to(resources_dir().resolve())
    except Exception:  # noqa: BLE001 - no resources folder: nothing to protect
        return False


def _recorded_deltas(folder: Path) -> dict[str, float]:
    """The model's recorded faithfulness Δ per explanation method (worker thread)."""
    from engine.checkpoint import read_checkpoint_json
    from engine.faithfulness import recorded_deltas

    return recorded_deltas(read_checkpoint_json(folder))


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings, model_dir: str | os.PathLike[str] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.model_dir: Path | None = Path(model_dir) if model_dir else None
        self.video_path: Path | None = None
        self.session_path: Path | None = None
        self.data: ReviewData | None = None
        self.heat_method = ""
        self.method_deltas: dict[str, float] = {}  # the model's recorded faithfulness Δ per method (model.json)
        self._heat_chosen = False  # the reviewer (or the session's review state) chose the heatmap method
        self.top_x_on = False
        self.analysis_worker: JobWorker | None = None
        self._pending_analysis: Path | None = None
        self._pending_frame = 0
        # Extra engine.pipeline.AnalyzeSettings fields for analyses started here (e.g. explain methods).
        self.analyze_overrides: dict[str, Any] = {}
        self._loaders: list[JobWorker] = []  # session loads run beside the queue: opening never waits
        self._analyzer: Any = None  # engine.analyzer.FrameAnalyzer, loaded on first re-score
        self._analyzer_dir: Path | None = None
        self._rescore_threads: list[JobWorker] = []  # kept until their threads end
        self._rescore_worker: JobWorker | None = None
        self.prototypes: list[PrototypeInfo] = []
        self.source_dialog: PrototypeSourceDialog | None = None  # the last "Open source" dialog (tests look)
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AllowTabbedDocks | QMainWindow.DockOption.AnimatedDocks)

        self.jobs = JobQueue(self)
        self.player = Player()
        self.timeline = Timeline()
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.player)
        self.splitter.addWidget(self.timeline)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setChildrenCollapsible(False)
        self.player.setMinimumHeight(240)
        self.timeline.setMinimumHeight(230)
        self.setCentralWidget(self.splitter)

        self.gallery = PrototypeGallery()
        self.latents = LatentProfile()
        self.preprocess = PreprocessPanel()
        self.job_panel = JobPanel(self.jobs)
        self.annotation_panel = AnnotationPanel()
        self.people_panel = PeoplePanel()
        self.notes = AnnotationStore(self)
        self.autosaver = Autosaver(self)
        self.mark_in: int | None = None
        self.mark_out: int | None = None
        self.docks: dict[str, QDockWidget] = {}
        self._add_dock("prototypes", "Prototypes", self.gallery, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("latents", "SAE latents", self.latents, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("preprocess", "Input && occlusion", ScrollPanel(self.preprocess),
                       Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("annotations", "Annotations", self.annotation_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("jobs", "Jobs", self.job_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("people", "People", self.people_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.docks["prototypes"], self.docks["latents"])
        self.tabifyDockWidget(self.docks["prototypes"], self.docks["preprocess"])
        self.tabifyDockWidget(self.docks["annotations"], self.docks["jobs"])
        self.tabifyDockWidget(self.docks["annotations"], self.docks["people"])
        self.docks["prototypes"].raise_()
        self.docks["annotations"].raise_()

        self.status_label = QLabel()
        self.statusBar().addPermanentWidget(self.status_label)
        self._build_menus()

        self.timeline.seekRequested.connect(self.player.seek)
        self.timeline.alphaChanged.connect(lambda _a: self._update_frame_docks(self.player.current))
        self.player.videoOpened.connect(self._on_video_opened)
        self.player.videoFailed.connect(lambda msg: self.show_error("The video could not be opened", msg,
                                                                    "Choose another file, or convert this one "
                                                                    "to MP4 (H.264) and open it again."))
        self.player.frameShown.connect(self._on_frame_shown)
        self.player.overlay_provider = self._overlays
        self.annotation_panel.seekRequested.connect(self.player.seek)
        self.annotation_panel.targetRequested.connect(self.go_to_target)
        self.annotation_panel.deleteRequested.connect(self.delete_annotation)
        self.annotation_panel.editRequested.connect(self.edit_annotation)
        self.annotation_panel.fieldEdited.connect(self.notes.edit_field)
        self.annotation_panel.markInRequested.connect(self.set_mark_in)
        self.annotation_panel.markOutRequested.connect(self.set_mark_out)
        self.annotation_panel.editor.confirmed.connect(self._on_editor_confirmed)
        self.annotation_panel.editor.cancelled.connect(self.clear_marks)
        self.timeline.rangeMarked.connect(self._on_range_marked)
        self.notes.changed.connect(self._show_annotations)
        self.notes.edited.connect(self.save_session)
        self.autosaver.saved.connect(lambda p: self.statusBar().showMessage(f"Saved {Path(p).name}", 3000))
        self.autosaver.failed.connect(lambda msg, tb: self.show_error(
            "The annotations could not be saved", msg,
            "Check that the session's folder is writable and has space; your annotations stay in the window "
            "and are saved with the next change or File ▸ Save session.", tb))
        self.preprocess.changed.connect(self.rescore_current)
        self.gallery.prototypeSelected.connect(self.show_prototype_trace)
        self.gallery.openSourceRequested.connect(self.open_prototype_source)
        self.preprocess.applyToVideo.connect(self.apply_input_to_video)
        self.people_panel.personChosen.connect(self.analyse_person)
        self.jobs.jobStarted.connect(lambda _w: self.docks["jobs"].raise_())

        self.resize(1280, 800)
        # The frame and the scores are what a reviewer looks at: docks get a column, not half the window.
        self.resizeDocks([self.docks["prototypes"]], [360], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["prototypes"], self.docks["annotations"]], [480, 260], Qt.Orientation.Vertical)
        self.splitter.setSizes([430, 330])
        self._restore_state()
        self._update_actions()

    # ------------------------------------------------------------------------------------ building
    def _add_dock(self, key: str, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{key}")  # saveState needs stable names
        dock.setWidget(widget)
        dock.setMinimumWidth(280)
        self.addDockWidget(area, dock)
        self.docks[key] = dock

    def _action(self, menu: QMenu, text: str, slot: Callable[[], Any], shortcut: QKeySequence | str | None = None,
                tip: str = "") -> QAction:
        action = menu.addAction(text)
        action.triggered.connect(lambda _checked=False: slot())
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if tip:
            action.setStatusTip(tip)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        m = bar.addMenu("&File")
        self._action(m, "Open video…", self.choose_video, QKeySequence.StandardKey.Open)
        self._action(m, "Open session…", self.choose_session, "Ctrl+Shift+O")
        self.recent_menu = m.addMenu("Recent files")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        m.addSeparator()
        self.save_action = self._action(m, "Save session", self.save_session, QKeySequence.StandardKey.Save,
                                        "Write annotations and review settings into the session file")
        exp = m.addMenu("Export")
        self.export_actions = [
            self._action(exp, "CSV (one row per frame)…", lambda: self.export("csv")),
            self._action(exp, "ELAN (.eaf)…", lambda: self.export("eaf")),
            self._action(exp, "JSON summary…", lambda: self.export("json")),
        ]
        self.import_annotations_action = self._action(
            m, "Import annotations…", self.import_annotations,
            tip="Add the tiers of an ELAN .eaf file to this session's annotations (snapped to frames)")
        m.addSeparator()
        self._action(m, "Quit", self.close, QKeySequence.StandardKey.Quit)

        e = bar.addMenu("&Edit")
        self.undo_action = self.notes.undo_stack.createUndoAction(self, "Undo")
        self.undo_action.setShortcut(QKeySequence.StandardKey.Undo)
        self.redo_action = self.notes.undo_stack.createRedoAction(self, "Redo")
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        e.addAction(self.undo_action)
        e.addAction(self.redo_action)
        e.addSeparator()
        self.mark_in_action = self._action(e, "Mark in", self.set_mark_in, "I",
                                           "Start an annotation at the current frame")
        self.mark_out_action = self._action(e, "Mark out", self.set_mark_out, "O",
                                            "End the annotation at the current frame and describe it")
        self.annotate_action = self._action(e, "Annotate marked range…\tEnter", self.annotate_marked,
                                            tip="Describe the range between the in and out points")
        self._action(e, "Clear marks", self.clear_marks)
        for action in (self.mark_in_action, self.mark_out_action):
            self.addAction(action)  # the keys work while the menu bar is hidden too

        a = bar.addMenu("&Analysis")
        self.analyse_action = self._action(a, "Analyse with model…", self.choose_model_and_analyse, "Ctrl+R")
        self.faces_action = self._action(a, "Find faces only", self.find_faces,
                                         tip="Face boxes and landmarks for every frame, without a model")
        a.addSeparator()
        self._action(a, "Train…", self.train_dialog)
        self._action(a, "Evaluate…", self.evaluate_dialog)
        a.addSeparator()
        self.heat_menu = a.addMenu("Heatmap method")
        self.heat_menu.aboutToShow.connect(self._fill_heat_menu)

        p = bar.addMenu("&Playback")
        for action in self.player.actions_transport:
            p.addAction(action)
            self.addAction(action)

        v = bar.addMenu("&View")
        for dock in self.docks.values():
            v.addAction(dock.toggleViewAction())
        v.addSeparator()
        self._action(v, "Reset layout", self.reset_layout)

        h = bar.addMenu("&Help")
        self._action(h, "About VidXAI", self.about)

    def _update_actions(self) -> None:
        has_video = self.video_path is not None
        has_session = self.session_path is not None and self.session_path.exists()
        busy = self.analysis_worker is not None
        self.analyse_action.setEnabled(has_video and not busy)
        self.faces_action.setEnabled(has_video and not busy)
        self.save_action.setEnabled(has_session and not busy)
        for action in self.export_actions:
            action.setEnabled(has_session and not busy)
        self.import_annotations_action.setEnabled(has_session and self.data is not None and not busy)
        self.annotation_panel.setEnabled(has_session and not busy)
        annotatable = self.data is not None and not busy
        for action in (self.mark_in_action, self.mark_out_action, self.annotate_action):
            action.setEnabled(annotatable)

    # ------------------------------------------------------------------------------------ settings
    def _restore_state(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        alpha = self.settings.value("review/alpha", 0.3, float)
        self.timeline.set_alpha(float(alpha))
        model = self.settings.value("analysis/model_dir", "", str)
        if self.model_dir is None and model and Path(model).is_dir():
            self.model_dir = Path(model)
        self._default_state = self.saveState()

    def _save_state(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("review/alpha", self.timeline.alpha)
        if self.model_dir is not None:
            self.settings.setValue("analysis/model_dir", str(self.model_dir))
        self.settings.sync()

    def reset_layout(self) -> None:
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
        self.restoreState(self._default_state)

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent_files", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember(self, path: Path) -> None:
        entries = [str(path.resolve())] + [p for p in self.recent_files() if p != str(path.resolve())]
        self.settings.setValue("recent_files", entries[:MAX_RECENT])

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        if not files:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for f in files:
            action = self.recent_menu.addAction(Path(f).name)
            action.setToolTip(f)
            action.setStatusTip(f)
            action.triggered.connect(lambda _c=False, f=f: self.open_path(f))
        if files:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list").triggered.connect(
                lambda: self.settings.setValue("recent_files", []))

    # ------------------------------------------------------------------------------------ dialogs
    def show_error(self, title: str, what: str, todo: str = "", details: str = "") -> QMessageBox:
        """Non-blocking error dialog: what happened and what to do (details hold the traceback)."""
        log.error("%s: %s", title, what)
        box = QMessageBox(QMessageBox.Icon.Warning, title, what, QMessageBox.StandardButton.Ok, self)
        if todo:
            box.setInformativeText(todo)
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()  # window-modal but not a nested event loop: playback and jobs keep going
        self.last_error = box
        return box

    def about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, "About VidXAI", ABOUT_TEXT, QMessageBox.StandardButton.Ok,
                          self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.about_box = box

    # ------------------------------------------------------------------------------------ train / evaluate
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
        """engine.train.train as a job; its live metrics arrive as ``partial`` ("loss", (batch, value)) and
        ("epoch", record); the new model joins the list of Analysis ▸ Analyse with model…"""
        from engine.data import DataConfig, SamplingConfig
        from engine.train import TrainConfig, train

        self.settings.setValue("train/data_dir", data_dir)
        self.settings.setValue("train/out_dir", config.get("out_dir", ""))
        data = DataConfig(path=data_dir, sampling=SamplingConfig(fast=face_crops),
                          max_per_class={"train": per_class, "val": per_class} if per_class else {})
        cfg = TrainConfig(**config)
        metrics_path = Path(cfg.out_dir) / "metrics.jsonl"

        def job(progress: Any, cancel: Any, partial: Callable[[object], None]) -> Path:
            state: dict[str, Any] = {"lines": 0, "loss": "", "running": False, "batch": 0}

            def read_metrics() -> None:
                # The trainer appends one JSON line per step to metrics.jsonl; pass on the new ones.
                if not state["running"] or not metrics_path.exists():
                    return
                lines = [ln for ln in metrics_path.read_text().splitlines() if ln.strip()]
                for line in lines[state["lines"]:]:
                    rec = json.loads(line)
                    partial(("epoch", {**rec, "end_batch": state["batch"]}))
                state["lines"] = len(lines)

            def report(done: int, total: int, message: str) -> None:
                progress(done, total, message)
                read_metrics()  # before counting this batch: a finished epoch ends at the previous one
                if " epoch " in f" {message}":
                    # Old metrics of an earlier run in this folder are gone once the epochs begin.
                    state["running"] = True
                    state["batch"] = done
                # The trainer's only live loss is its progress text: "… batch 3/9 loss 1.9460".
                loss = LOSS_IN_MESSAGE.search(message)
                if loss and loss.group(1) != state["loss"]:
                    state["loss"] = loss.group(1)
                    partial(("loss", (float(done), float(loss.group(1)))))

            folder = train(data, cfg, progress=report, cancel=cancel)
            read_metrics()
            return folder

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

    # ------------------------------------------------------------------------------------ opening
    def choose_video(self) -> None:
        start = self.settings.value("last_dir", str(Path.home()), str)
        pattern = " ".join(f"*{s}" for s in VIDEO_SUFFIXES)
        path, _ = QFileDialog.getOpenFileName(self, "Open video", start, f"Videos ({pattern});;All files (*)")
        if path:
            self.open_path(path)

    def choose_session(self) -> None:
        start = self.settings.value("last_dir", str(Path.home()), str)
        path, _ = QFileDialog.getOpenFileName(self, "Open session", start, f"VidXAI sessions (*{SESSION_SUFFIX})")
        if path:
            self.open_path(path)

    def open_path(self, path: str | os.PathLike[str]) -> None:
        """Open a video or a session file, whichever ``path`` is."""
        p = Path(path)
        if not p.exists():
            self.show_error("File not found", f"{p} does not exist.",
                            "It may have been moved or deleted; choose it again with File ▸ Open.")
            return
        self.settings.setValue("last_dir", str(p.parent))
        if p.suffix.lower() == SESSION_SUFFIX:
            self.open_session(p)
        else:
            self.open_video(p)

    def open_video(self, path: str | os.PathLike[str], analyse_with: str | os.PathLike[str] | None = None) -> None:
        """Show the video at once; with a model folder, analyse it as a job while it is reviewed."""
        p = Path(path)
        if self.analysis_worker is not None:
            self.jobs.cancel(self.analysis_worker)
        self.video_path = p
        self.session_path = None
        self.data = None
        self.heat_method = ""
        self.method_deltas = {}
        self._heat_chosen = False
        self.prototypes = []
        self.gallery.selected = -1
        self._pending_analysis = Path(analyse_with) if analyse_with else None
        self._pending_frame = 0
        self.player.set_extras_provider(None)
        self.annotation_panel.editor.hide()
        self.clear_marks()
        self.notes.reset(Annotations())  # no session yet: nothing to annotate or undo
        self.people_panel.clear()
        self.player.open(p)
        self.setWindowTitle(f"{p.name} — {APP_NAME}")
        self._remember(p)
        self._update_actions()
        existing = self._session_path_for(p)
        if existing.exists() and self._pending_analysis is None:
            self.statusBar().showMessage(f"A session for this video exists: {existing} (File ▸ Open session)", 8000)

    def open_session(self, path: Path) -> None:
        """Load a session on a worker, then open its video and show everything it holds."""
        self._remember(path)
        self.statusBar().showMessage(f"Reading {path.name}…")
        self._load(lambda: load_review(path), f"load {path.name}", self._on_session_loaded,
                   lambda msg, tb: self.show_error("The session could not be opened", msg,
                                                   "If it is damaged, analyse the video again.", tb))

    @Slot(object)
    def _on_session_loaded(self, data: ReviewData) -> None:
        video = Path(str(data.video.get("path", "")))
        if not video.exists():
            candidate = data.path.parent / video.name  # sessions travel with their video more often than not
            if candidate.exists():
                video = candidate
            else:
                self.show_error("The session's video was not found",
                                f"{data.path.name} was made from {video}, which does not exist here.",
                                "Copy the video next to the session file (same name) and open the session again.")
                return
        review_frame = int(data.review_state.get("frame", 0) or 0)
        self.open_video(video)
        self.session_path = data.path
        self.data = data
        self._pending_frame = min(max(review_frame, 0), data.frame_count - 1)
        # The reviewer's view comes back as it was saved: method, Top-X and heatmap opacity.
        self.heat_method = str(data.review_state.get("method", self.heat_method) or "")
        self._heat_chosen = bool(data.review_state.get("method"))
        self.top_x_on = bool(data.review_state.get("top_x", False))
        if "opacity" in data.review_state:
            self.player.opacity.setValue(int(data.review_state["opacity"]))
        if "alpha" in data.review_state:
            self.timeline.set_alpha(float(data.review_state["alpha"]))
        elif data.analysis and data.analysis.get("alpha"):
            self.timeline.set_alpha(float(data.analysis["alpha"]))
        self.setWindowTitle(f"{data.path.name} — {APP_NAME}")
        self._start_prototype_load(data)
        self._start_people_load(data.path, video)
        self.statusBar().showMessage(f"Opened {data.path.name}", 4000)
        self._update_actions()

    @Slot(object)
    def _on_video_opened(self, info: Any) -> None:
        self.timeline.set_video(info.frame_count, info.fps)
        if self.data is not None:
            self._apply_data()
            self._choose_heat_method()
            if self._pending_frame:
                self.player.seek(self._pending_frame)
        self.status_label.setText(f"{info.width}×{info.height} · {info.fps:.2f} fps · {info.frame_count} frames"
                                  f" · {info.codec}")
        if self._pending_analysis is not None:
            model, self._pending_analysis = self._pending_analysis, None
            self.analyse(model)

    # ------------------------------------------------------------------------------------ analysis
    def _session_path_for(self, video: Path) -> Path:
        """The configured sessions folder if there is one, else beside the video when that folder is
        writable (and not marked read-only, which root would otherwise ignore), else the app's folder."""
        name = f"{video.stem}{SESSION_SUFFIX}"
        if self.settings.value("sessions_dir", "", str):
            return sessions_dir(self.settings) / name
        folder = video.parent
        if _inside_resources(video):
            return sessions_dir(self.settings) / name  # the installation's own files stay untouched
        if os.access(folder, os.W_OK) and folder.stat().st_mode & stat.S_IWUSR:
            return folder / name
        return sessions_dir(self.settings) / name

    def choose_model_and_analyse(self) -> None:
        from vidxai_gui.dialogs import ModelChooser

        chooser = ModelChooser(self.known_models(), self)
        chooser.chosen.connect(lambda folder: self.analyse(Path(folder)))
        chooser.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        chooser.open()
        self.model_chooser = chooser

    def apply_input_to_video(self) -> None:
        """The preprocessing dock's mode (and occlusion track) for every frame, as an analysis job."""
        if self.model_dir is None or self.video_path is None:
            self.show_error("No model to apply", "The input mode and occlusion apply to a model's analysis.",
                            "Analyse the video with a model first (Analysis ▸ Analyse with model…).")
            return
        self.analyse(self.model_dir, preprocess_mode=self.preprocess.mode,
                     occlusion=bool(self.preprocess.occluded))

    def analyse(self, model_dir: str | os.PathLike[str], **overrides: Any) -> None:
        """Run engine.pipeline.analyze as a job; frames appear as the analysis commits them."""
        if self.video_path is None:
            return
        try:
            from engine import pipeline

            analyze = pipeline.analyze
            settings = pipeline.AnalyzeSettings(**{"alpha": self.timeline.alpha, **self.analyze_overrides,
                                                   **overrides})
        except (ImportError, AttributeError, TypeError) as exc:
            self.show_error("Analysis is not available", f"This build cannot analyse videos yet ({exc}).",
                            "Run `vidxai analyze VIDEO --model FOLDER` in a terminal, then open the .vxs file.")
            return
        self.model_dir = Path(model_dir)
        self._remember_model(self.model_dir)
        video = self.video_path
        out = self._session_path_for(video)

        def job(progress: Any, cancel: Any, partial: Callable[[object], None]) -> Path:
            with _said_plainly(video):
                out.parent.mkdir(parents=True, exist_ok=True)
                return analyze(video, self.model_dir, out, settings, progress=progress, cancel=cancel,
                               on_chunk=self._chunk_reader(out, partial))

        self._run_session_job(job, f"Analyse {video.name} with {self.model_dir.name}", out)

    def find_faces(self, person: int | None = None) -> None:
        """Faces and landmarks only (engine.pipeline.ingest), for reviewing without a model."""
        if self.video_path is None:
            return
        from engine import pipeline

        video = self.video_path
        out = self._session_path_for(video)

        def job(progress: Any, cancel: Any, partial: Callable[[object], None]) -> Path:
            with _said_plainly(video):
                out.parent.mkdir(parents=True, exist_ok=True)
                return pipeline.ingest(video, out, progress=progress, cancel=cancel,
                                       on_chunk=self._chunk_reader(out, partial), person=person)

        self._run_session_job(job, f"Find faces in {video.name}", out)

    def analyse_person(self, person: int) -> None:
        """Analyse (or, without an analysis, follow) another person of the video, as a job."""
        if self.video_path is None:
            return
        if self.data is not None and self.data.analysis:
            if self.model_dir is None:
                self.show_error("No model to apply", "Analysing another person re-runs the model's analysis.",
                                "Analyse the video with a model first (Analysis ▸ Analyse with model…).")
                return
            self.analyse(self.model_dir, person=person)
        else:
            self.find_faces(person)

    def _start_people_load(self, session: Path, video: Path | None) -> None:
        self._load(lambda: load_people(session, video), "load people", self.people_panel.set_people,
                   lambda msg, _tb: self.statusBar().showMessage(f"People not shown: {msg}", 8000))

    @staticmethod
    def _chunk_reader(out: Path, partial: Callable[[object], None]) -> Callable[[int, int], None]:
        """on_chunk for the pipeline: read the committed rows here, on the job thread, and hand them on."""
        first = [True]

        def on_chunk(start: int, end: int) -> None:
            # The first chunk of a resumed analysis also brings the frames done in earlier runs.
            rows = read_rows(out, 0 if first[0] else start, end)
            first[0] = False
            partial(rows)

        return on_chunk

    def _run_session_job(self, job: Callable[..., Path], name: str, out: Path) -> None:
        worker = self.jobs.submit(job, name, partial=True)
        self.analysis_worker = worker
        self.session_path = out
        worker.partial.connect(self._on_rows)
        worker.finished.connect(self._on_analysis_finished)
        worker.error.connect(lambda msg, tb: self.show_error(
            "The analysis stopped with an error", msg,
            "What was committed so far is kept; run the analysis again to continue from there.", tb))
        worker.cancelled.connect(lambda: self.statusBar().showMessage(
            "Analysis cancelled; the frames analysed so far are kept and a new run continues from there.", 8000))
        worker.done.connect(self._on_analysis_done)
        self._update_actions()

    @Slot(object)
    def _on_rows(self, rows: Rows) -> None:
        log.debug("rows %d..%d arrived (faces done %d, frames done %d)", rows.start, rows.end, rows.faces_done,
                  rows.frames_done)
        if self.player.info is None or self.session_path is None:
            return
        if self.data is None or self.data.path != self.session_path:
            info = self.player.info
            self.data = empty_review(self.session_path, info.frame_count, self.player.timestamps,
                                     {"path": str(self.video_path), "fps": info.fps})
        if rows.classes and not self.data.classes:
            self.data.classes = list(rows.classes)
            self.data.probs = np.full((self.data.frame_count, len(rows.classes)), np.nan)
            self.data.valid = np.zeros(self.data.frame_count, bool)
            self.data.analysis = {"classes": rows.classes, "explanations": rows.explanations}
        if self.data.analysis is not None:
            self.data.analysis["explanations"] = rows.explanations
        self.data.merge(rows)
        self._apply_data()
        if not self.heat_method:
            self._choose_heat_method()
        self._update_frame_docks(self.player.current)
        self.player.refresh_overlays()

    @Slot(object)
    def _on_analysis_finished(self, path: Any) -> None:
        # Reload everything once: SpRAy stages, occlusion and the decision are written at the end.
        self.statusBar().showMessage(f"Analysis finished: {Path(path).name}", 6000)
        keep = max(self.player.current, 0)
        self._load(lambda: load_review(Path(path)), "reload session", lambda data: self._on_reloaded(data, keep),
                   lambda msg, tb: self.show_error("The finished session could not be read", msg,
                                                   "Open it again with File ▸ Open session.", tb))

    def _on_reloaded(self, data: ReviewData, frame: int) -> None:
        log.debug("session %s reloaded after the analysis", data.path)
        self.data = data
        self.session_path = data.path
        self._apply_data()
        self._choose_heat_method()
        self._start_prototype_load(data)
        self._start_people_load(data.path, self.video_path)
        self.show_prototype_trace(self.gallery.selected)  # the selected prototype's trace grows with the data
        self.player.refresh_overlays()
        self._update_frame_docks(frame)
        self._update_actions()

    @Slot()
    def _on_analysis_done(self) -> None:
        self.analysis_worker = None
        self._update_actions()

    # ------------------------------------------------------------------------------------ showing data
    def _apply_data(self) -> None:
        """Push the in-memory session arrays into the timeline."""
        d = self.data
        if d is None:
            return
        self.player.set_face_track(d.box, d.found)  # the face view follows the analysed person
        if d.faces_done:
            conf = d.confidence.astype(float).copy()
            conf[d.faces_done:] = np.nan
            found = d.found.copy()
            found[d.faces_done:] = True  # not processed yet is not "no face"
            self.timeline.set_face_track(conf, found)
        if d.classes and d.probs is not None:
            self.timeline.set_scores(d.classes, d.probs, d.valid, frames_done=d.frames_done)
        elif d.faces_done:
            found = int(d.found[: d.faces_done].sum())
            self.timeline.decision_label.setText(
                f"Faces found in {found} of {d.faces_done} frames; no model analysis yet "
                "(Analysis ▸ Analyse with model…)")
        stages = d.stages
        if not stages and d.class_stages:
            # No whole-video temporal prototype: show the stages of the decided class.
            decided = self.timeline.decision_class()
            stages = d.class_stages.get(decided) or next(iter(d.class_stages.values()))
        self.timeline.set_stages([Segment(s, e, lab) for s, e, lab in stages])
        if d.occlusion is not None and d.probs is not None and d.occlusion_conditions:
            deltas = occlusion_deltas(d.probs, d.occlusion, d.valid)
            self.timeline.set_occlusion({name: deltas[:, i] for i, name in enumerate(d.occlusion_conditions)})
        self._show_annotations()

    def _show_annotations(self) -> None:
        if self.data is None:
            self.timeline.set_annotations({})
            self.annotation_panel.set_segments([], self.player.fps)
            return
        if self.notes.annotations is not self.data.annotations:
            self.notes.reset(self.data.annotations)  # another session: its notes, a fresh history
            return  # reset() emitted changed, which came back here
        tiers: dict[str, list[Segment]] = {t.name: [] for t in self.data.annotations.tiers}
        for s in self.data.annotations.segments:
            tiers.setdefault(s.tier, []).append(Segment(s.start_frame, s.end_frame, s.label, s.note, s.agreement))
        self.timeline.set_annotations(tiers)
        self.annotation_panel.set_segments(self.data.annotations.segments, self.player.fps)

    def _choose_heat_method(self) -> None:
        methods = self.data.explain_methods if self.data is not None else []
        if not methods or self.player.info is None or self.session_path is None:
            self.player.set_extras_provider(None)
            return
        if self.heat_method not in methods or not self._heat_chosen:
            # The most faithful method the model's record measured (docs/EXPLANATIONS.md), else as before.
            from engine.faithfulness import most_faithful

            best = most_faithful(self.method_deltas, methods)
            if best is not None:
                self.heat_method = best
            elif self.heat_method not in methods:
                self.heat_method = "lrp" if "lrp" in methods else methods[0]
        self._set_heat_method(self.heat_method)

    def _on_method_deltas(self, deltas: dict[str, float]) -> None:
        self.method_deltas = dict(deltas)
        if not self._heat_chosen and self.data is not None and self.data.explain_methods:
            self._choose_heat_method()

    def _set_heat_method(self, method: str) -> None:
        info = self.player.info
        if info is None or self.session_path is None:
            return
        self.heat_method = method
        reader = HeatmapReader(self.session_path, method, (info.height, info.width),
                               top_x=TOP_X if self.top_x_on else None)
        self.player.set_extras_provider(reader)
        self.player.refresh_overlays()

    def _fill_heat_menu(self) -> None:
        self.heat_menu.clear()
        methods = self.data.explain_methods if self.data is not None else []
        if not methods:
            self.heat_menu.addAction("(no maps in this session)").setEnabled(False)
        for m in methods:
            d = self.method_deltas.get(m)
            label = m if d is None else f"{m}    Δ {d:+.2f}" + ("  ⚠ not faithful" if d <= 0 else "")
            action = self.heat_menu.addAction(label)
            action.setCheckable(True)
            action.setChecked(m == self.heat_method)
            action.setToolTip("Δ = accuracy when the least relevant patches are hidden − when the most relevant "
                              "are (FER2013 700-image test subset; recorded in model.json by vidxai evaluate "
                              "--occlusion --record). Δ ≤ 0: the map does not track the model's evidence."
                              if d is not None else "Faithfulness not measured for this model and method")
            action.triggered.connect(lambda _c=False, m=m: self._pick_heat_method(m))
        off = self.heat_menu.addAction("none")
        off.setCheckable(True)
        off.setChecked(not self.heat_method)
        off.triggered.connect(self._heat_off)
        self.heat_menu.addSeparator()
        topx = self.heat_menu.addAction(f"Top-{TOP_X:.0%} relevance projection")
        topx.setCheckable(True)
        topx.setChecked(self.top_x_on)
        topx.setToolTip("Show only the strongest relevance that makes up "
                        f"{TOP_X:.0%} of the positive mass (SpRAy paper's figures)")
        topx.triggered.connect(self._set_top_x)

    def _set_top_x(self, on: bool) -> None:
        self.top_x_on = bool(on)
        if self.heat_method:
            self._set_heat_method(self.heat_method)

    def _pick_heat_method(self, method: str) -> None:
        self._heat_chosen = True
        self._set_heat_method(method)

    def _heat_off(self) -> None:
        self._heat_chosen = True
        self._set_heat_method("")  # still reads the prototype box; just no map

    def _overlays(self, k: int, extras: Any) -> FrameOverlays:
        """Overlays of frame k; called by the player in the same step that puts frame k on screen."""
        ov = FrameOverlays()
        if isinstance(extras, FrameEvidence):
            ov.heatmap, ov.heat_origin = extras.heat, extras.heat_origin
            ov.heat_level = extras.heat_level
            ov.proto_box = extras.proto_box
            ov.proto_label = f"prototype #{extras.proto_index}" if extras.proto_index >= 0 else ""
        d = self.data
        if d is not None and k < d.faces_done:
            if d.found[k]:
                ov.box = d.box[k]
                ov.landmarks = d.landmarks[k]
            else:
                ov.note = "no face found in this frame"
        return ov

    @Slot(int)
    def _on_frame_shown(self, k: int) -> None:
        self.timeline.set_cursor(k)
        if not self.player.playing or k % 3 == 0:  # docks are text: a third of the frame rate is plenty
            self._update_frame_docks(k)
        if not self.player.playing and self.model_dir is not None and not self.preprocess.is_default():
            self.rescore_current()  # the toggles are on: show this frame as they make the model see it

    def _update_frame_docks(self, k: int) -> None:
        d = self.data
        if d is None or k < 0 or k >= d.frame_count:
            return
        if SIMILARITIES in d.extra:
            c, entries = top_contributions(d, k, PrototypeGallery.TOP)
            self.gallery.show_frame(k, d.classes[c] if c >= 0 else "", entries)
        if TOP_LATENTS in d.extra:
            self.latents.show_frame(k, d.extra[TOP_LATENTS], d.extra.get(TOP_VALUES))
        if d.probs is not None and self._rescore_worker is None and self.preprocess.is_default():
            note = f"frame {k}: scores stored in the session" if d.valid is not None and d.valid[k] else \
                f"frame {k}: no face, no scores"
            self.preprocess.show_scores(d.classes, d.probs[k], None, note)

    def _start_prototype_load(self, data: ReviewData) -> None:
        model = (data.analysis or {}).get("model") or {}
        candidates = [model.get(key) for key in ("folder", "dir", "path", "model_dir")] + [self.model_dir]
        folder = next((Path(c) for c in candidates if c and (Path(c) / "model.json").is_file()), None)
        if folder is None:
            return
        self._load(lambda: _recorded_deltas(folder), "load faithfulness record", self._on_method_deltas,
                   lambda msg, _tb: self.statusBar().showMessage(f"Faithfulness record not read: {msg}", 8000))
        if TOP_LATENTS in data.extra:
            self._load(lambda: load_latent_patches(folder), "load latent patches", self._on_latent_patches,
                       lambda msg, _tb: self.statusBar().showMessage(f"SAE reference patches not shown: {msg}", 8000))
        if SIMILARITIES in data.extra:
            self._load(lambda: load_prototypes(folder), "load prototypes", self._on_prototypes,
                       lambda msg, _tb: self.statusBar().showMessage(f"Prototype images not shown: {msg}", 8000))

    def _load(self, fn: Callable[[], Any], name: str, on_finished: Callable[[Any], Any],
              on_error: Callable[[str, str], Any]) -> JobWorker:
        """Read something on a worker beside the job queue (opening never waits behind a job); the worker
        is kept until its thread ends."""
        worker = JobWorker(lambda progress, cancel: fn(), name)
        worker.finished.connect(on_finished)
        worker.error.connect(on_error)
        worker.done.connect(lambda w=worker: self._loaders.remove(w) if w in self._loaders else None)
        self._loaders.append(worker)
        worker.start()
        return worker

    def _on_latent_patches(self, patches: dict) -> None:
        self.latents.set_patches(patches)
        self._update_frame_docks(self.player.current)

    @Slot(int)
    def show_prototype_trace(self, j: int) -> None:
        """Draw prototype j's similarity over the whole video on the timeline (−1: remove it)."""
        sims = self.data.extra.get(SIMILARITIES) if self.data is not None else None
        if j < 0 or sims is None or j >= sims.shape[1]:
            self.timeline.set_trace("", None)
            return
        self.timeline.set_trace(f"prototype #{j}", sims[:, j])

    def open_prototype_source(self, info: PrototypeInfo) -> None:
        """The training image a prototype was pushed from, beside its crop (read on a worker thread); a
        source named relative to its data set is looked for in the data folder the user set once."""
        dialog = PrototypeSourceDialog(info, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.source_dialog = dialog
        folder = self.settings.value(DATA_FOLDER_KEY, "", str)
        dialog.set_folder(folder)

        def choose() -> None:
            chosen = QFileDialog.getExistingDirectory(dialog, "Folder holding the training data sets", folder)
            if chosen:
                self.settings.setValue(DATA_FOLDER_KEY, chosen)
                dialog.set_folder(chosen)
                dialog.source_view.setText("Loading the training image…")
                self._load(lambda: load_source_image(info, chosen), "load prototype source", dialog.set_source,
                           dialog.set_error)

        dialog.folder_button.clicked.connect(choose)
        dialog.show()
        # Bound to the dialog's own slots, so closing it before the image arrives disconnects them.
        self._load(lambda: load_source_image(info, folder), "load prototype source", dialog.set_source,
                   dialog.set_error)

    def _on_prototypes(self, protos: list[PrototypeInfo]) -> None:
        self.prototypes = protos
        self.gallery.set_prototypes(protos)
        self._update_frame_docks(self.player.current)

    # ------------------------------------------------------------------------------------ re-scoring
    def rescore_current(self) -> None:
        """Score the current frame with the chosen input mode and occlusion (FrameAnalyzer on a worker)."""
        if self.model_dir is None or self.player.current_image is None:
            self.preprocess.status.setText("Choose a model (Analysis ▸ Analyse with model…) to re-score frames.")
            return
        try:
            from engine.analyzer import FrameAnalyzer
            from engine.faces import FaceResult, detect_single
        except ImportError as exc:
            self.preprocess.status.setText(f"Re-scoring is not available in this build ({exc}).")
            return
        frame, k = self.player.current_image, self.player.current
        d = self.data
        # The analysis's own face for this frame, so the re-score differs only in what was toggled.
        face = (FaceResult(True, d.box[k].copy(), d.landmarks[k].copy(), float(d.confidence[k]), 1)
                if d is not None and k < d.faces_done and d.found[k] else None)
        model_dir, mode, occlude = self.model_dir, self.preprocess.mode, self.preprocess.occluded

        def job(progress: Any, cancel: Any) -> tuple[int, Any, Any]:
            if self._analyzer is None or self._analyzer_dir != model_dir:
                progress(0, 1, "loading the model")
                self._analyzer, self._analyzer_dir = FrameAnalyzer(model_dir), model_dir
            analyzer = self._analyzer
            cancel.raise_if_cancelled()
            found = face if face is not None else detect_single(frame)
            return k, analyzer, analyzer.score(frame, found, analyzer.config(mode=mode, occlude=occlude))

        if self._rescore_worker is not None:
            self._rescore_worker.cancel()  # its result would be stale; the newest request wins
        worker = JobWorker(job, "re-score frame")
        worker.finished.connect(lambda result, w=worker: self._on_rescored(result, w))
        worker.error.connect(lambda msg, _tb: self.preprocess.status.setText(f"Re-scoring failed: {msg}"))
        worker.done.connect(lambda w=worker: self._on_rescore_done(w))
        self._rescore_worker = worker
        self._rescore_threads.append(worker)
        self.preprocess.status.setText(f"Scoring frame {k}…")
        worker.start()

    def _on_rescore_done(self, worker: JobWorker) -> None:
        if self._rescore_worker is worker:
            self._rescore_worker = None
        if worker in self._rescore_threads:
            self._rescore_threads.remove(worker)

    def _on_rescored(self, result: tuple[int, Any, Any], worker: JobWorker) -> None:
        if worker is not self._rescore_worker:
            return
        k, analyzer, score = result
        occ = ", ".join(sorted(self.preprocess.occluded)) or "nothing"
        if score is None:
            self.preprocess.status.setText(f"frame {k}: no face, so the {self.preprocess.mode} input cannot be made")
            return
        self.preprocess.show_scores(list(analyzer.classes), np.asarray(score.probs), score.input_image,
                                    f"frame {k}: {self.preprocess.mode} input, occluded: {occ}")
        self.preprocess.rescored_frame = k

    # ------------------------------------------------------------------------------------ annotations
    def _can_annotate(self) -> bool:
        if self.data is None or self.session_path is None or self.player.info is None:
            self.statusBar().showMessage("Annotations are kept in the session: analyse the video, or find faces "
                                         "(Analysis menu), or open a session first.", 8000)
            return False
        if self.analysis_worker is not None:
            self.statusBar().showMessage("Annotate when the analysis has finished (it is writing the session).",
                                         8000)
            return False
        return True

    def set_mark_in(self) -> None:
        """I: the annotation starts at the frame on screen."""
        if not self._can_annotate():
            return
        self.mark_in, self.mark_out = self.player.current, None
        self.timeline.set_pending(self.mark_in, None)
        self.statusBar().showMessage(f"In point at frame {self.mark_in}; go to the last frame and press O.", 6000)

    def set_mark_out(self) -> None:
        """O: the annotation ends at the frame on screen (inclusive); the editor opens."""
        if not self._can_annotate():
            return
        self.mark_out = self.player.current
        if self.mark_in is None:
            self.mark_in = self.mark_out
        self.timeline.set_pending(self.mark_in, self.mark_out)
        self.annotate_marked()

    def _on_range_marked(self, first: int, last: int) -> None:
        if not self._can_annotate():
            self.timeline.set_pending(None, None)
            return
        self.mark_in, self.mark_out = first, last
        self.annotate_marked()

    def clear_marks(self) -> None:
        self.mark_in = self.mark_out = None
        self.timeline.set_pending(None, None)

    def annotate_marked(self) -> None:
        """Open the inline editor for the marked range (in and out points both inclusive)."""
        if self.mark_in is None or self.mark_out is None or not self._can_annotate():
            return
        first, last = sorted((self.mark_in, self.mark_out))
        self._open_editor(first, last + 1)

    def _open_editor(self, start: int, end: int, index: int = -1) -> None:
        d = self.data
        assert d is not None
        labels = list(d.classes) + sorted({s.label for s in d.annotations.segments if s.label} - set(d.classes))
        dock = self.docks["annotations"]
        dock.show()
        dock.raise_()
        if dock.height() < 500 and not dock.isFloating():  # room for the editor and a few rows of the list
            above = next((d for d in (self.docks[k] for k in ("prototypes", "latents", "preprocess"))
                          if d.isVisible() and not d.visibleRegion().isEmpty()), None)
            if above is not None:
                total = above.height() + dock.height()
                self.resizeDocks([above, dock], [max(total - 500, 120), 500], Qt.Orientation.Vertical)
        self.annotation_panel.editor.begin(
            start, end, self.player.fps, self.notes.tier_names(), labels, self._targets(),
            model_verdict(d.classes, d.probs, d.valid, start, end),
            self.notes.segments[index] if index >= 0 else None, index)

    def _targets(self) -> list[str]:
        """What a note can point at now: this frame, the selected prototype, the stage under the cursor."""
        k = max(self.player.current, 0)
        targets = [f"frame:{k}"]
        if self.gallery.selected >= 0 and self.gallery.table.isVisible():
            targets.append(f"prototype:{self.gallery.selected}")
        stage = self.timeline.stage_at(k)
        if stage is not None:
            targets.append(f"stage:{stage.label}")
        return targets

    def _on_editor_confirmed(self, index: int, segment: Any) -> None:
        if index >= 0:
            self.notes.edit(index, segment)
        else:
            self.notes.add(segment)
        self.clear_marks()

    def add_annotation_segment(self, label: str, start: int, end: int, tier: str = "reviewer", note: str = "",
                               agreement: str = "", target: str = "") -> None:
        """Add a segment [start, end) (undoable) and autosave it into the session."""
        if self.data is None:
            return
        end = min(max(end, start + 1), self.data.frame_count)
        self.notes.add(NoteSegment(tier, start, end, label, note, author=os.environ.get("USER", ""),
                                   created=now_iso(), agreement=agreement, target=target))

    def edit_annotation(self, index: int) -> None:
        if self.data is not None and 0 <= index < len(self.notes.segments) and self._can_annotate():
            seg = self.notes.segments[index]
            self._open_editor(seg.start_frame, seg.end_frame, index)

    def delete_annotation(self, index: int) -> None:
        self.notes.delete(index)

    def go_to_target(self, target: str) -> None:
        """Follow a note's reference: a frame or a stage seeks there, a prototype is shown in the gallery."""
        kind, _, value = target.partition(":")
        if kind == "frame" and value.strip().isdigit():
            self.player.seek(int(value))
        elif kind == "stage":
            stage = next((s for s in self.timeline.stages if s.label == value.strip()), None)
            if stage is not None:
                self.player.seek(stage.start)
        elif kind == "prototype" and value.strip().isdigit():
            self.docks["prototypes"].show()
            self.docks["prototypes"].raise_()
            self.gallery.selected = int(value)
            self.show_prototype_trace(int(value))
            self.statusBar().showMessage(f"The note refers to {target}: its similarity is drawn on the timeline; "
                                         "the gallery lists it when a frame looks like it.", 6000)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Enter reaches the window only when no focused widget used it (the list and the editor do).
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.mark_out is not None:
            self.annotate_marked()
            return
        super().keyPressEvent(event)

    def save_session(self) -> None:
        """Write annotations and review settings into the session, on a worker (autosave after every edit)."""
        if self.data is None or self.session_path is None or self.analysis_worker is not None:
            return
        state = {"alpha": self.timeline.alpha, "frame": max(self.player.current, 0), "method": self.heat_method,
                 "top_x": self.top_x_on, "opacity": self.player.opacity.value()}
        self.autosaver.save(self.session_path, self.data.annotations, state)

    # ------------------------------------------------------------------------------------ export
    def export(self, kind: str) -> None:
        if self.session_path is None:
            return
        suffix = {"csv": ".csv", "eaf": ".eaf", "json": ".json"}[kind]
        default = str(self.session_path.with_suffix(suffix))
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind.upper()}", default, f"*{suffix}")
        if path:
            self.export_to(kind, Path(path))

    def export_to(self, kind: str, target: Path) -> JobWorker | None:
        if self.session_path is None:
            return None
        import sessions

        fn = {"csv": sessions.export_csv, "eaf": sessions.export_eaf, "json": sessions.export_json}[kind]
        source = self.session_path

        def job(progress: Any, cancel: Any) -> Path:
            with sessions.Session.open(source) as s:
                return fn(s, target)

        worker = self.jobs.submit(job, f"Export {target.name}")
        worker.finished.connect(lambda p: self.statusBar().showMessage(f"Exported {p}", 5000))
        worker.error.connect(lambda msg, tb: self.show_error("Export failed", msg,
                                                             "Choose another folder or file name.", tb))
        return worker

    def import_annotations(self) -> None:
        if self.session_path is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import annotations", str(self.session_path.parent),
                                              "ELAN files (*.eaf);;All files (*)")
        if path:
            self.import_annotations_from(Path(path))

    def import_annotations_from(self, source: Path) -> bool:
        """Add an ELAN file's tiers to the session (sessions.elan.import_eaf, as `vidxai import-annotations`)
        and show them; a bad file gets an error dialog with its one-line reason."""
        if self.data is None or self.session_path is None or self.analysis_worker is not None:
            return False
        import sessions
        from sessions.elan import import_eaf

        self.autosaver.wait()  # the reviewer's last edit is in the file before the import adds to it
        try:
            with sessions.Session.open(self.session_path, writable=True) as s:
                tiers, segments = import_eaf(s, source, author=os.environ.get("USER", ""))
                ann = s.annotations()
        except (OSError, ValueError, sessions.SessionError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.show_error("Import failed", msg if str(source) in msg else f"{source}: {msg}",
                            "Choose an ELAN .eaf file.")
            return False
        self.data.annotations = ann
        self._show_annotations()  # a new annotation list: shown, with a fresh undo history
        self.statusBar().showMessage(f"Imported {segments} segment(s), {tiers} new tier(s) from {source.name}", 5000)
        return True

    # ------------------------------------------------------------------------------------ events
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        urls = event.mimeData().urls()
        if urls and all(u.isLocalFile() for u in urls):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_path(paths[0])  # one video at a time; the rest would only replace it

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.jobs.is_busy():
            answer = QMessageBox.question(
                self, "Jobs are running", "A job is still running. Stop it and quit?\n\nAn analysis keeps the "
                "frames committed so far and continues from there next time.")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Save settings, stop jobs and the decoder; safe to call twice."""
        self._save_state()
        if not self.autosaver.wait(10_000):
            log.warning("the last annotation save did not finish within 10 s")
        if not self.jobs.shutdown(10_000):
            log.warning("a job did not stop within 10 s of cancelling")
        for worker in list(self._loaders):
            worker.cancel()
            worker.wait(5000)
        for worker in list(self._rescore_threads):
            worker.wait(10_000)
        self.player.shutdown()
