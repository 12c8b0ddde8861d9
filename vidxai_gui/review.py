"""What the window shows about one video, read from its session file.

Reading happens on worker threads (a whole session at open, a slice per streamed chunk) and the GUI
thread only merges finished arrays, so a long video never freezes the window. Per-frame maps are not
held here: the decode thread reads the shown frame's map next to the frame (``HeatmapReader``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.frame_au import LANDMARK_METHOD
from engine.temporal import MapRows, stage_details
from sessions import Annotations, Session

log = logging.getLogger(__name__)

# Per-frame arrays of the intrinsic explanation the window keeps in memory (Session.intrinsic names),
# besides scores and faces: small (T×K) and read whole.
SIMILARITIES = "similarities"  # ProtoPNet s_j, T×K
TOP_LATENTS = "top_latents"  # PatchSAE strongest latents, T×k indices
TOP_VALUES = "top_values"  # and their activations g_j
_OPTIONAL_ROWS = (SIMILARITIES, TOP_LATENTS, TOP_VALUES)


@dataclass
class Rows:
    """Per-frame rows [start, end) read from a session (one streamed chunk, or everything)."""

    start: int
    end: int
    faces_done: int
    found: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    confidence: np.ndarray
    frames_done: int = 0  # analysis frames done (0 without an analysis)
    classes: list[str] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)
    valid: np.ndarray | None = None
    probs: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    occlusion: np.ndarray | None = None  # n×K×C
    head_weight: np.ndarray | None = None


@dataclass
class ReviewData:
    """Everything about a session the window keeps in memory (per-frame scalars, not maps)."""

    path: Path
    video: dict[str, Any]
    frame_count: int
    timestamps: np.ndarray
    found: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    confidence: np.ndarray
    faces_done: int = 0
    analysis: dict[str, Any] | None = None  # Session.analysis_info()
    classes: list[str] = field(default_factory=list)
    valid: np.ndarray | None = None
    probs: np.ndarray | None = None
    frames_done: int = 0
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    occlusion_conditions: list[str] = field(default_factory=list)
    occlusion: np.ndarray | None = None
    stages: list[tuple[int, int, str]] = field(default_factory=list)  # the strip: Session.display_stages()
    stage_tips: list[str] = field(default_factory=list)  # each stage's tooltip (engine.temporal.stage_details)
    class_stages: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)  # SpRAy per class
    annotations: Annotations = field(default_factory=Annotations)
    review_state: dict[str, Any] = field(default_factory=dict)
    head_weight: np.ndarray | None = None  # C×K read-out of the intrinsic terms (W of W·s)

    @property
    def explain_methods(self) -> list[str]:
        return list(self.analysis.get("explanations", [])) if self.analysis else []

    @property
    def map_methods(self) -> list[str]:
        """The explanations drawn as a heatmap: all but landmark attributions (drawn as points instead)."""
        return [m for m in self.explain_methods if m != LANDMARK_METHOD]

    def merge(self, rows: Rows) -> None:
        """Copy streamed rows in (GUI thread; cheap array assignment); the first scored rows bring the classes."""
        if rows.classes and not self.classes:
            self.classes = list(rows.classes)
            self.probs = np.full((self.frame_count, len(rows.classes)), np.nan)
            self.valid = np.zeros(self.frame_count, bool)
            self.analysis = {"classes": rows.classes, "explanations": rows.explanations}
        if self.analysis is not None:
            self.analysis["explanations"] = rows.explanations
        sl = slice(rows.start, rows.end)
        self.found[sl], self.box[sl] = rows.found, rows.box
        self.landmarks[sl], self.confidence[sl] = rows.landmarks, rows.confidence
        self.faces_done = max(self.faces_done, rows.faces_done)
        if rows.probs is not None and self.probs is not None and self.valid is not None:
            self.probs[sl] = rows.probs
            self.valid[sl] = rows.valid
            self.frames_done = max(self.frames_done, rows.frames_done)
        for name, arr in rows.extra.items():
            if name not in self.extra:
                self.extra[name] = np.full((self.frame_count,) + arr.shape[1:], np.nan
                                           if arr.dtype.kind == "f" else -1, dtype=arr.dtype)
            self.extra[name][sl] = arr
        if rows.head_weight is not None:
            self.head_weight = rows.head_weight
        if rows.occlusion is not None:
            if self.occlusion is None:
                self.occlusion = np.full((self.frame_count,) + rows.occlusion.shape[1:], np.nan, np.float32)
            self.occlusion[sl] = rows.occlusion


def _read_rows(s: Session, start: int, end: int) -> Rows:
    sl = slice(start, end)
    faces = s.faces(sl)
    rows = Rows(start, end, faces.frames_done, faces.found, faces.box, faces.landmarks, faces.confidence)
    info = s.analysis_info()
    if info is not None:
        rows.frames_done = int(info["frames_done"])
        rows.classes = list(info["classes"])
        rows.explanations = list(info.get("explanations", []))
        rows.valid = s.read("valid", sl)
        rows.probs = s.read("probs", sl).astype(np.float64)
        for name in _OPTIONAL_ROWS:
            arr = s.intrinsic(name, sl)
            if arr is not None:
                rows.extra[name] = arr
        occ = s.occlusion(sl)
        if occ is not None:
            rows.occlusion = occ[1]
        rows.head_weight = s.head_weight()
    return rows


def read_rows(path: Path, start: int, end: int) -> Rows:
    """The rows of one streamed chunk (worker thread); the committed file is read, never the writer's."""
    with Session.open(path) as s:
        return _read_rows(s, start, end)


STAGE_TIPS_MAX = 2000  # stages up to which each gets its stage_details tooltip when the session is read


def load_review(path: str | Path) -> ReviewData:
    """Read a whole session for the window (worker thread); raises SessionError for bad files."""
    path = Path(path)
    with Session.open(path) as s:
        T = s.frame_count
        rows = _read_rows(s, 0, T)
        data = ReviewData(path=path, video=dict(s.video), frame_count=T, timestamps=np.asarray(s.timestamps),
                          found=rows.found.copy(), box=rows.box.copy(), landmarks=rows.landmarks.copy(),
                          confidence=rows.confidence.copy(), faces_done=rows.faces_done)
        data.analysis = s.analysis_info()
        if data.analysis is not None:
            data.classes = list(data.analysis["classes"])
            data.valid, data.probs = rows.valid, rows.probs
            data.frames_done = rows.frames_done
            data.extra = rows.extra
            occ = s.occlusion()
            if occ is not None:
                data.occlusion_conditions, data.occlusion = occ[0], occ[1]
            data.head_weight = s.head_weight()
            for cls, result in s.spray().items():
                data.class_stages[cls] = [(st.start, st.end, st.descriptor) for st in result.stages]
            # The strip shows the stages merged to the minimum duration (issue 14), each with a tooltip.
            data.stages = [(st.start, st.end, st.descriptor) for st in s.display_stages()]
            if data.probs is not None and len(data.stages) <= STAGE_TIPS_MAX:
                data.stage_tips = [stage_details(s, a, b, lab, method="")["tooltip"] for a, b, lab in data.stages]
        data.annotations = s.annotations()
        data.review_state = s.review_state()
    log.info("loaded %s: %d frames, analysis %s", path, T, "yes" if data.analysis else "no")
    return data


def empty_review(path: Path, frame_count: int, timestamps: np.ndarray, video: dict[str, Any]) -> ReviewData:
    """Placeholder arrays for a video whose session is being written right now."""
    T = frame_count
    return ReviewData(path=path, video=video, frame_count=T, timestamps=timestamps,
                      found=np.zeros(T, bool), box=np.full((T, 4), np.nan, np.float32),
                      landmarks=np.full((T, 68, 2), np.nan, np.float32), confidence=np.zeros(T, np.float32))


def top_contributions(data: ReviewData, k: int, n: int = 5) -> tuple[int, list[tuple[int, float, float]]]:
    """ProtoPNet terms of frame k: (predicted class, [(prototype j, s_j, W_ĉj·s_j)] largest first)."""
    sims = data.extra.get(SIMILARITIES)
    if sims is None or data.head_weight is None or data.probs is None or k >= len(sims):
        return -1, []
    from engine.overlay import top_prototypes

    return top_prototypes(data.head_weight, sims[k], data.probs[k], n)


class HeatmapReader:
    """Reads frame k's relevance map and top prototype box (engine.overlay.frame_evidence).

    Runs on the decode thread. Each thread opens its own read-only Session (committed files are
    immutable, so this is cheap) and refreshes it, since a streaming analysis commits every few seconds.
    """

    def __init__(self, path: Path, method: str, frame_hw: tuple[int, int], top_x: float | None = None,
                 smooth_s: float | None = None) -> None:
        self.path = path
        self.smooth_s = smooth_s  # σ (s) of the display-only smoothing over time (None: the stored map)
        self.method = method
        self.frame_hw = frame_hw
        self.top_x = top_x  # keep only the top X of the positive relevance mass (METHODS §4), None = all
        self._local = threading.local()
        self._sessions: list[Session] = []
        self._lock = threading.Lock()
        self._w: np.ndarray | None = None  # the ProtoPNet head, read once

    def _session(self) -> Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = Session.open(self.path)
            self._local.session = s
            self._local.map_rows = MapRows()  # the smoothing's neighbouring maps, read once per frame
            with self._lock:
                self._sessions.append(s)
        elif s.refresh():  # a newer commit (a running analysis): rows read before may have changed
            self._local.map_rows.clear()
        return s

    def __call__(self, k: int) -> Any:
        from engine.overlay import frame_evidence  # the GUI may use the engine; only needed here

        try:
            s = self._session()
            if self._w is None:
                self._w = s.head_weight()
            return frame_evidence(s, k, self.method, self.frame_hw, self.top_x, self._w, self.smooth_s,
                                  self._local.map_rows)
        except Exception as exc:  # noqa: BLE001 - a missing map must never stop the video
            log.debug("no overlay data for frame %d: %s", k, exc)
            return None

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
