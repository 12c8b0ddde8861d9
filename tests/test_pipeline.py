"""Analysis end to end: real clips, a real model, real session files; resume after a kill; no-face clips."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.analyzer import FrameAnalyzer
from engine.checkpoint import save_checkpoint
from engine.models import ModelSpec, build_model
from engine.pipeline import AnalyzeSettings, analyze, ingest
from engine.video import open_video
from sessions import Session
from sessions.export import export_csv, export_json

REPO = Path(__file__).resolve().parents[1]
FER_CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def make_model(folder: Path, arch: str, seed: int = 0) -> Path:
    """A real small model (fixed random weights): the pipeline's mechanics do not depend on training."""
    torch.manual_seed(seed)
    model = build_model(ModelSpec(arch=arch, classes=FER_CLASSES, label_setting="fer2013"))
    return save_checkpoint(folder, model, {"name": f"test {arch}"})


@pytest.fixture(scope="module")
def protopnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model(tmp_path_factory.mktemp("models") / "protopnet", "protopnet")


@pytest.fixture(scope="module")
def analyzer(protopnet_dir: Path) -> FrameAnalyzer:
    return FrameAnalyzer(protopnet_dir)


def test_crema_clips_end_to_end(tmp_path: Path, crema_clips: list[Path], analyzer: FrameAnalyzer) -> None:
    settings = AnalyzeSettings(explain=("intrinsic", "lrp"), occlusion=True)
    for clip in crema_clips:
        out = analyze(clip, None, tmp_path / f"{clip.stem}.vxs", settings, analyzer=analyzer)
        with Session.open(out) as s:
            info = s.info()
            T = s.frame_count
            assert info["complete"] and info["analysed"] and info["frames_done"] == T
            faces = s.faces()
            valid = s.read("valid")
            np.testing.assert_array_equal(valid, faces.found)  # face mode: scored exactly where a face is
            assert valid.mean() >= 0.95
            probs = s.read("probs")
            assert np.isfinite(probs[valid]).all() and np.isnan(probs[~valid]).all()
            np.testing.assert_allclose(probs[valid].sum(1), 1.0, atol=1e-5)
            for method in ("intrinsic", "lrp"):
                maps = s.read(f"explanations/{method}/maps")
                assert np.isfinite(maps[valid].astype(np.float32)).all(), method
                assert (np.abs(maps[valid].astype(np.float32)).reshape(valid.sum(), -1).max(1) > 0).all()
            sims = s.read("explanations/intrinsic/similarities")
            assert sims.shape == (T, 70) and np.isfinite(sims[valid]).all()
            conditions, occ = s.occlusion()
            assert len(conditions) == 7 and occ.shape == (T, 7, 7) and np.isfinite(occ[valid]).all()
            assert info["decision"] in FER_CLASSES
            assert info["stages"] and info["stages"][0]["start"] == 0 and info["stages"][-1]["end"] == T
            mappings = s.mappings()
            assert all((m is not None) == v for m, v in zip(mappings, valid, strict=True))
            csv_path = export_csv(s, tmp_path / f"{clip.stem}.csv")
            summary = json.loads(export_json(s, tmp_path / f"{clip.stem}.json").read_text())
            au = summary["au_agreement"]
            assert set(au) == {"intrinsic", "lrp"}
            non_neutral = int((probs[valid].argmax(1) != FER_CLASSES.index("neutral")).sum())
            assert au["lrp"]["frames"] == non_neutral  # neutral has no action units: no cosine
            if non_neutral:
                assert -1.0 <= au["lrp"]["mean"] <= 1.0
        with open(csv_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == T and [int(r["index"]) for r in rows] == list(range(T))


def test_scores_equal_a_direct_engine_call(tmp_path: Path, crema_clips: list[Path], analyzer: FrameAnalyzer) -> None:
    """What the session stores for frame k is what the model says about frame k (no off-by-one)."""
    clip = crema_clips[3]
    out = analyze(clip, None, tmp_path / "a.vxs", AnalyzeSettings(spray=False), analyzer=analyzer)
    with Session.open(out) as s, open_video(clip) as reader:
        faces = s.faces()
        probs = s.read("probs")
        from engine.faces import FaceResult

        for k in (0, 7, reader.frame_count // 2, reader.frame_count - 1):
            face = FaceResult(bool(faces.found[k]), faces.box[k], faces.landmarks[k], float(faces.confidence[k]),
                              int(faces.n_faces[k]), bool(faces.detected[k]))
            direct = analyzer.score(reader.frame(k), face)
            np.testing.assert_allclose(probs[k], direct.probs, atol=1e-5)


def test_no_face_video_decides_no_face(tmp_path: Path, edge_dir: Path, analyzer: FrameAnalyzer) -> None:
    out = analyze(edge_dir / "no_face.mp4", None, tmp_path / "nf.vxs", AnalyzeSettings(), analyzer=analyzer)
    with Session.open(out) as s:
        info = s.info()
        assert info["complete"] and info["decision"] == "no face"
        assert s.read("valid").mean() <= 0.02


def test_face_leaving_is_marked_per_frame(tmp_path: Path, edge_dir: Path, analyzer: FrameAnalyzer) -> None:
    out = analyze(edge_dir / "face_noface.mov", None, tmp_path / "fn.vxs", AnalyzeSettings(spray=False),
                  analyzer=analyzer)
    with Session.open(out) as s:
        valid = s.read("valid")
        assert valid[:60].all() and not valid[85:].any()
        assert s.info()["decision"] in FER_CLASSES  # EWMA keeps the last state of the frames with a face


KILL_SCRIPT = """
import sys
from engine.pipeline import AnalyzeSettings, analyze
analyze(sys.argv[1], sys.argv[2], sys.argv[3],
        AnalyzeSettings(explain=("intrinsic", "ig"), ig_steps=32, batch_size=4, commit_every_s=0.0))
"""


def test_killed_run_resumes_to_the_same_result(tmp_path: Path, edge_dir: Path, protopnet_dir: Path,
                                               analyzer: FrameAnalyzer) -> None:
    clip = edge_dir / "noface_face.mov"
    settings = AnalyzeSettings(explain=("intrinsic", "ig"), ig_steps=32, batch_size=4, commit_every_s=0.0)
    whole = analyze(clip, None, tmp_path / "whole.vxs", settings, analyzer=analyzer)

    part = tmp_path / "part.vxs"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(clip), str(protopnet_dir), str(part)],
                            cwd=REPO)
    done = 0
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if part.exists():
                try:
                    with Session.open(part) as s:
                        a = s.analysis_info()
                        done = a["frames_done"] if a else 0
                except Exception:  # noqa: BLE001 - the writer may be between create and first commit
                    done = 0
                if done >= 110:  # past the face's entry at frame 96: the resume restarts at a detection
                    break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 0 < done < 169, f"the run was not caught mid-way (frames_done={done})"
    with Session.open(part) as s:
        assert not s.info()["complete"]

    analyze(clip, None, part, settings, analyzer=analyzer)
    with Session.open(whole) as a, Session.open(part) as b:
        fa, fb = a.faces(), b.faces()
        np.testing.assert_array_equal(fa.found, fb.found)
        np.testing.assert_allclose(fa.landmarks, fb.landmarks, equal_nan=True)
        np.testing.assert_array_equal(a.read("valid"), b.read("valid"))
        np.testing.assert_allclose(a.read("probs"), b.read("probs"), atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(a.read("ewma"), b.read("ewma"), atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(a.read("explanations/ig/maps").astype(np.float32),
                                   b.read("explanations/ig/maps").astype(np.float32), atol=2e-3, equal_nan=True)
        assert a.info()["decision"] == b.info()["decision"]
        assert a.info()["stages"] == b.info()["stages"]


def test_ingest_then_cancel_keeps_a_valid_prefix(tmp_path: Path, edge_dir: Path) -> None:
    from engine.jobs import Cancelled, CancelToken

    cancel = CancelToken()
    seen = []

    def progress(done: int, total: int, message: str = "") -> None:
        seen.append(done)
        if done >= 48:
            cancel.cancel()

    out = tmp_path / "c.vxs"
    with pytest.raises(Cancelled):
        ingest(edge_dir / "face_noface.mov", out, progress=progress, cancel=cancel)
    with Session.open(out) as s:
        done = s.faces().frames_done
        assert 48 <= done < s.frame_count and not s.info()["complete"]
    ingest(edge_dir / "face_noface.mov", out)
    with Session.open(out) as s:
        assert s.info()["complete"] and s.faces().found[:60].all()


def test_reanalysis_reuses_faces_adds_occlusion_and_switches_mode(tmp_path: Path, crema_clips: list[Path],
                                                                  analyzer: FrameAnalyzer) -> None:
    clip = crema_clips[0]
    direct = analyze(clip, None, tmp_path / "direct.vxs", AnalyzeSettings(spray=False), analyzer=analyzer)
    path = ingest(clip, tmp_path / "s.vxs")
    analyze(clip, None, path, AnalyzeSettings(spray=False), analyzer=analyzer)
    with Session.open(path) as s, Session.open(direct) as d:
        # Faces from ingest are reused, and they are what tracking during analysis finds.
        np.testing.assert_array_equal(s.faces().landmarks, d.faces().landmarks)
        np.testing.assert_allclose(s.read("probs"), d.read("probs"), atol=1e-6, equal_nan=True)
        assert s.occlusion() is None

    # "Apply occlusion to the whole video": a finished analysis gains the occlusion track only.
    before = Session.open(path)
    probs_before = before.read("probs")
    before.close()
    analyze(clip, None, path, AnalyzeSettings(spray=False, occlusion=True), analyzer=analyzer)
    with Session.open(path) as s:
        conditions, occ = s.occlusion()
        valid = s.read("valid")
        assert np.isfinite(occ[valid]).all() and s.info()["complete"]
        np.testing.assert_array_equal(s.read("probs"), probs_before)
        mouth = conditions.index("mouth")
        k = int(np.flatnonzero(valid)[5])
        from engine.faces import FaceResult
        from engine.preprocess import OCCLUSION_CONDITIONS

        f = s.faces(slice(k, k + 1))
        face = FaceResult(True, f.box[0], f.landmarks[0], float(f.confidence[0]), int(f.n_faces[0]), False)
        with open_video(clip) as r:
            want = analyzer.score(r.frame(k), face, analyzer.config(occlude=OCCLUSION_CONDITIONS["mouth"])).probs
        np.testing.assert_allclose(occ[k, mouth], want, atol=1e-5)

    # "Apply the reassembled mode to the whole video": a new analysis that records its preprocessing.
    analyze(clip, None, path, AnalyzeSettings(spray=False, preprocess_mode="reassembled"), analyzer=analyzer)
    with Session.open(path) as s:
        a = s.analysis_info()
        assert a["complete"] and a["preprocess"]["mode"] == "reassembled"
        assert not np.allclose(s.read("probs"), probs_before, equal_nan=True)
        mapping = s.mappings()[int(np.flatnonzero(s.read("valid"))[0])]
        assert len(mapping["pieces"]) == 4


def test_model_threads_on_small_cpus_and_restored_after(tmp_path: Path, crema_clips: list[Path],
                                                        analyzer: FrameAnalyzer) -> None:
    """On ≤ 2 cores the model yields a core to the face tracker unless a post-hoc method makes the model
    the slowest stage; torch's setting is the caller's again once `analyze` returns."""
    from engine.pipeline import model_threads

    intrinsic, lrp = AnalyzeSettings(), AnalyzeSettings(explain=("intrinsic", "lrp"))
    assert model_threads(intrinsic, "cpu", cores=2) == 1
    assert model_threads(intrinsic, "cpu", cores=1) == 1
    assert model_threads(lrp, "cpu", cores=2) is None
    assert model_threads(intrinsic, "cpu", cores=8) is None
    assert model_threads(intrinsic, "cuda", cores=2) is None
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        analyze(crema_clips[0], None, tmp_path / "a.vxs", AnalyzeSettings(spray=False), analyzer=analyzer)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
