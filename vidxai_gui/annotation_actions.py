"""Annotating: in/out marks, the inline editor, note targets, autosave, export and ELAN import.

A mixin of the main window (labelme's shape: the window is wiring; each group of actions is its own
module). Annotations live in ``self.review.data.annotations`` and are edited through ``self.notes``
(undoable); every edit is autosaved on the job runner's coalescing lane.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from sessions import Segment as NoteSegment
from vidxai_gui.annotations import model_verdict, now_iso
from vidxai_gui.timeline_items import Segment
from vidxai_gui.worker import JobWorker


class AnnotationActions:
    """Edit ▸ Mark in/out, Annotate…, the Annotations dock's requests, File ▸ Save / Export / Import."""

    def _show_annotations(self) -> None:
        self.player.hold_background()  # redrawing the tiers and the list is the window's foreground work
        if self.review.data is None:
            self.timeline.set_annotations({})
            self.annotation_panel.set_segments([], self.player.fps)
            return
        if self.notes.annotations is not self.review.data.annotations:
            self.notes.reset(self.review.data.annotations)  # another session: its notes, a fresh history
            return  # reset() emitted changed, which came back here
        tiers: dict[str, list[Segment]] = {t.name: [] for t in self.review.data.annotations.tiers}
        for s in self.review.data.annotations.segments:
            tiers.setdefault(s.tier, []).append(Segment(s.start_frame, s.end_frame, s.label, s.note, s.agreement))
        self.timeline.set_annotations(tiers)
        self.annotation_panel.set_segments(self.review.data.annotations.segments, self.player.fps)

    def _can_annotate(self) -> bool:
        if self.review.data is None or self.review.session_path is None or self.player.info is None:
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
        d = self.review.data
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
        if self.review.data is None:
            return
        end = min(max(end, start + 1), self.review.data.frame_count)
        self.notes.add(NoteSegment(tier, start, end, label, note, author=os.environ.get("USER", ""),
                                   created=now_iso(), agreement=agreement, target=target))

    def edit_annotation(self, index: int) -> None:
        if self.review.data is not None and 0 <= index < len(self.notes.segments) and self._can_annotate():
            seg = self.notes.segments[index]
            self._open_editor(seg.start_frame, seg.end_frame, index)

    def delete_annotation(self, index: int) -> None:
        self.notes.delete(index)

    def toggle_annotation_loop(self) -> None:
        """L: play the selected annotation's frames with their sound, again and again; L again (or Esc) stops."""
        if self.player.looping:
            self.player.stop_range()
            return
        index = self.annotation_panel.selected_index()
        if not 0 <= index < len(self.notes.segments) or self.player.info is None:
            self.statusBar().showMessage("Select an annotation in the Annotations list, then press L to loop it.",
                                         6000)
            return
        seg = self.notes.segments[index]
        self.player.play_range(seg.start_frame, seg.end_frame, loop=True)
        sound = "" if not self.player.sound_note else f" ({self.player.sound_note.split(':')[0].lower()})"
        self.statusBar().showMessage(f"Looping “{seg.label or seg.tier}”, frames {seg.start_frame}–"
                                     f"{seg.end_frame - 1}{sound}: L or Esc stops", 8000)

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
            self.review.select_prototype(int(value))
            self.statusBar().showMessage(f"The note refers to {target}: its similarity is drawn on the timeline; "
                                         "the gallery lists it when a frame looks like it.", 6000)

    def save_session(self) -> None:
        """Write annotations and review settings into the session, on a worker (autosave after every edit)."""
        if self.review.data is None or self.review.session_path is None or self.analysis_worker is not None:
            return
        state = {"tau_s": self.review.tau_s, "alpha": self.review.alpha, "frame": max(self.player.current, 0), "method": self.review.heat_method,
                 "top_x": self.review.top_x, "smooth_maps": self.review.smooth_maps, "opacity": self.player.opacity.value()}
        self.autosaver.save(self.review.session_path, self.review.data.annotations, state)

    def export(self, kind: str) -> None:
        if self.review.session_path is None:
            return
        suffix = {"csv": ".csv", "eaf": ".eaf", "json": ".json"}[kind]
        default = str(self.review.session_path.with_suffix(suffix))
        path, _ = QFileDialog.getSaveFileName(self, f"Export {kind.upper()}", default, f"*{suffix}")
        if path:
            self.export_to(kind, Path(path))

    def export_to(self, kind: str, target: Path) -> JobWorker | None:
        if self.review.session_path is None:
            return None
        import sessions

        fn = {"csv": sessions.export_csv, "eaf": sessions.export_eaf, "json": sessions.export_json}[kind]
        source = self.review.session_path

        def job(progress: Any, cancel: Any) -> Path:
            with sessions.Session.open(source) as s:
                return fn(s, target)

        worker = self.jobs.submit(job, f"Export {target.name}")
        worker.finished.connect(lambda p: self.statusBar().showMessage(f"Exported {p}", 5000))
        worker.error.connect(lambda msg, tb: self.show_error("Export failed", msg,
                                                             "Choose another folder or file name.", tb))
        return worker

    def import_annotations(self) -> None:
        if self.review.session_path is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import annotations", str(self.review.session_path.parent),
                                              "ELAN files (*.eaf);;All files (*)")
        if path:
            self.import_annotations_from(Path(path))

    def import_annotations_from(self, source: Path) -> bool:
        """Add an ELAN file's tiers to the session (sessions.elan.import_eaf, as `vidxai import-annotations`)
        and show them; a bad file gets an error dialog with its one-line reason."""
        if self.review.data is None or self.review.session_path is None or self.analysis_worker is not None:
            return False
        import sessions
        from sessions.elan import import_eaf

        self.autosaver.wait()  # the reviewer's last edit is in the file before the import adds to it
        try:
            with sessions.Session.open(self.review.session_path, writable=True) as s:
                tiers, segments = import_eaf(s, source, author=os.environ.get("USER", ""))
                ann = s.annotations()
        except (OSError, ValueError, sessions.SessionError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.show_error("Import failed", msg if str(source) in msg else f"{source}: {msg}",
                            "Choose an ELAN .eaf file.")
            return False
        self.review.data.annotations = ann
        self._show_annotations()  # a new annotation list: shown, with a fresh undo history
        self.statusBar().showMessage(f"Imported {segments} segment(s), {tiers} new tier(s) from {source.name}", 5000)
        return True
