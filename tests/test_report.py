"""The case report and the figures (issue 17): a self-contained HTML file read in a real browser, figures
read back as the files a journal gets, and neither loading torch."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sessions import Annotations, Segment, Session, SprayResult, Stage, Tier

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["angry", "happy", "sad"]
CONDITIONS = ["eyes", "nose", "mouth", "eyes+mouth", "eyes+nose", "nose+mouth", "eyes+nose+mouth"]
T = 90
ANNOTATIONS = [Segment("clinician", 5, 12, "lip press", note="brow lowered, lips pressed", author="dr b",
                       agreement="agree"),
               Segment("clinician", 40, 52, "smile", note="Duchenne? cheeks <raised>", author="dr b",
                       agreement="disagree"),
               Segment("second look", 70, 80, "gaze away", author="rn k")]


def _make_session(path: Path, stages: bool = True) -> Path:
    """A small analysed session written through the session API: scores, EWMA, intrinsic 6×6 maps with
    their input→frame mappings, SpRAy stages, occlusion and annotations; its video is not on disk."""
    times = np.arange(T) / 30.0
    s = Session.create(path, {"path": str(path.parent / "media" / "clip.mp4"), "fps": 30.0, "frame_count": T,
                              "width": 320, "height": 240, "duration": T / 30.0, "sha256": "ab" * 32}, times)
    found = np.ones(T, bool)
    found[60:65] = False
    box = np.tile(np.array([100, 60, 200, 180], np.float32), (T, 1))
    s.write_faces(0, found, box, np.zeros((T, 68, 2), np.float32), np.where(found, 0.9, 0.0), found)
    s.begin_analysis({"name": "cnn-test", "sha256": "cd" * 32, "arch": "cnn", "backbone": "small",
                      "path": str(path.parent / "no-model")}, CLASSES, ["intrinsic"], 0.3)
    probs = np.full((T, 3), np.nan, np.float32)
    rng = np.random.default_rng(0)
    for k in range(T):
        if found[k]:
            p = rng.uniform(0.05, 0.2, 3)
            p[0 if k < 30 else 1] = 0.8
            probs[k] = p / p.sum()
    maps = np.full((T, 6, 6), np.nan, np.float16)
    maps[found] = rng.uniform(0, 1, (int(found.sum()), 6, 6)).astype(np.float16)
    mapping = {"input_size": 48, "pieces": [{"name": "face", "input_rect": [0, 0, 48, 48],
                                             "frame_rect": [100, 60, 200, 180]}]}
    s.write_mappings(0, [mapping if f else None for f in found])
    s.write_explanation("intrinsic", 0, maps)
    occ = np.repeat(probs[:, None, :], 7, axis=1) - np.arange(7, dtype=np.float32)[None, :, None] / 50
    s.write_occlusion(0, occ, CONDITIONS)
    s.write_scores(0, found, np.log(probs), probs)
    labels = np.full(T, -1, np.int16)
    labels[30:90] = 0
    if stages:
        s.write_spray("happy", SprayResult(labels, [Stage(30, 50, "HAPPY_A"), Stage(50, 90, "HAPPY_B")],
                                           np.zeros((1, 6, 6), np.float16), 1, 0.5, 0.1, "HAPPY_A, HAPPY_B"))
        s.write_temporal_prototype(["ANGRY_A"] * 30 + ["HAPPY_A"] * 20 + ["HAPPY_B"] * 40, "spray")
    s.save_annotations(Annotations([Tier("clinician"), Tier("second look")], ANNOTATIONS))
    from engine.aggregate import ewma

    s.finish_analysis(np.nan_to_num(ewma(np.nan_to_num(probs), 0.3)), 0.3, "happy")
    s.close()
    return path


@pytest.fixture
def session_path(tmp_path: Path) -> Path:
    return _make_session(tmp_path / "clip.vxs")


def _images(text: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", text)


def _visible_text(page: str) -> str:
    body = re.sub(r"<style.*?</style>", " ", page, flags=re.DOTALL)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    imgs = _images(page)
    assert imgs, "no images"
    for src in imgs:
        assert src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,", "data:image/svg+xml;base64,")), \
            src[:80]
        payload = base64.b64decode(src.split(",", 1)[1], validate=True)
        if src.startswith("data:image/svg"):  # a well-formed SVG document
            assert ET.fromstring(payload).tag.endswith("svg")
        else:  # a PNG/JPEG that decodes
            with Image.open(io.BytesIO(payload)) as im:
                im.load()
                assert im.size[0] > 0
    # no reference to anything outside the file: no URL in any attribute or stylesheet
    without_data = re.sub(r"data:[^\"]+", "", page)
    assert not re.search(r"(src|href)=\"(?!#|\")", without_data), \
        re.findall(r"(?:src|href)=\"[^\"]{0,60}", without_data)
    assert not re.search(r"url\(|@import|https?://", without_data, flags=re.IGNORECASE)


def test_report_of_a_session_is_one_self_contained_file(session_path: Path, tmp_path: Path) -> None:
    from engine.report import write_report

    out = write_report(session_path, tmp_path / "out" / "case.html")
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    text = _visible_text(page)
    assert "happy" in text and "EWMA, α = 0.3" in text
    for stage in ("ANGRY_A", "HAPPY_A", "HAPPY_B"):
        assert stage in text
    for seg in ANNOTATIONS:
        assert seg.label in text
        if seg.note:
            assert seg.note in text  # escaped in the HTML, the same text once read
    assert "agree" in text and "disagree" in text
    assert "Duchenne? cheeks &lt;raised&gt;" in page  # reviewer text is escaped, never markup
    # what could not be shown says why: the model folder and the video are not on this disk
    assert "model folder" in text and "not found" in text
    assert "video " in text and str(tmp_path / "media" / "clip.mp4") in text
    # occlusion: the seven conditions, Δ of the predicted class = -(index)/50 by construction
    for i, c in enumerate(CONDITIONS):
        assert f" {c} {0.0 - i / 50:+.3f} " in text, c
    assert "@media print" in page and "page-break" in page


def test_report_without_stages_shows_the_decision_frame(tmp_path: Path) -> None:
    """No SpRAy: the report says so and shows the frame where the decided class is most probable instead."""
    from engine.report import write_report

    path = _make_session(tmp_path / "clip.vxs", stages=False)
    with Session.open(path) as s:
        probs = s.read("probs")
    k = int(np.nanargmax(np.where(np.isfinite(probs[:, 1]), probs[:, 1], -1)))
    page = write_report(path, tmp_path / "case.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    text = _visible_text(page)
    assert "No stages: SpRAy did not run" in text
    assert "Key frame of the decision" in text
    assert f"intrinsic map: happy {100 * probs[k, 1]:.0f} %" in text  # the most probable frame, its map
    assert "No stages to pick key frames from" in text


def test_report_of_a_long_session_stays_small(tmp_path: Path) -> None:
    """A 30,000-frame session (17 min at 30 fps) with a 20,000-frame stage: curves are averaged to at most
    MAX_CURVE_POINTS per class and a stage's mean map is read from a sample of its frames, so the file and
    the time stay those of a short session."""
    from engine.figures import MAX_CURVE_POINTS
    from engine.report import write_report

    n = 30_000
    s = Session.create(tmp_path / "long.vxs", {"path": str(tmp_path / "long.mp4"), "fps": 30.0, "frame_count": n,
                                               "width": 320, "height": 240, "duration": n / 30}, np.arange(n) / 30)
    found = np.ones(n, bool)
    s.write_faces(0, found, np.tile(np.float32([100, 60, 200, 180]), (n, 1)), np.zeros((n, 68, 2), np.float32),
                  np.full(n, 0.9, np.float32), found)
    s.begin_analysis({"name": "cnn-test", "arch": "cnn"}, CLASSES, ["intrinsic"], 0.3)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
    for a in range(0, n, 10_000):
        sl = slice(a, a + 10_000)
        s.write_explanation("intrinsic", a, rng.uniform(0, 1, (10_000, 6, 6)).astype(np.float16))
        s.write_scores(a, found[sl], np.log(probs[sl]), probs[sl])
    s.write_temporal_prototype(["SAD_A"] * 5_000 + ["HAPPY_A"] * 20_000 + ["SAD_B"] * 5_000, "spray")
    s.finish_analysis(probs, 0.3, "happy")
    s.close()
    t = time.perf_counter()
    page = write_report(tmp_path / "long.vxs", tmp_path / "long.html").read_text(encoding="utf-8")
    took = time.perf_counter() - t
    assert_self_contained(page)
    svg = base64.b64decode(_images(page)[0].split(",", 1)[1]).decode()
    polylines = re.findall(r"<path [^>]*d=\"M ([^\"]*)\"", svg)
    longest = max(p.count(" L ") + 1 for p in polylines)
    assert longest <= MAX_CURVE_POINTS, longest
    assert len(page) < 1_500_000 and "HAPPY_A" in _visible_text(page)
    print(f"report of a {n}-frame session: {took:.2f} s, {len(page) / 1e6:.2f} MB")
    assert took < 60


def test_report_refuses_an_unanalysed_session(tmp_path: Path) -> None:
    from engine.report import write_report
    from sessions.store import SessionError

    s = Session.create(tmp_path / "raw.vxs", {"path": "x.mp4", "fps": 30.0, "frame_count": 3, "width": 8,
                                                "height": 8}, np.arange(3) / 30)
    s.close()
    with pytest.raises(SessionError, match="no analysis"):
        write_report(tmp_path / "raw.vxs", tmp_path / "r.html")
    with pytest.raises(ValueError, match=r"\.html"):
        write_report(tmp_path / "raw.vxs", tmp_path / "r.pdf")


def test_report_and_figure_commands_do_not_load_torch(session_path: Path, tmp_path: Path) -> None:
    """`vidxai report` and `figure` read a session like info/export do: no torch, cv2 or Qt."""
    code = ("import sys, time; from engine import cli; t = time.perf_counter();"
            f"a = cli.main(['report', {str(session_path)!r}, '--out', {str(tmp_path / 'r.html')!r}]);"
            "dt = time.perf_counter() - t;"
            f"b = cli.main(['figure', {str(session_path)!r}, '--what', 'timeline', '--out', {str(tmp_path / 't.pdf')!r}]);"
            f"c = cli.main(['figure', {str(session_path)!r}, '--what', 'frame', '--frame', '61', '--out', {str(tmp_path / 'f.png')!r}]);"
            "print('RESULT', a, b, c, [m for m in ('torch', 'PySide6', 'cv2', 'dlib') if m in sys.modules], round(dt, 3))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "RESULT 0 0 2 []" in r.stdout, r.stdout + r.stderr
    assert "frame 61 has no face" in r.stderr
    print("report of a 90-frame session in-process:", r.stdout.split()[-1], "s")


@pytest.mark.parametrize("what", ["timeline", "stages", "frame"])
def test_figures_are_vector_with_fonts_embedded(session_path: Path, tmp_path: Path, what: str) -> None:
    from PIL import Image

    from engine.cli import main

    for fmt in ("pdf", "svg", "png"):
        out = tmp_path / f"{what}.{fmt}"
        assert main(["figure", str(session_path), "--what", what, "--out", str(out)]) == 0
        data = out.read_bytes()
        if fmt == "pdf":
            assert data.startswith(b"%PDF") and b"/FontFile2" in data  # TrueType fonts embedded
            assert b"/Type3" not in data
        elif fmt == "svg":
            assert b"<svg" in data and b"<text" not in data  # glyphs as paths: no font needed to view it
        else:
            with Image.open(out) as im:
                dpi = im.info.get("dpi", (0, 0))
                width_in = im.size[0] / dpi[0]
            assert round(dpi[0]) == 300
            assert width_in == pytest.approx(3.5 if what == "frame" else 7.2, abs=0.05)
    assert main(["figure", str(session_path), "--what", what, "--out", str(tmp_path / "x.jpg")]) == 2


# --------------------------------------------------------------------------------- the demo, in a browser

def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome", "headless_shell"):
        if p := shutil.which(name):
            return p
    return None


@pytest.fixture(scope="module")
def demo_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo clip analysed with the shipped ProtoPNet, with occlusion, and a reviewer's notes."""
    from engine.resources import demo_clip, models_dir

    model = models_dir() / "protopnet"
    if not (model / "model.json").is_file():
        pytest.skip(f"no shipped ProtoPNet in {model}")
    out = tmp_path_factory.mktemp("demo")
    r = subprocess.run([sys.executable, "-m", "vidxai_gui.launcher", "analyze", str(demo_clip()), "--model",
                        str(model), "--occlusion", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    path = out / (demo_clip().stem + ".vxs")
    with Session.open(path, writable=True) as s:
        s.save_annotations(Annotations([Tier("clinician")], [
            Segment("clinician", 3, 20, "smile onset", note="cheeks raised, AU6+12", author="dr b", agreement="agree"),
            Segment("clinician", 20, 30, "brief frown", note="concentration, not anger", author="dr b",
                    agreement="disagree"),
            Segment("clinician", 40, 55, "broad smile", author="dr b")]))
    return path


def test_demo_report_in_headless_chromium(demo_session: Path, tmp_path: Path, artifacts_dir: Path) -> None:
    """Acceptance: the demo's report opens in headless Chromium with the network cut off, its screenshot is
    kept for a person to look at, every image is embedded, and the page names the decision, the stages and
    each annotation; it also prints to PDF."""
    from engine.report import write_report

    t = time.perf_counter()
    out = write_report(demo_session, tmp_path / "case.html")
    print(f"demo report written in {time.perf_counter() - t:.2f} s")
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    with Session.open(demo_session) as s:
        info = s.info()
        segs = s.annotations().segments
    assert info["decision"] and info["stages"]
    # every ProtoPNet key frame shows the face, its map and prototypes with their training image
    assert page.count("data:image/jpeg") >= 2 * min(len(info["stages"]), 12)
    assert "fer2013:train/" in page

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium); the report was checked as text only")
    # No network: every host resolves to nothing and any request would go to a dead proxy.
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = out.resolve().as_uri()
    shot = artifacts_dir / "case_report_demo.png"
    shot.unlink(missing_ok=True)
    env = {**os.environ, "HOME": str(tmp_path)}
    r = subprocess.run([browser, *flags, "--window-size=1100,4200", f"--screenshot={shot}", url], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 100_000, r.stderr[-2000:]
    dom = subprocess.run([browser, *flags, "--dump-dom", url], env=env, capture_output=True, text=True,
                         timeout=120, check=False).stdout
    text = _visible_text(dom)
    assert f"Video decision {info['decision']}" in text
    for st in info["stages"]:
        assert st["descriptor"] in text
    for seg in segs:
        assert seg.label in text and (seg.note or "") in text
    pdf = tmp_path / "case.pdf"
    subprocess.run([browser, *flags, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url], env=env,
                   capture_output=True, text=True, timeout=120, check=False)
    data = pdf.read_bytes()
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert data.startswith(b"%PDF") and pages >= 3, pages  # the demo: 7 A4 pages
    shutil.copy(pdf, artifacts_dir / "case_report_demo.pdf")
    (artifacts_dir / "case_report_demo.json").write_text(json.dumps({"pages": pages, "bytes": len(page)}))


# --------------------------------------------------------------------------------- the window

@pytest.mark.gui
@pytest.mark.timeout(300)
def test_export_case_report_from_the_window(demo_session: Path, window, qtbot, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """File ▸ Export ▸ Case report… in the real window: the menu action asks for a file, runs a job that
    shows in the job panel with progress, and writes the report with the session's annotations."""
    from PySide6.QtWidgets import QFileDialog

    session = Path(shutil.copy(demo_session, tmp_path / demo_session.name))
    window.open_path(session)
    qtbot.waitUntil(lambda: window.data is not None and window.player.info is not None
                    and window.annotation_panel.isEnabled(), timeout=60_000)
    file_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&File")
    export_menu = next(a.menu() for a in file_menu.actions() if a.menu() and a.text() == "Export")
    action = next(a for a in export_menu.actions() if a.text().startswith("Case report"))
    assert action.isEnabled()

    target = tmp_path / "out" / "case"  # no suffix typed: .html is added
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), "Web page (*.html)"))
    steps: list[tuple[int, int, str]] = []
    submitted: list = []
    real_submit = window.jobs.submit

    def submit(fn, name, **kw):
        worker = real_submit(fn, name, **kw)
        worker.progress.connect(lambda d, t, m: steps.append((d, t, m)))
        submitted.append(worker)
        return worker

    monkeypatch.setattr(window.jobs, "submit", submit)
    action.trigger()
    assert submitted, "the action started no job"
    worker = submitted[0]
    assert window.job_panel.row_for(worker) is not None  # shown in the job panel
    with qtbot.waitSignal(worker.done, timeout=120_000):
        pass
    out = target.with_name("case.html")
    assert out.is_file(), window.statusBar().currentMessage()
    assert steps and steps[-1][0] == steps[-1][1]  # progress reached its end
    text = _visible_text(out.read_text(encoding="utf-8"))
    with Session.open(session) as s:
        info = s.info()
        segs = s.annotations().segments
    assert f"Video decision {info['decision']}" in text
    assert all(seg.label in text for seg in segs)
    assert "Case report written" in window.statusBar().currentMessage()

    # Export ▸ Figure ▸ current frame, as a vector PDF with its fonts embedded
    from vidxai_gui import report_export

    window.timeline.seekRequested.emit(30)
    qtbot.waitUntil(lambda: window.player.current == 30, timeout=10_000)
    figure_menu = next(a.menu() for a in export_menu.actions() if a.menu() and a.text() == "Figure")
    assert figure_menu.menuAction().isEnabled()
    fig_action = next(a for a in figure_menu.actions() if a.text() == report_export.FIGURES["frame"])
    pdf = tmp_path / "out" / "frame30.pdf"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(pdf), "PDF, vector (*.pdf)"))
    submitted.clear()
    fig_action.trigger()
    with qtbot.waitSignal(submitted[0].done, timeout=120_000):
        pass
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and b"/FontFile2" in data
    assert "Figure written" in window.statusBar().currentMessage()


def test_the_template_ships_with_the_package_and_the_bundle() -> None:
    """The report's template is package data (pyproject) and a data file of the PyInstaller bundle (spec), at
    the place engine.report looks for it; jinja2 is a declared dependency."""
    import tomllib

    from engine.report import TEMPLATE, TEMPLATES_DIR

    assert (TEMPLATES_DIR / TEMPLATE).is_file() and TEMPLATES_DIR == REPO / "engine" / "templates"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert any(d.lower().startswith("jinja2") for d in project["project"]["dependencies"])
    assert "templates/*.j2" in project["tool"]["setuptools"]["package-data"]["engine"]
    spec = (REPO / "packaging" / "vidxai.spec").read_text()
    assert 'glob("*.j2")' in spec and '"engine/templates"' in spec and '"jinja2"' in spec
