"""File ▸ Export ▸ Case report…: the session's case report (engine.report, as `vidxai report`) written by a
job on the window's queue, with its progress in the job panel. The window only adds the action."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QMenu

if TYPE_CHECKING:
    from vidxai_gui.main_window import MainWindow
    from vidxai_gui.worker import JobWorker


def add_action(window: MainWindow, menu: QMenu) -> QAction:
    """Add "Case report (HTML)…" to `menu`; returned so the window enables it with its other exports."""
    action = menu.addAction("Case report (HTML)…")
    action.setStatusTip("One self-contained HTML file: decision, model card, stages with key frames and "
                        "prototypes, occlusion, annotations; prints to PDF from a browser")
    action.triggered.connect(lambda _checked=False: choose_and_export(window))
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
