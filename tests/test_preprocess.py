"""engine.preprocess on real CREMA-D frames and FER2013 crops: modes, occlusion, the way back to the frame."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.faces import FaceResult, detect_single, face_from_crop_image
from engine.preprocess import (
    OCCLUSION_CONDITIONS,
    PARTS,
    InputMapping,
    PreprocessConfig,
    occlude_frame,
    part_mask,
    preprocess,
)
from engine.video import open_video


def nth_frame(path: Path, k: int) -> np.ndarray:
    with open_video(path) as reader:
        return reader.frame(k)

MODES = ("original", "face", "reassembled")


@pytest.fixture(scope="module")
def frame_and_face(crema_clips: list[Path]) -> tuple[np.ndarray, FaceResult]:
    # Frame 20 of the angry clip: mouth open mid-sentence, face well inside the frame.
    frame = nth_frame(crema_clips[0], 20)
    face = detect_single(frame)
    assert face.found and face.landmarks is not None
    return frame, face


def test_config_json_round_trip_and_validation() -> None:
    cfg = PreprocessConfig(mode="reassembled", size=64, grayscale=False, margin=0.2,
                           occlude=OCCLUSION_CONDITIONS["eyes+mouth"], fill=128)
    d = json.loads(json.dumps(cfg.to_json()))
    assert PreprocessConfig.from_json(d) == cfg
    assert PreprocessConfig.from_json({}) == PreprocessConfig()
    with pytest.raises(ValueError, match="mode"):
        PreprocessConfig(mode="crop")
    with pytest.raises(ValueError, match="cannot occlude"):
        PreprocessConfig(occlude=frozenset({"ears"}))
    with pytest.raises(ValueError, match="even"):
        PreprocessConfig(mode="reassembled", size=47)


def test_seven_occlusion_conditions() -> None:
    assert list(OCCLUSION_CONDITIONS) == ["eyes", "nose", "mouth", "eyes+mouth", "eyes+nose", "nose+mouth",
                                          "eyes+nose+mouth"]
    for name, parts in OCCLUSION_CONDITIONS.items():
        assert parts == frozenset(name.split("+")) and parts <= set(PARTS)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("grayscale", [True, False])
def test_output_shape_and_dtype(frame_and_face: tuple[np.ndarray, FaceResult], mode: str, grayscale: bool) -> None:
    frame, face = frame_and_face
    out = preprocess(frame, face, PreprocessConfig(mode=mode, size=48, grayscale=grayscale))
    assert out is not None
    assert out.image.shape == (48, 48, 1 if grayscale else 3) and out.image.dtype == np.uint8
    assert out.image.std() > 10, "a real face crop has contrast"


def test_no_face_returns_none_only_where_a_face_is_needed(frame_and_face: tuple[np.ndarray, FaceResult]) -> None:
    frame, _ = frame_and_face
    missing = FaceResult.none()
    assert preprocess(frame, None, PreprocessConfig(mode="face")) is None
    assert preprocess(frame, missing, PreprocessConfig(mode="face")) is None
    assert preprocess(frame, missing, PreprocessConfig(mode="reassembled")) is None
    assert preprocess(frame, None, PreprocessConfig(mode="original", occlude=frozenset({"mouth"}))) is None
    out = preprocess(frame, None, PreprocessConfig(mode="original"))
    assert out is not None and out.image.shape == (48, 48, 1)


def test_original_is_the_resized_frame(frame_and_face: tuple[np.ndarray, FaceResult]) -> None:
    frame, _ = frame_and_face
    out = preprocess(frame, None, PreprocessConfig(mode="original", size=48, grayscale=False))
    assert out is not None
    expected = cv2.resize(frame, (48, 48), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out.image, expected)
    # Per-axis scale: the input corners land on the frame corners.
    corners = out.mapping.to_frame(np.array([[-0.5, -0.5], [47.499, 47.499]]))
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [frame.shape[1] - 0.5, frame.shape[0] - 0.5]], atol=0.05)


@pytest.mark.parametrize("mode", MODES)
def test_landmarks_round_trip_within_one_pixel(frame_and_face: tuple[np.ndarray, FaceResult], mode: str) -> None:
    frame, face = frame_and_face
    assert face.landmarks is not None
    out = preprocess(frame, face, PreprocessConfig(mode=mode))
    assert out is not None
    mapping = InputMapping.from_json(json.loads(json.dumps(out.mapping.to_json())))
    groups = {"original": {"frame": np.arange(68)}, "face": {"face": np.arange(68)},
              "reassembled": {"eye_left": np.r_[17:22, 36:42], "eye_right": np.r_[22:27, 42:48],
                              "nose": np.arange(27, 36), "mouth": np.arange(48, 68)}}[mode]
    for piece, idx in groups.items():
        pts = face.landmarks[idx]
        uv = mapping.from_frame(pts, piece=piece)
        assert np.isfinite(uv).all()
        assert (uv >= -0.5).all() and (uv < 47.5).all(), f"{piece} landmarks fall outside the input"
        back = mapping.to_frame(uv)
        assert np.abs(back - pts).max() < 1.0, f"{mode}/{piece}: round trip off by {np.abs(back - pts).max():.3f}"


def test_face_crop_is_exact_and_zero_padded_at_the_frame_edge(frame_and_face: tuple[np.ndarray, FaceResult]) -> None:
    """Cut the frame through the face, then with no rescaling every input pixel is its frame pixel."""
    frame, face = frame_and_face
    assert face.landmarks is not None
    cut = int(face.landmarks[:, 0].mean())  # the left half of the face is off the frame
    edge_frame = np.ascontiguousarray(frame[:, cut:])
    # The full frame's face, shifted: the landmarks of its left half now lie left of x = 0.
    assert face.box is not None
    moved = FaceResult(True, face.box - [cut, 0, cut, 0], face.landmarks - [cut, 0], 1.0, 1, True)
    first = preprocess(edge_frame, moved, PreprocessConfig(mode="face", grayscale=False))
    assert first is not None
    x0, y0, x1, y1 = first.mapping.pieces[0].frame_rect
    side = int(x1 - x0)
    assert x0 < 0, "the crop must reach past the left edge for this test"
    out = preprocess(edge_frame, moved, PreprocessConfig(mode="face", size=side, grayscale=False))
    assert out is not None and out.mapping.pieces[0].frame_rect == (x0, y0, x1, y1)
    vv, uu = np.mgrid[0:side, 0:side]
    xy = out.mapping.to_frame(np.stack([uu.ravel(), vv.ravel()], 1)).round().astype(int)
    h, w = edge_frame.shape[:2]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    img = out.image.reshape(-1, 3)
    assert np.array_equal(img[inside], edge_frame[xy[inside, 1], xy[inside, 0]])
    assert (~inside).sum() > side and not img[~inside].any(), "outside the frame the crop is zero"


def test_reassembled_layout(frame_and_face: tuple[np.ndarray, FaceResult]) -> None:
    frame, face = frame_and_face
    lm = face.landmarks
    assert lm is not None
    cfg = PreprocessConfig(mode="reassembled", size=48, grayscale=True)
    out = preprocess(frame, face, cfg)
    assert out is not None
    pieces = {p.name: p for p in out.mapping.pieces}
    assert pieces["eye_left"].input_rect == (0, 0, 24, 24) and pieces["eye_right"].input_rect == (24, 0, 48, 24)
    assert pieces["nose"].input_rect == (0, 24, 24, 48) and pieces["mouth"].input_rect == (24, 24, 48, 48)

    def contains(rect: tuple[float, ...], pts: np.ndarray) -> bool:
        return bool(((pts[:, 0] >= rect[0]) & (pts[:, 0] < rect[2]) & (pts[:, 1] >= rect[1])
                     & (pts[:, 1] < rect[3])).all())

    # Top row: the eye regions, image-left first; bottom right: the mouth.
    assert contains(pieces["eye_left"].frame_rect, lm[36:42]) and contains(pieces["eye_left"].frame_rect, lm[17:22])
    assert contains(pieces["eye_right"].frame_rect, lm[42:48])
    assert pieces["eye_left"].frame_rect[0] < pieces["eye_right"].frame_rect[0]
    assert contains(pieces["nose"].frame_rect, lm[27:36]) and contains(pieces["mouth"].frame_rect, lm[48:68])
    uv = out.mapping.from_frame(lm[48:68], piece="mouth")
    assert (uv >= 23.5).all() and (uv < 47.5).all(), "mouth landmarks map into the bottom-right quadrant"
    assert (out.mapping.from_frame(lm[36:48])[:, 1] < 23.5).all(), "eye landmarks map into the top row"

    # The bottom-right quadrant is the mouth crop, resized; computed here independently.
    x0, y0, x1, y1 = (int(v) for v in pieces["mouth"].frame_rect)
    assert 0 <= x0 and x1 <= frame.shape[1] and 0 <= y0 and y1 <= frame.shape[0]
    mouth = cv2.resize(frame[y0:y1, x0:x1], (24, 24), interpolation=cv2.INTER_AREA)
    mouth = cv2.cvtColor(mouth, cv2.COLOR_RGB2GRAY)
    assert np.array_equal(out.image[24:, 24:, 0], mouth)
    assert not np.array_equal(out.image[:24, :24, 0], mouth)


def test_part_masks_follow_the_landmarks(frame_and_face: tuple[np.ndarray, FaceResult]) -> None:
    frame, face = frame_and_face
    lm = face.landmarks
    assert lm is not None
    masks = {p: part_mask(frame.shape, lm, {p}) for p in PARTS}

    def covered(mask: np.ndarray, idx: np.ndarray) -> bool:
        pts = lm[idx].round().astype(int)
        return bool(mask[pts[:, 1], pts[:, 0]].all())

    assert covered(masks["eyes"], np.r_[17:27, 36:48]) and not covered(masks["eyes"], np.r_[48:68])
    assert covered(masks["nose"], np.r_[27:36]) and not covered(masks["nose"], np.r_[48:68])
    assert covered(masks["mouth"], np.r_[48:68]) and not covered(masks["mouth"], np.r_[36:48])
    # Eyes and mouth are bands across the face width.
    for part in ("eyes", "mouth"):
        cols = np.flatnonzero(masks[part].any(axis=0))
        assert cols.min() <= lm[:, 0].min() and cols.max() >= lm[:, 0].max()
    for name, parts in OCCLUSION_CONDITIONS.items():
        union = np.logical_or.reduce([masks[p] for p in parts])
        assert np.array_equal(part_mask(frame.shape, lm, parts), union), name


def test_occluding_the_mouth_changes_only_the_mouth_band(frame_and_face: tuple[np.ndarray, FaceResult]) -> None:
    frame, face = frame_and_face
    assert face.landmarks is not None
    mask = part_mask(frame.shape, face.landmarks, {"mouth"})
    occluded = occlude_frame(frame, face.landmarks, {"mouth"}, fill=0)
    changed = (occluded != frame).any(axis=2)
    assert changed.sum() > 500
    assert not (changed & ~mask).any(), "pixels outside the mouth band changed"
    assert not occluded[mask].any(), "the mouth band is filled with 0"
    # preprocess occludes the full frame before cropping, identically in every mode.
    for mode in MODES:
        cfg = PreprocessConfig(mode=mode, occlude=frozenset({"mouth"}))
        a = preprocess(frame, face, cfg)
        b = preprocess(occluded, face, PreprocessConfig(mode=mode))
        plain = preprocess(frame, face, PreprocessConfig(mode=mode))
        assert a is not None and b is not None and plain is not None
        assert np.array_equal(a.image, b.image), mode
        assert not np.array_equal(a.image, plain.image), mode
    reassembled = preprocess(frame, face, PreprocessConfig(mode="reassembled", occlude=frozenset({"mouth"}), fill=0))
    assert reassembled is not None
    # The mouth tile is a square around the lips, so it also shows the chin; the lips themselves are fill.
    uv = reassembled.mapping.from_frame(face.landmarks[48:68], piece="mouth").round().astype(int)
    assert reassembled.image[uv[:, 1], uv[:, 0], 0].max() < 20, "the lips in the mouth tile are fill"
    assert reassembled.image[:24].mean() > 50, "the eye tiles are untouched"


@pytest.mark.parametrize("mode", MODES)
def test_one_hot_heat_lands_where_the_pixel_came_from(frame_and_face: tuple[np.ndarray, FaceResult],
                                                      mode: str) -> None:
    frame, face = frame_and_face
    out = preprocess(frame, face, PreprocessConfig(mode=mode))
    assert out is not None
    h, w = frame.shape[:2]
    for u, v in [(10, 12), (30, 35), (40, 8)]:
        heat = np.zeros((48, 48), np.float32)
        heat[v, u] = 1.0
        fmap = out.mapping.heatmap_to_frame(heat, (h, w))
        assert fmap.shape == (h, w) and fmap.dtype == np.float32
        y, x = np.unravel_index(int(np.argmax(fmap)), fmap.shape)
        target = out.mapping.to_frame(np.array([[u, v]]))[0]
        assert abs(x - target[0]) <= 1.0 and abs(y - target[1]) <= 1.0, f"{mode} ({u},{v}): {x, y} vs {target}"
    # Zero outside the mapped regions.
    rects = [p.frame_rect for p in out.mapping.pieces]
    outside = np.ones((h, w), bool)
    for x0, y0, x1, y1 in rects:
        outside[max(0, int(y0)):max(0, int(y1)), max(0, int(x0)):max(0, int(x1))] = False
    fmap = out.mapping.heatmap_to_frame(np.ones((6, 6), np.float32), (h, w))
    assert not fmap[outside].any() and (fmap[~outside] > 0.99).all()


def test_low_res_quadrant_heat_goes_to_its_part_only(frame_and_face: tuple[np.ndarray, FaceResult]) -> None:
    """A 6×6 prototype map lit in the bottom-right quadrant only lights the mouth rectangle."""
    frame, face = frame_and_face
    out = preprocess(frame, face, PreprocessConfig(mode="reassembled"))
    assert out is not None
    heat = np.zeros((6, 6), np.float32)
    heat[3:, 3:] = 1.0
    fmap = out.mapping.heatmap_to_frame(heat, frame.shape[:2])
    x0, y0, x1, y1 = (int(v) for v in out.mapping.piece("mouth").frame_rect)
    inside = np.zeros(fmap.shape, bool)
    inside[y0:y1, x0:x1] = True
    assert (fmap[inside] > 0.99).all() and not fmap[~inside].any()


def test_fer_crop_through_the_same_path(fer_dir: Path) -> None:
    """Training images go through face_from_crop_image + preprocess, like video frames."""
    paths = sorted((fer_dir / "train" / "happy").glob("*.jpg"))[:3]
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        face = face_from_crop_image(img)
        for mode in MODES:
            out = preprocess(img, face, PreprocessConfig(mode=mode))
            assert out is not None and out.image.shape == (48, 48, 1), (p.name, mode)
        rgb = preprocess(img, face, PreprocessConfig(mode="face", grayscale=False))
        assert rgb is not None and rgb.image.shape == (48, 48, 3)
