"""Analysis of a video with a clip model (TimeSformer; ARCHITECTURE "three kinds of model, one contract").

The same pipeline as a frame model's (engine.pipeline: decode ∥ faces ∥ preprocess, committed chunk by
chunk) feeds the face crops, in order, to sliding T-frame windows (engine.clips.WindowStream: a window
every ``stride`` face frames, a frame's score the mean of the windows that contain it). A frame is
written once no later window can contain it, so the writer holds about T + stride crops whatever the
video's length. Per frame the session gets what a frame model writes — scores, the input mapping, one
map per method on the model's token grid in model-input space (the mapping puts it on the full frame),
action-unit cosines — plus the temporal relevance per method and the span of the windows behind its
score (Session.write_temporal_relevance, write_window_spans; geometry in Session.clip_windows).

Methods (``--explain``): ``intrinsic`` is attention rollout with the ``fusion`` setting (min by default,
as seed 004; ``rollout`` names it too), ``rollout-grad``, ``chefer`` and ``gradcam`` (on the last
block's patch tokens), engine.explain.spacetime.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING

import numpy as np

from engine.clips import WindowStream, resume_row
from engine.explain.spacetime import FUSIONS

if TYPE_CHECKING:
    from engine.analyzer import FrameAnalyzer
    from engine.faces import People
    from engine.pipeline import AnalyzeSettings
    from sessions import Session

# Session method name → engine.explain.spacetime method.
SPACETIME = {"intrinsic": "rollout", "rollout-grad": "rollout-grad", "chefer": "chefer", "gradcam": "gradcam"}
RULE = "mean of the windows containing the frame"


def clip_settings(settings: AnalyzeSettings) -> AnalyzeSettings:
    """``settings`` for a clip model: ``rollout`` read as ``intrinsic``; methods, fusion and occlusion checked."""
    explain = tuple(dict.fromkeys("intrinsic" if m == "rollout" else m for m in settings.explain))
    bad = [m for m in explain if m not in SPACETIME]
    if bad:
        raise ValueError(f"a clip model (TimeSformer) explains with {', '.join(['rollout', *list(SPACETIME)[1:]])}; "
                         f"not {', '.join(bad)}")
    if settings.fusion not in FUSIONS:
        raise ValueError(f"head fusion must be one of {', '.join(FUSIONS)}, not {settings.fusion!r}")
    if settings.occlusion:
        raise ValueError("per-frame part occlusion (analyze --occlusion) scores single frames; for a clip model "
                         "use `vidxai evaluate --occlusion` on labelled clips")
    return dataclasses.replace(settings, explain=explain)


def clip_start(session: Session, done: int, frames: int, stride: int) -> tuple[int, int]:
    """(frame to feed from, its row) to continue an analysis whose first ``done`` frames are written: the
    face frame starting the first window that also covers frames from ``done`` on (engine.clips.resume_row)."""
    valid = np.asarray(session.read("valid", slice(0, done)), bool) if done else np.zeros(0, bool)
    rows_done = int(valid.sum())
    first = resume_row(rows_done, frames, stride)
    return (int(np.flatnonzero(valid)[first]) if first < rows_done else done), first


class ClipWriter:
    """Takes the pipeline's (k, frame, face, preprocessed) batches in frame order and writes frames from
    ``done`` on as their windows complete. Frames before ``done`` (from ``feed_from``) only fill windows."""

    def __init__(self, analyzer: FrameAnalyzer, session: Session, settings: AnalyzeSettings, done: int,
                 feed_from: int, first_row: int, write_faces: bool = True, people: People | None = None,
                 cancel=None) -> None:
        self.a, self.s, self.cfg = analyzer, session, settings
        self.done, self.feed_from = done, feed_from
        self.write_faces, self.people = write_faces, people
        self.names = list(settings.explain)
        self.stream = WindowStream(analyzer.model, settings.stride, tuple(SPACETIME[m] for m in self.names),
                                   settings.fusion, batch=settings.window_batch, first_row=first_row, cancel=cancel)
        self.pending: deque = deque()
        session.set_clip_windows(frames=analyzer.model.frames, stride=settings.stride, fusion=settings.fusion,
                                 rule=RULE, methods={m: SPACETIME[m] for m in self.names})

    def __call__(self, items: list) -> tuple[int, int] | None:
        for k, _frame, face, pre in items:
            if k < self.feed_from:
                continue
            row = self.stream.push(pre.image, key=k) if pre is not None else -1
            if k >= self.done:
                self.pending.append((k, face, pre, row))
        self.stream.flush_ready()
        return self._write()

    def finish(self) -> tuple[int, int] | None:
        self.stream.finish()
        return self._write()

    def _write(self) -> tuple[int, int] | None:
        final = self.stream.final_below
        out = []
        while self.pending and self.pending[0][3] < final:
            out.append(self.pending.popleft())
        if not out:
            return None
        from engine.pipeline import FaceChunk, _au_cosines

        n, k0 = len(out), out[0][0]
        C, g = len(self.a.classes), self.a.model.grid
        if self.write_faces:
            FaceChunk.from_results(k0, [it[1] for it in out]).write(self.s, self.people)
        self.s.write_mappings(k0, [it[2].mapping.to_json() if it[2] is not None else None for it in out])
        valid = np.array([it[3] >= 0 for it in out], bool)
        logits, probs = np.full((n, C), np.nan, np.float32), np.full((n, C), np.nan, np.float32)
        maps = {m: np.full((n, g, g), np.nan, np.float32) for m in self.names}
        temporal = {m: np.full(n, np.nan, np.float32) for m in self.names}
        spans = np.full((n, 2), -1, np.int32)
        for i in np.flatnonzero(valid):
            res = self.stream.pop(out[i][3])
            logits[i], probs[i], spans[i] = res.logits, res.probs, res.span
            for m in self.names:
                sp = SPACETIME[m]
                maps[m][i], temporal[m][i] = res.maps[sp], res.temporal[sp]
        good = [(k, None, face, pre) for k, face, pre, row in out if row >= 0]
        for m in self.names:
            self.s.write_explanation(m, k0, maps[m].astype(np.float16))
            self.s.write_temporal_relevance(m, k0, temporal[m])
            if self.cfg.au:
                cos = np.full(n, np.nan, np.float32)
                if good:
                    cos[valid] = _au_cosines(maps[m][valid], good, probs[valid].argmax(1), self.a.classes)
                self.s.write_au_cos(m, k0, cos)
        self.s.write_window_spans(k0, spans)
        self.s.write_scores(k0, valid, logits, probs)
        return k0, k0 + n


__all__ = ["RULE", "SPACETIME", "ClipWriter", "clip_settings", "clip_start"]
