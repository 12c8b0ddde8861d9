"""Issue 14 in the window: EWMA in seconds, the merged stage strip and its selection, docks on the frame shown.

Real main window offscreen, the CREMA-D happy clip analysed by the tiny ProtoPNet (conftest). Expected values
come from the session file and the engine (engine.aggregate, engine.temporal), not from the GUI's readers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.aggregate import alpha_from_tau, ewma
from engine.temporal import DEFAULT_TAU_S
from sessions import Session
from vidxai_gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(400)]


def _open(qtbot, w: MainWindow, path: Path) -> None:
    w.open_path(path)
    qtbot.waitUntil(lambda: w.data is not None and w.player.info is not None and bool(w.timeline.classes)
                    and w.player.current >= 0, timeout=30_000)


@pytest.fixture
def session_copy(analysed_session: Path, tmp_path: Path) -> Path:
    out = tmp_path / analysed_session.name
    shutil.copy(analysed_session, out)
    return out


def test_ewma_control_is_tau_in_seconds(window: MainWindow, qtbot, session_copy: Path, hap_clip: Path,
                                        tiny_protopnet: Path, tmp_path: Path, monkeypatch) -> None:
    with Session.open(session_copy) as s:
        info, fps = s.analysis_info(), s.fps
        probs, valid = s.read("probs").astype(np.float64), s.read("valid").astype(bool)
    assert info["ewma_tau_s"] == pytest.approx(DEFAULT_TAU_S)
    _open(qtbot, window, session_copy)
    tl = window.timeline
    # The default session reopens at exactly 0.2 s, not at a τ rounded through a two-decimal α.
    assert abs(tl.tau_s - DEFAULT_TAU_S) < 1e-9 and tl.tau_slider.value() == round(DEFAULT_TAU_S / tl.TAU_STEP)
    assert tl.fps == pytest.approx(fps)
    assert tl.alpha == pytest.approx(alpha_from_tau(DEFAULT_TAU_S, fps), abs=1e-12)
    assert tl.tau_value.text() == f"0.20 s · α {alpha_from_tau(0.2, fps):.3f}"
    np.testing.assert_allclose(tl.smoothed, ewma(probs, info["alpha"], valid), atol=1e-12, equal_nan=True)
    # Moving the control: α follows at this fps, the review model and the curves too.
    tl.tau_slider.setValue(10)  # 0.5 s
    a = alpha_from_tau(0.5, fps)
    assert window.review.tau_s == pytest.approx(0.5) and window.review.alpha == pytest.approx(a)
    np.testing.assert_allclose(tl.smoothed, ewma(probs, a, valid), atol=1e-12, equal_nan=True)
    assert "τ 0.50 s" in tl.decision_label.text()
    # The same τ at another frame rate is another α (25 vs 60 fps smooth alike in seconds).
    assert alpha_from_tau(0.5, 60.0) < a

    # A GUI-started analysis is given τ (seconds), and the session records it with the α at the clip's fps.
    tl.tau_slider.setValue(7)  # 0.35 s
    window.settings.setValue("sessions_dir", str(tmp_path / "fresh"))
    window.open_path(hap_clip)
    qtbot.waitUntil(lambda: window.player.info is not None and window.data is None, timeout=10_000)
    assert tl.tau_s == pytest.approx(0.35)
    from engine import pipeline

    given, real = [], pipeline.analyze

    def analyze(video, model, out, settings, **kw):  # the real analysis; the settings it got are kept
        given.append(settings)
        return real(video, model, out, settings, **kw)

    monkeypatch.setattr(pipeline, "analyze", analyze)
    window.analyse(tiny_protopnet, explain=("intrinsic",), au=False)
    qtbot.waitUntil(lambda: window.analysis_worker is not None, timeout=10_000)
    with qtbot.waitSignal(window.analysis_worker.finished, timeout=300_000):
        pass
    assert given and given[0].alpha is None and given[0].ewma_tau_s == pytest.approx(0.35)
    out = window.session_path
    with Session.open(out) as s:
        rec = s.analysis_info()
    assert rec["ewma_tau_s"] == pytest.approx(0.35) and rec["alpha"] == pytest.approx(alpha_from_tau(0.35, fps))
    # Reopened with another τ on the control, the session's own τ comes back.
    window.open_path(hap_clip)
    qtbot.waitUntil(lambda: window.data is None, timeout=10_000)
    tl.tau_slider.setValue(20)
    _open(qtbot, window, out)
    qtbot.waitUntil(lambda: abs(tl.tau_s - 0.35) < 1e-9, timeout=10_000)


def test_stage_strip_is_merged_and_a_click_selects_a_stage(window: MainWindow, qtbot, session_copy: Path) -> None:
    from engine.temporal import stage_details, stage_face

    with Session.open(session_copy) as s:
        shown = [(st.start, st.end, st.descriptor) for st in s.display_stages()]
        raw = s.temporal_prototype()
        tips = [stage_details(s, a, b, lab, method="")["tooltip"] for a, b, lab in shown]
    assert shown and len(shown) <= len(raw)
    _open(qtbot, window, session_copy)
    tl = window.timeline
    # The strip is Session.display_stages() (the merged stages), each with a readable name and its tooltip.
    assert [(st.start, st.end, st.label) for st in tl.stages] == shown
    assert [st.note for st in tl.stages] == tips and all(st.label and "frames" in st.note for st in tl.stages)
    assert tl.stage_plot.isVisible() and not any(r.isVisible() for r in tl.stage_regions)

    i = len(shown) // 2
    a, b, label = shown[i]
    window._set_heat_method("intrinsic")
    tl.stage_plot.vb.sigScrub.emit((a + b) / 2)  # a click on the stage in the strip
    qtbot.waitUntil(lambda: window.review.stage == i and window.review.stage_info is not None, timeout=20_000)
    qtbot.waitUntil(lambda: window.player.current == a, timeout=10_000)  # the player goes to where it begins
    for region in tl.stage_regions:  # the range is highlighted on the scores and on the strip
        assert region.isVisible() and region.getRegion() == pytest.approx((a - 0.5, b - 0.5))
    with Session.open(session_copy) as s:
        expected = stage_details(s, a, b, label, method="intrinsic")
    info, panel = window.review.stage_info, window.stage_panel
    np.testing.assert_array_equal(info["mean_map"], expected["mean_map"])
    assert expected["mean_map"] is not None and not panel.map_label.pixmap().isNull()
    # The mean map is laid over a face: the model input of the stage's most typical frame (the frame whose
    # map is the most like the mean map), drawn as the window draws maps.
    key = expected["key_frame"]
    with Session.open(session_copy) as s:
        valid = s.read("valid", slice(a, b)).astype(bool)
        maps = s.explanation_maps("intrinsic", slice(a, b))[valid].astype(np.float64).reshape(valid.sum(), -1)
        face = stage_face(s, key, expected["mean_map"])
    m = expected["mean_map"].astype(np.float64).ravel()
    assert key == a + np.flatnonzero(valid)[np.argmax(maps @ m / np.linalg.norm(maps, axis=1))]
    assert face is not None and info["face"] is not None
    np.testing.assert_array_equal(info["face"][0], face[0])
    image = face[0]
    assert image.ndim == 3 and image.shape[2] == 3 and image.std(axis=2).max() > 0  # a face in colour-mapped relevance
    assert f"model input of frame {key}" in panel.map_caption.text()
    assert panel.bar_text.text().startswith(f"{face[1]:.3g}")
    assert panel.title.text().startswith(f"<b>{label}</b>") and panel.summary.toolTip() == expected["tooltip"]
    assert "not a prediction" in panel.summary.text()  # the name is the explained class's, said beside it
    # ProtoPNet: the stage's most active prototypes, in the engine's order.
    assert expected["prototypes"]
    listed = [panel.proto_list.item(r).data(256) for r in range(panel.proto_list.count())]
    assert listed == [j for j, _c in expected["prototypes"]]
    # Another session clears the selection.
    window.review.select_stage(-1)
    assert not any(r.isVisible() for r in tl.stage_regions) and not panel.title.isVisible()


def test_docks_show_the_frame_on_screen(window: MainWindow, qtbot, session_copy: Path) -> None:
    from engine.faces import FaceResult
    from engine.preprocess import PreprocessConfig, preprocess
    from engine.video import open_video

    with Session.open(session_copy) as s:
        cfg, faces, video = PreprocessConfig.from_json(s.analysis_info()["preprocess"]), s.faces(), s.video["path"]
    _open(qtbot, window, session_copy)
    window.docks["preprocess"].raise_()
    view = window.preprocess.input_view
    # The model input of the frame on screen is there at once, before any toggle was touched.
    k = int(np.flatnonzero(faces.found)[0])
    window.timeline.seekRequested.emit(k)
    qtbot.waitUntil(lambda: window.player.current == k and view.pixmap() is not None and not view.pixmap().isNull(),
                    timeout=10_000)
    assert window.preprocess.is_default() and window.preprocess.status.text().startswith(f"frame {k}:")
    with open_video(video) as reader:
        frame = reader.frame(k, full=True)
    face = FaceResult(True, faces.box[k], faces.landmarks[k], float(faces.confidence[k]), 1)
    np.testing.assert_array_equal(window.frame_docks.model_input(k)[0], preprocess(frame, face, cfg).image)

    # The class key is above the plotting area, not on the curves.
    tl = window.timeline
    assert tl.legend.items and tl.legend.isVisible()
    legend, data = tl.legend.sceneBoundingRect(), tl.scores_plot.vb.sceneBoundingRect()
    assert legend.bottom() <= data.top() + 1 and not legend.intersects(data.adjusted(0, 2, 0, 0))
    # So is the occlusion track's key: what Δ means, then the parts drawn from data, in their curves' colours.
    from vidxai_gui.timeline_tracks import OCCLUSION_HEADING, OCCLUSION_TIP

    with Session.open(session_copy) as s:
        conditions, deltas = s.occlusion_deltas()
    drawn = [c for i, c in enumerate(conditions) if np.isfinite(deltas[:, i]).any()]
    assert drawn
    key = tl.occlusion_legend
    names = [label.text for _sample, label in key.items]
    assert names == [OCCLUSION_HEADING, *drawn] and key.isVisible()
    for (sample, _label), c in zip(key.items[1:], drawn, strict=True):
        assert sample.item is tl.occlusion_curves[c]  # each name beside its own curve's line
    box, track = key.sceneBoundingRect(), tl.occlusion_plot.vb.sceneBoundingRect()
    assert box.bottom() <= track.top() + 1 and not box.intersects(track.adjusted(0, 2, 0, 0))
    assert "Below 0" in OCCLUSION_TIP and tl.occlusion_plot.toolTip() == OCCLUSION_TIP

    # Played to the end, every dock says the frame the player shows (docks update a third of the frames).
    window.timeline.seekRequested.emit(window.data.frame_count - 8)
    qtbot.waitUntil(lambda: window.player.current == window.data.frame_count - 8, timeout=10_000)
    window.player.play()
    qtbot.waitUntil(lambda: not window.player.playing, timeout=20_000)
    last = window.player.current
    assert last == window.data.frame_count - 1 and last % 3 != 0  # a frame the docks skip while playing
    qtbot.waitUntil(lambda: window.preprocess.status.text().startswith(f"frame {last}:"), timeout=5_000)
    assert window.review.frame == last and window.timeline.current == last
    assert window.gallery.hint.text().startswith(f"Frame {last} ")
    assert not view.pixmap().isNull()  # the preview is back for the frame it stopped on


def test_smoothed_heatmaps_are_a_display_option(window: MainWindow, qtbot, session_copy: Path) -> None:
    import hashlib

    from engine.overlay import frame_evidence
    from engine.temporal import DEFAULT_MAP_SIGMA_S

    digest = hashlib.sha256(session_copy.read_bytes()).hexdigest()
    with Session.open(session_copy) as s:
        stored = s.explanation_maps("intrinsic").copy()
        k = int(np.flatnonzero(s.read("valid"))[len(np.flatnonzero(s.read("valid"))) // 2])
    _open(qtbot, window, session_copy)
    action = window.smooth_maps_action
    assert window.review.smooth_maps and action.isChecked() and action in window.view_menu.actions()
    window._set_heat_method("intrinsic")
    window.timeline.seekRequested.emit(k)
    qtbot.waitUntil(lambda: window.player.current == k, timeout=10_000)
    info = window.player.info
    hw = (info.height, info.width)
    with Session.open(session_copy) as s:
        smooth = frame_evidence(s, k, "intrinsic", hw, None, s.head_weight(), DEFAULT_MAP_SIGMA_S).heat
        raw = frame_evidence(s, k, "intrinsic", hw, None, s.head_weight()).heat
    assert not np.allclose(smooth, raw)
    item = window.player.view.heat_item
    qtbot.waitUntil(lambda: item.image is not None and item.image.shape == smooth.shape
                    and np.allclose(item.image, smooth), timeout=10_000)
    action.trigger()  # off: the stored map of the frame
    assert not window.review.smooth_maps
    qtbot.waitUntil(lambda: np.allclose(item.image, raw), timeout=10_000)
    action.trigger()
    qtbot.waitUntil(lambda: np.allclose(item.image, smooth), timeout=10_000)

    # The colour bar on the player says what the colours mean: the method, smoothing, the full-colour value.
    legend = window.player.view.legend
    title, ends, note = legend.texts()
    assert legend.isVisible() and title == "Heatmap: intrinsic (the model's own evidence)"
    assert ends.endswith(f"{item.levels[1]:.3g}") and "low → high evidence" in ends
    assert note.startswith("all positive relevance") and note.endswith("smoothed over time (σ 0.1 s)")
    view = window.player.view
    assert view.rect().contains(legend.geometry())  # inside the frame view, in its corner
    window._set_top_x(True)
    qtbot.waitUntil(lambda: legend.texts()[2].startswith("Top-25%"), timeout=5_000)
    window._set_top_x(False)
    window._pick_heat_method("gradcam")
    qtbot.waitUntil(lambda: legend.texts()[0] == "Heatmap: Grad-CAM", timeout=5_000)
    window._heat_off()
    qtbot.waitUntil(lambda: not item.isVisible() and not legend.isVisible(), timeout=10_000)
    window.save_session()
    qtbot.waitUntil(lambda: not window.jobs.is_busy() and not window.autosaver.busy, timeout=20_000)
    # Never altering what is stored: the maps and the session file are as they were.
    with Session.open(session_copy) as s:
        assert s.explanation_maps("intrinsic").tobytes() == stored.tobytes()
    assert hashlib.sha256(session_copy.read_bytes()).hexdigest() == digest


def test_smoothing_reads_neighbouring_maps_once(session_copy: Path) -> None:
    """The player's reader keeps the smoothing's neighbouring maps (engine.temporal.MapRows): stepping
    through the clip and seeking about draws exactly what the uncached smoothing gives, reading each
    frame's rows about once instead of 2·radius + 1 times."""
    from engine.overlay import frame_evidence
    from engine.temporal import DEFAULT_MAP_SIGMA_S, gaussian_radius
    from vidxai_gui.review import HeatmapReader

    with Session.open(session_copy) as s:
        T, fps, hw = s.frame_count, s.fps, (int(s.video["height"]), int(s.video["width"]))
        w = s.head_weight()
        expected = {k: frame_evidence(s, k, "gradcam", hw, None, w, DEFAULT_MAP_SIGMA_S) for k in range(T)}
    reader = HeatmapReader(session_copy, "gradcam", hw, None, DEFAULT_MAP_SIGMA_S)
    try:
        order = [*range(T), T // 2, 3, T - 1, T // 3, T // 3 + 1]  # steps, then seeks
        for k in order:
            got, want = reader(k), expected[k]
            if want is None:
                assert got is None
                continue
            assert (got.heat is None) == (want.heat is None) and got.heat_level == want.heat_level
            if want.heat is not None:
                np.testing.assert_array_equal(got.heat, want.heat)
        rows = reader._local.map_rows
        radius = gaussian_radius(DEFAULT_MAP_SIGMA_S * fps)
        assert radius >= 2 and rows.read_rows <= 2 * T  # uncached: (2·radius + 1) rows per frame asked
        assert rows.read_rows < len(order) * (2 * radius + 1) / 3
    finally:
        reader.close()
