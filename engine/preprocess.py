"""Frame + landmarks → model input, with the exact way back to the frame (thesis §4.3, METHODS §6).

Modes:

- ``original``: the whole frame resized to size×size (aspect not kept; the scale is recorded per axis).
- ``face``: a square crop around the landmark box (the detector box when there are no landmarks),
  enlarged by ``margin`` on every side, zero-padded where it leaves the frame, resized.
- ``reassembled``: four square part crops tiled 2×2 — top row the two eye regions (image-left eye
  first), bottom row nose then mouth (the mouth is bottom right). See :func:`part_boxes`.

Occlusion (METHODS §6) is applied to the full frame before any cropping, from landmark masks
(:func:`part_mask`), so an occluded part looks the same in every mode.

Coordinates: a point's x, y are in pixels with pixel centres at integers (as dlib landmarks and
OpenCV points); a rectangle ``(x0, y0, x1, y1)`` covers pixels x0..x1-1 (edges at x0 and x1).
A piece of :class:`InputMapping` maps an input rectangle onto a frame rectangle edge to edge,
which is exactly what ``cv2.resize`` does, so ``to_frame`` is exact, not approximate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.faces import FaceResult

log = logging.getLogger(__name__)

PARTS = ("eyes", "nose", "mouth")
MODES = ("original", "face", "reassembled")
OCCLUSION_CONDITIONS: dict[str, frozenset[str]] = {
    "eyes": frozenset({"eyes"}),
    "nose": frozenset({"nose"}),
    "mouth": frozenset({"mouth"}),
    "eyes+mouth": frozenset({"eyes", "mouth"}),
    "eyes+nose": frozenset({"eyes", "nose"}),
    "nose+mouth": frozenset({"nose", "mouth"}),
    "eyes+nose+mouth": frozenset({"eyes", "nose", "mouth"}),
}

# dlib 68-point index ranges (0-based, half-open), METHODS §6. dlib's "right" is the subject's.
JAW = slice(0, 17)
BROW_R, BROW_L = slice(17, 22), slice(22, 27)
NOSE = slice(27, 36)
EYE_R, EYE_L = slice(36, 42), slice(42, 48)
MOUTH = slice(48, 68)

# Padding of the occlusion masks, as a fraction of the landmark box's larger side: enough to cover
# the eyelids and lips around the outline points without eating the neighbouring part.
_MASK_PAD = 0.04
# Reassembled tiles: quadrant (row, col) of each part in the 2×2 grid.
REASSEMBLED_LAYOUT = (("eye_left", 0, 0), ("eye_right", 0, 1), ("nose", 1, 0), ("mouth", 1, 1))


@dataclass(frozen=True)
class PreprocessConfig:
    """How a frame becomes a model input; ``model.json`` records it and analysis applies it exactly."""

    mode: str = "face"
    size: int = 48
    grayscale: bool = True
    margin: float = 0.1  # face crop (and part crop) margin per side, fraction of the landmark box
    occlude: frozenset[str] = field(default_factory=frozenset)
    fill: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"preprocessing mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.size < 8:
            raise ValueError(f"input size {self.size} is too small (use at least 8)")
        if self.mode == "reassembled" and self.size % 2:
            raise ValueError(f"reassembled mode tiles 2×2, so size must be even (got {self.size})")
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"margin {self.margin} must be between 0 and 2")
        object.__setattr__(self, "occlude", frozenset(self.occlude))
        unknown = self.occlude - set(PARTS)
        if unknown:
            raise ValueError(f"cannot occlude {sorted(unknown)}: parts are {', '.join(PARTS)}")
        if not 0 <= self.fill <= 255:
            raise ValueError(f"fill {self.fill} must be between 0 and 255")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def to_json(self) -> dict:
        return {"mode": self.mode, "size": self.size, "grayscale": self.grayscale, "margin": self.margin,
                "occlude": sorted(self.occlude), "fill": self.fill}

    @classmethod
    def from_json(cls, d: dict) -> PreprocessConfig:
        return cls(mode=str(d.get("mode", "face")), size=int(d.get("size", 48)),
                   grayscale=bool(d.get("grayscale", True)), margin=float(d.get("margin", 0.1)),
                   occlude=frozenset(d.get("occlude", ())), fill=int(d.get("fill", 0)))


@dataclass(frozen=True)
class MappingPiece:
    """One input rectangle mapped edge to edge onto one frame rectangle (both x0, y0, x1, y1)."""

    name: str
    input_rect: tuple[float, float, float, float]
    frame_rect: tuple[float, float, float, float]

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) per axis with frame = scale * input + offset in pixel-centre coords."""
        u0, v0, u1, v1 = self.input_rect
        x0, y0, x1, y1 = self.frame_rect
        scale = np.array([(x1 - x0) / (u1 - u0), (y1 - y0) / (v1 - v0)])
        # Edge e maps to edge; pixel-centre coordinates sit half a pixel inside the edges.
        offset = np.array([x0 - u0 * scale[0], y0 - v0 * scale[1]]) + 0.5 * scale - 0.5
        return scale, offset

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        scale, offset = self._affine()
        return np.asarray(xy, np.float64) * scale + offset

    def from_frame(self, xy: np.ndarray) -> np.ndarray:
        scale, offset = self._affine()
        return (np.asarray(xy, np.float64) - offset) / scale

    def contains_input(self, uv: np.ndarray) -> np.ndarray:
        u0, v0, u1, v1 = self.input_rect
        uv = np.asarray(uv, np.float64)
        return (uv[:, 0] >= u0 - 0.5) & (uv[:, 0] < u1 - 0.5) & (uv[:, 1] >= v0 - 0.5) & (uv[:, 1] < v1 - 0.5)


class InputMapping:
    """How model-input pixels map back to the frame: one affine piece per crop (four when reassembled)."""

    def __init__(self, input_size: int, pieces: list[MappingPiece]) -> None:
        self.input_size = int(input_size)
        self.pieces = list(pieces)

    def __repr__(self) -> str:
        return f"InputMapping(input_size={self.input_size}, pieces={self.pieces!r})"

    def piece(self, name: str) -> MappingPiece:
        for p in self.pieces:
            if p.name == name:
                return p
        raise KeyError(f"no mapping piece {name!r}; pieces are {[p.name for p in self.pieces]}")

    def to_frame(self, xy: np.ndarray) -> np.ndarray:
        """Input-pixel coordinates (N, 2) → frame coordinates (N, 2); NaN for points outside the input."""
        uv = np.atleast_2d(np.asarray(xy, np.float64))
        out = np.full(uv.shape, np.nan)
        for p in self.pieces:
            inside = p.contains_input(uv) & np.isnan(out[:, 0])
            out[inside] = p.to_frame(uv[inside])
        return out

    def from_frame(self, xy: np.ndarray, piece: str | None = None) -> np.ndarray:
        """Frame coordinates (N, 2) → input-pixel coordinates (N, 2).

        With ``piece`` the point is mapped through that piece (reassembled parts overlap in the
        frame, so a point may belong to several); without, through the first piece whose frame
        rectangle contains it, NaN where none does.
        """
        xy = np.atleast_2d(np.asarray(xy, np.float64))
        if piece is not None:
            return self.piece(piece).from_frame(xy)
        out = np.full(xy.shape, np.nan)
        for p in self.pieces:
            x0, y0, x1, y1 = p.frame_rect
            inside = ((xy[:, 0] >= x0 - 0.5) & (xy[:, 0] < x1 - 0.5) & (xy[:, 1] >= y0 - 0.5)
                      & (xy[:, 1] < y1 - 0.5) & np.isnan(out[:, 0]))
            out[inside] = p.from_frame(xy[inside])
        return out

    def heatmap_to_frame(self, heat: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
        """A map of any resolution over the model input (6×6 prototype map, 48×48 LRP) → frame map.

        Bilinear, float32, frame-sized, 0 outside the mapped regions. Each piece takes only its own
        part of the map (a reassembled quadrant goes back to its part's rectangle, never bleeding
        into the neighbouring tile); where pieces overlap in the frame the maximum wins.
        """
        heat = np.asarray(heat, np.float32)
        if heat.ndim == 3 and heat.shape[0] == 1:
            heat = heat[0]
        if heat.ndim != 2:
            raise ValueError(f"heatmap must be 2-D (h×w), got shape {heat.shape}")
        fh, fw = int(frame_hw[0]), int(frame_hw[1])
        out = np.zeros((fh, fw), np.float32)
        written = np.zeros((fh, fw), bool)
        hh, hw = heat.shape
        cell_u, cell_v = hw / self.input_size, hh / self.input_size  # heat cells per input pixel
        for p in self.pieces:
            u0, v0, u1, v1 = p.input_rect
            x0, y0, x1, y1 = p.frame_rect
            fx0, fy0 = max(0, int(np.ceil(x0 - 1e-6))), max(0, int(np.ceil(y0 - 1e-6)))
            fx1, fy1 = min(fw, int(np.ceil(x1 - 1e-6))), min(fh, int(np.ceil(y1 - 1e-6)))
            if fx1 <= fx0 or fy1 <= fy0:
                continue
            # The heat cells that cover this piece's input rectangle.
            hx0, hx1 = int(np.floor(u0 * cell_u + 1e-6)), int(np.ceil(u1 * cell_u - 1e-6))
            hy0, hy1 = int(np.floor(v0 * cell_v + 1e-6)), int(np.ceil(v1 * cell_v - 1e-6))
            sub = np.ascontiguousarray(heat[hy0:hy1, hx0:hx1])
            xs = np.arange(fx0, fx1, dtype=np.float64)
            ys = np.arange(fy0, fy1, dtype=np.float64)
            uv_x = p.from_frame(np.stack([xs, np.full_like(xs, ys[0])], 1))[:, 0]
            uv_y = p.from_frame(np.stack([np.full_like(ys, xs[0]), ys], 1))[:, 1]
            # Input pixel-centre coords → heat pixel-centre coords, relative to the sub-map.
            map_x = ((uv_x + 0.5) * cell_u - 0.5 - hx0).astype(np.float32)
            map_y = ((uv_y + 0.5) * cell_v - 0.5 - hy0).astype(np.float32)
            mx, my = np.meshgrid(map_x, map_y)
            vals = cv2.remap(sub, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            region = out[fy0:fy1, fx0:fx1]
            seen = written[fy0:fy1, fx0:fx1]
            region[:] = np.where(seen, np.maximum(region, vals), vals)
            seen[:] = True
        return out

    def to_json(self) -> dict:
        return {"input_size": self.input_size,
                "pieces": [{"name": p.name, "input_rect": list(p.input_rect), "frame_rect": list(p.frame_rect)}
                           for p in self.pieces]}

    @classmethod
    def from_json(cls, d: dict) -> InputMapping:
        pieces = [MappingPiece(str(p["name"]), tuple(float(v) for v in p["input_rect"]),  # type: ignore[arg-type]
                               tuple(float(v) for v in p["frame_rect"]))  # type: ignore[arg-type]
                  for p in d["pieces"]]
        return cls(int(d["input_size"]), pieces)


@dataclass
class Preprocessed:
    image: np.ndarray  # size×size×C uint8, C = 1 or 3
    mapping: InputMapping


def _face_size(landmarks: np.ndarray) -> float:
    span = landmarks.max(axis=0) - landmarks.min(axis=0)
    return float(max(span[0], span[1], 1.0))


def part_mask(frame_shape: tuple[int, ...], landmarks: np.ndarray, parts: frozenset[str] | set[str]
              | tuple[str, ...]) -> np.ndarray:
    """Boolean H×W mask of the union of facial parts, from 68 landmarks in frame coordinates.

    - eyes: a band across the face width (jaw/landmark x extent) from the top of the brows
      (17-26) to just below the lower eyelids (36-47).
    - nose: the box of the nose points 27-35 (bridge to nostrils).
    - mouth: a band across the face width around the lips (48-67).
    Bands and boxes are padded by 4 % of the face size; a pixel is masked when its centre is inside.
    """
    parts = frozenset(parts)
    unknown = parts - set(PARTS)
    if unknown:
        raise ValueError(f"unknown facial parts {sorted(unknown)}: parts are {', '.join(PARTS)}")
    h, w = int(frame_shape[0]), int(frame_shape[1])
    mask = np.zeros((h, w), bool)
    if not parts:
        return mask
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must be (68, 2), got {lm.shape}")
    pad = _MASK_PAD * _face_size(lm)
    face_x0, face_x1 = lm[:, 0].min() - pad, lm[:, 0].max() + pad
    boxes = []
    if "eyes" in parts:
        top = min(lm[BROW_R, 1].min(), lm[BROW_L, 1].min())
        bottom = max(lm[EYE_R, 1].max(), lm[EYE_L, 1].max())
        boxes.append((face_x0, top - pad, face_x1, bottom + pad))
    if "nose" in parts:
        n = lm[NOSE]
        boxes.append((n[:, 0].min() - pad, n[:, 1].min() - pad, n[:, 0].max() + pad, n[:, 1].max() + pad))
    if "mouth" in parts:
        m = lm[MOUTH]
        boxes.append((face_x0, m[:, 1].min() - pad, face_x1, m[:, 1].max() + pad))
    for x0, y0, x1, y1 in boxes:
        c0, c1 = max(0, int(np.ceil(x0))), min(w, int(np.floor(x1)) + 1)
        r0, r1 = max(0, int(np.ceil(y0))), min(h, int(np.floor(y1)) + 1)
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = True
    return mask


def occlude_frame(frame: np.ndarray, landmarks: np.ndarray, parts: frozenset[str] | set[str] | tuple[str, ...],
                  fill: int = 0) -> np.ndarray:
    """A copy of the full frame with the facial parts filled with ``fill`` (what every mode crops from)."""
    out = frame.copy()
    out[part_mask(frame.shape, landmarks, parts)] = fill
    return out


def _square(box: tuple[float, float, float, float], margin: float) -> tuple[int, int, int, int]:
    """Integer square around a box (x0, y0, x1, y1), each side enlarged by margin × box size."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    side_i = max(2, round(side))
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    left, top = round(cx - side_i / 2.0), round(cy - side_i / 2.0)
    return left, top, left + side_i, top + side_i


def _points_box(pts: np.ndarray) -> tuple[float, float, float, float]:
    # Landmarks are pixel centres; the box of pixels they occupy ends one pixel further.
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()) + 1.0, float(pts[:, 1].max()) + 1.0


def part_boxes(landmarks: np.ndarray, margin: float = 0.1) -> dict[str, tuple[int, int, int, int]]:
    """Square frame rectangles of the four reassembled parts, keyed as in ``REASSEMBLED_LAYOUT``.

    dlib indices: ``eye_left`` (image-left, the subject's right) is brow 17-21 + eye 36-41;
    ``eye_right`` is brow 22-26 + eye 42-47 — brows are included because furrowed and raised
    brows carry much of the expression (thesis Fig. 5.1). ``nose`` is 27-35 and ``mouth`` 48-67.
    Image-left/right follows from dlib's order for an unmirrored frontal face; if a frame is
    mirrored, the two boxes are swapped by comparing their x so the image-left eye is always first.
    """
    lm = np.asarray(landmarks, np.float64)
    eye_a = np.concatenate([lm[BROW_R], lm[EYE_R]])
    eye_b = np.concatenate([lm[BROW_L], lm[EYE_L]])
    if eye_a[:, 0].mean() > eye_b[:, 0].mean():
        eye_a, eye_b = eye_b, eye_a
    return {"eye_left": _square(_points_box(eye_a), margin), "eye_right": _square(_points_box(eye_b), margin),
            "nose": _square(_points_box(lm[NOSE]), margin), "mouth": _square(_points_box(lm[MOUTH]), margin)}


def _crop_resize(frame: np.ndarray, rect: tuple[int, int, int, int], out: int) -> np.ndarray:
    """Integer crop (zero outside the frame, so the mapping stays exact) resized to out×out."""
    x0, y0, x1, y1 = rect
    h, w = frame.shape[:2]
    crop = np.zeros((y1 - y0, x1 - x0) + frame.shape[2:], frame.dtype)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 > cx0 and cy1 > cy0:
        crop[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] = frame[cy0:cy1, cx0:cx1]
    return _resize(crop, out, out)


def _resize(img: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if (out_w < w and out_h < h) else cv2.INTER_LINEAR
    res = cv2.resize(img, (out_w, out_h), interpolation=interp)
    return res.reshape(out_h, out_w, *img.shape[2:])


def _as_rgb_or_grey(frame: np.ndarray) -> np.ndarray:
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got {frame.dtype}")
    if frame.ndim == 2:
        return frame[:, :, None]
    if frame.ndim == 3 and frame.shape[2] in (1, 3):
        return frame
    raise ValueError(f"expected an H×W×3 RGB or H×W grey frame, got shape {frame.shape}")


def _channels(img: np.ndarray, grayscale: bool) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    if grayscale and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    if not grayscale and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    return img


def preprocess(frame: np.ndarray, face: FaceResult | None, cfg: PreprocessConfig) -> Preprocessed | None:
    """The model input for one frame, or None when the mode or the occlusion needs a face and there is none.

    ``frame`` is H×W×3 RGB uint8 (H×W or H×W×1 grey is accepted too, e.g. FER2013 images).
    ``reassembled`` and occlusion need landmarks; ``face`` needs landmarks or at least a box.
    """
    img = _as_rgb_or_grey(frame)
    h, w = img.shape[:2]
    found = face is not None and face.found
    landmarks = face.landmarks if found and face is not None else None
    if (cfg.occlude or cfg.mode == "reassembled") and landmarks is None:
        return None
    if cfg.mode == "face" and not found:
        return None
    if cfg.occlude:
        assert landmarks is not None
        img = occlude_frame(img, landmarks, cfg.occlude, cfg.fill)
    s = cfg.size
    if cfg.mode == "original":
        out = _resize(img, s, s)
        mapping = InputMapping(s, [MappingPiece("frame", (0, 0, s, s), (0, 0, w, h))])
    elif cfg.mode == "face":
        assert face is not None
        if landmarks is not None:
            box = _points_box(np.asarray(landmarks, np.float64))
        elif face.box is not None:
            box = tuple(float(v) for v in face.box)  # type: ignore[assignment]
        else:
            return None
        rect = _square(box, cfg.margin)
        out = _crop_resize(img, rect, s)
        mapping = InputMapping(s, [MappingPiece("face", (0, 0, s, s), tuple(float(v) for v in rect))])  # type: ignore[arg-type]
    else:
        assert landmarks is not None
        half = s // 2
        boxes = part_boxes(landmarks, cfg.margin)
        out = np.zeros((s, s, img.shape[2]), np.uint8)
        pieces = []
        for name, row, col in REASSEMBLED_LAYOUT:
            rect = boxes[name]
            out[row * half:(row + 1) * half, col * half:(col + 1) * half] = _crop_resize(img, rect, half)
            in_rect = (col * half, row * half, (col + 1) * half, (row + 1) * half)
            pieces.append(MappingPiece(name, tuple(float(v) for v in in_rect),  # type: ignore[arg-type]
                                       tuple(float(v) for v in rect)))  # type: ignore[arg-type]
        mapping = InputMapping(s, pieces)
    return Preprocessed(np.ascontiguousarray(_channels(out, cfg.grayscale)), mapping)
