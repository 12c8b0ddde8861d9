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

from sessions import Annotations, Session

log = logging.getLogger(__name__)

# Per-frame arrays the window keeps in memory, besides scores and faces: small (T×K) and read whole.
SIMILARITIES = "explanations/intrinsic/similarities"  # ProtoPNet s_j, T×K
TOP_LATENTS = "explanations/intrinsic/top_latents"  # PatchSAE strongest latents, T×k indices
TOP_VALUES = "explanations/intrinsic/top_values"  # and their activations g_j
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
    stages: list[tuple[int, int, str]] = field(default_factory=list)  # the temporal prototype's stages
    class_stages: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)  # SpRAy per class
    annotations: Annotations = field(default_factory=Annotations)
    review_state: dict[str, Any] = field(default_factory=dict)
    head_weight: np.ndarray | None = None  # C×K read-out of the intrinsic terms (W of W·s)

    @property
    def explain_methods(self) -> list[str]:
        return list(self.analysis.get("explanations", [])) if self.analysis else []

    def merge(self, rows: Rows) -> None:
        """Copy streamed rows in (GUI thread; cheap array assignment)."""
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
            if s.exists(name):
                rows.extra[name] = s.read(name, sl)
        occ = s.occlusion(sl)
        if occ is not None:
            rows.occlusion = occ[1]
        if s.exists("explanations/intrinsic"):
            w = s.attrs("explanations/intrinsic").get("head_weight")
            rows.head_weight = None if w is None else np.asarray(w, dtype=np.float64)
    return rows


def read_rows(path: Path, start: int, end: int) -> Rows:
    """The rows of one streamed chunk (worker thread); the committed file is read, never the writer's."""
    with Session.open(path) as s:
        return _read_rows(s, start, end)


def stage_runs(descriptors: np.ndarray) -> list[tuple[int, int, str]]:
    """Maximal runs of equal per-frame descriptors as (start, end, descriptor): `Session.temporal_prototype`'s
    stages, found with one vectorised comparison instead of a Python loop over an hour of frames."""
    d = np.asarray(descriptors, dtype=object)
    if d.size == 0:
        return []
    starts = np.concatenate(([0], np.flatnonzero(d[1:] != d[:-1]) + 1))
    ends = np.concatenate((starts[1:], [d.size]))
    return [(int(a), int(b), str(d[a])) for a, b in zip(starts, ends, strict=True)]


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
            if s.exists("explanations/intrinsic"):
                w = s.attrs("explanations/intrinsic").get("head_weight")
                data.head_weight = None if w is None else np.asarray(w, dtype=np.float64)
            for cls, result in s.spray().items():
                data.class_stages[cls] = [(st.start, st.end, st.descriptor) for st in result.stages]
            data.stages = stage_runs(s.read("stages/descriptor")) if s.exists("stages/descriptor") else []
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
    row, p = np.asarray(sims[k], dtype=np.float64), data.probs[k]
    if not (np.isfinite(row).all() and np.isfinite(p).all()):
        return -1, []
    c = int(np.argmax(p))
    contrib = data.head_weight[c] * row
    order = np.argsort(-contrib)[:n]
    return c, [(int(j), float(row[j]), float(contrib[j])) for j in order]


@dataclass
class FrameExtras:
    """Per-frame data read on the decode thread with the frame, in full-frame coordinates."""

    heat: np.ndarray | None = None  # float32, ≥ 0, no NaN; covers only the mapped region (see heat_origin)
    heat_origin: tuple[int, int] = (0, 0)  # frame pixel (x, y) of heat[0, 0]
    heat_level: float = 1.0  # the heat value drawn at full colour (99th percentile of the positive part)
    proto_box: np.ndarray | None = None  # 95th-percentile box of the top prototype's similarity map
    proto_index: int = -1


def local_mapping(mapping: Any, frame_hw: tuple[int, int]) -> tuple[Any, tuple[int, int], tuple[int, int]]:
    """The part of the frame a model input came from: (mapping into that region's pixels, its origin
    (x, y) in the frame, its (h, w)). A map drawn with the returned mapping at the origin equals the
    frame-sized map `mapping.heatmap_to_frame(map, frame_hw)` on that region (and that map is 0 elsewhere)."""
    from engine.preprocess import InputMapping, MappingPiece

    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    rects = np.array([p.frame_rect for p in mapping.pieces], np.float64).reshape(-1, 4)
    if rects.size == 0:
        return mapping, (0, 0), (fh, fw)
    x0 = int(np.clip(np.floor(rects[:, 0].min()), 0, fw))
    y0 = int(np.clip(np.floor(rects[:, 1].min()), 0, fh))
    x1 = int(np.clip(np.ceil(rects[:, 2].max()), x0 + 1, max(fw, x0 + 1)))
    y1 = int(np.clip(np.ceil(rects[:, 3].max()), y0 + 1, max(fh, y0 + 1)))
    shifted = [MappingPiece(p.name, p.input_rect, (p.frame_rect[0] - x0, p.frame_rect[1] - y0,
                                                   p.frame_rect[2] - x0, p.frame_rect[3] - y0))
               for p in mapping.pieces]
    return InputMapping(mapping.input_size, shifted), (x0, y0), (y1 - y0, x1 - x0)


class HeatmapReader:
    """Reads frame k's relevance map (and top prototype box) and maps them onto the frame.

    Runs on the decode thread. Each thread opens its own read-only Session (committed files are
    immutable, so this is cheap) and refreshes it, since a streaming analysis commits every few seconds.
    """

    def __init__(self, path: Path, method: str, frame_hw: tuple[int, int], top_x: float | None = None) -> None:
        self.path = path
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
            with self._lock:
                self._sessions.append(s)
        else:
            s.refresh()
        return s

    def __call__(self, k: int) -> FrameExtras | None:
        from engine.preprocess import InputMapping  # the GUI may use the engine; only needed here

        try:
            s = self._session()
            mapping = s.mappings(slice(k, k + 1))
            if not mapping or mapping[0] is None:
                return None
            # Maps live only where the model input came from (the face): work on that region of the frame,
            # not on a frame-sized array (a 1080p or 4K frame is 10–100× the face).
            m, origin, region_hw = local_mapping(InputMapping.from_json(mapping[0]), self.frame_hw)
            out = FrameExtras(heat_origin=origin)
            name = f"explanations/{self.method}/maps"
            if self.method and s.exists(name):
                heat = s.read(name, slice(k, k + 1))[0].astype(np.float32)
                if np.isfinite(heat).any():
                    heat = np.clip(np.nan_to_num(heat), 0, None)
                    if self.top_x is not None:
                        from engine.explain.topx import top_x

                        heat = top_x(heat, self.top_x)
                    full = np.nan_to_num(m.heatmap_to_frame(heat, region_hw), nan=0.0)
                    positive = full[full > 0]
                    # Levels here, on the decode thread: a percentile over a frame is too slow for the GUI's.
                    out.heat_level = max(float(np.percentile(positive, 99)), 1e-12) if positive.size else 1.0
                    out.heat = full
            out.proto_index, out.proto_box = self._proto_box(s, m, k, region_hw)
            if out.proto_box is not None:
                out.proto_box = out.proto_box + np.array([*origin, *origin], np.float32)
            return out
        except Exception as exc:  # noqa: BLE001 - a missing map must never stop the video
            log.debug("no overlay data for frame %d: %s", k, exc)
            return None

    def _proto_box(self, s: Session, m: Any, k: int, region_hw: tuple[int, int]) -> tuple[int, np.ndarray | None]:
        """The top prototype and its box in the coordinates of `m` (the mapped region)."""
        if not (s.exists(SIMILARITIES) and s.exists("explanations/intrinsic/sim_maps")):
            return -1, None
        w = self._w
        if w is None:
            w = self._w = np.asarray(s.attrs("explanations/intrinsic")["head_weight"], dtype=np.float64)
        sims = s.read(SIMILARITIES, slice(k, k + 1))[0].astype(np.float64)
        probs = s.read("probs", slice(k, k + 1))[0]
        if not (np.isfinite(sims).all() and np.isfinite(probs).all()):
            return -1, None
        j = int(np.argmax(w[int(np.argmax(probs))] * sims))
        sim_map = s.read("explanations/intrinsic/sim_maps", slice(k, k + 1))[0, j].astype(np.float32)
        full = m.heatmap_to_frame(sim_map - np.nanmin(sim_map) + 1e-6, region_hw)
        inside = full > 0
        if not inside.any():
            return j, None
        # METHODS §1: the box around the 95th percentile of the upsampled similarity map.
        hot = full >= np.percentile(full[inside], 95)
        ys, xs = np.nonzero(hot)
        return j, np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
