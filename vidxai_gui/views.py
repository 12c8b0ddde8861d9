"""The views' subscriptions to the review model: each redraws only what the signal it got names.

``qt_dims`` listening to napari's dims model is the pattern: the widgets (player, timeline, docks) know
nothing of the model; these small classes connect the model's signals to the widgets' setters, and the
widgets' user input back to the model. docs/GUI.md has the table of who listens to what.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QTimer

from engine.faces import FaceResult
from engine.overlay import TOP_X, FrameEvidence
from engine.preprocess import PreprocessConfig, preprocess
from engine.temporal import DEFAULT_MAP_SIGMA_S
from sessions.tracks import occlusion_deltas
from vidxai_gui.docks import LatentProfile, PrototypeGallery
from vidxai_gui.people import PeoplePanel, PersonEntry
from vidxai_gui.player import FrameOverlays, Player
from vidxai_gui.preprocess_panel import PreprocessPanel
from vidxai_gui.review import SIMILARITIES, TOP_LATENTS, TOP_VALUES, HeatmapReader, top_contributions
from vidxai_gui.review_model import ReviewModel
from vidxai_gui.timeline import Timeline
from vidxai_gui.timeline_items import Segment


class TimelineView:
    """Scores, face track, stages, occlusion deltas, the prototype trace, the cursor and α."""

    def __init__(self, model: ReviewModel, timeline: Timeline) -> None:
        self.model, self.timeline = model, timeline
        model.sessionChanged.connect(self.redraw)
        model.rowsMerged.connect(lambda _a, _b: self.redraw())
        model.frameChanged.connect(timeline.set_cursor)
        model.prototypeSelected.connect(self.show_trace)
        model.stageSelected.connect(timeline.highlight_stage)
        model.alphaChanged.connect(lambda a: timeline.set_alpha(a) if abs(timeline.alpha - a) > 1e-9 else None)
        model.tauChanged.connect(timeline.set_tau)
        timeline.alphaChanged.connect(model.set_alpha)
        timeline.tauChanged.connect(model.set_tau)
        model.set_tau(timeline.tau_s)
        model.set_alpha(timeline.alpha)

    def redraw(self) -> None:
        d, tl = self.model.data, self.timeline
        if d is None:
            return
        if d.faces_done:
            conf = d.confidence.astype(float).copy()
            conf[d.faces_done:] = np.nan
            found = d.found.copy()
            found[d.faces_done:] = True  # not processed yet is not "no face"
            tl.set_face_track(conf, found)
        if d.classes and d.probs is not None:
            tl.set_scores(d.classes, d.probs, d.valid, frames_done=d.frames_done)
        elif d.faces_done:
            found = int(d.found[: d.faces_done].sum())
            tl.decision_label.setText(f"Faces found in {found} of {d.faces_done} frames; no model analysis yet "
                                      "(Analysis ▸ Analyse with model…)")
        stages, tips = d.stages, d.stage_tips
        if not stages and d.class_stages:
            # No whole-video temporal prototype: show the stages of the decided class.
            stages, tips = d.class_stages.get(tl.decision_class()) or next(iter(d.class_stages.values())), []
        tl.set_stages([Segment(s, e, lab, tips[i] if i < len(tips) else "") for i, (s, e, lab) in enumerate(stages)])
        tl.highlight_stage(self.model.stage)
        if d.occlusion is not None and d.probs is not None and d.occlusion_conditions:
            deltas = occlusion_deltas(d.probs, d.occlusion, d.valid)
            tl.set_occlusion({name: deltas[:, i] for i, name in enumerate(d.occlusion_conditions)})
        self.show_trace(self.model.prototype)  # the selected prototype's trace grows with the data

    def show_trace(self, j: int) -> None:
        """Prototype j's similarity over the whole video (−1: none)."""
        d = self.model.data
        sims = d.extra.get(SIMILARITIES) if d is not None else None
        if j < 0 or sims is None or j >= sims.shape[1]:
            self.timeline.set_trace("", None)
        else:
            self.timeline.set_trace(f"prototype #{j}", sims[:, j])


class PlayerView:
    """The frame's overlays: the heatmap reader for the chosen method, face box and landmarks."""

    def __init__(self, model: ReviewModel, player: Player) -> None:
        self.model, self.player = model, player
        player.overlay_provider = self.overlays
        player.frameShown.connect(model.set_frame)
        model.sessionChanged.connect(self.on_data)
        model.rowsMerged.connect(lambda _a, _b: self.on_data())
        model.heatChanged.connect(self.on_heat)

    def on_data(self) -> None:
        d = self.model.data
        if d is not None:
            self.player.set_face_track(d.box, d.found)  # the face view follows the analysed person
        self.player.refresh_overlays()

    def on_heat(self) -> None:
        info, m = self.player.info, self.model
        self.player.view.legend.set_heat(m.heat_method, m.top_x, m.smooth_maps)  # the colour bar's words
        if info is None or m.session_path is None or not m.map_methods:  # landmark IG: points, not a map
            self.player.set_extras_provider(None)
            return
        self.player.set_extras_provider(HeatmapReader(m.session_path, m.heat_method, (info.height, info.width),
                                                      top_x=TOP_X if m.top_x else None,
                                                      smooth_s=DEFAULT_MAP_SIGMA_S if m.smooth_maps else None))
        self.player.refresh_overlays()

    def overlays(self, k: int, extras: Any) -> FrameOverlays:
        """Overlays of frame k; called by the player in the same step that puts frame k on screen."""
        ov = FrameOverlays()
        if isinstance(extras, FrameEvidence):
            ov.heatmap, ov.heat_origin, ov.heat_level = extras.heat, extras.heat_origin, extras.heat_level
            ov.proto_box = extras.proto_box
            ov.proto_label = f"prototype #{extras.proto_index}" if extras.proto_index >= 0 else ""
        d = self.model.data
        if d is not None and k < d.faces_done:
            if d.found[k]:
                ov.box, ov.landmarks = d.box[k], d.landmarks[k]
            else:
                ov.note = "no face found in this frame"
        return ov


class FrameDocks:
    """The docks that show the frame on screen: prototypes (W·s), SAE latents, the stored scores."""

    def __init__(self, model: ReviewModel, player: Player, gallery: PrototypeGallery, latents: LatentProfile,
                 preprocess: PreprocessPanel, rescoring: Callable[[], bool], jobs: Any = None) -> None:
        self.model, self.player = model, player
        self.gallery, self.latents, self.preprocess = gallery, latents, preprocess
        self.rescoring = rescoring  # a re-scored frame's scores stay in the dock until it is done
        self.jobs = jobs  # a big video's full-size frame for the model input is fetched on its lane
        # ... once the reviewer rests on a frame: while scrubbing, a full-size decode per frame would take the
        # decode thread from the frames the player waits for (and from caching the frames around them).
        self._input_k = -1
        self._input_timer = QTimer()
        self._input_timer.setSingleShot(True)
        self._input_timer.setInterval(self.INPUT_REST_MS)
        self._input_timer.timeout.connect(self._fetch_rested)
        model.frameChanged.connect(self.on_frame)
        model.alphaChanged.connect(lambda _a: self.update())
        model.sessionChanged.connect(self.update)
        model.rowsMerged.connect(lambda _a, _b: self.update())
        gallery.prototypeSelected.connect(model.select_prototype)
        # Playback stops between the docks' updates (a third of the frames): show the frame it stopped on.
        player.playingChanged.connect(lambda on: None if on else self.update(player.current))

    def on_frame(self, k: int) -> None:
        if not self.player.playing or k % 3 == 0:  # docks are text: a third of the frame rate is plenty
            self.update(k)

    def update(self, k: int | None = None) -> None:
        d = self.model.data
        k = self.player.current if k is None else k
        if d is None or k < 0 or k >= d.frame_count:
            return
        if SIMILARITIES in d.extra:
            c, entries = top_contributions(d, k, PrototypeGallery.TOP)
            self.gallery.show_frame(k, d.classes[c] if c >= 0 else "", entries)
        if TOP_LATENTS in d.extra:
            self.latents.show_frame(k, d.extra[TOP_LATENTS], d.extra.get(TOP_VALUES))
        if d.probs is not None and not self.rescoring() and self.preprocess.is_default():
            note = f"frame {k}: scores stored in the session" if d.valid is not None and d.valid[k] else \
                f"frame {k}: no face, no scores"
            image, pending = self.model_input(k)
            self.preprocess.show_scores(d.classes, d.probs[k], image, note)
            if image is None:
                self.preprocess.input_view.setText("…" if pending else "playing" if self.player.playing
                                                   else "no face:\nno model\ninput")

    INPUT_LANE = "model input"
    INPUT_REST_MS = 150  # how long a frame stays on screen before its full-size frame is fetched

    def model_input(self, k: int) -> tuple[np.ndarray | None, bool]:
        """What the model saw at frame k (the session's preprocessing of the frame on screen and its face),
        or None when frame k is not on screen or has no face (the preview then says so); and whether it is
        on its way. A big video is shown decoded at the view's size: its full-size frame is then decoded on
        a worker (never while stepping and seeking wait for it), and only while the Input dock is on screen."""
        d = self.model.data
        cfg = (d.analysis or {}).get("preprocess") if d is not None else None
        if self.player.playing or self.player.current != k or not cfg or k >= d.faces_done or not d.found[k]:
            return None, False  # while playing: not a full-size decode per update (shown again when it stops)
        face = FaceResult(True, d.box[k].copy(), d.landmarks[k].copy(), float(d.confidence[k]), 1)
        frame = self.player.full_image_at_hand()
        if frame is None and self.jobs is not None:
            if self.preprocess.isVisible():
                self._input_k = k
                self._input_timer.start()  # restarted by every frame shown: fetched once the frame rests
            return None, True
        frame = self.player.current_image if frame is None else frame
        if frame is None:
            return None, False
        prep = preprocess(frame, face, PreprocessConfig.from_json(cfg))
        return (None if prep is None else prep.image), False

    def _fetch_rested(self) -> None:
        k = self._input_k
        if self.player.current == k and not self.player.playing and self.preprocess.isVisible():
            self._fetch_input(k)

    def _fetch_input(self, k: int) -> None:
        """Frame k at full size, decoded on a worker; the dock is updated with it if k is still on screen."""
        source = self.player.source
        if source is None:
            return

        def run(_progress, _cancel) -> tuple[int, np.ndarray] | None:
            frame = source.full_frame(k)
            return None if frame is None else (k, frame)

        def ready(result: tuple[int, np.ndarray] | None) -> None:
            if result is not None and self.player.source is source:
                self.player.remember_full_image(*result)
                if self.player.current == result[0] and not self.player.playing:
                    self.update(result[0])

        self.jobs.coalesce(self.INPUT_LANE, run, "model input", lambda w: w.finished.connect(ready))


class PeopleView:
    """The People dock and the status bar: who the session follows (the list arrives from a background job)."""

    def __init__(self, model: ReviewModel, panel: PeoplePanel, say: Callable[[str], None]) -> None:
        self.model, self.panel = model, panel
        model.personChanged.connect(lambda p: say(f"Scores, maps and exports refer to person {p}") if p >= 0
                                    and len(panel.entries) > 1 else None)

    def show(self, entries: list[PersonEntry]) -> None:
        """The session's people, loaded: list them and tell the model which one is analysed."""
        self.panel.set_people(entries)
        self.model.set_person(next((e.id for e in entries if e.analysed), None))
