"""`vidxai analyze` with a clip model (issue 15): sliding windows over the six CREMA-D clips with a tiny
TimeSformer trained here, maps on full-frame coordinates, temporal relevance and window geometry in the
session, exports, a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.jobs import Cancelled, CancelToken
from engine.pipeline import AnalyzeSettings, analyze
from engine.preprocess import InputMapping
from sessions import Session
from sessions.export import export_csv, export_json

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad"]
TINY = {"frames": 4, "dim": 16, "depth": 1, "heads": 2, "tokens": "patch", "patch": 8}   # 6×6 tokens on 48 px
ALL = ("rollout", "rollout-grad", "chefer", "gradcam")
NAMES = ("intrinsic", "rollout-grad", "chefer", "gradcam")    # rollout is stored as the intrinsic map
STRIDE = 2


@pytest.fixture(scope="module")
def tiny_tsf(tmp_path_factory: pytest.TempPathFactory, fer_dir: Path) -> Path:
    """A pure-ViT TimeSformer (the hybrid's CNN trunk would triple the tests' time) trained for one epoch on 12 FER2013 faces per class (one-frame clips)."""
    from engine.checkpoint import resolve_model_dir
    from engine.data import FaceCache
    from engine.train import TrainConfig, TrainData, train

    images, labels = [], []
    for c, name in enumerate(CLASSES):
        for p in sorted((fer_dir / "train" / name).glob("*.jpg"))[:12]:
            images.append(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)[..., None])
            labels.append(c)
    cache = FaceCache.from_arrays(np.stack(images), np.array(labels), CLASSES)
    out = tmp_path_factory.mktemp("tsf") / "run"
    cfg = TrainConfig(arch="timesformer", epochs=1, batch_size=24, device="cpu", timesformer=TINY, out_dir=str(out))
    return resolve_model_dir(train(TrainData(cache, cache, CLASSES), cfg))


@pytest.fixture(scope="module")
def sessions_dir(tiny_tsf: Path, crema_clips: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The six clips analysed: the happy one with every method and stride 2, the others with rollout alone,
    stride 4 and no SpRAy (to keep the test short); the sad one with the seven part conditions too."""
    out = tmp_path_factory.mktemp("sessions")
    for clip in crema_clips:
        hap = "HAP" in clip.stem
        analyze(clip, tiny_tsf, out / f"{clip.stem}.vxs",
                AnalyzeSettings(explain=ALL if hap else ("rollout",), stride=_stride(clip), spray=hap, device="cpu",
                                occlusion="SAD" in clip.stem))
    return out


def _stride(clip: Path) -> int:
    return STRIDE if "HAP" in clip.stem else 4


def test_six_clips_windowed_end_to_end(sessions_dir: Path, crema_clips: list[Path], tmp_path: Path) -> None:
    from engine.clips import window_starts

    for clip in crema_clips:
        with Session.open(sessions_dir / f"{clip.stem}.vxs") as s:      # reopens from disk
            info = s.info()
            T = s.frame_count
            assert info["complete"] and info["frames_done"] == T and info["decision"] in CLASSES
            assert bool(info["stages"]) == ("HAP" in clip.stem)
            valid = s.read("valid")
            np.testing.assert_array_equal(valid, s.faces().found)
            probs = s.read("probs")
            np.testing.assert_allclose(probs[valid].sum(1), 1.0, atol=1e-5)
            assert np.isnan(probs[~valid]).all() and np.isfinite(s.read("ewma")[valid]).all()
            names = NAMES if "HAP" in clip.stem else ("intrinsic",)
            assert s.analysis_info()["explain"] == list(names) and s.temporal_methods() == list(names)
            geo = s.clip_windows()
            stride = _stride(clip)
            assert (geo["frames"], geo["stride"], geo["fusion"]) == (4, stride, "min") and info["clip_windows"] == geo
            assert geo["methods"]["intrinsic"] == "rollout"
            n = int(valid.sum())
            starts = window_starts(n, 4, stride)
            in_windows = np.zeros(n)
            for st in starts:
                in_windows[st:st + 4] += 1
            for m in names:
                maps = s.explanation_maps(m).astype(np.float32)
                assert maps.shape[1:] == (6, 6) and np.isfinite(maps[valid]).all() and np.isnan(maps[~valid]).all()
                assert (maps[valid] >= 0).all()
                rel = s.temporal_relevance(m)
                assert np.isfinite(rel[valid]).all() and ((rel[valid] >= 0) & (rel[valid] <= 1)).all()
                # each window's shares sum to 1 (0 for an all-zero map) and a frame keeps their mean
                total = float((rel[valid] * in_windows).sum())
                assert total == pytest.approx(len(starts)) if m == "intrinsic" else total <= len(starts) + 1e-3
            spans = s.window_spans()
            rows = np.flatnonzero(valid)
            assert (spans[~valid] == -1).all() and (spans[valid, 0] <= rows).all() and (spans[valid, 1] >= rows).all()
            # the first frame of the frame's first window and the last of its last one, in video frames
            first = [rows[min(st for st in starts if st <= r < st + 4)] for r in range(n)]
            last = [rows[max(st for st in starts if st <= r < st + 4) + 3] for r in range(n)]
            np.testing.assert_array_equal(spans[valid], np.column_stack([first, last]))
        if "HAP" not in clip.stem:
            continue
        with Session.open(sessions_dir / f"{clip.stem}.vxs") as s:
            csv_path = export_csv(s, tmp_path / "hap.csv")
            summary = json.loads(export_json(s, tmp_path / "hap.json").read_text())
        with open(csv_path, newline="") as fh:
            table = list(csv.DictReader(fh))
        assert len(table) == T
        for m in NAMES:
            got = np.array([float(r[f"temporal_{m}"]) if r[f"temporal_{m}"] else np.nan for r in table])
            np.testing.assert_allclose(got, rel if m == "gradcam" else got, rtol=1e-5, equal_nan=True)
        assert table[int(rows[0])]["window_first"] == str(rows[0])
        assert summary["clip_windows"]["stride"] == STRIDE and summary["temporal_relevance"] == list(NAMES)
        assert set(summary["au_agreement"]) <= set(NAMES) and "chefer" in summary["explanations"]


def test_maps_sit_on_the_face_in_full_frame_coordinates(sessions_dir: Path, hap_clip: Path) -> None:
    """Landmark-anchored: the grid cell holding the mouth, mapped through the stored input mapping, lands on
    the stored mouth landmarks in the frame; every stored map, put on the frame, lies inside the face crop."""
    from engine.video import open_video

    with Session.open(sessions_dir / f"{hap_clip.stem}.vxs") as s, open_video(hap_clip) as r:
        hw = (r.info.height, r.info.width)
        faces, mappings = s.faces(), s.mappings()
        maps = s.explanation_maps("intrinsic").astype(np.float32)
        g = maps.shape[1]
        for k in (0, s.frame_count // 2, s.frame_count - 1):
            mp = InputMapping.from_json(mappings[k])
            mouth = faces.landmarks[k, 48:68].mean(0)
            u, v = mp.from_frame(mouth[None])[0]
            cell = mp.input_size / g
            heat = np.zeros((g, g), np.float32)
            heat[int(v // cell), int(u // cell)] = 1.0
            fmap = mp.heatmap_to_frame(heat, hw)
            ys, xs = np.nonzero(fmap > 0.5)
            x0, y0, x1, y1 = mp.pieces[0].frame_rect
            px = cell * (x1 - x0) / mp.input_size                    # one grid cell in frame pixels
            assert xs.min() - 1 <= mouth[0] <= xs.max() + 1 and ys.min() - 1 <= mouth[1] <= ys.max() + 1
            assert xs.max() - xs.min() <= px + 2 and ys.max() - ys.min() <= px + 2
            full = mp.heatmap_to_frame(maps[k], hw)
            inside = np.zeros(hw, bool)
            inside[max(0, int(y0)):int(np.ceil(y1)), max(0, int(x0)):int(np.ceil(x1))] = True
            assert full[inside].sum() > 0 and not full[~inside].any()
            lm = mp.from_frame(faces.landmarks[k])                    # the face is inside the input
            assert (lm > -1).all() and (lm < mp.input_size + 1).all()


def test_resumed_run_equals_uninterrupted(sessions_dir: Path, tiny_tsf: Path, hap_clip: Path, tmp_path: Path) -> None:
    """Cancelled after the first commits and run again (faces tracked again from the last detection), the
    windows are re-aligned on the face rows: the same scores, maps and temporal relevance."""
    settings = AnalyzeSettings(explain=("rollout", "gradcam"), stride=STRIDE, device="cpu", commit_every_s=0.0,
                               batch_size=8)
    cancel = CancelToken()

    def progress(done: int, total: int, msg: str) -> None:
        if msg == "analysing" and done >= 30:
            cancel.cancel()

    out = tmp_path / "hap.vxs"
    with pytest.raises(Cancelled):
        analyze(hap_clip, tiny_tsf, out, settings, progress=progress, cancel=cancel)
    with Session.open(out) as s:
        done = s.analysis_info()["frames_done"]
    assert 0 < done < 56
    analyze(hap_clip, tiny_tsf, out, settings)
    with Session.open(out) as a, Session.open(sessions_dir / f"{hap_clip.stem}.vxs") as b:
        np.testing.assert_allclose(a.read("probs"), b.read("probs"), atol=1e-5)
        for m in ("intrinsic", "gradcam"):
            np.testing.assert_allclose(a.explanation_maps(m).astype(np.float32),
                                       b.explanation_maps(m).astype(np.float32), atol=2e-3, equal_nan=True)
            np.testing.assert_allclose(a.temporal_relevance(m), b.temporal_relevance(m), atol=1e-5)
        np.testing.assert_array_equal(a.window_spans(), b.window_spans())


def test_part_occlusion_scores_are_those_of_the_windows_with_the_part_hidden(
        sessions_dir: Path, tiny_tsf: Path, crema_clips: list[Path]) -> None:
    """analyze --occlusion with a clip model: per frame and condition, the mean of its windows with the part
    hidden in every frame, which is what the GUI's toggles show for that frame (rescore_frame)."""
    from engine.analyzer import FrameAnalyzer
    from engine.clip_analysis import rescore_frame

    clip = next(c for c in crema_clips if "SAD" in c.stem)
    with Session.open(sessions_dir / f"{clip.stem}.vxs") as s:
        conditions, occ = s.occlusion()
        valid, f = s.read("valid"), s.faces()
        assert s.analysis_info()["occlusion"]
    assert len(conditions) == 7 and occ.shape[1:] == (7, len(CLASSES))
    assert np.isfinite(occ[valid]).all() and np.isnan(occ[~valid]).all()
    a = FrameAnalyzer(tiny_tsf)
    i = conditions.index("eyes+mouth")
    got = rescore_frame(a, clip, 20, f.found, _stored_faces(f), 4,
                        a.config(occlude=frozenset({"eyes", "mouth"})))
    np.testing.assert_allclose(got.probs, occ[20, i], atol=1e-5)


def test_adding_occlusion_to_a_finished_analysis(sessions_dir: Path, tiny_tsf: Path, crema_clips: list[Path],
                                                 tmp_path: Path) -> None:
    import shutil

    clip = next(c for c in crema_clips if "ANG" in c.stem)
    path = Path(shutil.copy(sessions_dir / f"{clip.stem}.vxs", tmp_path / "ang.vxs"))
    with Session.open(path) as s:
        before, person = s.read("probs"), s.attrs("")["person"]
        assert s.occlusion() is None
    analyze(clip, tiny_tsf, path, AnalyzeSettings(stride=4, spray=False, occlusion=True, device="cpu"))
    with Session.open(path) as s:
        np.testing.assert_allclose(s.read("probs"), before, atol=1e-6, equal_nan=True)
        assert s.occlusion()[1].shape[1] == 7 and s.attrs("")["person"] == person and s.info()["complete"]


def test_clip_settings_refuse_what_does_not_apply(tiny_tsf: Path, hap_clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clip model"):
        analyze(hap_clip, tiny_tsf, tmp_path / "a.vxs", AnalyzeSettings(explain=("lrp",)))
    with pytest.raises(ValueError, match="stride"):
        analyze(hap_clip, tiny_tsf, tmp_path / "a.vxs", AnalyzeSettings(stride=5))


def test_evaluate_occlusion_on_video_windows(tiny_tsf: Path, crema_dir: Path, tmp_path: Path) -> None:
    """`vidxai evaluate --occlusion` with a clip model on CREMA-D: MoRF/LeRF over patches × top frames per
    method (the Δ(p, f) table and its plot), seven part conditions with a confusion matrix each, per-emotion
    mean heatmaps."""
    from engine.data import DataConfig, SamplingConfig, prepare
    from engine.faithfulness import mean_delta, occlusion_evaluate, write_occlusion_report
    from engine.model_card import read_model_json

    pp = read_model_json(tiny_tsf)["spec"]["preprocess"]
    data = prepare(DataConfig(path=str(crema_dir), label_setting="crema-d", cache_root=str(tmp_path / "cache"),
                              sampling=SamplingConfig(stride=5, max_frames=8)), pp)
    methods = ("intrinsic", "chefer", "gradcam-tokens", "gxi")
    rep = occlusion_evaluate(tiny_tsf, data, split="all", limit=None, methods=methods)
    assert rep.frames == 4 and rep.n == 12                 # 8 crops per clip: two disjoint 4-frame windows each
    assert set(rep.curves) == set(methods) - {"gxi"}       # gxi is a frame-model method
    for c in rep.curves.values():
        assert c["frames"] == [0, 1, 2, 3, 4][:5] and len(c["fractions"]) == 6
        d = np.asarray(c["delta"])
        assert d.shape == (5, 6) and d[0, 0] == 0.0
        np.testing.assert_allclose(d, np.asarray(c["lerf"]) - np.asarray(c["morf"]))
        assert c["morf"][0][0] == pytest.approx(rep.accuracy)
        assert -1 <= mean_delta(c) <= 1
    assert len(rep.conditions) == 7 and rep.skipped_no_landmarks == 0
    for d in rep.conditions.values():
        assert np.asarray(d["confusion"]).sum() == rep.n
    assert set(rep.mean_maps["intrinsic"]) == set(CLASSES) and np.asarray(rep.mean_maps["chefer"]["sad"]).max() <= 1
    paths = write_occlusion_report(rep, tmp_path / "report")
    for key in ("json", "faithfulness", "mean_heatmaps", "confusion_eyes"):
        assert paths[key].stat().st_size > 0, key
    assert "Δ(p, f)" in rep.summary()


@pytest.mark.gui
@pytest.mark.timeout(300)
def test_window_shows_temporal_track_and_window_span(window, qtbot, sessions_dir: Path, hap_clip: Path,
                                                       tiny_tsf: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    """The player shows the clip model's maps like any model's; under the curves the temporal relevance of
    the method chosen in the View menu, and on the scores the windows behind the current frame's score."""
    import shutil

    from vidxai_gui.app import save_screenshot

    path = Path(shutil.copy(sessions_dir / f"{hap_clip.stem}.vxs", tmp_path / "hap.vxs"))
    with Session.open(path) as s:
        spans = s.window_spans()
        rel = {m: s.temporal_relevance(m) for m in NAMES}
    window.open_path(path)
    qtbot.waitUntil(lambda: window.data is not None and window.player.info is not None
                    and window.player.current == 0, timeout=20_000)
    tl = window.timeline
    assert sorted(window.review.explain_methods) == sorted(NAMES)
    for method in ("chefer", "intrinsic"):
        window.review.set_heat(method)
        qtbot.waitUntil(lambda m=method: tl.temporal_plot.isVisible() and _drawn(tl.temporal_curve, rel[m]),
                        timeout=10_000)
    for k in (0, 30):
        tl.seekRequested.emit(k)
        qtbot.waitUntil(lambda k=k: window.player.current == k and window.player.view.heat_item.isVisible(),
                        timeout=20_000)
        qtbot.waitUntil(lambda k=k: tl.window_region.isVisible()
                        and tuple(tl.window_region.getRegion()) == (spans[k, 0] - 0.5, spans[k, 1] + 0.5), timeout=5_000)
    # The preprocessing dock's toggles re-score the frame's windows with the part hidden in every frame.
    from engine.analyzer import FrameAnalyzer
    from engine.clip_analysis import rescore_frame

    window.model_dir = tiny_tsf
    panel = window.preprocess
    panel.part_boxes["mouth"].setChecked(True)
    qtbot.waitUntil(lambda: panel.rescored_frame == 30 and "mean of its windows" in panel.status.text()
                    and not window.rescoring, timeout=60_000)
    a = FrameAnalyzer(tiny_tsf)
    with Session.open(path) as s:
        f = s.faces()
    expected = rescore_frame(a, hap_clip, 30, f.found, _stored_faces(f),
                             STRIDE, a.config(occlude=frozenset({"mouth"})))
    shown = [float(panel.scores.item(i, 1).text()) for i in range(len(CLASSES))]
    np.testing.assert_allclose(shown, expected.probs, atol=5e-4)
    save_screenshot(window, artifacts_dir / "gui_timesformer_1280x800.png")


def _drawn(curve, expected: np.ndarray) -> bool:
    y = curve.getData()[1]
    return y is not None and len(y) == len(expected) and np.allclose(y, expected, equal_nan=True)


def test_rescoring_a_frame_reads_its_windows(sessions_dir: Path, tiny_tsf: Path, hap_clip: Path) -> None:
    """The GUI's re-score of a clip model's frame: with the analysis's own input, the stored score of that
    frame (the mean of its windows); with the mouth hidden, another one."""
    from engine.analyzer import FrameAnalyzer
    from engine.clip_analysis import rescore_frame

    a = FrameAnalyzer(tiny_tsf)
    with Session.open(sessions_dir / f"{hap_clip.stem}.vxs") as s:
        f, probs = s.faces(), s.read("probs")
    face_of = _stored_faces(f)
    for k in (0, len(probs) - 1, 30):
        got = rescore_frame(a, hap_clip, k, f.found, face_of, STRIDE)
        np.testing.assert_allclose(got.probs, probs[k], atol=1e-5)
    hidden = rescore_frame(a, hap_clip, 30, f.found, face_of, STRIDE, a.config(occlude=frozenset({"mouth"})))
    assert not np.array_equal(hidden.probs, got.probs) and hidden.input_image.shape == got.input_image.shape


def _stored_faces(f):
    """k → the session's face of frame k (FaceTrack ``f``), as rescore_frame reads faces."""
    from engine.faces import FaceResult

    return lambda j: FaceResult(True, f.box[j], f.landmarks[j], float(f.confidence[j]), 1)
