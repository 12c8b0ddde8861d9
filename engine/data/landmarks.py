"""Landmark sequences for the landmark-sequence model (METHODS §8).

Videos: each clip is ingested once with the analysis's own ingest (``engine.pipeline.ingest``: the same
tracker, detection period and person choice), into a session file under ``<cache>/ingest/<key>.vxs``
(key: the file's path, size and mtime, the detection period); an interrupted ingest resumes. Its /faces
landmarks, normalised per frame (``engine.models.landmark.normalise_landmarks``), are cut into windows of
P consecutive frames that all have a face. Still-image corpora (FER2013): each crop's landmarks from the
face-crop cache become a one-frame sequence (P = 1).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.cache import default_cache_root
from engine.jobs import CancelToken, ProgressFn, no_progress

log = logging.getLogger(__name__)


def ingest_root(cache_root: str | Path | None = None) -> Path:
    """Where cached ingests live: ``<cache_root>/../ingest`` (beside the face crops)."""
    crops = Path(cache_root) if cache_root is not None else default_cache_root()
    return crops.parent / "ingest"


def track_landmarks(video: str | Path, cache_root: str | Path | None = None, detect_every: int = 5,
                    progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> np.ndarray:
    """T×68×2 float32 frame-pixel landmarks of the analysed person of ``video`` (NaN: no face)."""
    from engine.pipeline import ingest
    from sessions import Session

    st = os.stat(video)
    key = hashlib.sha256(f"{Path(video).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{detect_every}".encode())
    path = ingest_root(cache_root) / f"{key.hexdigest()[:24]}.vxs"
    done = False
    if path.exists():
        try:
            with Session.open(path) as s:
                done = s.faces(slice(0, 0)).frames_done >= s.frame_count
        except Exception as e:  # noqa: BLE001 - a damaged cache entry is simply made again
            log.warning("%s: cached ingest unreadable (%s); ingesting again", path, e)
            path.unlink(missing_ok=True)
    if not done:
        path.parent.mkdir(parents=True, exist_ok=True)
        ingest(video, path, progress, cancel, detect_every=detect_every)
    with Session.open(path) as s:
        f = s.faces()
    lm = np.asarray(f.landmarks, np.float32).copy()
    lm[~np.asarray(f.found, bool)] = np.nan
    return lm


@dataclass
class LandmarkSet:
    """Windows of one split: x N×P×68×2 (normalised, all 68 points), labels, and where each came from."""

    x: np.ndarray
    labels: np.ndarray  # int64 N
    clip: np.ndarray  # int64 N: row of ``items``
    end_frame: np.ndarray  # int64 N: the window's last frame (−1 for a still image)
    classes: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)
    kind: str = "video"  # "video" | "image" (one-frame sequences)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def summary(self) -> dict[str, Any]:
        per = {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}
        return {"kind": self.kind, "windows": len(self), "window": int(self.x.shape[1]) if len(self) else None,
                "clips": len(self.items), "clips_with_windows": len(np.unique(self.clip)),
                "per_class": per}


def landmark_set(prepared: Any, split: str, window: int, stride: int = 0, progress: ProgressFn = no_progress,
                 cancel: CancelToken | None = None) -> LandmarkSet | None:
    """The windows of ``split`` of a ``PreparedData`` (None when the split is empty). ``stride`` between
    training windows defaults to P/2 (at least 1). Image corpora give one-frame sequences (P must be 1)."""
    from engine.models.landmark import normalise_landmarks, windows

    items = prepared.items(split)
    if not items:
        return None
    classes = list(prepared.classes)
    index = {c: i for i, c in enumerate(classes)}
    if items[0].kind == "image":
        if window != 1:
            raise ValueError(f"{prepared.corpus.root} holds still images: a landmark model on it sees one-frame "
                             f"sequences (window 1), not {window}")
        from engine.au_guidance import cache_landmarks

        cache = prepared.cache(split, progress, cancel)
        lm = cache_landmarks(cache, prepared.preprocess, progress, cancel)
        ok = np.isfinite(lm).all(axis=(1, 2))
        x = normalise_landmarks(lm[ok])[:, None]
        return LandmarkSet(x, np.asarray(cache.labels)[ok].astype(np.int64), np.asarray(cache.item_index)[ok],
                           np.full(int(ok.sum()), -1, np.int64), classes, list(cache.items), "image")
    stride = stride or max(1, window // 2)
    xs, ys, clips, ends = [], [], [], []
    for j, it in enumerate(items):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(j, len(items), f"landmark tracks ({j}/{len(items)}) {Path(it.path).name}")
        norm = normalise_landmarks(track_landmarks(it.path, prepared.config.cache_root, cancel=cancel))
        w, e = windows(norm, window, list(range(68)), stride)
        if not len(w):
            log.warning("%s: no %d consecutive frames with a face; no window", it.path, window)
            continue
        xs.append(w)
        ys.append(np.full(len(w), index[it.label], np.int64))
        clips.append(np.full(len(w), j, np.int64))
        ends.append(e)
    progress(len(items), len(items), "landmark tracks")
    if not xs:
        raise ValueError(f"{prepared.corpus.root}: no clip of the {split} split has {window} consecutive frames "
                         "with a face; lower the window or check the videos")
    return LandmarkSet(np.concatenate(xs), np.concatenate(ys), np.concatenate(clips), np.concatenate(ends),
                       classes, [it.to_json() for it in items], "video")


__all__ = ["LandmarkSet", "ingest_root", "landmark_set", "track_landmarks"]
