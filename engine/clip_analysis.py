"""Analysis of a video with a clip model (TimeSformer; ARCHITECTURE "three kinds of model, one contract").

The same pipeline as a frame model's (engine.pipeline: decode ∥ faces ∥ preprocess, committed chunk by
chunk) feeds the face crops, in order, to sliding T-frame windows (engine.clips.WindowStream: a window
every ``stride`` face frames, a frame's score the mean of the windows that contain it). A frame is
written once no later window can contain it, so the writer holds about T + stride crops whatever the
video's length. Per frame the session gets what a frame model writes — scores, the input mapping, one
map per method on the model's token grid in model-input space (the mapping puts it on the full frame),
action-unit cosines, with ``occlusion`` the class scores with each of the seven facial parts hidden (in
every frame of the windows, so each condition runs its own windows) — plus the temporal relevance per method and the span of the windows behind its
score (Session.write_temporal_relevance, write_window_spans; geometry in Session.clip_windows).

Methods (``--explain``): ``intrinsic`` is attention rollout with the ``fusion`` setting (min by default,
as seed 004; ``rollout`` names it too), ``rollout-grad``, ``chefer`` and ``gradcam`` (on the last
block's patch tokens), engine.explain.spacetime.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.clips import WindowStream, resume_row
from engine.explain.spacetime import FUSIONS

if TYPE_CHECKING:
    from engine.analyzer import FrameAnalyzer, FrameScore
    from engine.faces import FaceResult, People
    from engine.pipeline import AnalyzeSettings
    from engine.preprocess import PreprocessConfig
    from sessions import Session

# Session method name → engine.explain.spacetime method.
SPACETIME = {"intrinsic": "rollout", "rollout-grad": "rollout-grad", "chefer": "chefer", "gradcam": "gradcam"}
RULE = "mean of the windows containing the frame"


def clip_settings(settings: AnalyzeSettings) -> AnalyzeSettings:
    """``settings`` for a clip model: ``rollout`` read as ``intrinsic``; methods and fusion checked."""
    explain = tuple(dict.fromkeys("intrinsic" if m == "rollout" else m for m in settings.explain))
    bad = [m for m in explain if m not in SPACETIME]
    if bad:
        raise ValueError(f"a clip model (TimeSformer) explains with {', '.join(['rollout', *list(SPACETIME)[1:]])}; "
                         f"not {', '.join(bad)}")
    if settings.fusion not in FUSIONS:
        raise ValueError(f"head fusion must be one of {', '.join(FUSIONS)}, not {settings.fusion!r}")
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
                 cancel=None, cfg: PreprocessConfig | None = None) -> None:
        self.a, self.s, self.cfg = analyzer, session, settings
        self.done, self.feed_from = done, feed_from
        self.write_faces, self.people = write_faces, people
        self.names = list(settings.explain)
        self.stream = WindowStream(analyzer.model, settings.stride, tuple(SPACETIME[m] for m in self.names),
                                   settings.fusion, batch=settings.window_batch, first_row=first_row, cancel=cancel)
        self.pending: deque = deque()
        # --occlusion: the seven part conditions, each through its own windows (the part hidden in every frame).
        self.conditions: list[str] = []
        self.occ_cfgs: list[PreprocessConfig] = []
        self.occ_streams: list[WindowStream] = []
        if settings.occlusion:
            from engine.preprocess import OCCLUSION_CONDITIONS

            base = cfg or analyzer.preprocess_config
            self.conditions = list(OCCLUSION_CONDITIONS)
            self.occ_cfgs = [dataclasses.replace(base, occlude=OCCLUSION_CONDITIONS[c]) for c in self.conditions]
            self.occ_streams = [WindowStream(analyzer.model, settings.stride, (), settings.fusion,
                                             batch=settings.window_batch, first_row=first_row, cancel=cancel)
                                for _ in self.conditions]
        session.set_clip_windows(frames=analyzer.model.frames, stride=settings.stride, fusion=settings.fusion,
                                 rule=RULE, methods={m: SPACETIME[m] for m in self.names})

    def __call__(self, items: list) -> tuple[int, int] | None:
        for k, frame, face, pre in items:
            if k < self.feed_from:
                continue
            row = self.stream.push(pre.image, key=k) if pre is not None else -1
            if pre is not None and self.occ_streams:
                from engine.pipeline import prepare_frame

                for st, cfg in zip(self.occ_streams, self.occ_cfgs, strict=True):
                    hidden = prepare_frame(self.a, frame, face, cfg)
                    st.push((hidden or pre).image, key=k)
            if k >= self.done:
                self.pending.append((k, face, pre, row))
        for st in (self.stream, *self.occ_streams):
            st.flush_ready()
        return self._write()

    def finish(self) -> tuple[int, int] | None:
        for st in (self.stream, *self.occ_streams):
            st.finish()
        return self._write()

    def _write(self) -> tuple[int, int] | None:
        final = min(st.final_below for st in (self.stream, *self.occ_streams))
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
        if self.occ_streams:
            occ = np.full((n, len(self.conditions), C), np.nan, np.float32)
            for i in np.flatnonzero(valid):
                for ci, st in enumerate(self.occ_streams):
                    occ[i, ci] = st.pop(out[i][3]).probs
            self.s.write_occlusion(k0, occ, self.conditions)
        self.s.write_scores(k0, valid, logits, probs)
        return k0, k0 + n


def rescore_frame(analyzer: FrameAnalyzer, video: str | Path, k: int, found: np.ndarray,
                  face_of: Callable[[int], FaceResult], stride: int,
                  cfg: PreprocessConfig | None = None) -> FrameScore | None:
    """Frame ``k`` scored as the analysis scores it — the mean of the windows that contain it, over the face
    frames ``found`` (bool T) with ``stride`` — but with ``cfg`` (another input mode, parts occluded) applied
    to every frame of those windows: what the GUI's preprocessing toggles show for a clip model. The
    frames are decoded from ``video``, their faces read with ``face_of``. None: no face in frame k (or the
    mode cannot make an input for a frame of its windows)."""
    import torch

    from engine.analyzer import FrameScore
    from engine.clips import run_windows, window_starts
    from engine.models import to_input
    from engine.video import open_video

    found = np.asarray(found, bool)
    if not 0 <= k < len(found) or not found[k]:
        return None
    rows = np.flatnonzero(found)
    r = int(np.searchsorted(rows, k))
    t = analyzer.model.frames
    starts = [s for s in window_starts(len(rows), t, stride) if s <= r < s + t]
    lo, hi = min(starts), min(max(starts) + t, len(rows))
    cfg = cfg or analyzer.preprocess_config
    crops, pre_k = {}, None
    with open_video(video) as reader:
        for row in range(lo, hi):
            j = int(rows[row])
            pre = analyzer.prepare(reader.frame(j), face_of(j), cfg)
            if pre is None:
                return None
            crops[row] = pre.image
            if j == k:
                pre_k = pre
    length = min(t, len(rows))
    clip = np.stack([crops[row] for s in starts for row in range(s, s + length)])
    x = to_input(clip, analyzer.spec)
    x = x.reshape(len(starts), length, *x.shape[1:])
    with torch.inference_mode():
        logits, probs, _, _ = run_windows(analyzer.model, x.to(analyzer.device))
    return FrameScore(logits.mean(0), probs.mean(0), pre_k.image, pre_k.mapping)


__all__ = ["RULE", "SPACETIME", "ClipWriter", "clip_settings", "clip_start", "rescore_frame"]
