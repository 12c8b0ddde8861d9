"""Opening videos and sessions, and the jobs that write sessions (analyse, find faces), with their results
streaming into the review model.

A mixin of the main window (labelme's shape: the window is wiring; each group of actions is its own
module). Reads run on the job runner's background lane, analyses on its queue; results go into
``self.review`` (vidxai_gui.review_model), whose signals redraw the views.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QStandardPaths, Qt, Slot
from PySide6.QtWidgets import QFileDialog

from engine.aggregate import ewma_settings, tau_from_alpha
from engine.frame_au import LANDMARK_METHOD
from sessions import Annotations, Session
from vidxai_gui.docks import (
    PrototypeInfo,
    load_latent_patches,
    load_prototypes,
)
from vidxai_gui.people import load_people
from vidxai_gui.prototype_source import PrototypeSourceDialog, load_source_image
from vidxai_gui.review import (
    SIMILARITIES,
    TOP_LATENTS,
    ReviewData,
    Rows,
    empty_review,
    load_review,
    read_rows,
)

log = logging.getLogger(__name__)

APP_NAME = "VidXAI"
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".flv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
SESSION_SUFFIX = ".vxs"
DATA_FOLDER_KEY = "data/folder"  # where data sets named in model provenance ("fer2013:train/…") are looked for


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
    from engine.model_card import read_model_json, recorded_deltas  # no torch: the window stays light

    return recorded_deltas(read_model_json(folder))


class SessionActions:
    """File ▸ Open…, Analysis ▸ Analyse / Find faces, and what their jobs bring back."""

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
        self.prototypes = []
        self.gallery.selected = -1
        self._pending_analysis = Path(analyse_with) if analyse_with else None
        self._pending_frame = 0
        self.review.clear()
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
        self.jobs.background(lambda: load_review(path), f"load {path.name}", self._on_session_loaded,
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
        self.review.set_session(data, emit=False)  # drawn when its video is on screen (_on_video_opened)
        self._pending_frame = min(max(review_frame, 0), data.frame_count - 1)
        # The reviewer's view comes back as it was saved: method, Top-X, α and heatmap opacity.
        self.review.restore(data.review_state)
        if "opacity" in data.review_state:
            self.player.opacity.setValue(int(data.review_state["opacity"]))
        # EWMA: τ in seconds as saved or as the analysis recorded it (not a rounded α); older sessions
        # stored α alone, which means the τ it gives at the video's fps.
        fps = float(data.video.get("fps") or self.timeline.fps)
        state, rec = data.review_state, data.analysis or {}
        if state.get("tau_s") is not None:
            self.review.set_tau(float(state["tau_s"]))
        elif state.get("alpha"):
            self.review.set_tau(tau_from_alpha(float(state["alpha"]), fps))
        elif rec.get("ewma_tau_s") is not None or rec.get("alpha"):
            self.review.set_tau(ewma_settings(rec, fps)[1])
        self.setWindowTitle(f"{data.path.name} — {APP_NAME}")
        self._start_prototype_load(data)
        self._start_people_load(data.path, video)
        self.statusBar().showMessage(f"Opened {data.path.name}", 4000)
        self._update_actions()

    @Slot(object)
    def _on_video_opened(self, info: Any) -> None:
        self.timeline.set_video(info.frame_count, info.fps)
        if self.review.data is not None:
            self.review.redraw()
            self.review.choose_heat_method()
            if self._pending_frame:
                self.player.seek(self._pending_frame)
        self.status_label.setText(f"{info.width}×{info.height} · {info.fps:.2f} fps · {info.frame_count} frames"
                                  f" · {info.codec}")
        if self._pending_analysis is not None:
            model, self._pending_analysis = self._pending_analysis, None
            self.analyse(model)

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
            settings = pipeline.AnalyzeSettings(**{"ewma_tau_s": self.timeline.tau_s, **self.analyze_overrides,
                                                   **overrides})
        except (ImportError, AttributeError, TypeError) as exc:
            self.show_error("Analysis is not available", f"This build cannot analyse videos yet ({exc}).",
                            "Run `vidxai analyze VIDEO --model FOLDER` in a terminal, then open the .vxs file.")
            return
        self.model_dir = Path(model_dir)
        self._remember_model(self.model_dir)
        video = self.video_path
        out = self._session_path_for(video)

        model = self.model_dir

        def job(progress: Any, cancel: Any, partial: Callable[[object], None]) -> Path:
            with _said_plainly(video):
                out.parent.mkdir(parents=True, exist_ok=True)
                return analyze(video, model, out, settings, progress=progress, cancel=cancel,
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
        if self.review.data is not None and self.review.data.analysis:
            if self.model_dir is None:
                self.show_error("No model to apply", "Analysing another person re-runs the model's analysis.",
                                "Analyse the video with a model first (Analysis ▸ Analyse with model…).")
                return
            self.analyse(self.model_dir, person=person)
        else:
            self.find_faces(person)

    def _start_people_load(self, session: Path, video: Path | None) -> None:
        self.jobs.background(lambda: load_people(session, video), "load people", self.people_view.show,
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
        self.review.session_path = out
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
        if self.player.info is None or self.review.session_path is None:
            return
        if self.review.data is None or self.review.data.path != self.review.session_path:
            info = self.player.info
            self.review.set_session(empty_review(self.review.session_path, info.frame_count, self.player.timestamps,
                                                 {"path": str(self.video_path), "fps": info.fps}),
                                    self.review.session_path)
        self.review.merge_rows(rows)

    @Slot(object)
    def _on_analysis_finished(self, path: Any) -> None:
        # Reload everything once: SpRAy stages, occlusion and the decision are written at the end.
        self.statusBar().showMessage(f"Analysis finished: {Path(path).name}", 6000)
        keep = max(self.player.current, 0)
        self.jobs.background(lambda: load_review(Path(path)), "reload session",
                             lambda data: self._on_reloaded(data, keep),
                             lambda msg, tb: self.show_error("The finished session could not be read", msg,
                                                             "Open it again with File ▸ Open session.", tb))

    def _on_reloaded(self, data: ReviewData, frame: int) -> None:
        log.debug("session %s reloaded after the analysis", data.path)
        live = self.review.data
        if live is not None and live.path == data.path:
            # The analysis never writes annotations; the reviewer may have added some while the reload was
            # read (or before the autosave wrote them). The list in memory is the truth: keep it (and its
            # undo history) rather than the file's older copy, which the next autosave would have written.
            data.annotations = live.annotations
        self.review.set_session(data)
        self.review.choose_heat_method()
        self._start_prototype_load(data)
        self._start_people_load(data.path, self.video_path)
        self.frame_docks.update(frame)
        self._update_actions()

    @Slot()
    def _on_analysis_done(self) -> None:
        self.analysis_worker = None
        self._update_actions()

    def _start_prototype_load(self, data: ReviewData) -> None:
        # The model's own explanation dock comes to the front: the SAE latents for a PatchSAE, the
        # prototypes for a ProtoPNet (not an empty Prototypes tab over the latents).
        self.show_model_dock("latents" if TOP_LATENTS in data.extra else "prototypes" if SIMILARITIES in data.extra
                             else "landmarks" if LANDMARK_METHOD in data.explain_methods else None)
        model = (data.analysis or {}).get("model") or {}
        candidates = [model.get(key) for key in ("folder", "dir", "path", "model_dir")] + [self.model_dir]
        folder = next((Path(c) for c in candidates if c and (Path(c) / "model.json").is_file()), None)
        if folder is None:
            return
        self.jobs.background(lambda: _recorded_deltas(folder), "load faithfulness record",
                             self.review.set_method_deltas,
                             lambda msg, _tb: self.statusBar().showMessage(f"Faithfulness record not read: {msg}",
                                                                           8000))
        if TOP_LATENTS in data.extra:
            self.jobs.background(lambda: load_latent_patches(folder), "load latent patches", self._on_latent_patches,
                                 lambda msg, _tb: self.statusBar().showMessage(
                                     f"SAE reference patches not shown: {msg}", 8000))
        if SIMILARITIES in data.extra:
            self.jobs.background(lambda: load_prototypes(folder), "load prototypes", self._on_prototypes,
                                 lambda msg, _tb: self.statusBar().showMessage(
                                     f"Prototype images not shown: {msg}", 8000))

    def _on_latent_patches(self, patches: dict) -> None:
        self.latents.set_patches(patches)
        self.frame_docks.update()

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
                self.jobs.background(lambda: load_source_image(info, chosen), "load prototype source",
                                     dialog.set_source, dialog.set_error)

        dialog.folder_button.clicked.connect(choose)
        dialog.show()
        # Bound to the dialog's own slots, so closing it before the image arrives disconnects them.
        self.jobs.background(lambda: load_source_image(info, folder), "load prototype source",
                             dialog.set_source, dialog.set_error)

    def _on_prototypes(self, protos: list[PrototypeInfo]) -> None:
        self.prototypes = protos
        self.gallery.set_prototypes(protos)
        self.stage_panel.set_prototypes(protos)
        self.frame_docks.update()

    def select_stage(self, i: int) -> None:
        """Stage i of the strip: its details (engine.temporal.stage_details, read on a background job) go
        into the review model, which highlights it on the timeline and shows it in the Stage dock."""
        path, stages = self.review.session_path, self.timeline.stages
        if path is None or not 0 <= i < len(stages):
            self.review.select_stage(-1)
            return
        st = stages[i]
        method = self.review.heat_method or "intrinsic"
        video = str(self.player.source.path) if self.player.source is not None else None

        def details() -> dict:
            from engine.temporal import stage_details, stage_face

            with Session.open(path) as s:
                info = stage_details(s, st.start, st.end, st.label, method=method)
                # The mean map over the model input of the stage's most representative frame.
                k, mean = info["key_frame"], info["mean_map"]
                info["face"] = stage_face(s, k, mean, video) if mean is not None and k >= 0 else None
            info["method"] = method
            return info

        self.review.select_stage(i)  # the range is highlighted at once, the details follow
        self.docks["stage"].raise_()
        self.jobs.background(details, f"stage {st.label}",
                             lambda info: self.review.select_stage(i, info) if self.review.stage == i else None,
                             lambda msg, _tb: self.statusBar().showMessage(f"Stage not shown: {msg}", 8000))
