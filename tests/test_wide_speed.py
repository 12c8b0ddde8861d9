"""Large frames read for analysis without converting all of them to RGB (issue 11's speed item).

The analysis reader gives 1080p and larger 4:2:0 frames as AnalysisFrames (luma, and the RGB of a region
on demand). These tests hold that path to the RGB one: the same pixels in every region, the same faces and
landmarks, the same model inputs and mappings, the same scores. A close-up is still read as RGB frames.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.faces import FaceTracker, face_descriptor
from engine.video import AnalysisFrame, ReaderOptions, open_video
from tests.test_faces_scale import frames_of, wide_shot, write_video

N = 16
RGB_ONLY = ReaderOptions(analysis_min_pixels=1 << 62)


@pytest.fixture(scope="module")
def wide_1080(tmp_path_factory: pytest.TempPathFactory, hap_clip: Path) -> Path:
    frames = frames_of(hap_clip, N)
    first = FaceTracker().process(frames[0])
    assert first.found
    shot, _, _ = wide_shot(frames, (1920, 1080), 130, first.landmarks)
    return write_video(tmp_path_factory.mktemp("wide") / "wide_1080p.mp4", shot)


def test_analysis_frame_regions_are_the_rgb_frames_pixels(wide_1080: Path) -> None:
    with open_video(wide_1080) as r:
        rgb = r.frame(3)
        k, af = next(itertools.islice(r.iter_frames(analysis=True), 3, None))
        assert k == 3 and isinstance(af, AnalysisFrame)
        assert af.luma.shape == (1080, 1920) and af.shape == rgb.shape
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        for x0, y0, x1, y1 in ((0, 0, 1920, 1080), (1, 1, 2, 2), (101, 57, 333, 241), (1917, 1077, 1930, 1090),
                               (-5, -3, 40, 31), (600, 300, 601, 700)):
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, 1920), min(y1, 1080)
            assert np.array_equal(af.rgb((x0, y0, x1, y1)), rgb[cy0:cy1, cx0:cx1]), (x0, y0, x1, y1)
            assert np.array_equal(af.grey((x0, y0, x1, y1)), grey[cy0:cy1, cx0:cx1]), (x0, y0, x1, y1)
        # the detector's whole-frame passes read luma mapped to grey: close to, not equal to, RGB2GRAY
        approx = af.grey_of_luma(af.luma).astype(int) - grey
        assert np.abs(approx).mean() < 2.0 and np.abs(approx).max() <= 12
    with open_video(wide_1080, RGB_ONLY) as r:
        assert isinstance(next(r.iter_frames(analysis=True))[1], np.ndarray)


def test_close_up_is_still_read_as_rgb(hap_clip: Path) -> None:
    with open_video(hap_clip) as r:
        (_, f), = itertools.islice(r.iter_frames(analysis=True), 1)
        assert isinstance(f, np.ndarray) and np.array_equal(f, r.frame(0))


def _pairs(video: Path, n: int = N) -> list[tuple[np.ndarray, np.ndarray | AnalysisFrame]]:
    with open_video(video, RGB_ONLY) as r:
        rgb = [f for _, f in r.iter_frames(0, n)]
    with open_video(video, ReaderOptions(analysis_min_pixels=0)) as r:
        analysis = [f for _, f in r.iter_frames(0, n, analysis=True)]
    return list(zip(rgb, analysis, strict=True))


@pytest.mark.parametrize("shot", ["close-up", "1080p"])
def test_same_faces_descriptors_and_model_inputs(shot: str, hap_clip: Path, wide_1080: Path) -> None:
    """Tracker, descriptor and model-input crop on AnalysisFrames equal those on RGB frames (the close-up
    read as AnalysisFrames too here, though the analysis reads it as RGB)."""
    from engine.analyzer import FrameAnalyzer
    from engine.pipeline import prepare_frame
    from engine.resources import default_model_dir

    pairs = _pairs(hap_clip if shot == "close-up" else wide_1080)
    if not isinstance(pairs[0][1], AnalysisFrame):
        pytest.skip(f"{shot}: not a 4:2:0 video of even size, read as RGB")
    analyzer = FrameAnalyzer(default_model_dir(), device="cpu")
    base = analyzer.preprocess_config
    cfgs = [base, dataclasses.replace(base, mode="reassembled"), dataclasses.replace(base, occlude=frozenset({"eyes"})),
            dataclasses.replace(base, grayscale=False, margin=0.5)]
    on_rgb, on_analysis = FaceTracker(), FaceTracker()
    for k, (rgb, af) in enumerate(pairs):
        a, b = on_rgb.process(rgb), on_analysis.process(af)
        assert a.found and b.found, k
        assert np.array_equal(a.landmarks, b.landmarks) and np.array_equal(a.box, b.box), k
        assert abs(a.confidence - b.confidence) < 0.01, k
        for cfg in cfgs:
            pa, pb = analyzer.prepare(rgb, a, cfg), prepare_frame(analyzer, af, b, cfg)
            assert np.array_equal(pa.image, pb.image), (k, cfg)
            assert pa.mapping.to_json() == pb.mapping.to_json(), (k, cfg)
    assert np.array_equal(face_descriptor(rgb, on_rgb._tracks[0].box, a.landmarks),
                          face_descriptor(af, on_rgb._tracks[0].box, a.landmarks))


def test_wide_shot_analysis_scores_equal_the_rgb_path(tmp_path: Path, wide_1080: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import pipeline
    from engine.analyzer import FrameAnalyzer
    from engine.resources import default_model_dir
    from sessions import Session

    analyzer = FrameAnalyzer(default_model_dir(), device="cpu")
    settings = pipeline.AnalyzeSettings(device="cpu", spray=False)
    now = pipeline.analyze(wide_1080, None, tmp_path / "now.vxs", settings, analyzer=analyzer)
    monkeypatch.setattr(pipeline, "open_video", lambda path: open_video(path, RGB_ONLY))
    rgb = pipeline.analyze(wide_1080, None, tmp_path / "rgb.vxs", settings, analyzer=analyzer)
    with Session.open(now) as a, Session.open(rgb) as b:
        assert a.read("valid").all() and np.array_equal(a.read("valid"), b.read("valid"))
        assert np.allclose(a.read("probs"), b.read("probs"), rtol=1e-3, atol=1e-3)  # float16 tolerance
        assert np.array_equal(a.faces().landmarks, b.faces().landmarks)
        assert a.info()["decision"] == b.info()["decision"]
