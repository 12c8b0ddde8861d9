"""A clip model's time axis on the timeline (issue 15): the temporal-relevance track of the heatmap method
shown (View menu), and on the scores the span of the windows whose mean is the current frame's score.

Wiring only: the arrays come from the session's typed readers (Session.temporal_relevance, window_spans)
on a job lane, the drawing is the Timeline's (vidxai_gui.timeline_tracks). Frame models' sessions have no
windows: the track stays hidden.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject


@dataclass
class ClipTrack:
    temporal: np.ndarray | None     # T, the method's temporal relevance (None: that method has none)
    spans: np.ndarray               # T×2 first/last frame of the windows behind each frame's score (-1: none)
    geometry: dict


def load_clip_track(path: Path, method: str) -> ClipTrack | None:
    """The clip arrays of a session (None for a frame model's analysis)."""
    from sessions import Session

    with Session.open(path) as s:
        spans = s.window_spans()
        if spans is None:
            return None
        return ClipTrack(s.temporal_relevance(method) if method else None, spans, s.clip_windows())


class ClipView(QObject):
    """Feeds the Timeline's temporal track and window span from the review model's session, method, frame."""

    LANE = "clip-temporal"

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.w, self.model = window, window.review
        self.track: ClipTrack | None = None
        self._key: tuple | None = None
        self.model.sessionChanged.connect(self.reload)
        self.model.heatChanged.connect(self.reload)
        self.model.frameChanged.connect(self.show_frame)

    def reload(self) -> None:
        d, path = self.model.data, self.model.session_path
        if d is None or d.analysis is None or path is None or not Path(path).exists():
            self._set(None, None)
            return
        method = self.model.heat_method
        key = (str(path), os.stat(path).st_mtime_ns, method)
        if key == self._key:
            self._set(key, self.track)   # drawn again (a reopened video cleared the timeline)
            return
        self._key = key
        worker = self.w.jobs.latest(self.LANE, lambda _p, _c: load_clip_track(Path(path), method),
                                    "temporal relevance")
        worker.finished.connect(lambda track, key=key: self._set(key, track) if key == self._key else None)

    def _set(self, key: tuple | None, track: ClipTrack | None) -> None:
        self._key, self.track = key, track
        method = key[2] if key is not None else ""
        self.w.timeline.set_temporal_relevance(None if track is None else track.temporal, method)
        self.show_frame(self.w.player.current)

    def show_frame(self, k: int) -> None:
        spans = None if self.track is None else self.track.spans
        if spans is None or not 0 <= k < len(spans):
            self.w.timeline.set_window_span(None, None)
            return
        self.w.timeline.set_window_span(int(spans[k, 0]), int(spans[k, 1]))


def plug_in(window: Any) -> ClipView:
    return ClipView(window)


__all__ = ["ClipTrack", "ClipView", "load_clip_track", "plug_in"]
