"""Analysis from the window: engine.pipeline.analyze runs as a job, frames stream in, the session reopens.

The model is a real checkpoint (engine.checkpoint) of a small ProtoPNet with random weights: these tests
check that the window shows exactly what the engine wrote, not what a trained model would say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor
from PySide6.QtTest import QTest

from engine.aggregate import ewma
from engine.video import open_video
from sessions import Session
from vidxai_gui.app import save_screenshot
from vidxai_gui.main_window import MainWindow
from vidxai_gui.review import SIMILARITIES

pytestmark = [pytest.mark.gui, pytest.mark.timeout(300)]

CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def model_dir(tiny_protopnet: Path) -> Path:
    return tiny_protopnet


@pytest.fixture
def window(window: MainWindow) -> MainWindow:
    window.analyze_overrides = {"commit_every_s": 0.2, "batch_size": 16}  # several chunks from a 56-frame clip
    return window


@pytest.fixture(scope="module")
def clip(hap_clip: Path) -> Path:
    return hap_clip


def test_analysis_streams_into_the_window_and_reopens(window: MainWindow, qtbot, clip: Path, model_dir: Path,
                                                      artifacts_dir: Path, tmp_path: Path) -> None:
    chunks: list[tuple[int, int]] = []
    window.open_video(clip, analyse_with=model_dir)
    qtbot.waitUntil(lambda: window.analysis_worker is not None, timeout=10_000)
    worker = window.analysis_worker
    worker.partial.connect(lambda rows: chunks.append((rows.start, rows.end)))
    row = window.job_panel.row_for(worker)
    assert row is not None and row.cancel_button.isEnabled()
    with qtbot.waitSignal(worker.finished, timeout=240_000):
        pass
    qtbot.waitUntil(lambda: window.data is not None and window.data.analysis is not None
                    and window.data.analysis.get("complete") is True, timeout=20_000)
    assert len(chunks) >= 2 and chunks[-1][1] == 56  # partial results arrived before the end

    session_path = tmp_path / "sessions" / f"{clip.stem}.vxs"
    assert window.session_path == session_path
    with Session.open(session_path) as s:
        probs = s.read("probs").astype(np.float64)
        valid = s.read("valid")
        faces = s.faces()
        alpha = s.analysis_info()["alpha"]
        stages = s.spray()
    tl = window.timeline
    assert tl.classes == CLASSES
    for i in range(len(CLASSES)):
        np.testing.assert_array_equal(tl.raw_curves[i].getData()[1], probs[:, i])
    np.testing.assert_allclose(tl.ewma_curves[3].getData()[1], ewma(probs, tl.alpha, valid)[:, 3], equal_nan=True)
    assert tl.alpha == pytest.approx(alpha)
    if stages:
        assert tl.stages and tl.stage_plot.isVisible()

    # Overlays belong to the frame on screen: seek to a face frame and compare with the session.
    k = int(np.flatnonzero(faces.found)[len(np.flatnonzero(faces.found)) // 2])
    window.timeline.seekRequested.emit(k)
    qtbot.waitUntil(lambda: window.player.current == k, timeout=10_000)
    with open_video(clip) as r:
        np.testing.assert_array_equal(window.player.view.image_item.image, r.frame(k))
    rect = window.player.view.box_item.rect()
    x0, y0, x1, y1 = faces.box[k]
    assert (rect.left(), rect.top(), rect.right(), rect.bottom()) == pytest.approx((x0, y0, x1, y1), abs=1e-3)
    np.testing.assert_allclose(window.player.view.landmark_item.getData()[0], faces.landmarks[k, :, 0])
    qtbot.waitUntil(lambda: window.player.view.heat_item.isVisible(), timeout=10_000)
    # The map covers the face region only (not a frame-sized array), placed at its frame position.
    heat_rect = window.player.view.heat_item.mapRectToParent(window.player.view.heat_item.boundingRect())
    assert heat_rect.left() >= 0 and heat_rect.top() >= 0 and heat_rect.right() <= 480 and heat_rect.bottom() <= 360
    assert heat_rect.contains(QPointF((x0 + x1) / 2, (y0 + y1) / 2))  # where the face is
    assert window.player.view.heat_item.image.shape == (round(heat_rect.height()), round(heat_rect.width()))
    assert window.player.view.proto_item.isVisible()
    # The gallery lists the frame's prototypes by W·s, and the prototype crops were loaded.
    assert SIMILARITIES in window.data.extra
    qtbot.waitUntil(lambda: window.gallery.table.rowCount() == 5 and bool(window.gallery.prototypes),
                    timeout=10_000)
    contributions = [float(window.gallery.table.item(r, 2).text().split("W·s = ")[1]) for r in range(5)]
    assert contributions == sorted(contributions, reverse=True)
    assert window.gallery.table.item(0, 0).icon().isNull() is False
    # Selecting a prototype draws its similarity over the video on the timeline (÷ its maximum) and
    # names the training file it was pushed from; "Open source" shows that file.
    j = window.gallery.table.item(0, 0).data(Qt.ItemDataRole.UserRole)
    window.gallery.table.selectRow(0)
    sims = window.data.extra[SIMILARITIES][:, j].astype(float)
    np.testing.assert_allclose(tl.trace_curve.getData()[1], sims / np.nanmax(sims), equal_nan=True)
    info = window.gallery.selected_info()
    assert info is not None and Path(info.source_path).is_file()
    assert window.gallery.table.item(0, 1).text() == f"#{j} · {info.class_name}\n{Path(info.source_path).name}"
    assert f"prototype:{j}" in window._targets()
    window.gallery.open_button.click()
    dialog = window.source_dialog
    qtbot.waitUntil(lambda: dialog.source_view.pixmap() is not None and not dialog.source_view.pixmap().isNull(),
                    timeout=10_000)
    save_screenshot(dialog, artifacts_dir / "gui_prototype_source.png")
    dialog.close()
    window.gallery.table.clearSelection()
    assert tl.trace_curve is None
    window.docks["prototypes"].raise_()
    for label, size in {"1280x800": (1280, 800), "1920x1080": (1920, 1080)}.items():
        window.resize(*size)
        qtbot.wait(200)
        save_screenshot(window, artifacts_dir / f"gui_analysed_{label}.png")

    # An annotation is autosaved into the session; exports run as jobs.
    assert window.annotation_panel.isEnabled()
    window.add_annotation_segment("smile onset", 10, 25, note="checked by hand")
    assert window.annotation_panel.table.rowCount() == 1
    assert [seg.label for seg in tl.tiers["reviewer"]] == ["smile onset"]
    qtbot.waitUntil(lambda: not window.jobs.is_busy(), timeout=20_000)
    csv_path = tmp_path / "export" / "review.csv"
    csv_path.parent.mkdir()
    with qtbot.waitSignal(window.export_to("csv", csv_path).finished, timeout=20_000):
        pass
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + 56 and lines[0].startswith("index,time_s,face")

    # The reviewer's view: intrinsic maps with the Top-25 % projection, a chosen α and opacity.
    window._set_heat_method("intrinsic")
    qtbot.waitUntil(lambda: window.player.view.heat_item.isVisible(), timeout=10_000)
    qtbot.wait(300)
    full = float((window.player.view.heat_item.image > 0).mean())
    window._set_top_x(True)
    qtbot.waitUntil(lambda: float((window.player.view.heat_item.image > 0).mean()) < 0.8 * full, timeout=10_000)
    window.timeline.set_alpha(0.55)
    window.player.opacity.setValue(35)

    # Reopening the session file loads everything again, at the frame the reviewer left.
    window.save_session()
    qtbot.waitUntil(lambda: not window.jobs.is_busy() and not window.autosaver.busy, timeout=20_000)
    window.open_video(clip)
    qtbot.waitUntil(lambda: window.player.current == 0, timeout=10_000)
    assert window.data is None and not tl.classes
    window.open_path(session_path)
    qtbot.waitUntil(lambda: window.data is not None and window.player.current == k, timeout=20_000)
    assert tl.classes == CLASSES
    np.testing.assert_array_equal(tl.raw_curves[0].getData()[1], probs[:, 0])
    assert [(seg.start, seg.end, seg.label) for seg in tl.tiers["reviewer"]] == [(10, 25, "smile onset")]
    assert window.annotation_panel.table.item(0, 4).text() == "checked by hand"
    assert window.heat_method == "intrinsic" and window.top_x_on
    assert window.timeline.alpha == pytest.approx(0.55) and window.player.opacity.value() == 35
    window.timeline.seekRequested.emit(12)
    qtbot.waitUntil(lambda: window.player.current == 12, timeout=10_000)
    for label, size in {"1280x800": (1280, 800), "1920x1080": (1920, 1080)}.items():
        window.resize(*size)
        window.docks["annotations"].raise_()
        qtbot.wait(200)
        save_screenshot(window, artifacts_dir / f"gui_session_{label}.png")


def test_cancelling_an_analysis_keeps_the_window_usable(window: MainWindow, qtbot, clip: Path,
                                                        model_dir: Path) -> None:
    window.open_video(clip, analyse_with=model_dir)
    qtbot.waitUntil(lambda: window.analysis_worker is not None and window.analysis_worker.state == "running",
                    timeout=20_000)
    worker = window.analysis_worker
    errors: list[str] = []
    worker.error.connect(lambda m, _tb: errors.append(m))
    with qtbot.waitSignal(worker.done, timeout=60_000):
        window.job_panel.row_for(worker).cancel_button.click()
    assert worker.state == "cancelled"
    qtbot.waitUntil(lambda: window.analysis_worker is None, timeout=5000)
    assert not errors
    assert window.analyse_action.isEnabled()
    window.timeline.seekRequested.emit(10)
    qtbot.waitUntil(lambda: window.player.current == 10, timeout=10_000)


def test_occlusion_toggle_rescores_the_current_frame(window: MainWindow, qtbot, clip: Path, model_dir: Path,
                                                     artifacts_dir: Path) -> None:
    from engine.analyzer import FrameAnalyzer
    from engine.faces import detect_single

    window.open_path(clip)
    qtbot.waitUntil(lambda: window.player.current == 0, timeout=10_000)
    window.model_dir = model_dir
    window.timeline.seekRequested.emit(20)
    qtbot.waitUntil(lambda: window.player.current == 20, timeout=10_000)
    panel = window.preprocess
    panel.part_boxes["eyes"].setChecked(True)
    panel.part_boxes["mouth"].setChecked(True)
    qtbot.waitUntil(lambda: panel.rescored_frame == 20 and "eyes, mouth" in panel.status.text()
                    and not window.rescoring, timeout=60_000)
    with open_video(clip) as r:
        frame = r.frame(20)
    analyzer = FrameAnalyzer(model_dir)
    expected = analyzer.score(frame, detect_single(frame), analyzer.config(occlude=frozenset({"eyes", "mouth"})))
    shown = [float(panel.scores.item(i, 1).text()) for i in range(len(CLASSES))]
    np.testing.assert_allclose(shown, expected.probs, atol=5e-4)  # the table shows 3 decimals
    assert panel.input_view.pixmap() is not None and not panel.input_view.pixmap().isNull()
    # The acceptance case: reassembled input with the mouth hidden, equal to a direct engine call.
    panel.part_boxes["eyes"].setChecked(False)
    panel.rescored_frame = -1
    panel.mode_buttons["reassembled"].setChecked(True)
    qtbot.waitUntil(lambda: panel.rescored_frame == 20 and not window.rescoring
                    and "reassembled input, occluded: mouth" in panel.status.text(), timeout=60_000)
    cfg = analyzer.config(mode="reassembled", occlude=frozenset({"mouth"}))
    expected = analyzer.score(frame, detect_single(frame), cfg)
    shown = [float(panel.scores.item(i, 1).text()) for i in range(len(CLASSES))]
    np.testing.assert_allclose(shown, expected.probs, atol=5e-4)
    # Moving on re-scores the new frame with the same toggles.
    panel.rescored_frame = -1
    QTest.keyClick(window, Qt.Key.Key_Right)
    qtbot.waitUntil(lambda: panel.rescored_frame == 21, timeout=60_000)
    window.docks["preprocess"].raise_()
    qtbot.wait(200)
    save_screenshot(window, artifacts_dir / "gui_occlusion_1280x800.png")


def test_apply_input_to_the_whole_video(window: MainWindow, qtbot, clip: Path, model_dir: Path) -> None:
    """Reassembled mode + a hidden mouth, applied to every frame: a new analysis with that input and the
    facial-part occlusion track, both recorded in the session and shown on the timeline."""
    window.open_video(clip, analyse_with=model_dir)
    qtbot.waitUntil(lambda: window.data is not None and bool(window.data.analysis)
                    and window.data.analysis.get("complete") is True and window.analysis_worker is None,
                    timeout=240_000)
    panel = window.preprocess
    panel.mode_buttons["reassembled"].setChecked(True)
    panel.part_boxes["mouth"].setChecked(True)
    panel.apply_button.click()
    qtbot.waitUntil(lambda: window.analysis_worker is not None, timeout=10_000)
    qtbot.waitUntil(lambda: window.analysis_worker is None and window.data is not None
                    and bool(window.data.analysis) and window.data.analysis.get("complete") is True
                    and window.data.analysis.get("preprocess", {}).get("mode") == "reassembled",
                    timeout=240_000)
    with Session.open(window.session_path) as s:
        a = s.analysis_info()
        assert a["preprocess"]["mode"] == "reassembled" and a["occlusion"]
        conditions, occ = s.occlusion()
        valid = s.read("valid")
        assert "mouth" in conditions and np.isfinite(occ[valid]).all()
        probs = s.read("probs")
    np.testing.assert_array_equal(window.timeline.raw_curves[0].getData()[1], probs[:, 0].astype(np.float64))


def test_find_faces_marks_frames_where_the_face_is_lost(window: MainWindow, qtbot, tmp_path: Path,
                                                        artifacts_dir: Path) -> None:
    from tests.conftest import EDGE

    video = EDGE / "face_noface.mov"  # a face that leaves the frame
    if not video.exists():
        pytest.skip(f"shared test data not found at {video}")
    window.open_path(video)
    qtbot.waitUntil(lambda: window.player.current == 0, timeout=10_000)
    window.find_faces()
    worker = window.analysis_worker
    assert worker is not None
    with qtbot.waitSignal(worker.done, timeout=240_000):
        pass
    assert worker.state == "finished"
    with Session.open(tmp_path / "sessions" / "face_noface.vxs") as s:
        faces = s.faces()
    assert faces.found.any() and not faces.found.all()
    d = window.data
    np.testing.assert_array_equal(d.found, faces.found)
    assert window.timeline.face_plot.isVisible()
    # The grey no-face shading covers exactly the frames without a face.
    strip = window.timeline.no_face_track.image  # 1×T RGBA: frame k is pixel k
    np.testing.assert_array_equal(strip[0, :, 3] > 0, ~faces.found)
    np.testing.assert_array_equal(window.timeline.no_face, ~faces.found)
    lost = int(np.flatnonzero(~faces.found)[-1])
    seen = int(np.flatnonzero(faces.found)[0])
    for k, has_face in ((seen, True), (lost, False)):
        window.timeline.seekRequested.emit(k)
        qtbot.waitUntil(lambda k=k: window.player.current == k, timeout=10_000)
        assert window.player.view.box_item.isVisible() is has_face
        assert len(window.player.view.landmark_item.getData()[0]) == (68 if has_face else 0)
        assert window.player.view.note.isVisible() is not has_face  # "no face found in this frame"
    assert f"Faces found in {int(faces.found.sum())} of 169 frames" in window.timeline.decision_label.text()
    window.resize(1280, 800)
    qtbot.wait(200)
    save_screenshot(window, artifacts_dir / "gui_faces_only_1280x800.png")


def test_evaluate_runs_as_a_job_and_reports_back(window: MainWindow, qtbot, model_dir: Path, tmp_path: Path
                                                 ) -> None:
    """Evaluate… validates its folders, runs engine.evaluate on a worker and shows the outcome in a dialog."""
    import shutil

    from tests.conftest import FER
    from vidxai_gui.dialogs import EvaluateDialog, TrainDialog

    if not FER.exists():
        pytest.skip(f"shared test data not found at {FER}")
    data = tmp_path / "fer-mini"
    for c in CLASSES:
        (data / "test" / c).mkdir(parents=True)
        for img in sorted((FER / "test" / c).glob("*.jpg"))[:2]:
            shutil.copy(img, data / "test" / c / img.name)

    dialog = EvaluateDialog(window, "", str(data))
    qtbot.addWidget(dialog)
    assert "model.json" in dialog.problem()  # no model chosen yet: the dialog says what to do
    dialog.model.edit.setText(str(model_dir))
    assert dialog.problem() == ""
    args = dialog.arguments()
    assert args == {"model_dir": str(model_dir), "data": str(data), "split": "test", "limit": None}

    worker = window.evaluate(**args)
    ends: list[str] = []
    worker.finished.connect(lambda _r: ends.append("finished"))
    worker.error.connect(lambda _m, _tb: ends.append("error"))
    with qtbot.waitSignal(worker.done, timeout=240_000):
        pass
    qtbot.wait(50)
    assert len(ends) == 1
    if ends == ["finished"]:
        qtbot.waitUntil(lambda: getattr(window, "evaluation_box", None) is not None, timeout=5000)
        assert "Accuracy" in window.evaluation_box.text() and "samples" in window.evaluation_box.text()
    else:  # the engine refused: the user sees why in a dialog, the window keeps going
        assert window.last_error.isVisible() and window.last_error.text()

    train = TrainDialog(window, str(data), str(tmp_path / "out"))
    qtbot.addWidget(train)
    assert train.problem() == ""
    assert train.config()["arch"] in ("protopnet", "patchsae", "cnn")


def test_patchsae_session_fills_the_latent_profile(window: MainWindow, qtbot, tmp_path: Path,
                                                   artifacts_dir: Path) -> None:
    """A session written by the CLI path (engine.pipeline.analyze) opens in the window with its SAE latents."""
    import torch

    from engine.checkpoint import save_checkpoint
    from engine.models import build_model
    from engine.models.spec import ModelSpec
    from engine.pipeline import AnalyzeSettings, analyze
    from tests.conftest import CREMA
    from vidxai_gui.review import TOP_LATENTS, TOP_VALUES

    video = CREMA / "1001_DFA_SAD_XX.flv"
    torch.manual_seed(0)
    # Reference patches as the trainer stores them: (latent, rank) → uint8 crop; here a flat grey whose
    # level names the latent and the rank, so the test can tell which patch is drawn where.
    patches = {(j, r): np.full((12, 10, 1), 7 * j + r, np.uint8) for j in range(32) for r in range(3)}
    sae = save_checkpoint(tmp_path / "sae", build_model(ModelSpec(arch="patchsae", classes=CLASSES, n_latents=32)),
                          {"note": "random weights: GUI tests only"}, latent_patches=patches)
    session = analyze(video, sae, tmp_path / "sad.vxs", AnalyzeSettings(spray=False))
    with Session.open(session) as s:
        idx, val = s.intrinsic(TOP_LATENTS), s.intrinsic(TOP_VALUES)
    window.open_path(session)
    qtbot.waitUntil(lambda: window.data is not None and window.player.current == 0, timeout=20_000)
    k = 30
    window.timeline.seekRequested.emit(k)
    qtbot.waitUntil(lambda: window.player.current == k, timeout=10_000)
    # A PatchSAE session brings its latents to the front of the tabbed docks (not the empty prototypes).
    assert not window.docks["latents"].visibleRegion().isEmpty()
    assert window.docks["prototypes"].visibleRegion().isEmpty()
    # The other models' explanation docks are closed (the tabs fit), and come back from the View menu.
    assert window.docks["prototypes"].isHidden() and window.docks["landmarks"].isHidden()
    assert window.docks["prototypes"].toggleViewAction() in window.view_menu.actions()
    bars = window.latents.bars.opts
    shown = np.sort(np.asarray(bars["width"], float))[::-1]
    expected = np.sort(val[k][(val[k] > 0) & (idx[k] >= 0)])[::-1][: window.latents.TOP]
    np.testing.assert_allclose(shown, expected, rtol=1e-6)
    ticks = [t for _, t in window.latents.plot.getAxis("left")._tickLevels[0]]
    assert ticks[0] == f"#{int(idx[k][np.argmax(val[k])])}"  # the strongest latent is on top
    # The strongest latents' reference patches, best first, under the bars.
    qtbot.waitUntil(lambda: bool(window.latents.shown_patch_latents()), timeout=10_000)
    strongest = [int(i) for i in idx[k][np.argsort(-val[k])] if i >= 0][: window.latents.PATCH_ROWS]
    assert window.latents.shown_patch_latents() == strongest
    for row, j in enumerate(strongest):
        cells = window.latents.patch_cells[row]
        levels = [QColor(cells[r].pixmap().toImage().pixel(5, 5)).red() for r in range(3)]
        assert levels == [7 * j, 7 * j + 1, 7 * j + 2]
        assert cells[3].pixmap().isNull()  # only three references were stored
    qtbot.wait(200)
    save_screenshot(window, artifacts_dir / "gui_patchsae_1280x800.png")


@pytest.mark.slow
def test_self_test_analyses_the_demo_clip(model_dir: Path, clip: Path, tmp_path: Path) -> None:
    """`vidxai --self-test` (vidxai_gui.app.self_test) in its own process, with a resources folder holding
    the demo clip and, as the bundled model, the small random-weight checkpoint."""
    import os
    import shutil
    import subprocess
    import sys

    from engine.resources import DEFAULT_MODEL, DEMO_CLIP

    resources = tmp_path / "resources"
    (resources / "models").mkdir(parents=True)
    shutil.copy(clip, resources / DEMO_CLIP)
    shutil.copytree(model_dir, resources / "models" / DEFAULT_MODEL)
    out = tmp_path / "out"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "VIDXAI_RESOURCES": str(resources)}
    code = f"import sys; from vidxai_gui.app import self_test; sys.exit(self_test(out_dir={str(out)!r}))"
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=280,
                       env=env, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "self-test: analysed" in r.stdout
    assert (out / "self-test.png").stat().st_size > 10_000
    assert (out / f"{Path(DEMO_CLIP).stem}.vxs").exists()
