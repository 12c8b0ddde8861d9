"""The main window: player over timeline, side docks, menus. It is wiring: the state lives in the review
model (vidxai_gui.review_model), the views subscribe to it (vidxai_gui.views), every thread belongs to
the job runner (vidxai_gui.worker), and the actions live in small modules the window mixes in:
opening and analysing (session_actions), training (training_actions), annotating (annotation_actions),
the heatmap menu and re-scoring (frame_actions); the menus are built by vidxai_gui.menus.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QKeyEvent
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QMessageBox, QSplitter, QTabBar, QWidget

from engine.temporal import DEFAULT_TAU_S
from vidxai_gui import clip_view, landmark_view
from vidxai_gui.annotation_actions import AnnotationActions
from vidxai_gui.annotations import AnnotationPanel, AnnotationStore, Autosaver
from vidxai_gui.docks import LatentProfile, PrototypeGallery, PrototypeInfo
from vidxai_gui.frame_actions import AnalyzerCache, HeatActions, RescoreActions
from vidxai_gui.job_panel import JobPanel
from vidxai_gui.menus import setup_menus
from vidxai_gui.people import PeoplePanel
from vidxai_gui.player import Player
from vidxai_gui.preprocess_panel import PreprocessPanel, ScrollPanel
from vidxai_gui.review import ReviewData
from vidxai_gui.review_model import ReviewModel
from vidxai_gui.session_actions import APP_NAME, SessionActions
from vidxai_gui.stage_panel import StagePanel
from vidxai_gui.timeline import Timeline
from vidxai_gui.training_actions import MAX_RECENT, TrainingActions
from vidxai_gui.views import FrameDocks, PeopleView, PlayerView, TimelineView
from vidxai_gui.waveform import WaveformLoader
from vidxai_gui.worker import JobRunner, JobWorker

log = logging.getLogger(__name__)

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


class MainWindow(SessionActions, TrainingActions, AnnotationActions, HeatActions, RescoreActions, QMainWindow):
    def __init__(self, settings: QSettings, model_dir: str | os.PathLike[str] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.model_dir: Path | None = Path(model_dir) if model_dir else None
        self.video_path: Path | None = None
        self.analysis_worker: JobWorker | None = None
        self._pending_analysis: Path | None = None
        self._pending_frame = 0
        # Extra engine.pipeline.AnalyzeSettings fields for analyses started here (e.g. explain methods).
        self.analyze_overrides: dict[str, Any] = {}
        self._analyzers = AnalyzerCache()  # the model re-scoring uses, loaded on its first job
        self.prototypes: list[PrototypeInfo] = []
        self.source_dialog: Any = None  # the last "Open source" dialog (tests look)
        self.mark_in: int | None = None
        self.mark_out: int | None = None
        self.setWindowTitle(APP_NAME)
        self.setAcceptDrops(True)
        self.setDockOptions(QMainWindow.DockOption.AllowTabbedDocks | QMainWindow.DockOption.AnimatedDocks)
        self.review = ReviewModel(self)
        self.jobs = JobRunner(self)
        self._setup_central()
        self._setup_docks()
        self.status_label = QLabel()
        self.statusBar().addPermanentWidget(self.status_label)
        setup_menus(self)
        self._setup_views()
        self._setup_connections()
        self.resize(1280, 800)
        # The frame and the scores are what a reviewer looks at: docks get a column, not half the window.
        self.resizeDocks([self.docks["prototypes"]], [360], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["prototypes"], self.docks["annotations"]], [480, 260], Qt.Orientation.Vertical)
        self.splitter.setSizes([430, 330])
        self._restore_state()
        self.player.bind_settings(settings)  # volume, mute, sound when stepping
        self._update_actions()

    # ---- the review model's state, for scripts and tests that read it off the window
    @property
    def data(self) -> ReviewData | None:
        return self.review.data

    @property
    def session_path(self) -> Path | None:
        return self.review.session_path

    @property
    def heat_method(self) -> str:
        return self.review.heat_method

    @property
    def top_x_on(self) -> bool:
        return self.review.top_x

    # ---- building
    def _setup_central(self) -> None:
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

    def _setup_docks(self) -> None:
        self.gallery = PrototypeGallery()
        self.latents = LatentProfile()
        self.preprocess = PreprocessPanel()
        self.job_panel = JobPanel(self.jobs)
        self.annotation_panel = AnnotationPanel()
        self.people_panel = PeoplePanel()
        self.stage_panel = StagePanel(self.review)
        self.notes = AnnotationStore(self)
        self.autosaver = Autosaver(self.jobs, self)
        self.docks: dict[str, QDockWidget] = {}
        right = Qt.DockWidgetArea.RightDockWidgetArea
        for key, title, widget in (("prototypes", "Prototypes", self.gallery),
                                   ("latents", "SAE latents", self.latents),
                                   ("preprocess", "Input", ScrollPanel(self.preprocess)),
                                   ("annotations", "Annotations", self.annotation_panel),
                                   ("jobs", "Jobs", self.job_panel), ("people", "People", self.people_panel),
                                   ("stage", "Stage", ScrollPanel(self.stage_panel))):
            self.add_dock(key, title, widget, right)
        for first, other in (("prototypes", "latents"), ("prototypes", "preprocess"), ("prototypes", "stage"),
                             ("annotations", "jobs"),
                             ("annotations", "people")):
            self.tabifyDockWidget(self.docks[first], self.docks[other])
        self.docks["prototypes"].raise_()
        self.docks["annotations"].raise_()
        self.unelide_dock_tabs()

    def add_dock(self, key: str, title: str, widget: QWidget,
                 area: Qt.DockWidgetArea = Qt.DockWidgetArea.RightDockWidgetArea) -> QDockWidget:
        """A dock with a stable name (saveState needs it); docs/GUI.md shows how a new dock plugs in."""
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{key}")
        dock.setWidget(widget)
        dock.setMinimumWidth(280)
        self.addDockWidget(area, dock)
        self.docks[key] = dock
        # Qt makes a new tab bar whenever docks are tabified or moved: give each one full titles.
        dock.dockLocationChanged.connect(lambda _area: QTimer.singleShot(0, self.unelide_dock_tabs))
        if hasattr(self, "view_menu"):  # built after the window's own docks: a later dock joins View too
            self.view_menu.insertAction(self.view_menu.actions()[-2], dock.toggleViewAction())
        return dock

    MODEL_DOCKS = ("prototypes", "latents", "landmarks")  # each explains one kind of model

    def show_model_dock(self, key: str | None) -> None:
        """The open session's own explanation dock, at the front of its tab group; the other models' docks
        are closed (View ▸ lists them to open again), so the tabs fit and none of them says "open a
        ProtoPNet session to see…" over a PatchSAE's. None (a CNN, a clip model): none of the three."""
        for k in self.MODEL_DOCKS:
            dock = self.docks.get(k)
            if dock is None:
                continue
            if k == key:
                dock.show()
                dock.raise_()
            elif not dock.isFloating():  # a dock the reviewer pulled out stays where they put it
                dock.hide()
        QTimer.singleShot(0, self.unelide_dock_tabs)

    def unelide_dock_tabs(self) -> None:
        """Dock tabs show their whole title ("Sta…" told a reviewer nothing); when a dock area is too
        narrow for all of them, the tab bar scrolls instead."""
        for bar in self.findChildren(QTabBar):
            if bar.parent() is self:  # the main window's own dock-area tab bars, not a widget's tabs
                bar.setElideMode(Qt.TextElideMode.ElideNone)
                bar.setUsesScrollButtons(True)

    def _setup_views(self) -> None:
        """The views subscribe to the review model (docs/GUI.md: who listens to what)."""
        self.timeline_view = TimelineView(self.review, self.timeline)
        self.timeline.interacting.connect(self.player.hold_background)
        self.player_view = PlayerView(self.review, self.player)
        self.frame_docks = FrameDocks(self.review, self.player, self.gallery, self.latents, self.preprocess,
                                      lambda: self.rescoring, self.jobs)
        # The Input dock brought to the front shows the frame's model input (fetched only while it shows).
        self.docks["preprocess"].visibilityChanged.connect(lambda on: self.frame_docks.update() if on else None)
        self.people_view = PeopleView(self.review, self.people_panel,
                                      lambda text: self.statusBar().showMessage(text, 6000))
        self.review.sessionChanged.connect(self._show_annotations)
        self.review.rowsMerged.connect(lambda _a, _b: self._show_annotations())
        self.review.frameChanged.connect(self._on_frame_shown)
        self.waveform_loader = WaveformLoader(self)  # the sound's waveform on the timeline, cached in the session
        self.landmark_view = landmark_view.plug_in(self)  # issue 16: landmark models, AU regions and track
        self.clip_view = clip_view.plug_in(self)  # issue 15: a clip model's temporal track and window span

    def _setup_connections(self) -> None:
        self.timeline.seekRequested.connect(self.player.seek)
        self.player.soundNote.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.player.videoOpened.connect(self._on_video_opened)
        self.player.videoFailed.connect(lambda msg: self.show_error("The video could not be opened", msg,
                                                                    "Choose another file, or convert this one "
                                                                    "to MP4 (H.264) and open it again."))
        panel = self.annotation_panel
        panel.seekRequested.connect(self.player.seek)
        panel.targetRequested.connect(self.go_to_target)
        panel.deleteRequested.connect(self.delete_annotation)
        panel.editRequested.connect(self.edit_annotation)
        panel.fieldEdited.connect(self.notes.edit_field)
        panel.markInRequested.connect(self.set_mark_in)
        panel.markOutRequested.connect(self.set_mark_out)
        panel.editor.confirmed.connect(self._on_editor_confirmed)
        panel.editor.cancelled.connect(self.clear_marks)
        self.timeline.rangeMarked.connect(self._on_range_marked)
        self.timeline.stageClicked.connect(self.select_stage)
        self.notes.changed.connect(self._show_annotations)
        self.notes.edited.connect(self.save_session)
        self.autosaver.saved.connect(lambda p: self.statusBar().showMessage(f"Saved {Path(p).name}", 3000))
        self.autosaver.failed.connect(lambda msg, tb: self.show_error(
            "The annotations could not be saved", msg,
            "Check that the session's folder is writable and has space; your annotations stay in the window "
            "and are saved with the next change or File ▸ Save session.", tb))
        self.preprocess.changed.connect(self.rescore_current)
        self.gallery.openSourceRequested.connect(self.open_prototype_source)
        self.preprocess.applyToVideo.connect(self.apply_input_to_video)
        self.people_panel.personChosen.connect(self.analyse_person)
        self.jobs.jobStarted.connect(lambda _w: self.docks["jobs"].raise_())


    def _update_actions(self) -> None:
        has_video = self.video_path is not None
        has_session = self.review.session_path is not None and self.review.session_path.exists()
        busy = self.analysis_worker is not None
        self.analyse_action.setEnabled(has_video and not busy)
        self.faces_action.setEnabled(has_video and not busy)
        self.save_action.setEnabled(has_session and not busy)
        for action in self.export_actions:
            action.setEnabled(has_session and not busy)
        self.import_annotations_action.setEnabled(has_session and self.review.data is not None and not busy)
        self.annotation_panel.setEnabled(has_session and not busy)
        annotatable = self.review.data is not None and not busy
        for action in (self.mark_in_action, self.mark_out_action, self.annotate_action):
            action.setEnabled(annotatable)

    def _restore_state(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        self.review.set_tau(float(self.settings.value("review/tau_s", DEFAULT_TAU_S, float)))
        model = self.settings.value("analysis/model_dir", "", str)
        if self.model_dir is None and model and Path(model).is_dir():
            self.model_dir = Path(model)
        self._default_state = self.saveState()

    def _save_state(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("review/tau_s", self.timeline.tau_s)
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

    @Slot(int)
    def _on_frame_shown(self, k: int) -> None:
        if not self.player.playing and self.model_dir is not None and not self.preprocess.is_default():
            self.rescore_current()  # the toggles are on: show this frame as they make the model see it

    def keyPressEvent(self, event: QKeyEvent) -> None:
        # Enter reaches the window only when no focused widget used it (the list and the editor do).
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.mark_out is not None:
            self.annotate_marked()
            return
        super().keyPressEvent(event)

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
        self.player.shutdown()
