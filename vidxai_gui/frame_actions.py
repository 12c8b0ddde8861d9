"""What is drawn over the frame: the Heatmap method menu (with Top-X) and re-scoring the frame on screen
with the preprocessing dock's toggles.

Mixins of the main window: they change the review model (vidxai_gui.review_model) or run a job on the
runner's latest-wins lane; the views redraw from the model's signals.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from engine.overlay import TOP_X
from vidxai_gui.worker import JobWorker

RESCORE = "rescore"  # the job runner's latest-wins lane for re-scoring the frame on screen


class AnalyzerCache:
    """The FrameAnalyzer of the last model re-scored with, loaded on the worker that first needs it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self._analyzer: Any = None

    def get(self, folder: Path, progress: Any) -> Any:
        from engine.analyzer import FrameAnalyzer

        with self._lock:
            if self._analyzer is None or self._folder != folder:
                progress(0, 1, "loading the model")
                self._analyzer, self._folder = FrameAnalyzer(folder), folder
            return self._analyzer


class HeatActions:
    """Analysis ▸ Heatmap method: the methods this session has maps for (with their recorded Δ), Top-X."""

    def _fill_heat_menu(self) -> None:
        self.heat_menu.clear()
        methods = self.review.map_methods
        if not methods:
            self.heat_menu.addAction("(no maps in this session)").setEnabled(False)
        for m in methods:
            d = self.review.method_deltas.get(m)
            label = m if d is None else f"{m}    Δ {d:+.2f}" + ("  ⚠ not faithful" if d <= 0 else "")
            action = self.heat_menu.addAction(label)
            action.setCheckable(True)
            action.setChecked(m == self.review.heat_method)
            action.setToolTip("Δ = accuracy when the least relevant patches are hidden − when the most relevant "
                              "are (FER2013 700-image test subset; recorded in model.json by vidxai evaluate "
                              "--occlusion --record). Δ ≤ 0: the map does not track the model's evidence."
                              if d is not None else "Faithfulness not measured for this model and method")
            action.triggered.connect(lambda _c=False, m=m: self._pick_heat_method(m))
        off = self.heat_menu.addAction("none")
        off.setCheckable(True)
        off.setChecked(not self.review.heat_method)
        off.triggered.connect(self._heat_off)
        self.heat_menu.addSeparator()
        topx = self.heat_menu.addAction(f"Top-{TOP_X:.0%} relevance projection")
        topx.setCheckable(True)
        topx.setChecked(self.review.top_x)
        topx.setToolTip("Show only the strongest relevance that makes up "
                        f"{TOP_X:.0%} of the positive mass (SpRAy paper's figures)")
        topx.triggered.connect(self._set_top_x)

    def _set_heat_method(self, method: str) -> None:
        self.review.set_heat(method, chosen=False)

    def _set_top_x(self, on: bool) -> None:
        self.review.set_heat(top_x=bool(on))

    def _pick_heat_method(self, method: str) -> None:
        self.review.set_heat(method)

    def _heat_off(self) -> None:
        self.review.set_heat("")  # still reads the prototype box; just no map


class RescoreActions:
    """The preprocessing dock's toggles re-score the frame on screen (engine.analyzer.FrameAnalyzer)."""

    @property
    def rescoring(self) -> bool:
        return self.jobs.current(RESCORE) is not None

    def rescore_current(self) -> None:
        """Score the current frame with the chosen input mode and occlusion (FrameAnalyzer on a worker)."""
        if self.model_dir is None or self.player.current_image is None:
            self.preprocess.status.setText("Choose a model (Analysis ▸ Analyse with model…) to re-score frames.")
            return
        try:
            from engine.faces import FaceResult, detect_single
        except ImportError as exc:
            self.preprocess.status.setText(f"Re-scoring is not available in this build ({exc}).")
            return
        frame, k = self.player.current_image, self.player.current
        d = self.review.data
        # The analysis's own face for this frame, so the re-score differs only in what was toggled.
        face = (FaceResult(True, d.box[k].copy(), d.landmarks[k].copy(), float(d.confidence[k]), 1)
                if d is not None and k < d.faces_done and d.found[k] else None)
        model_dir, mode, occlude = self.model_dir, self.preprocess.mode, self.preprocess.occluded

        analyzers = self._analyzers
        window = clip_window_source(self.review, self.player)

        def job(progress: Any, cancel: Any) -> tuple[int, Any, Any, bool]:
            analyzer = analyzers.get(model_dir, progress)
            cancel.raise_if_cancelled()
            cfg = analyzer.config(mode=mode, occlude=occlude)
            args = window(k) if analyzer.spec.is_clip and window is not None else None
            if args is not None:   # the frame's windows, as the analysis scored it
                from engine.clip_analysis import rescore_frame

                return k, analyzer, rescore_frame(analyzer, *args, cfg), True
            found = face if face is not None else detect_single(frame)
            return k, analyzer, analyzer.score(frame, found, cfg), False

        worker = self.jobs.latest(RESCORE, job, "re-score frame")  # an earlier frame's result would be stale
        worker.finished.connect(lambda result, w=worker: self._on_rescored(result, w))
        worker.error.connect(lambda msg, _tb: self.preprocess.status.setText(f"Re-scoring failed: {msg}"))
        self.preprocess.status.setText(f"Scoring frame {k}…")

    def _on_rescored(self, result: tuple[int, Any, Any, bool], worker: JobWorker) -> None:
        if not self.jobs.is_latest(RESCORE, worker):
            return
        k, analyzer, score, windowed = result
        occ = ", ".join(sorted(self.preprocess.occluded)) or "nothing"
        if score is None:
            self.preprocess.status.setText(f"frame {k}: no face, so the {self.preprocess.mode} input cannot be made")
            return
        self.preprocess.show_scores(list(analyzer.classes), np.asarray(score.probs), score.input_image,
                                    f"frame {k}: {self.preprocess.mode} input, occluded: {occ}"
                                    + (" (the mean of its windows)" if windowed else ""))
        self.preprocess.rescored_frame = k


def clip_window_source(review: Any, player: Any) -> Any:
    """k → rescore_frame's (video, k, found, face_of, stride) for a session analysed in windows (called off the
    GUI thread: the stride is read from the session), None when it was not (the frame is then scored as a
    one-frame clip); None without a session."""
    d, path = review.data, review.session_path
    if d is None or path is None or player.info is None or not Path(path).exists():
        return None
    video, found = player.info.path, d.found[:d.faces_done].copy()
    box, lm, conf = d.box.copy(), d.landmarks.copy(), d.confidence.copy()

    def source(k: int) -> tuple | None:
        from engine.faces import FaceResult
        from sessions import Session

        with Session.open(path) as s:
            stride = int(s.clip_windows().get("stride", 0))
        if stride < 1:
            return None
        face_of = lambda j: FaceResult(True, box[j], lm[j], float(conf[j]), 1)
        return video, k, found, face_of, stride

    return source
