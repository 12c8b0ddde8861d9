"""Hour-long sessions and wide shots: vectorised smoothing, display-only downsampling, region heatmaps,
O(visible) timeline tracks, a long session in the real window, and the face view."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtTest import QTest

from engine.aggregate import ewma
from sessions import Session
from sessions.store import Annotations, Segment, Tier
from vidxai_gui.player import face_crops
from vidxai_gui.timeline_items import LabelPool, frame_strip

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench/long_video.py builds the wide shot and places a session in it


def _loop_ewma(y: np.ndarray, alpha: float, valid: np.ndarray) -> np.ndarray:
    """METHODS §9 literally: ỹ_1 = y_1, ỹ_t = α y_t + (1 − α) ỹ_{t−1}; frames without a face carry the state."""
    out = np.full(y.shape, np.nan)
    state = None
    for t in range(len(y)):
        if valid[t] and np.isfinite(y[t]).all():
            state = y[t].copy() if state is None else alpha * y[t] + (1 - alpha) * state
        if state is not None:
            out[t] = state
    return out


def test_vectorised_ewma_equals_the_recurrence_over_an_hour() -> None:
    rng = np.random.default_rng(3)
    T = 108_000  # an hour at 30 fps
    y = rng.dirichlet(np.ones(7), size=T)
    valid = rng.random(T) > 0.1
    valid[:40] = False  # no face at the start: NaN until the first face
    y[rng.integers(0, T, 50)] = np.nan  # unscored rows carry the state too
    for alpha in (0.05, 0.3, 1.0):
        fast = ewma(y, alpha, valid)
        slow = _loop_ewma(y, alpha, valid)
        np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert np.isnan(fast[:40]).all() and np.isfinite(fast[40:]).all()


def test_frame_strip_colours_exactly_the_segments_frames() -> None:
    rng = np.random.default_rng(0)
    T = 5000
    cuts = np.sort(rng.choice(np.arange(1, T), 300, replace=False))
    starts, ends = np.concatenate(([0], cuts)), np.concatenate((cuts, [T]))
    keep = rng.random(len(starts)) > 0.3  # gaps: frames of no segment stay transparent
    starts, ends = starts[keep], ends[keep]
    colours = rng.integers(1, 256, (len(starts), 4)).astype(np.uint8)
    img = frame_strip(T, starts, ends, colours)
    expected = np.zeros((T, 4), np.uint8)
    for s, e, c in zip(starts, ends, colours, strict=True):
        expected[s:e] = c
    np.testing.assert_array_equal(img[0], expected)


def test_region_heatmap_equals_the_frame_sized_map() -> None:
    """The window maps a relevance map onto the face region only; it must equal the frame-sized map there
    and the frame-sized map must be 0 everywhere else."""
    from engine.overlay import local_mapping
    from engine.preprocess import InputMapping, MappingPiece

    rng = np.random.default_rng(1)
    heat = rng.random((48, 48)).astype(np.float32)
    hw = (1080, 1920)
    face = InputMapping(48, [MappingPiece("face", (0, 0, 48, 48), (700.3, 220.8, 1011.6, 532.1))])
    edge = InputMapping(48, [MappingPiece("face", (0, 0, 48, 48), (-40.5, 900.0, 260.0, 1200.0))])  # past the frame
    grid = InputMapping(48, [MappingPiece(n, (u, v, u + 24, v + 24), (600 + 3 * u, 300 + 3 * v, 700 + 3 * u, 400 + 3 * v))
                             for n, u, v in (("a", 0, 0), ("b", 24, 0), ("c", 0, 24), ("d", 24, 24))])
    for m in (face, edge, grid):
        full = m.heatmap_to_frame(heat, hw)
        local, (x0, y0), (h, w) = local_mapping(m, hw)
        part = local.heatmap_to_frame(heat, (h, w))
        assert 0 <= x0 and 0 <= y0 and x0 + w <= hw[1] and y0 + h <= hw[0]
        np.testing.assert_array_equal(part, full[y0:y0 + h, x0:x0 + w])
        outside = full.copy()
        outside[y0:y0 + h, x0:x0 + w] = 0
        assert not outside.any()
        assert h * w < 0.1 * hw[0] * hw[1]  # the point: a face-sized array, not a frame-sized one


def test_face_crops_follow_the_face_smoothly_inside_the_frame() -> None:
    rng = np.random.default_rng(2)
    T, fps, hw = 600, 30.0, (1080, 1920)
    t = np.arange(T)
    cx = 960 + 500 * np.sin(t / 120)  # the person walks slowly
    box = np.stack([cx - 80, np.full(T, 400.0), cx + 80, np.full(T, 560.0)], 1)
    jittered = box + rng.normal(0, 6, box.shape)  # detector jitter
    found = np.ones(T, bool)
    found[200:260] = False  # looks away for 2 s
    jittered[~found] = np.nan
    crops = face_crops(jittered, found, hw, fps)
    assert crops.shape == (T, 4) and crops.dtype.kind == "i"
    assert (crops[:, 0] >= 0).all() and (crops[:, 2] <= hw[1]).all() and (crops[:, 1] >= 0).all()
    assert (crops[:, 3] <= hw[0]).all() and (crops[:, 2] > crops[:, 0]).all() and (crops[:, 3] > crops[:, 1]).all()
    centre = (crops[:, 0] + crops[:, 2]) / 2
    # Steadier than the detector: the crop's jerk (second difference) is a fraction of the box's.
    raw_centre = (jittered[:, 0] + jittered[:, 2]) / 2
    ok = found[2:] & found[1:-1] & found[:-2]
    assert np.abs(np.diff(centre, 2))[ok].mean() < 0.25 * np.abs(np.diff(raw_centre, 2))[ok].mean()
    # ...and still on the face, including across the 2 s without a face (filled between the two sides).
    assert np.abs(centre - cx).max() < 40
    # The face is inside its crop wherever it was found.
    inside = (crops[:, 0] <= box[:, 0]) & (crops[:, 2] >= box[:, 2]) & (crops[:, 1] <= box[:, 1]) & \
        (crops[:, 3] >= box[:, 3])
    assert inside[found].mean() > 0.99
    # A still face gives a still crop; no face at all gives no crop.
    still = face_crops(np.tile([900.0, 400, 1060, 560], (50, 1)), np.ones(50, bool), hw, fps)
    assert (still == still[0]).all()
    assert (face_crops(np.full((10, 4), np.nan), np.zeros(10, bool), hw, fps) == -1).all()


def test_downsampled_curves_keep_the_stored_scores(qtbot) -> None:
    """Drawing an hour draws ~2 points per screen pixel (peak: min and max), but the data are the scores."""
    from vidxai_gui.timeline import Timeline

    tl = Timeline()
    qtbot.addWidget(tl)
    tl.resize(1200, 400)
    tl.show()
    qtbot.waitExposed(tl)
    rng = np.random.default_rng(4)
    T = 108_000
    probs = rng.dirichlet(np.ones(7), size=T)
    probs[5000, 2] = 0.999  # one spike, one frame wide
    valid = np.ones(T, bool)
    tl.set_video(T, 30.0)
    tl.set_scores([f"c{i}" for i in range(7)], probs, valid)
    tl.view.viewport().repaint()
    curve = tl.raw_curves[2]
    _, y = curve.getOriginalDataset()
    np.testing.assert_array_equal(y, probs[:, 2])  # stored values, untouched
    np.testing.assert_array_equal(tl.probs, probs)
    shown_x, shown_y = curve.getData()
    assert len(shown_x) < 0.05 * T  # downsampled for display
    assert shown_y.max() == pytest.approx(0.999)  # the spike survives (peak mode)
    smoothed = tl.smoothed.copy()
    tl.tau_slider.setValue(1)  # τ = 0.05 s
    np.testing.assert_allclose(tl.smoothed, ewma(probs, tl.alpha, valid))
    tl.scores_plot.setXRange(4990, 5010, padding=0)
    tl.view.viewport().repaint()
    zx, zy = curve.getData()
    assert zx.min() <= 4990 and zx.max() >= 5010 and len(zx) < 200  # clipped to the view, every frame
    np.testing.assert_array_equal(zy, probs[zx.astype(int), 2])
    assert not np.array_equal(smoothed, tl.smoothed)


def _tiny_video(path: Path, frames: int, gop: int = 30) -> Path:
    """A 160×120 H.264 video of `frames` frames (a segment of 30 remuxed over and over: fast to make)."""
    seg = path.with_suffix(".seg.mp4")
    with av.open(str(seg), "w") as dst:
        st = dst.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
        st.codec_context.gop_size = gop
        st.codec_context.options = {"preset": "ultrafast", "bf": "0"}
        for i in range(gop):
            img = np.full((120, 160, 3), 40, np.uint8)
            img[:, (i * 5) % 160] = 220
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                dst.mux(pkt)
        for pkt in st.encode():
            dst.mux(pkt)
    from bench.long_video import loop_video

    out, n = loop_video(seg, path, frames / 30 / 60)
    assert n == frames
    return out


def test_a_100k_frame_session_opens_in_the_real_window(window, qtbot, tmp_path: Path) -> None:
    """Stages by the thousand, scores and faces for 100k frames: the window shows all of it correctly with
    a bounded number of graphics items (labels only for what fits on screen). Time: bench/long_video.py."""
    from engine.video import open_video
    from vidxai_gui.main_window import MainWindow

    T = 30 * 3334  # 100,020 frames
    video = _tiny_video(tmp_path / "long.mp4", T)
    with open_video(video) as r:
        info, ts = r.info, np.asarray(r.timestamps)
    assert len(ts) == T
    rng = np.random.default_rng(5)
    classes = ["angry", "happy", "neutral", "sad"]
    probs = rng.dirichlet(np.ones(4), size=T).astype(np.float32)
    found = rng.random(T) > 0.02
    valid = found.copy()
    probs[~valid] = np.nan
    cuts = np.sort(rng.choice(np.arange(1, T), 4000, replace=False))
    bounds = np.concatenate(([0], cuts, [T]))
    names = np.array(["HAPPY_A", "HAPPY_B", "SAD_A", "NONE"])[np.cumsum(rng.integers(1, 4, len(bounds) - 1)) % 4]
    descriptors = np.repeat(names, np.diff(bounds))
    path = tmp_path / "long.vxs"
    with Session.create(path, {**dataclasses.asdict(info), "path": str(video)}, ts) as s:
        box = np.tile(np.array([50, 30, 110, 90], np.float32), (T, 1))
        lm = np.tile(rng.uniform(50, 110, (68, 2)).astype(np.float32), (T, 1, 1))
        box[~found], lm[~found] = np.nan, np.nan
        s.write_faces(0, found, box, lm, found.astype(np.float32), found.astype(np.uint8), found)
        s.begin_analysis({"name": "synthetic", "sha256": "0"}, classes, ["intrinsic"], 0.3)
        s.write_scores(0, valid, probs, probs)
        stages = s.write_temporal_prototype(list(descriptors), "intrinsic")
        s.finish_analysis(ewma(probs, 0.3, valid), 0.3, "happy")
        s.save_annotations(Annotations([Tier("reviewer")], [Segment("reviewer", 10 * i, 10 * i + 5, f"a{i}")
                                                             for i in range(500)]))
    assert isinstance(window, MainWindow)
    window.open_path(path)
    qtbot.waitUntil(lambda: window.data is not None and window.player.current >= 0
                    and len(window.timeline.probs) == T, timeout=120_000)
    tl = window.timeline
    np.testing.assert_array_equal(tl.probs, probs.astype(np.float64))
    np.testing.assert_array_equal(tl.no_face, ~found)
    assert len(tl.stages) == len(stages) == len(bounds) - 1
    assert [(st.start, st.end, st.label) for st in tl.stages[:3]] == [(st.start, st.end, st.descriptor)
                                                                       for st in stages[:3]]
    # The strip holds every stage's colour per frame; items on screen stay bounded whatever T is.
    strip = tl.stage_strip.image
    assert strip.shape[:2] == (1, T) and (strip[0, :, 3] > 0).all()
    assert len(tl.stage_labels.items) <= LabelPool.MAX and len(tl.tier_labels.items) <= LabelPool.MAX
    assert not tl.stage_bars.isVisible()  # 4000 stages do not fit on screen as bars
    # Zoomed in: bars and labels for the stages on screen, and a click lands on the right stage.
    st = tl.stages[2000]
    tl.scores_plot.setXRange(st.start - 20, st.start + 200, padding=0)
    qtbot.waitUntil(lambda: tl.stage_bars.isVisible(), timeout=5_000)
    assert tl.stage_at(st.start + 0.2) == st
    (x0, x1) = tl.stage_plot.vb.viewRange()[0]
    shown = [tl.stages[i] for i in tl.stage_labels.shown]
    assert shown and all(s.end - 0.5 > x0 and s.start - 0.5 < x1 for s in shown)  # on screen
    assert [t.toPlainText() for t in tl.stage_texts] == [s.label for s in shown]
    assert len(tl.tiers["reviewer"]) == 500
    window.timeline.seekRequested.emit(T - 1)
    qtbot.waitUntil(lambda: window.player.current == T - 1, timeout=30_000)


# --------------------------------------------------------------------------------------------- the face view


@pytest.fixture(scope="module")
def wide_session(tmp_path_factory, crema_dir: Path) -> tuple[Path, Path, tuple[float, int, int]]:
    """A 1920×1080 wide shot of the CREMA-D happy clip (×2, off-centre) and a session of it: the close-up is
    analysed for real with the default model and its faces, mappings, scores and maps are placed in the
    wide frame (today's detector misses a face this small in 1080p; another part of the work fixes that)."""
    from bench.long_video import make_segment, placement, tile_session
    from engine.pipeline import AnalyzeSettings, analyze
    from engine.resources import default_model_dir

    d = tmp_path_factory.mktemp("wide")
    clip = crema_dir / "1001_DFA_HAP_XX.flv"
    close = make_segment(d / "close.mp4", (480, 360), clips=[clip])
    wide = make_segment(d / "wide.mp4", (1920, 1080), clips=[clip])
    analyze(close, default_model_dir(), d / "close.vxs", AnalyzeSettings(spray=False))
    where = placement((1920, 1080))
    return tile_session(d / "close.vxs", wide, d / "wide.vxs", *where), wide, where


def test_face_view_crops_frame_k_with_aligned_overlays(window, qtbot, wide_session, artifacts_dir: Path) -> None:
    from engine.video import open_video
    from vidxai_gui.app import save_screenshot

    session, video, _ = wide_session
    with Session.open(session) as s:
        faces = s.faces()
    k = int(np.flatnonzero(faces.found)[len(np.flatnonzero(faces.found)) // 2])
    window.open_path(session)
    p = window.player
    qtbot.waitUntil(lambda: window.data is not None and p.current >= 0, timeout=30_000)
    p.seek(k)
    qtbot.waitUntil(lambda: p.current == k and p.view.heat_item.isVisible(), timeout=30_000)
    with open_video(video) as r:
        frames = {j: r.frame(j) for j in (k, k + 1, k + 2)}
    # The Input dock's model input of a big video: its full-size frame is fetched on a worker (stepping and
    # seeking never wait for that decode), then shown; it equals the session's preprocessing of frame k.
    from engine.faces import FaceResult
    from engine.preprocess import PreprocessConfig, preprocess

    assert p.full_image_at_hand() is None  # shown at the view's size: a full-size decode would be needed
    window.docks["preprocess"].show()
    window.docks["preprocess"].raise_()
    view = window.preprocess.input_view
    qtbot.waitUntil(lambda: view.pixmap() is not None and not view.pixmap().isNull(), timeout=20_000)
    image, pending = window.frame_docks.model_input(k)
    cfg = PreprocessConfig.from_json(window.data.analysis["preprocess"])
    face = FaceResult(True, faces.box[k], faces.landmarks[k], float(faces.confidence[k]), 1)
    assert not pending
    np.testing.assert_array_equal(image, preprocess(frames[k], face, cfg).image)
    # The full view: the whole frame k, decoded at the size the view shows it (a 1080p picture in a smaller
    # view), stretched over the full frame's rectangle; the window still gets the full-size frame to work on.
    size = p.wanted_display_size()
    assert size is not None and size[0] < 1920 and abs(size[0] / size[1] - 16 / 9) < 0.02
    with open_video(video) as r:
        r.set_output_size(size)
        np.testing.assert_array_equal(p.view.image_item.image, r.frame(k))
    rect = p.view.image_item.mapRectToParent(p.view.image_item.boundingRect())
    assert (rect.left(), rect.top(), rect.width(), rect.height()) == (0, 0, 1920, 1080)
    np.testing.assert_array_equal(p.current_image, frames[k])
    save_screenshot(window, artifacts_dir / "face_view_window_full.png")
    save_screenshot(p.view, artifacts_dir / "face_view_full.png")

    window.activateWindow()
    QTest.keyClick(window, Qt.Key.Key_F)  # the key
    if not p.face_view:  # offscreen windows are not always active; the action is what the key triggers
        p.face_action.trigger()
    assert p.face_view and p.face_button.isChecked()
    crop = p.face_crop(k)
    assert crop is not None
    x0, y0, x1, y1 = (int(v) for v in crop)
    # Frame k's picture, cropped: exactly those pixels, shown at their place in the frame.
    np.testing.assert_array_equal(p.view.image_item.image, frames[k][y0:y1, x0:x1])
    rect = p.view.image_item.mapRectToParent(p.view.image_item.boundingRect())
    assert (rect.left(), rect.top(), rect.width(), rect.height()) == (x0, y0, x1 - x0, y1 - y0)
    (vx0, vx1), (vy0, vy1) = p.view.vb.viewRange()
    assert vx0 <= x0 + 1 and vx1 >= x1 - 1 and vy0 <= y0 + 1 and vy1 >= y1 - 1  # the crop fills the view
    assert (vx1 - vx0) < 1.05 * (x1 - x0) or (vy1 - vy0) < 1.05 * (y1 - y0)  # no more than the crop shows
    assert (x1 - x0) * (y1 - y0) < 0.4 * 1920 * 1080  # zoomed in on the face
    # Overlays: landmark j of frame k sits on the crop pixel at landmark − crop origin, same picture pixel.
    lm = faces.landmarks[k]
    shown = np.column_stack(p.view.landmark_item.getData())
    np.testing.assert_allclose(shown, lm, atol=1e-4)
    local = p.view.to_crop(lm)
    np.testing.assert_allclose(local, lm - [x0, y0])
    for j in (30, 36, 48):  # nose tip, an eye corner, a mouth corner
        on_image = p.view.image_item.mapToParent(QPointF(*local[j]))
        assert (on_image.x(), on_image.y()) == pytest.approx(tuple(lm[j]), abs=1e-6)
        u, v = np.floor(local[j]).astype(int)
        np.testing.assert_array_equal(p.view.image_item.image[v, u], frames[k][int(lm[j, 1]), int(lm[j, 0])])
    box_rect = p.view.box_item.rect()
    assert (box_rect.left(), box_rect.top()) == pytest.approx(tuple(faces.box[k, :2]), abs=1e-3)
    assert x0 <= faces.box[k, 0] and faces.box[k, 2] <= x1  # the face is in the crop
    # The heatmap sits at its frame position and lies on the face in the crop.
    heat = p.view.heat_item.mapRectToParent(p.view.heat_item.boundingRect())
    assert heat.intersects(rect) and heat.contains(QPointF(*lm[30]))
    save_screenshot(p.view, artifacts_dir / "face_view_face.png")
    save_screenshot(window, artifacts_dir / "face_view_window_face.png")

    # Stepping and seeking behave as in the full view: frame k+1, k+2, each with its own crop.
    for j in (k + 1, k + 2):
        p.step(1)
        qtbot.waitUntil(lambda j=j: p.current == j, timeout=10_000)
        c = p.face_crop(j)
        np.testing.assert_array_equal(p.view.image_item.image, frames[j][c[1]:c[3], c[0]:c[2]])
    assert np.abs(p.face_crop(k + 1) - p.face_crop(k)).max() <= 3  # steady
    p.seek(k)
    qtbot.waitUntil(lambda: p.current == k, timeout=10_000)
    np.testing.assert_array_equal(p.view.image_item.image, frames[k][y0:y1, x0:x1])
    # Back to the whole frame.
    p.face_action.trigger()
    assert not p.face_view and not p.face_button.isChecked()
    np.testing.assert_array_equal(p.view.image_item.image, frames[k])
    (vx0, vx1), _ = p.view.vb.viewRange()
    assert vx1 - vx0 >= 1920 * 0.99


def test_scrubbing_a_big_video_leaves_the_decode_thread_to_the_frames_shown(window, qtbot, wide_session) -> None:
    """Steps through a 1080p session with the Input dock open: its full-size frame (a decode from the keyframe
    at full size) is fetched once, for the frame the reviewer rests on, not for every frame on the way; and a
    cache hit leaves the warm-up idle while the window paints (it used to double a cached seek's wall time)."""
    from vidxai_gui import frame_source

    session, _video, _ = wide_session
    window.open_path(session)
    p = window.player
    qtbot.waitUntil(lambda: window.data is not None and p.current >= 0 and p.source is not None, timeout=30_000)
    window.docks["preprocess"].show()
    window.docks["preprocess"].raise_()
    source = p.source
    asked: list[int] = []
    full_frame = source.full_frame
    source.full_frame = lambda k, *a, **kw: (asked.append(k), full_frame(k, *a, **kw))[1]
    k0 = 10
    p.seek(k0)
    qtbot.waitUntil(lambda: p.current == k0, timeout=30_000)
    qtbot.waitUntil(lambda: all(source.reader.is_cached(j) for j in range(k0, k0 + 12)), timeout=30_000)
    asked.clear()
    for j in range(k0 + 1, k0 + 11):  # ten steps, each shown at once from the cache
        QTest.qWait(20)
        p.step(1)
        assert p.current == j
    # A cache hit just now: the warm-up holds off while the window paints.
    assert source._interrupted() and source._warm_due() != 0.0  # held (or nothing left to cache): not due now
    view = window.preprocess.input_view
    qtbot.waitUntil(lambda: asked == [k0 + 10] and view.pixmap() is not None and not view.pixmap().isNull(),
                    timeout=20_000)
    QTest.qWait(300)
    assert asked == [k0 + 10]  # only the frame it rested on
    # Zooming the timeline holds the warm-up too (the zoom's painting is the window's foreground work).
    QTest.qWait(int(1000 * frame_source.WARM_HOLD_S) + 50)
    assert not source._interrupted()
    window.timeline.scores_plot.setXRange(0, 30, padding=0)
    assert source._interrupted()
    # ... and then goes on: a frame whose caching the hold interrupted is cached after it, not dropped.
    k, n = p.current, p.frame_count
    assert n > 40
    qtbot.waitUntil(lambda: all(source.reader.is_cached(j) for j in range(max(0, k - 15), min(n, k + 60))),
                    timeout=30_000)


def test_one_run_length_helper_for_stages_and_decisions(tmp_path: Path) -> None:
    """sessions.tracks.runs (used by the stages and the ELAN decision tier) equals a plain loop over the
    frames, for text and for class indices."""
    from sessions.tracks import runs

    def loop(values: list) -> list[tuple[int, int, object]]:
        out: list[list] = []
        for i, v in enumerate(values):
            if out and out[-1][2] == v:
                out[-1][1] = i + 1
            else:
                out.append([i, i + 1, v])
        return [tuple(r) for r in out]

    rng = np.random.default_rng(6)
    names = np.array(["NONE", "HAPPY_A", "HAPPY_A, SAD_B", "SAD_B"], dtype=object)
    desc = names[np.repeat(rng.integers(0, 4, 300), 10)]  # runs of 10, equal neighbours merge
    T = len(desc)
    with Session.create(tmp_path / "s.vxs", {"path": "x.mp4", "fps": 30.0, "frame_count": T, "width": 4, "height": 4},
                        np.arange(T) / 30.0) as s:
        s.begin_analysis({"name": "m"}, ["happy", "sad"], ["intrinsic"], 0.3)
        s.write_temporal_prototype(list(desc), "intrinsic")
        s.commit()
        stored = [(st.start, st.end, st.descriptor) for st in s.temporal_prototype()]
    assert stored == loop(list(desc)) == runs(desc)
    assert len(stored) < 300  # neighbours merged
    pred = np.repeat(rng.integers(-1, 3, 200), rng.integers(1, 5, 200))
    assert runs(pred) == loop([int(p) for p in pred])
    assert runs(np.array([], dtype=object)) == [] == runs([])


def _spray_whole(maps: np.ndarray, probs: np.ndarray, classes: list[str], max_frames: int):
    """SpRAy as it was before streaming: every active frame's maps in memory at once."""
    from engine.explain.spray import (
        _cluster_maybe_subsampled,
        active_mask,
        cluster_letter,
        prepare_maps,
        stage_mean_maps,
        temporal_prototypes,
    )

    mask = active_mask(probs)
    out, per_class = {}, {}
    for ci, c in enumerate(classes):
        frames = np.flatnonzero(mask[:, ci])
        if frames.size == 0:
            continue
        labels, k, vals = _cluster_maybe_subsampled(prepare_maps(maps[frames]), 10, 10, max_frames, 0)
        full = np.full(len(probs), -1)
        full[frames] = labels
        per_class[c] = (mask[:, ci], full)
        out[c] = (frames, labels, k, vals, {f"{c.upper()}_{cluster_letter(j)}": m
                                            for j, m in stage_mean_maps(maps[frames], labels).items()})
    return out, temporal_prototypes(per_class)


def test_streamed_spray_equals_spray_on_all_maps_with_bounded_reads() -> None:
    from engine.explain.spray import spray_streamed

    rng = np.random.default_rng(7)
    T, classes = 4000, ["happy", "sad", "angry"]
    # Three looks that come and go, each under any class: blobs in different places, plus noise.
    looks = np.zeros((3, 12, 12))
    looks[0, 2:5, 2:5], looks[1, 7:10, 3:6], looks[2, 4:8, 8:11] = 1, 1, 1
    which = np.repeat(rng.integers(0, 3, T // 50), 50)
    maps = looks[which] + 0.05 * rng.random((T, 12, 12))
    probs = rng.dirichlet(np.ones(3), size=T)
    probs[np.arange(T), np.repeat(rng.integers(0, 3, T // 200), 200)] += 1.0
    probs[rng.random(T) < 0.03] = np.nan  # frames without a face
    reads = []

    def read(a: int, b: int) -> np.ndarray:
        reads.append(b - a)
        return maps[a:b]

    res = spray_streamed(read, probs, classes, max_frames=500, chunk=512)
    assert max(reads) <= 512  # never more than a chunk of maps at once
    ref, ref_tp = _spray_whole(maps, probs, classes, max_frames=500)
    assert set(res.classes) == set(ref)
    for c, cc in res.classes.items():
        frames, labels, k, vals, means = ref[c]
        np.testing.assert_array_equal(cc.frames, frames)
        np.testing.assert_array_equal(cc.labels, labels)
        assert cc.k == k
        np.testing.assert_allclose(cc.eigenvalues, vals)
        assert list(cc.mean_maps) == list(means)
        for name, m in means.items():
            np.testing.assert_allclose(cc.mean_maps[name], m, rtol=1e-9, atol=1e-12)
    assert res.prototypes.descriptors == ref_tp.descriptors
    assert max(cc.k for cc in res.classes.values()) > 1
    assert max(len(cc.frames) for cc in res.classes.values()) > 500  # the subsampled path was taken
