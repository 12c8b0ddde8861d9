"""The .vxs session file: round trips, refusal of bad files, and crash safety with a killed writer."""

from __future__ import annotations

import ast
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from sessions import (
    FORMAT_VERSION,
    Annotations,
    Segment,
    Session,
    SessionError,
    SprayResult,
    Stage,
    Tier,
)

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["anger", "happy", "neutral"]
MODEL = {"name": "protopnet-small", "sha256": "ab" * 32, "label_setting": "6-class",
         "preprocess": {"mode": "face", "size": 48, "grayscale": True}}


def video_info(T: int, path: str = "/data/clip.mp4") -> dict:
    return {"path": path, "sha256": "cd" * 32, "fps": 25.0, "frame_count": T, "width": 640, "height": 480,
            "duration": T / 25.0, "rotation": 90, "codec": "h264"}


def make(tmp_path: Path, T: int = 120, name: str = "clip.vxs") -> Session:
    return Session.create(tmp_path / name, video_info(T), np.arange(T) / 25.0 + 0.001 * np.arange(T) ** 1.5)


def face_chunk(start: int, n: int) -> tuple[np.ndarray, ...]:
    idx = np.arange(start, start + n, dtype=np.float32)
    found = (np.arange(start, start + n) % 5) != 0
    box = np.stack([idx, idx + 1, idx + 100, idx + 120], axis=1)
    lm = np.broadcast_to(idx[:, None, None], (n, 68, 2)) + np.arange(68, dtype=np.float32)[None, :, None]
    return found, box, lm, idx / 1000, (found * 1).astype(np.uint8)


def probs_for(idx: np.ndarray, gen: int = 0) -> np.ndarray:
    raw = np.stack([np.sin(idx * 0.1 + gen), np.cos(idx * 0.07), idx % 7 / 7.0], axis=1) + 2
    return (raw / raw.sum(axis=1, keepdims=True)).astype(np.float32)


def test_round_trip_every_group(tmp_path: Path) -> None:
    T = 120
    s = make(tmp_path, T)
    for start, n in ((0, 50), (50, 30), (80, 40)):
        s.write_faces(start, *face_chunk(start, n))
    assert s.begin_analysis(MODEL, CLASSES, ["lrp", "gradcam"], 0.2) == 0
    rng = np.random.default_rng(0)
    maps = {m: rng.random((T, 24, 24)).astype(np.float16) for m in ("lrp", "gradcam")}
    sims = rng.random((T, 30)).astype(np.float32)
    top_i = rng.integers(0, 30, (T, 5)).astype(np.int32)
    top_v = rng.random((T, 5)).astype(np.float32)
    occ = rng.random((T, 7, 3)).astype(np.float32)
    conditions = ["eyes", "nose", "mouth", "eyes+mouth", "eyes+nose", "nose+mouth", "eyes+nose+mouth"]
    idx = np.arange(T)
    for start in range(0, T, 32):  # several streamed chunks, committed in between
        sl = slice(start, min(T, start + 32))
        n = sl.stop - sl.start
        for m in maps:
            s.write_explanation(m, start, maps[m][sl])
        s.write_mappings(start, [None if k % 9 == 0 else {"affine": [[1.0, 0, k], [0, 1.0, 2]], "k": k}
                                 for k in idx[sl].tolist()])
        s.write_frames("prototypes/similarities", start, sims[sl])
        s.write_frames("prototypes/top_index", start, top_i[sl])
        s.write_frames("prototypes/top_value", start, top_v[sl])
        s.write_occlusion(start, occ[sl], conditions)
        s.write_scores(start, idx[sl] % 5 != 0, np.log(probs_for(idx[sl])), probs_for(idx[sl]))
        assert s.analysis_info()["frames_done"] == sl.stop == start + n
        s.commit()
    labels = np.where(idx % 4 == 0, -1, idx // 40).astype(np.int16)
    stages = [Stage(0, 40, "onset: eyes"), Stage(40, 80, "apex: mouth"), Stage(80, 120, "offset")]
    spray = SprayResult(labels, stages, rng.random((3, 12, 12)).astype(np.float16), 3, 0.41, 0.27, "eyes→mouth")
    s.write_spray("happy", spray)
    video_stages = s.write_temporal_prototype(
        ["NONE"] * 10 + ["HAPPY_A"] * 30 + ["HAPPY_A, SAD_A"] * 5 + ["HAPPY_B"] * (T - 45), "lrp")
    assert [(st.start, st.end) for st in video_stages] == [(0, 10), (10, 40), (40, 45), (45, T)]
    s.set_attrs("prototypes", prototype_classes=[0, 0, 1], source="train.csv")
    ewma = probs_for(idx) * 0.5
    s.set_review_state({"alpha": 0.6, "method": "lrp", "overlays": ["box", "landmarks"], "frame": 17})
    ann = Annotations([Tier("reviewer", "label"), Tier("verdict", "agreement")],
                      [Segment("reviewer", 3, 20, "smile", "lip corners", "dr a", "2026-01-01", "", "frame:10"),
                       Segment("verdict", 40, 80, "apex ok", agreement="agree", target="stage:happy/1")])
    s.save_annotations(ann)
    s.finish_analysis(ewma, 0.2, "happy")
    s.close()
    assert sorted(os.listdir(tmp_path)) == ["clip.vxs"]  # no lock, work or temp file left

    with Session.open(tmp_path / "clip.vxs") as r:
        assert r.video == video_info(T)
        assert r.frame_count == T
        np.testing.assert_array_equal(r.timestamps, np.arange(T) / 25.0 + 0.001 * np.arange(T) ** 1.5)
        ft = r.faces()
        exp = face_chunk(0, T)
        assert ft.frames_done == T
        for got, want in zip((ft.found, ft.box, ft.landmarks, ft.confidence, ft.n_faces), exp):
            np.testing.assert_array_equal(got, want)
        assert ft.box.dtype == np.float32 and ft.landmarks.shape == (T, 68, 2) and ft.n_faces.dtype == np.uint8
        part = r.faces(slice(30, 40))
        assert part.start == 30 and part.box.shape == (10, 4) and part.box[0, 0] == 30
        info = r.analysis_info()
        assert info["classes"] == CLASSES and info["decision"] == "happy" and info["complete"]
        assert info["frames_done"] == T and info["alpha"] == 0.2 and info["model"] == MODEL
        assert info["explanations"] == ["gradcam", "lrp"] and info["spray"] == ["happy"] and info["occlusion"]
        np.testing.assert_array_equal(r.read("probs"), probs_for(idx))
        np.testing.assert_allclose(r.read("logits"), np.log(probs_for(idx)), rtol=1e-6)
        np.testing.assert_array_equal(r.read("valid"), idx % 5 != 0)
        np.testing.assert_array_equal(r.read("ewma"), ewma)
        for m, want_map in maps.items():
            got = r.read(f"explanations/{m}/maps")
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, want_map)
        np.testing.assert_array_equal(r.read("explanations/lrp/maps", slice(10, 12)), maps["lrp"][10:12])
        ds = r._h5["analysis/explanations/lrp/maps"]
        assert ds.compression == "gzip" and ds.chunks is not None
        mp = r.mappings()
        assert mp[0] is None and mp[10] == {"affine": [[1.0, 0, 10], [0, 1.0, 2]], "k": 10}
        np.testing.assert_array_equal(r.read("prototypes/similarities"), sims)
        np.testing.assert_array_equal(r.read("prototypes/top_index"), top_i)
        np.testing.assert_array_equal(r.read("prototypes/top_value"), top_v)
        assert r.attrs("prototypes") == {"prototype_classes": [0, 0, 1], "source": "train.csv"}
        names, got_occ = r.occlusion()
        assert names == conditions
        np.testing.assert_array_equal(got_occ, occ)
        sp = r.spray()["happy"]
        np.testing.assert_array_equal(sp.labels, labels)
        assert sp.stages == stages and sp.k == 3 and sp.temporal_prototype == "eyes→mouth"
        assert sp.eigengap == pytest.approx(0.41) and sp.description_length_reduction == pytest.approx(0.27)
        np.testing.assert_array_equal(sp.cluster_maps, spray.cluster_maps)
        assert r.annotations() == ann
        assert r.review_state() == {"alpha": 0.6, "method": "lrp", "overlays": ["box", "landmarks"], "frame": 17}
        root = dict(r._h5.attrs)
        assert root["format_version"] == FORMAT_VERSION and root["application"] == "vidxai"
        assert root["created"] <= root["modified"]
        summary = r.info()
        assert summary["face_found_frames"] == int(np.count_nonzero(idx % 5 != 0))
        assert summary["stages"][2] == {"start": 40, "end": 45, "descriptor": "HAPPY_A, SAD_A"}
        assert r.spray()["happy"].stages[1] == Stage(40, 80, "apex: mouth")
        assert summary["complete"] and summary["decision"] == "happy" and summary["annotations"] == 2


def test_streaming_order_and_shapes_are_checked(tmp_path: Path) -> None:
    with make(tmp_path, 50) as s:
        with pytest.raises(ValueError, match="in order"):
            s.write_faces(20, *face_chunk(20, 10))
        with pytest.raises(ValueError, match="outside"):
            s.write_faces(0, *face_chunk(0, 60))
        with pytest.raises(SessionError, match="no analysis"):
            s.write_scores(0, np.ones(5, bool), np.zeros((5, 3)), np.zeros((5, 3)))
        s.begin_analysis(MODEL, CLASSES, [], 0.1)
        with pytest.raises(ValueError, match="shape"):
            s.write_scores(0, np.ones(5, bool), np.zeros((5, 2)), np.zeros((5, 2)))
        s.write_frames("x", 0, np.zeros((5, 4), np.float32))
        with pytest.raises(ValueError, match="rows of shape"):
            s.write_frames("x", 5, np.zeros((5, 3), np.float32))
        with pytest.raises(ValueError, match="agreement"):
            Segment("t", 0, 1, agreement="maybe")
        with pytest.raises(ValueError, match="not in the tier list"):
            s.save_annotations(Annotations([], [Segment("ghost", 0, 1)]))
    with pytest.raises(SessionError, match="already exists"):
        make(tmp_path, 50)


def test_resume_keeps_frames_and_a_new_model_replaces_without_growing(tmp_path: Path) -> None:
    T = 400
    s = make(tmp_path, T)
    s.begin_analysis(MODEL, CLASSES, ["lrp"], 0.1)
    idx = np.arange(200)
    s.write_scores(0, np.ones(200, bool), probs_for(idx), probs_for(idx))
    s.write_explanation("lrp", 0, np.random.default_rng(1).random((200, 48, 48)))
    s.close()
    size_one = (tmp_path / "clip.vxs").stat().st_size

    s = Session.open(tmp_path / "clip.vxs", writable=True)
    assert s.begin_analysis(MODEL, CLASSES, ["lrp"], 0.3) == 200  # same checkpoint: continue
    assert s.begin_analysis(MODEL, CLASSES, ["lrp", "ig"], 0.3) == 0  # other methods: start again
    s.write_explanation("lrp", 0, np.random.default_rng(2).random((200, 48, 48)))
    s.close()
    # the replaced analysis must not stay in the file as dead space
    assert (tmp_path / "clip.vxs").stat().st_size < size_one * 1.3
    with Session.open(tmp_path / "clip.vxs") as r:
        assert r.analysis_info()["frames_done"] == 0 and r.analysis_info()["explain"] == ["lrp", "ig"]
        assert np.isnan(r.read("probs")).all()


def test_exception_in_with_block_keeps_last_commit(tmp_path: Path) -> None:
    make(tmp_path, 60).close()
    with pytest.raises(RuntimeError), Session.open(tmp_path / "clip.vxs", writable=True) as s:
        s.write_faces(0, *face_chunk(0, 30))
        s.commit()
        s.write_faces(30, *face_chunk(30, 30))
        raise RuntimeError("worker crashed")
    with Session.open(tmp_path / "clip.vxs") as r:
        assert r.faces().frames_done == 30
    assert sorted(os.listdir(tmp_path)) == ["clip.vxs"]


def test_maybe_commit_spaces_commits_by_their_cost(tmp_path: Path) -> None:
    with make(tmp_path, 50) as s:
        assert not s.maybe_commit(min_interval_s=0.0)  # nothing to commit
        s.write_faces(0, *face_chunk(0, 10))
        assert s.last_copy_s > 0
        assert not s.maybe_commit(min_interval_s=3600.0)
        assert s.maybe_commit(min_interval_s=0.0, max_overhead=1e9)
        with Session.open(tmp_path / "clip.vxs") as r:
            assert r.faces().frames_done == 10
        s.write_faces(10, *face_chunk(10, 10))
        s.last_commit_s = 100.0  # a commit this slow must wait 1000 s at 10 % overhead
        assert not s.maybe_commit(min_interval_s=0.0, max_overhead=0.1)


def test_read_only_sees_last_commit_and_refreshes(tmp_path: Path) -> None:
    w = make(tmp_path, 100)
    r = Session.open(tmp_path / "clip.vxs")
    w.write_faces(0, *face_chunk(0, 40))
    assert r.faces().frames_done == 0 and not r.refresh()  # uncommitted writes are invisible
    with pytest.raises(SessionError, match="another VidXAI process"):
        Session.open(tmp_path / "clip.vxs", writable=True)
    w.commit()
    assert r.faces().frames_done == 0  # still the version it opened
    assert r.refresh() and r.faces().frames_done == 40
    with pytest.raises(SessionError, match="read-only"):
        r.write_faces(40, *face_chunk(40, 10))
    w.close()
    r.close()
    Session.open(tmp_path / "clip.vxs", writable=True).close()  # the lock was released


def test_stale_work_files_are_removed_and_never_opened(tmp_path: Path) -> None:
    s = make(tmp_path, 30)
    s.write_faces(0, *face_chunk(0, 10))
    s.commit()
    s.write_faces(10, *face_chunk(10, 10))
    s._h5.flush()  # a crash now leaves clip.vxs.work behind; simulate it without the lock release
    s._lock.release()
    work = tmp_path / "clip.vxs.work"
    assert work.exists()
    (tmp_path / "clip.vxs.tmp-999").write_bytes(b"half an export")
    with pytest.raises(SessionError, match="working copy"):
        Session.open(work)
    with Session.open(tmp_path / "clip.vxs") as r:
        assert r.faces().frames_done == 10
    assert sorted(os.listdir(tmp_path)) == ["clip.vxs"]
    s._h5.close()


def test_missing_file_with_only_a_work_copy_says_so(tmp_path: Path) -> None:
    (tmp_path / "gone.vxs.work").write_bytes(b"x")
    with pytest.raises(SessionError, match=r"gone\.vxs not found.*interrupted"):
        Session.open(tmp_path / "gone.vxs")


def _refuse(path: Path, pattern: str) -> None:
    with pytest.raises(SessionError) as e:
        Session.open(path)
    assert str(path) in str(e.value)
    assert re.search(pattern, str(e.value)), str(e.value)


def test_bad_files_are_refused_with_the_file_named(tmp_path: Path) -> None:
    s = make(tmp_path, 300, "good.vxs")
    s.begin_analysis(MODEL, CLASSES, ["lrp"], 0.1)
    s.write_explanation("lrp", 0, np.random.default_rng(0).random((300, 48, 48)))
    s.close()
    good = (tmp_path / "good.vxs").read_bytes()

    truncated = tmp_path / "truncated.vxs"
    truncated.write_bytes(good[: len(good) // 2])
    _refuse(truncated, r"damaged.*re-run")

    garbage = tmp_path / "garbage.vxs"
    garbage.write_bytes(os.urandom(4096))
    _refuse(garbage, "not a VidXAI session")

    empty = tmp_path / "empty.vxs"
    empty.write_bytes(b"")
    _refuse(empty, "empty")

    foreign = tmp_path / "foreign.vxs"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(10)
    _refuse(foreign, "not a VidXAI session")

    newer = tmp_path / "newer.vxs"
    newer.write_bytes(good)
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = 99
    _refuse(newer, r"newer VidXAI \(format 99 > 1\): update VidXAI")

    broken = tmp_path / "broken.vxs"
    broken.write_bytes(good)
    with h5py.File(broken, "r+") as f:
        del f["faces/landmarks"]
    _refuse(broken, r"damaged.*landmarks")


# ------------------------------------------------------------------------------------------- annotation autosave


def _ann(n: int) -> Annotations:
    return Annotations([Tier("reviewer")], [Segment("reviewer", i, i + 2, f"label {i}") for i in range(n)])


def test_annotation_autosave_writes_only_the_sidecar_and_a_commit_folds_it_in(tmp_path: Path) -> None:
    from sessions.export import export_json

    s = make(tmp_path, 60)
    s.begin_analysis(MODEL, CLASSES, [], 0.3)
    s.commit()
    st = os.stat(s.path)
    s.save_annotations(_ann(3), review_state={"frame": 7})
    side = tmp_path / "clip.vxs.annotations.json"
    assert side.is_file() and sorted(os.listdir(tmp_path)) == ["clip.vxs", "clip.vxs.annotations.json",
                                                               "clip.vxs.lock"]
    st2 = os.stat(s.path)
    assert (st2.st_ino, st2.st_mtime_ns, st2.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size)  # untouched
    with Session.open(s.path) as r:  # a reader sees the autosave at once: info, exports, review state
        assert r.annotations() == _ann(3) and r.review_state() == {"frame": 7}
        assert r.info()["annotations"] == 3
        assert json.loads(export_json(r, tmp_path / "x.json").read_text())["annotation_count"] == 3
        assert _read_embedded(r) == (Annotations(), {})  # the HDF5 itself still holds the last commit
    s.set_review_state({"frame": 9})  # with a sidecar, the newest state is readable at once
    assert s.review_state() == {"frame": 9}
    s.write_scores(0, np.ones(4, bool), probs_for(np.arange(4)), probs_for(np.arange(4)))
    s.commit()  # any commit folds the sidecar into the file and removes it
    assert not side.exists()
    with Session.open(s.path) as r:
        assert _read_embedded(r) == (_ann(3), {"frame": 9}) and r.annotations() == _ann(3)
    s.save_annotations(_ann(5))
    s.close()
    with Session.open(s.path) as r:
        assert r.annotations() == _ann(5) and r.review_state() == {"frame": 9}
        with pytest.raises(SessionError, match="read-only"):
            r.save_annotations(_ann(1))
    with Session.open(s.path, writable=True) as w:
        w.embed_annotations()
    assert sorted(os.listdir(tmp_path)) == ["clip.vxs", "x.json"]
    with Session.open(s.path) as r:
        assert _read_embedded(r)[0] == _ann(5)


def _read_embedded(r: Session) -> tuple[Annotations, dict]:
    from sessions.store import _read_bytes

    return (Annotations.from_json(json.loads(_read_bytes(r._h5["annotations"], "json"))),
            json.loads(_read_bytes(r._h5["review"], "state")))


def test_sidecar_of_another_session_is_ignored_and_a_damaged_one_refused(tmp_path: Path) -> None:
    with make(tmp_path, 30) as s:
        s.save_annotations(_ann(2))
    side = tmp_path / "clip.vxs.annotations.json"
    keep = side.read_bytes()
    # a new session under the same name starts without the old one's annotations
    with Session.create(tmp_path / "clip.vxs", video_info(30), np.arange(30) / 25.0, overwrite=True) as s:
        assert s.annotations() == Annotations()
    side.write_bytes(keep)  # e.g. copied back by hand: another session id, so not applied
    with Session.open(tmp_path / "clip.vxs") as r:
        assert r.annotations() == Annotations()
    side.write_text('{"annotations": ')
    with pytest.raises(SessionError, match=re.escape(str(side)) + ".*damaged.*move it away"):
        Session.open(tmp_path / "clip.vxs")


def test_old_session_without_session_id_keeps_working(tmp_path: Path) -> None:
    with make(tmp_path, 30) as s:
        s.save_annotations(_ann(1))
        s.embed_annotations()
    with h5py.File(tmp_path / "clip.vxs", "r+") as f:  # as written before the sidecar existed
        del f.attrs["session_id"]
    with Session.open(tmp_path / "clip.vxs", writable=True) as s:
        assert s.annotations() == _ann(1)
        s.save_annotations(_ann(4))
        assert (tmp_path / "clip.vxs.annotations.json").exists()
    with Session.open(tmp_path / "clip.vxs") as r:
        assert r.annotations() == _ann(4)


# ------------------------------------------------------------------------------------------- killed writer

CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from sessions import Session
    from tests.test_sessions import face_chunk, probs_for, video_info, CLASSES
    T, CH = 800, 40
    s = Session.create(sys.argv[1], video_info(T), np.arange(T) / 25.0)
    gen = 0
    while True:
        s.begin_analysis({"name": "m", "sha256": f"gen{gen}"}, CLASSES, ["lrp"], 0.1, resume=False)
        for start in range(0, T, CH):
            idx = np.arange(start, start + CH)
            if gen == 0:
                s.write_faces(start, *face_chunk(start, CH))
            s.write_explanation("lrp", start, np.broadcast_to((idx % 2000 + gen)[:, None, None], (CH, 16, 16)))
            s.write_frames("prototypes/similarities", start, np.repeat(idx[:, None] * 1.0 + gen, 10, 1))
            s.write_scores(start, idx % 3 != 0, probs_for(idx, gen), probs_for(idx, gen))
            s.set_review_state({"frame": int(start)})
            s.commit()
            if gen == 0 and start == 0:
                print("committed", flush=True)
        gen += 1
""")


def check_consistent(path: Path, chunk: int = 40) -> tuple[int, int]:
    """Every frame up to frames_done holds exactly what the writer wrote, and nothing after it."""
    with Session.open(path) as r:
        ft = r.faces()
        fd = ft.frames_done
        assert fd >= chunk and fd % chunk == 0
        want = face_chunk(0, fd)
        for got, exp in zip((ft.found, ft.box, ft.landmarks, ft.confidence, ft.n_faces), want):
            np.testing.assert_array_equal(got[:fd], exp)
        assert np.isnan(ft.box[fd:]).all()
        info = r.analysis_info()
        gen = int(info["model_sha256"][3:])
        done = info["frames_done"]
        assert done % chunk == 0 and (gen > 0 or done == fd)
        idx = np.arange(done)
        np.testing.assert_array_equal(r.read("probs")[:done], probs_for(idx, gen))
        assert np.isnan(r.read("probs")[done:]).all()
        np.testing.assert_array_equal(r.read("valid")[:done], idx % 3 != 0)
        maps = r.read("explanations/lrp/maps") if done else np.zeros((0, 16, 16))
        np.testing.assert_array_equal(maps[:done, 5, 7], (idx % 2000 + gen).astype(np.float16))
        if done:
            np.testing.assert_array_equal(r.read("prototypes/similarities")[:done, 3], idx + gen)
            assert r.review_state() == {"frame": done - chunk}
        return gen, done


@pytest.mark.parametrize("iteration", range(5))
def test_killed_writer_leaves_last_commit_intact(tmp_path: Path, iteration: int) -> None:
    path = tmp_path / "killed.vxs"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(REPO)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "committed", child.stderr.read()
        # a reader while the writer streams sees a complete committed version
        check_consistent(path)
        time.sleep(random.Random(iteration).uniform(0.05, 0.3) + 0.25 * iteration)
        assert child.poll() is None, child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    gen, done = check_consistent(path)
    # reopening for writing after the crash clears the working copy and can continue
    with Session.open(path, writable=True) as s:
        assert not (tmp_path / "killed.vxs.work").exists()
        resumed = s.begin_analysis({"name": "m", "sha256": f"gen{gen}"}, CLASSES, ["lrp"], 0.1)
        assert resumed == done
    assert sorted(os.listdir(tmp_path)) == ["killed.vxs"]


# ------------------------------------------------------------------------------------------- layering


def test_sessions_imports_only_stdlib_numpy_h5py() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "h5py", "sessions"}
    for py in (REPO / "sessions").glob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for n in names:
                assert n.split(".")[0] in allowed, f"{py.name} imports {n}"
