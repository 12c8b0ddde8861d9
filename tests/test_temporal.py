"""Explanations over time (issue 14): face-aligned map smoothing, stages and EWMA in seconds on real clips."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from engine.temporal import flicker, map_landmarks, similarity_transform, smooth_maps

REPO = Path(__file__).resolve().parents[1]
CNN = REPO / "resources" / "models" / "cnn"


def _face_points(n: int = 68, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(10, 38, n), rng.uniform(8, 40, n)])


def _blob(cy: float, cx: float, size: int = 48, sigma: float = 3.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_flicker_definition() -> None:
    a, b = np.zeros((4, 4)), np.zeros((4, 4))
    a[0, 0], b[1, 1] = 1.0, 1.0
    maps = np.stack([a, a, b, np.full((4, 4), np.nan), b])
    # Pairs with a map on both sides: (0,1) cos 1, (1,2) cos 0; frame 3 has no face, so (2,3), (3,4) skipped.
    assert flicker(maps) == pytest.approx(0.5)
    assert flicker(maps, valid=np.array([True, True, False, True, True])) == pytest.approx(0.0)
    assert np.isnan(flicker(maps[:1]))


def test_similarity_transform_recovers_rotation_scale_shift() -> None:
    p = _face_points()
    th, s, t = 0.3, 1.2, np.array([3.0, -2.0])
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    q = s * p @ r.T + t
    m = similarity_transform(p, q)
    np.testing.assert_allclose(m[:, :2], s * r, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    assert similarity_transform(p[:1], q[:1]) is None


def test_static_face_noise_flickers_less_smoothed() -> None:
    rng = np.random.default_rng(0)
    T = 60
    truth = _blob(20, 24)
    maps = np.stack([truth + 0.5 * rng.random(truth.shape).astype(np.float32) for _ in range(T)])
    maps[30] = np.nan  # a frame without a face stays without a map and does not break the smoothing
    lm = np.repeat(_face_points()[None], T, axis=0)
    before = maps.copy()
    out = smooth_maps(maps, lm, sigma_frames=3.0)
    assert np.array_equal(maps, before, equal_nan=True)  # the input is never modified
    assert np.isnan(out[30]).all() and np.isfinite(np.delete(out, 30, axis=0)).all()
    raw_f, smooth_f = flicker(maps), flicker(out)
    assert smooth_f < 0.25 * raw_f
    assert np.array_equal(smooth_maps(maps, lm, 0.0), maps, equal_nan=True)  # σ = 0: as stored


def test_moving_head_is_not_smeared_when_aligned() -> None:
    # The face (and the evidence on it) moves 1.5 map cells per frame: averaging without alignment smears
    # the blob, warping each neighbour into the frame's face geometry keeps it where the face is.
    T = 30
    shift = 1.5 * np.arange(T)
    base = _face_points()
    lm = np.stack([base + [dx, 0] for dx in shift - 10])
    truth = np.stack([_blob(24, 14 + dx) for dx in shift - 10 + 10])
    rng = np.random.default_rng(1)
    maps = truth + 0.2 * rng.random(truth.shape).astype(np.float32)

    def fidelity(out: np.ndarray) -> float:
        a, b = out[5:-5].reshape(T - 10, -1), truth[5:-5].reshape(T - 10, -1)
        return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))

    aligned = smooth_maps(maps, lm, 3.0)
    smeared = smooth_maps(maps, lm, 3.0, align=False)
    assert fidelity(aligned) > fidelity(maps)  # noise averaged out
    assert fidelity(aligned) > fidelity(smeared) + 0.05


def test_map_landmarks_through_the_input_mapping() -> None:
    # A 100×100 face crop at (50, 20) in the frame, resized to a 48-pixel input, explained by a 6×6 map.
    mapping = {"input_size": 48, "pieces": [{"name": "face", "input_rect": [0, 0, 48, 48],
                                              "frame_rect": [50, 20, 150, 120]}]}
    from engine.preprocess import InputMapping

    lm = np.full((2, 68, 2), np.nan)
    lm[0] = np.column_stack([np.linspace(60, 140, 68), np.linspace(30, 110, 68)])
    out = map_landmarks(lm, [mapping, mapping], (6, 6))
    uv = InputMapping.from_json(mapping).from_frame(lm[0])
    np.testing.assert_allclose(out[0], (uv + 0.5) * (6 / 48) - 0.5)
    assert np.isnan(out[1]).all()  # no landmarks in that frame


# --- on a real clip ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysed(hap_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.pipeline import AnalyzeSettings, analyze

    out = tmp_path_factory.mktemp("temporal") / "hap.vxs"
    analyze(hap_clip, CNN, out, AnalyzeSettings(explain=("gradcam",), device="cpu"))
    return out


def test_analysis_records_temporal_settings_and_merged_stages(analysed: Path) -> None:
    from engine.aggregate import DEFAULT_TAU_S, alpha_from_tau
    from engine.temporal import DEFAULT_MIN_STAGE_S, DEFAULT_TEMPORAL_WEIGHT
    from sessions import Session
    from sessions.store import runs_of

    with Session.open(analysed) as s:
        a = s.attrs("")
        assert a["ewma_tau_s"] == DEFAULT_TAU_S and a["ewma_fps"] == pytest.approx(s.fps)
        assert a["alpha"] == pytest.approx(alpha_from_tau(DEFAULT_TAU_S, s.fps))
        st = s.attrs("stages")
        assert st["temporal_weight"] == DEFAULT_TEMPORAL_WEIGHT and st["min_stage_s"] == DEFAULT_MIN_STAGE_S
        raw = runs_of(list(s.read("stages/descriptor")))
        merged = runs_of(list(s.read("stages/merged")))
        T = s.frame_count
        assert st["n_stages"] == len(raw) and st["n_merged_stages"] == len(merged) <= len(raw)
        assert s.display_stages() == merged and s.temporal_prototype() == raw
        assert s.analysis_info()["ewma_tau_s"] == DEFAULT_TAU_S
        assert 1 - len(merged) / T >= 0.8  # the acceptance figure on a shared clip, with the defaults
        assert 0.0 < st["merged_frame_stage_cosine"] <= st["frame_stage_cosine"] + 1e-9 <= 1.0 + 1e-9
        ts = np.append(s.timestamps, s.timestamps[-1] + 1 / s.fps)
        if len(merged) > 1:
            assert all(ts[x.end] - ts[x.start] >= DEFAULT_MIN_STAGE_S - 1e-9 for x in merged)
        # SpRAy's own per-frame descriptors are kept: every merged stage is a union of whole raw stages.
        starts = {x.start for x in raw}
        assert all(x.start in starts for x in merged)


def test_smoothing_never_alters_stored_maps(analysed: Path) -> None:
    from engine.temporal import session_smoothed_maps
    from sessions import Session

    def digest() -> tuple[str, str]:
        with Session.open(analysed) as s:
            maps = s.explanation_maps("gradcam")
        return hashlib.sha256(maps.tobytes()).hexdigest(), hashlib.sha256(analysed.read_bytes()).hexdigest()

    before = digest()
    with Session.open(analysed) as s:
        stored = s.explanation_maps("gradcam", slice(10, 30)).astype(np.float32)
        off = session_smoothed_maps(s, "gradcam", slice(10, 30), sigma_s=0.0)
        on = session_smoothed_maps(s, "gradcam", slice(10, 30), sigma_s=0.1)
        valid = s.read("valid", slice(10, 30))
    assert digest() == before  # option on or off, the file and its maps are byte-identical
    assert np.array_equal(off, stored, equal_nan=True)
    assert not np.allclose(on[valid], stored[valid])
    assert flicker(on, valid) < flicker(stored, valid)


# --- EWMA in seconds: the same clip at twice the frame rate -----------------------------------------


def _write_lossless(frames: list[np.ndarray], rate: Fraction, repeat: int, path: Path) -> Path:
    import av

    with av.open(str(path), "w") as dst:
        st = dst.add_stream("ffv1", rate=rate)
        st.width, st.height, st.pix_fmt = frames[0].shape[1], frames[0].shape[0], "bgr0"
        for img in frames:
            for _ in range(repeat):
                for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    dst.mux(pkt)
        for pkt in st.encode():
            dst.mux(pkt)
    return path


def _openface_csv(landmarks: np.ndarray, found: np.ndarray, fps: float, path: Path) -> Path:
    cols = ["frame", "face_id", "timestamp", "confidence", "success"]
    cols += [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    lines = [", ".join(cols)]
    for k, (lm, ok) in enumerate(zip(landmarks, found, strict=True)):
        xy = lm if ok else np.zeros((68, 2))
        cells = [str(k + 1), "0", f"{k / fps:.3f}", "0.98" if ok else "0", "1" if ok else "0"]
        cells += [f"{v:.4f}" for v in xy[:, 0]] + [f"{v:.4f}" for v in xy[:, 1]]
        lines.append(", ".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_twice_the_frame_rate_gives_the_same_curve_and_decision(hap_clip: Path, tmp_path: Path) -> None:
    """The HAP clip and the same clip at 2× fps (every frame twice), both written losslessly with PyAV and
    with the same faces (landmarks tracked once, given to both as OpenFace CSVs): same decision, and the
    EWMA at the end of each original frame (2× frame 2k+1 ↔ 1× frame k) equal within 1e-6."""
    import av

    from engine.pipeline import AnalyzeSettings, analyze, ingest
    from sessions import Session

    with av.open(str(hap_clip)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    rate = Fraction(30000, 1001)
    one = _write_lossless(frames, rate, 1, tmp_path / "x1.avi")
    two = _write_lossless(frames, 2 * rate, 2, tmp_path / "x2.avi")
    ingest(one, tmp_path / "tracked.vxs", detect_every=1)
    with Session.open(tmp_path / "tracked.vxs") as s:
        faces = s.faces()
        assert faces.found.mean() > 0.9
        lm, found = faces.landmarks.astype(np.float64), faces.found
    csv1 = _openface_csv(lm, found, float(rate), tmp_path / "x1.csv")
    csv2 = _openface_csv(np.repeat(lm, 2, axis=0), np.repeat(found, 2), float(2 * rate), tmp_path / "x2.csv")
    results = []
    for video, csv in ((one, csv1), (two, csv2)):
        out = tmp_path / f"{video.stem}.vxs"
        ingest(video, out, landmarks=csv)
        analyze(video, CNN, out, AnalyzeSettings(spray=False, device="cpu", ewma_tau_s=0.3, batch_size=16))
        with Session.open(out) as s:
            results.append((s.fps, s.read("valid"), s.read("probs"), s.read("ewma"), s.analysis_info()["decision"],
                            s.attrs("")))
    (fps1, v1, p1, e1, d1, a1), (fps2, v2, p2, e2, d2, a2) = results
    assert fps2 == pytest.approx(2 * fps1) and len(v2) == 2 * len(v1)
    assert np.array_equal(v2[0::2], v1) and np.array_equal(v2[1::2], v1)
    np.testing.assert_allclose(p2[0::2], p1, atol=1e-6, equal_nan=True)  # same pixels, same faces → same scores
    assert a1["ewma_tau_s"] == a2["ewma_tau_s"] == 0.3 and a2["alpha"] < a1["alpha"]
    np.testing.assert_allclose(e2[1::2], e1, atol=1e-6, equal_nan=True)
    assert d1 == d2


def test_ten_minutes_of_a_looped_clip_give_at_most_one_stage_per_second(analysed: Path) -> None:
    """The HAP clip's per-frame results repeated to 10 minutes (what a looped video gives, without the
    20-minute analysis; bench/temporal_quality.py --long measures the real one): with the defaults, SpRAy's
    stages merged to the minimum duration number at most one per second; without the minimum they do not."""
    from engine.explain.spray import merge_short_stages, spray_streamed, stage_durations, stage_map_sums
    from engine.pipeline import _pooled_map_reader
    from engine.temporal import DEFAULT_MIN_STAGE_S, DEFAULT_TEMPORAL_WEIGHT
    from sessions import Session

    with Session.open(analysed) as s:
        n, fps = s.frame_count, s.fps
        pooled = _pooled_map_reader(s, "gradcam")(0, n)
        probs = s.read("probs")
        probs[~s.read("valid")] = np.nan
        classes = s.analysis_info()["classes"]
    reps = int(np.ceil(600 * fps / n))
    T = reps * n
    read = lambda a, b: pooled[np.arange(a, b) % n]
    res = spray_streamed(read, np.tile(probs, (reps, 1)), classes, temporal_weight=DEFAULT_TEMPORAL_WEIGHT)
    raw = res.prototypes.stages
    sums, counts = stage_map_sums(read, raw)
    merged = merge_short_stages(raw, sums, counts, stage_durations(raw, np.arange(T) / fps, fps),
                                DEFAULT_MIN_STAGE_S)
    seconds = T / fps
    assert len(raw) / seconds > 1.0
    assert len(merged) / seconds <= 1.0


def test_stage_details_name_tooltip_mean_map_and_prototypes(tmp_path: Path) -> None:
    from engine.temporal import stage_details
    from sessions import Session

    T, C, K = 40, 3, 6
    video = {"path": "/data/clip.mp4", "sha256": "cd" * 32, "fps": 25.0, "frame_count": T, "width": 64,
             "height": 48, "duration": T / 25.0, "rotation": 0, "codec": "h264"}
    s = Session.create(tmp_path / "s.vxs", video, np.arange(T) / 25.0)
    s.begin_analysis({"name": "pp", "sha256": "ab" * 32}, ["angry", "happy", "sad"], ["intrinsic"], 0.2)
    valid = np.ones(T, bool)
    valid[12] = False
    probs = np.tile([0.1, 0.8, 0.1], (T, 1)).astype(np.float32)
    probs[15:18] = [0.7, 0.2, 0.1]  # three of the stage's frames predict angry
    probs[~valid] = np.nan
    s.write_scores(0, valid, np.log(probs), probs)
    maps = np.zeros((T, 4, 4), np.float16)
    maps[10:20, 1, 2] = 1.0
    maps[12] = np.nan
    s.write_explanation("intrinsic", 0, maps)
    sims = np.zeros((T, K), np.float32)
    sims[:, 4] = 2.0  # prototype 4 is the most similar, and it belongs to happy
    sims[:, 1] = 3.0  # prototype 1 is more similar but belongs to angry
    s.write_intrinsic("similarities", 0, sims)
    W = np.full((C, K), -0.5)
    W[0, :2], W[1, 2:4], W[1, 4], W[2, 5] = 1.0, 1.0, 1.0, 1.0
    s.set_head(W, None, "protopnet")
    s.commit()
    d = stage_details(s, 10, 20, ("HAPPY_A",))
    s.close()
    assert d["name"] == "HAPPY_A" and d["t0"] == pytest.approx(0.4) and d["t1"] == pytest.approx(0.8)
    assert d["classes"][0][0] == "happy" and d["classes"][0][1] == pytest.approx(6 / 9)
    assert d["classes"][1] == ("angry", pytest.approx(3 / 9))
    assert "HAPPY_A: frames 10–19" in d["tooltip"] and "happy 67 %" in d["tooltip"] and "face in 9 of 10" in d["tooltip"]
    expected = np.zeros((4, 4), np.float32)
    expected[1, 2] = 1.0
    np.testing.assert_array_equal(d["mean_map"], expected)
    assert d["prototypes"][0] == (4, pytest.approx(2.0))  # W_happy,4 · s_4; prototype 1 counts −0.5 · 3
    assert len(d["prototypes"]) == 5 and 1 not in [j for j, _ in d["prototypes"]]  # −1.5: the least of six


def test_stage_details_on_a_real_session(analysed: Path) -> None:
    from engine.temporal import stage_details
    from sessions import Session

    with Session.open(analysed) as s:
        st = s.display_stages()
        details = [stage_details(s, x.start, x.end, x.descriptor, "gradcam") for x in st]
        hw = s.explanation_maps("gradcam", slice(0, 1)).shape[1:]
    assert all(d["name"] and d["tooltip"] for d in details)
    assert all(d["mean_map"] is not None and d["mean_map"].shape == hw for d in details)
    assert all(d["prototypes"] == [] for d in details)  # a CNN has no prototypes


def test_exports_and_info_use_the_strips_stages(analysed: Path, tmp_path: Path) -> None:
    """What a reviewer saw in the strip is what the CSV, the JSON summary, `vidxai info` and the corpus
    row say (the merged stages); SpRAy's own stay in the summary and info as `spray_stages`."""
    import csv
    import dataclasses
    import json

    from sessions import Session
    from sessions.export import export_csv, export_json
    from sessions.summary import session_row

    with Session.open(analysed) as s:
        shown, raw = s.display_stages(), s.temporal_prototype()
        assert len(shown) < len(raw), "the shared clip fragments: merging must have changed the stages"
        info = s.info()
        assert info["stages"] == [dataclasses.asdict(x) for x in shown]
        assert info["spray_stages"] == [dataclasses.asdict(x) for x in raw]
        summary = json.loads(export_json(s, tmp_path / "s.json").read_text(encoding="utf-8"))
        assert summary["stages"] == info["stages"] and summary["spray_stages"] == info["spray_stages"]
        assert session_row(s)["stages"] == len(shown)
        with open(export_csv(s, tmp_path / "s.csv"), newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        per_frame = [""] * s.frame_count
        for st in shown:
            per_frame[st.start:st.end] = [st.descriptor] * (st.end - st.start)
        assert [r["stage"] for r in rows] == per_frame
