"""Is a feature-grid cell on the face? The landmark-hull test (docs/EXPLANATIONS.md §4).

A cell (i, j) of a model's h×w feature grid is *on the face* when its receptive-field centre, in
model-input pixels, lies inside the convex hull of the 68 landmarks of the image it came from
(mapped into the same input pixels). ProtoPNet's push only projects prototypes onto such cells, and
``bench/explain_quality.py`` reports the fraction of a model's prototypes that pass it.

Landmarks come from the source image when it is a still image on disk (``face_from_crop_image``, the
detector path the crop cache used, mapped into the crop by the preprocessing's own mapping); otherwise
(a video frame, or a source that is gone) from the model-input crop itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)


def cell_centres(rf: Any, h: int, w: int) -> np.ndarray:
    """h×w×2 (x, y) receptive-field centres in input pixel indices (pixel i's centre is i)."""
    ys = rf.start + np.arange(h) * rf.jump - 0.5
    xs = rf.start + np.arange(w) * rf.jump - 0.5
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], -1)


def inside_hull(landmarks: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bool per point (…×2): inside or on the convex hull of the landmarks."""
    lm = np.asarray(landmarks, np.float32).reshape(-1, 2)
    pts = np.asarray(points, np.float64)
    flat = pts.reshape(-1, 2)
    if len(lm) < 3 or not np.isfinite(lm).all():
        return np.zeros(pts.shape[:-1], dtype=bool)
    hull = cv2.convexHull(lm)
    res = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0 for x, y in flat], dtype=bool)
    return res.reshape(pts.shape[:-1])


def input_landmarks(source: dict[str, Any] | None, image: np.ndarray, preprocess: dict[str, Any] | None) -> np.ndarray | None:
    """The 68 landmarks of a sample in model-input pixels (None when no face is found at all).

    ``source`` is a sample's provenance (``FaceCache.source``: ``path``, ``frame``); ``image`` the model
    input (S×S×C uint8) it became; ``preprocess`` the model's preprocessing policy (model.json).
    """
    from engine.faces import face_from_crop_image

    if source and int(source.get("frame", -1)) < 0 and preprocess is not None and Path(str(source.get("path", ""))).is_file():
        try:
            from PIL import Image

            from engine.preprocess import PreprocessConfig
            from engine.preprocess import preprocess as prep

            with Image.open(source["path"]) as im:
                pic = np.asarray(im.convert("RGB"))
            face = face_from_crop_image(pic)
            pre = prep(pic, face, PreprocessConfig.from_json(preprocess))
            if pre is not None and face.landmarks is not None:
                # One affine piece (face/original mode) maps every landmark, even one past the crop.
                m = pre.mapping
                lm = m.pieces[0].from_frame(face.landmarks) if len(m.pieces) == 1 else m.from_frame(face.landmarks)
                if np.isfinite(lm).all():
                    return lm.astype(np.float32)
        except (OSError, ValueError) as e:  # unreadable or odd source: fall back to the crop
            log.debug("landmarks of %s: %s; using the crop", source.get("path"), e)
    try:
        face = face_from_crop_image(np.asarray(image))
    except ValueError:
        return None
    return None if face.landmarks is None else face.landmarks.astype(np.float32)


def face_cells(landmarks: np.ndarray | None, rf: Any, h: int, w: int) -> np.ndarray:
    """h×w bool: cells whose receptive-field centre is inside the landmark hull (all False without one)."""
    if landmarks is None:
        return np.zeros((h, w), dtype=bool)
    return inside_hull(landmarks, cell_centres(rf, h, w))
