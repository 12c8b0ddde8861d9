"""Face and 68-landmark finding for video frames and face-crop images (dlib).

A video is processed with :class:`FaceTracker`: the HOG frontal detector runs every
``detect_every`` frames on a downscaled grey copy (detection is the expensive part), and in
between the shape predictor is run on the previous box and the box is re-derived from the new
landmarks. A tracked frame is checked cheaply (normalised correlation of the face patch with the
patch of the last detection, fraction of landmarks inside the frame, size and motion); when the
check fails the detector runs on that very frame, so a face that leaves or a hard cut becomes
``found=False`` at once instead of sticking to the border.

Coordinates follow ``docs/INTERFACES.md``: boxes ``float32 (x0, y0, x1, y1)`` in full-frame
pixels with x1, y1 exclusive; landmarks ``float32 (68, 2)`` (x, y), pixel centres at integers,
dlib's 0-based order. Internally the tracker keeps a detector-style box (what the shape predictor
expects), re-derived on tracked frames from the landmarks with the box-to-landmark relation of the
last detection; the reported ``FaceResult.box`` is that box grown to contain all 68 landmarks.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

log = logging.getLogger(__name__)

N_LANDMARKS = 68
LANDMARK_FILE = "shape_predictor_68_face_landmarks.dat"

# Points that barely move with expression (jaw corners, nose, eyes): the tracker derives the
# next frame's detector-style box from them, so an opening mouth does not stretch the box.
_RIGID = np.r_[0, 16, 27:36, 36:48]
# Confidence given to a face-crop image where the detector found nothing and the whole image was
# assumed to be the face: the box is an assumption, not a measurement.
CROP_FALLBACK_CONFIDENCE = 0.5
# Where dlib's detector puts its box on a face crop, as fractions of the image (x0, y0, x1, y1):
# the median over the 304 of 420 FER2013 train images (60 per class) where it found a face. The
# predictor was trained on detector boxes, so the whole-image fallback uses this box, not the full
# image, which would spread the landmarks over forehead and background.
CROP_FALLBACK_BOX = (0.06, 0.15, 0.93, 0.93)
_PATCH = 32


class FaceModelError(RuntimeError):
    """The dlib landmark model file is missing or unreadable."""


def landmark_model_path() -> Path:
    """Path of the 68-point shape predictor shipped by ``face-recognition-models``.

    The package is located with ``find_spec`` and never imported: its ``__init__`` needs
    ``pkg_resources``, which recent setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError(
            f"the face landmark model ({LANDMARK_FILE}) comes from the 'face-recognition-models' "
            "package, which is not installed: run `pip install face-recognition-models`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / LANDMARK_FILE
    if not path.is_file():
        raise FaceModelError(
            f"face landmark model not found at {path}: reinstall it with "
            "`pip install --force-reinstall face-recognition-models`"
        )
    return path


_predictor: dlib.shape_predictor | None = None
_predictor_lock = threading.Lock()


def _shape_predictor() -> dlib.shape_predictor:
    # Loading the 95 MB model takes about a second; every tracker shares one read-only instance.
    global _predictor
    with _predictor_lock:
        if _predictor is None:
            path = landmark_model_path()
            try:
                _predictor = dlib.shape_predictor(str(path))
            except RuntimeError as exc:
                raise FaceModelError(
                    f"cannot read the face landmark model {path} ({exc}): reinstall it with "
                    "`pip install --force-reinstall face-recognition-models`"
                ) from exc
            log.debug("loaded shape predictor %s", path)
        return _predictor


_detectors = threading.local()


def _frontal_detector() -> dlib.fhog_object_detector:
    # Building dlib's HOG detector takes most of a second; keep one per thread (the GUI re-scores on its
    # own worker while an analysis runs), since dlib does not promise that sharing one is safe.
    det = getattr(_detectors, "detector", None)
    if det is None:
        det = _detectors.detector = dlib.get_frontal_face_detector()
    return det


@dataclass
class FaceResult:
    """The face of one frame. A frame without a face is a normal result (``found=False``)."""

    found: bool
    box: np.ndarray | None = None  # float32 (4,) x0, y0, x1, y1 (exclusive), full-frame pixels
    landmarks: np.ndarray | None = None  # float32 (68, 2) x, y
    confidence: float = 0.0  # 0..1
    n_faces: int = 0  # faces seen by the last detection (the largest is followed)
    detected: bool = False  # True: fresh detection on this frame; False: tracked or nothing

    @classmethod
    def none(cls, n_faces: int = 0, detected: bool = False) -> FaceResult:
        return cls(found=False, n_faces=n_faces, detected=detected)


@dataclass(frozen=True)
class FaceTrackerSettings:
    """How a :class:`FaceTracker` trades speed for robustness (recorded with an analysis)."""

    detect_every: int = 5  # run the detector at least every N frames while tracking
    upsample: int = 0  # dlib detector upsampling of the downscaled image (1 finds smaller faces, ~4x slower)
    min_confidence: float = 0.5  # a tracked frame below this triggers a detection on that frame
    max_side: int = 320  # detection image's longest side; dlib finds faces from ~80 px at this scale
    detect_threshold: float = 0.0  # dlib's adjust_threshold; lower finds more faces and more false ones
    search_every: int = 1  # while no face is tracked, run the detector every N frames
    max_motion: float = 0.35  # box centre shift per frame, fraction of the box size, before re-detecting
    max_scale_change: float = 0.25  # relative box size change per frame before re-detecting

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.search_every < 1:
            raise ValueError("detect_every and search_every must be at least 1")
        if self.upsample not in (0, 1, 2):
            raise ValueError(f"upsample must be 0, 1 or 2, not {self.upsample}")
        if self.max_side < 64:
            raise ValueError(f"max_side {self.max_side} is too small to find faces (use >= 64)")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> FaceTrackerSettings:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _to_grey(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        grey = img
    elif img.ndim == 3 and img.shape[2] == 1:
        grey = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 3:
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(f"expected an H×W×3 RGB or H×W grey image, got shape {img.shape}")
    if grey.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {grey.dtype}")
    return np.ascontiguousarray(grey)


def _score_to_confidence(score: float) -> float:
    # dlib's HOG scores are ~0 at its threshold and 1.5-3 for clear frontal faces; a logistic maps
    # the threshold to 0.5 and a clear face to > 0.95.
    return float(1.0 / (1.0 + math.exp(-2.0 * score)))


def _rect(box: np.ndarray) -> dlib.rectangle:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    return dlib.rectangle(x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))


def _landmarks(predictor: dlib.shape_predictor, grey: np.ndarray, box: np.ndarray) -> np.ndarray:
    shape = predictor(grey, _rect(box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


def _face_box(det_box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The reported box: the detector-style box grown to hold every landmark.

    dlib's box is tight (brows to lower lip); the chin and jaw often fall 10-20 % outside it, and
    a face box that cuts the chin off misleads whoever looks at it.
    """
    lo = np.minimum(det_box[:2], landmarks.min(axis=0))
    hi = np.maximum(det_box[2:], landmarks.max(axis=0) + 1.0)
    return np.concatenate([lo, hi]).astype(np.float32)


def _rigid_frame(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    pts = landmarks[_RIGID].astype(np.float64)
    centre = pts.mean(axis=0)
    scale = float(np.sqrt(((pts - centre) ** 2).sum(axis=1).mean()))
    return centre, max(scale, 1e-3)


def _patch(grey: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """Zero-mean unit-norm grey patch of the box (outside the frame counts as black)."""
    h, w = grey.shape
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    crop[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = grey[cy0:cy1, cx0:cx1]
    p = cv2.resize(crop, (_PATCH, _PATCH), interpolation=cv2.INTER_AREA).astype(np.float32)
    p -= p.mean()
    norm = float(np.linalg.norm(p))
    # A flat patch (sky, wall) has no structure to correlate with a face.
    if norm < 2.0 * _PATCH:
        return np.zeros_like(p)
    return p / norm


class _Detector:
    """dlib's HOG detector on a downscaled copy, plus the shape predictor on full resolution."""

    def __init__(self, upsample: int, max_side: int, threshold: float) -> None:
        self.detector = _frontal_detector()
        self.predictor = _shape_predictor()
        self.upsample = upsample
        self.max_side = max_side
        self.threshold = threshold

    def detect(self, grey: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        h, w = grey.shape
        scale = min(1.0, self.max_side / max(h, w))
        small = grey if scale >= 1.0 else cv2.resize(
            grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        sx, sy = w / small.shape[1], h / small.shape[0]
        rects, scores, _ = self.detector.run(small, self.upsample, self.threshold)
        boxes = [np.array([r.left() * sx, r.top() * sy, (r.right() + 1) * sx, (r.bottom() + 1) * sy],
                          dtype=np.float32) for r in rects]
        return boxes, [float(s) for s in scores]

    def best(self, grey: np.ndarray) -> tuple[np.ndarray | None, float, int]:
        boxes, scores = self.detect(grey)
        if not boxes:
            return None, 0.0, 0
        areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        i = int(np.argmax(areas))
        return boxes[i], scores[i], len(boxes)


class FaceTracker:
    """Face + landmarks for sequential frames of one video: detect every N frames, track between.

    Call :meth:`process` with frames in order; call :meth:`reset` after a seek. Not thread-safe:
    use one tracker per thread (they share the read-only landmark model).
    """

    def __init__(self, detect_every: int = 5, upsample: int = 0, min_confidence: float = 0.5, *,
                 max_side: int = 320, detect_threshold: float = 0.0, search_every: int = 1,
                 max_motion: float = 0.35, max_scale_change: float = 0.25) -> None:
        self.settings = FaceTrackerSettings(
            detect_every=detect_every, upsample=upsample, min_confidence=min_confidence,
            max_side=max_side, detect_threshold=detect_threshold, search_every=search_every,
            max_motion=max_motion, max_scale_change=max_scale_change)
        self._det = _Detector(upsample, max_side, detect_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget the tracked face (after a seek or a new video)."""
        self._box: np.ndarray | None = None
        self._rel: np.ndarray | None = None  # detector box relative to the rigid landmark frame
        self._ref_patch: np.ndarray | None = None
        self._scale = 0.0
        self._n_faces = 0
        self._since_detect = 0
        self._since_search = 0
        self.n_detections = 0  # detector runs since reset, to measure what tracking saves

    def process(self, frame: np.ndarray) -> FaceResult:
        grey = _to_grey(frame)
        s = self.settings
        if self._box is not None:
            self._since_detect += 1
            if self._since_detect < s.detect_every:
                tracked = self._track(grey)
                if tracked is not None:
                    return tracked
                log.debug("tracking check failed; detecting on this frame")
        else:
            self._since_search += 1
            if self._since_search < s.search_every:
                return FaceResult.none(n_faces=0)
        return self._detect(grey)

    def _detect(self, grey: np.ndarray) -> FaceResult:
        self.n_detections += 1
        self._since_detect = 0
        self._since_search = 0
        box, score, n = self._det.best(grey)
        if box is None:
            self._box = None
            self._n_faces = 0
            return FaceResult.none(n_faces=0, detected=True)
        lm = _landmarks(self._det.predictor, grey, box)
        centre, scale = _rigid_frame(lm)
        self._rel = np.array([(box[0] - centre[0]) / scale, (box[1] - centre[1]) / scale,
                              (box[2] - centre[0]) / scale, (box[3] - centre[1]) / scale])
        self._box, self._scale, self._n_faces = box, scale, n
        self._ref_patch = _patch(grey, box)
        return FaceResult(True, _face_box(box, lm), lm, _score_to_confidence(score), n, True)

    def _track(self, grey: np.ndarray) -> FaceResult | None:
        """Landmarks in the previous box; None when the result fails the quality checks."""
        assert self._box is not None and self._rel is not None
        s = self.settings
        h, w = grey.shape
        lm = _landmarks(self._det.predictor, grey, self._box)
        centre, scale = _rigid_frame(lm)
        box = np.array([centre[0] + self._rel[0] * scale, centre[1] + self._rel[1] * scale,
                        centre[0] + self._rel[2] * scale, centre[1] + self._rel[3] * scale],
                       dtype=np.float32)
        size = float(self._box[2] - self._box[0])
        old_centre = np.array([(self._box[0] + self._box[2]) / 2, (self._box[1] + self._box[3]) / 2])
        new_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        if float(np.linalg.norm(new_centre - old_centre)) > s.max_motion * size:
            return None
        if abs(scale / self._scale - 1.0) > s.max_scale_change:
            return None
        inside = float(np.mean((lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)))
        patch = _patch(grey, box)
        ncc = 0.0 if patch is None or self._ref_patch is None else float((patch * self._ref_patch).sum())
        confidence = max(0.0, min(1.0, ncc)) * inside
        if confidence < s.min_confidence:
            return None
        self._box, self._scale = box, scale
        return FaceResult(True, _face_box(box, lm), lm, confidence, self._n_faces, False)


_single: _Detector | None = None
_single_lock = threading.Lock()


def _single_detector(upsample: int = 0, max_side: int = 320) -> _Detector:
    # Callers hold _single_lock: the module-level detector serves the GUI and dataset loaders.
    global _single
    if _single is None or (_single.upsample, _single.max_side) != (upsample, max_side):
        _single = _Detector(upsample, max_side, 0.0)
    return _single


def detect_single(frame: np.ndarray, upsample: int = 0, max_side: int = 320) -> FaceResult:
    """Stateless detection + landmarks of one frame (random access, GUI re-scoring).

    Follows the same rule as the tracker: the largest face, ``n_faces`` counts all of them.
    """
    grey = _to_grey(frame)
    with _single_lock:
        det = _single_detector(upsample, max_side)
        box, score, n = det.best(grey)
        if box is None:
            return FaceResult.none(n_faces=0, detected=True)
        lm = _landmarks(det.predictor, grey, box)
    return FaceResult(True, _face_box(box, lm), lm, _score_to_confidence(score), n, True)


def face_from_crop_image(img: np.ndarray, min_side: int = 144) -> FaceResult:
    """Face and landmarks of an image that is already a face crop (FER2013 48×48, CK+48).

    The image is upsampled so its shorter side is at least ``min_side`` (dlib's detector needs
    faces of ~80 px). If the detector finds a face, its box is used; otherwise the whole image is
    taken as the face (``detected=False``, confidence ``CROP_FALLBACK_CONFIDENCE``) and the shape
    predictor runs on the box the detector typically gives on such crops (``CROP_FALLBACK_BOX``).
    Box and landmarks are in the original image's pixels; landmarks are clamped to the image.
    """
    grey = _to_grey(img)
    h, w = grey.shape
    if min(h, w) < 8:
        raise ValueError(f"image of {w}×{h} px is too small to hold a face")
    up = max(1, math.ceil(min_side / min(h, w)))
    big = cv2.resize(grey, (w * up, h * up), interpolation=cv2.INTER_CUBIC) if up > 1 else grey
    with _single_lock:
        rects, scores, _ = _single_detector().detector.run(big, 0, 0.0)
    predictor = _shape_predictor()
    if rects:
        i = int(np.argmax([r.area() for r in rects]))
        r = rects[i]
        big_box = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float32)
        confidence, detected, n = _score_to_confidence(scores[i]), True, len(rects)
    else:
        big_box = (np.array(CROP_FALLBACK_BOX) * [w, h, w, h] * up).round().astype(np.float32)
        confidence, detected, n = CROP_FALLBACK_CONFIDENCE, False, 1
    lm_big = _landmarks(predictor, big, big_box)
    # cv2.resize puts source pixel centre x at (x + 0.5) * up - 0.5 in the upsampled image.
    lm = (lm_big + 0.5) / up - 0.5
    # A crop's face is the image: jaw points the predictor extrapolates past a cut-off chin are
    # clamped to the border, so a face crop of it never adds padding the video path would not have.
    lm = np.clip(lm, 0, [w - 1, h - 1]).astype(np.float32)
    return FaceResult(True, _face_box(big_box / up, lm), lm, confidence, n, detected)
