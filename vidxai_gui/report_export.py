"""File ▸ Export ▸ Case report… and ▸ Figure: the session's case report (engine.report, as `vidxai report`)
and publication figures (engine.figures, as `vidxai figure`; frame and gallery at the current frame), each
written by a job on the window's queue with its progress in the job panel. The window only adds the action."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMenu

if TYPE_CHECKING:
    from vidxai_gui.main_window import MainWindow
    from vidxai_gui.worker import JobWorker


FIGURES = {"timeline": "Timeline (scores, EWMA, stages, annotations)…", "stages": "Stage maps…",
           "frame": "Current frame with its map…", "gallery": "Current frame's prototypes…"}


def add_action(window: MainWindow, menu: QMenu) -> QAction:
    """Add "Case report (HTML)…" and a Figure submenu to `menu`; the report action is returned so the window
    enables it with its other exports, and the submenu follows it."""
    action = menu.addAction("Case report (HTML)…")
    action.setStatusTip("One self-contained HTML file: decision, model card, stages with key frames and "
                        "prototypes, occlusion, annotations; prints to PDF from a browser")
    action.triggered.connect(lambda _checked=False: choose_and_export(window))
    figures = menu.addMenu("Figure")
    for what, text in FIGURES.items():
        figures.addAction(text).triggered.connect(lambda _checked=False, w=what: choose_and_export_figure(window, w))
    action.changed.connect(lambda: figures.menuAction().setEnabled(action.isEnabled()))
    return action


def choose_and_export(window: MainWindow) -> JobWorker | None:
    if window.session_path is None:
        return None
    default = str(window.session_path.with_suffix(".report.html"))
    path, _ = QFileDialog.getSaveFileName(window, "Export case report", default, "Web page (*.html)")
    if not path:
        return None
    target = Path(path)
    if target.suffix.lower() not in (".html", ".htm"):
        target = target.with_name(target.name + ".html")
    return export_report(window, target)


def export_report(window: MainWindow, target: Path) -> JobWorker | None:
    """Write the case report of the open session to `target` as a job; the reviewer's last edit is saved
    first, so the report shows every annotation."""
    if window.session_path is None:
        return None
    window.autosaver.wait()
    source = window.session_path

    def job(progress: Any, cancel: Any) -> Path:
        from engine.report import write_report

        return write_report(source, target, progress=progress, cancel=cancel)

    worker = window.jobs.submit(job, f"Case report {target.name}")
    worker.finished.connect(lambda p: window.statusBar().showMessage(f"Case report written: {p}", 8000))
    worker.error.connect(lambda msg, tb: window.show_error("Case report failed", msg,
                                                           "Choose another folder or file name.", tb))
    return worker


def choose_and_export_figure(window: MainWindow, what: str) -> JobWorker | None:
    if window.session_path is None:
        return None
    default = str(window.session_path.with_name(f"{window.session_path.stem}_{what}.pdf"))
    path, chosen = QFileDialog.getSaveFileName(window, "Export figure", default,
                                               "PDF, vector (*.pdf);;SVG, vector (*.svg);;PNG, 300 dpi (*.png)")
    if not path:
        return None
    target = Path(path)
    if target.suffix.lower() not in (".pdf", ".svg", ".png"):
        target = target.with_name(target.name + ("." + chosen.split("*.")[-1].rstrip(")") if "*." in chosen else ".pdf"))
    return export_figure(window, what, target, frame=max(window.player.current, 0))


def export_figure(window: MainWindow, what: str, target: Path, frame: int | None = None) -> JobWorker | None:
    """Write one figure of the open session (`what` as in `vidxai figure --what`) as a job."""
    if window.session_path is None:
        return None
    source = window.session_path

    def job(progress: Any, cancel: Any) -> Path:
        from engine import figures
        from engine.report import ReportError, case_data, key_frame

        progress(0, 2, "reading the session")
        if what in ("timeline", "stages"):
            case = case_data(source, cancel=cancel, key_frames=False)
            if what == "stages" and not case.stages:
                raise ReportError(f"{source}: no stages (SpRAy did not run for this session)")
            fig = figures.timeline_figure(case.timeline) if what == "timeline" else \
                figures.stages_figure(case.stages, case.classes, method=case.method)
        else:
            key, method = key_frame(source, frame)
            fig = figures.frame_figure(key, method) if what == "frame" else figures.gallery_figure(key)
        progress(1, 2, "drawing")
        out = figures.save_figure(fig, target)
        progress(2, 2, "done")
        return out

    worker = window.jobs.submit(job, f"Figure {target.name}")
    worker.finished.connect(lambda p: window.statusBar().showMessage(f"Figure written: {p}", 8000))
    worker.error.connect(lambda msg, tb: window.show_error("Figure failed", msg,
                                                           "Choose another frame, folder or file name.", tb))
    return worker
