"""Application entry: QApplication, settings location, the main window; ``run`` is what the launcher calls."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication, QWidget

log = logging.getLogger(__name__)

ORGANIZATION = "VidXAI"
APPLICATION = "VidXAI"
SETTINGS_ENV = "VIDXAI_SETTINGS_DIR"
"""Folder for an INI settings file instead of the user's settings (tests, portable installs)."""


def app_settings() -> QSettings:
    """The user's settings, or an INI file in $VIDXAI_SETTINGS_DIR when set (tests never touch the user's)."""
    folder = os.environ.get(SETTINGS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return QSettings(str(Path(folder) / "vidxai.ini"), QSettings.Format.IniFormat)
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION)


def ensure_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    return app  # type: ignore[return-value]


def save_screenshot(widget: QWidget, path: str | os.PathLike[str]) -> Path:
    """Render ``widget`` (offscreen too) into a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not widget.grab().save(str(path)):
        raise OSError(f"could not write the screenshot {path}: check that the folder is writable")
    return path


def run(argv_paths: list[str], demo: bool = False, model_dir: str | None = None) -> int:
    """Open the window with the given files (a video or a .vxs session); returns the exit code.

    ``demo`` opens the shipped CREMA-D clip; ``model_dir`` analyses the opened video with that model.
    """
    from vidxai_gui.main_window import MainWindow

    app = ensure_app()
    window = MainWindow(app_settings(), model_dir=model_dir)
    paths = list(argv_paths)
    if demo and not paths:
        try:
            from engine.resources import DEMO_CLIP, resources_dir

            paths = [str(resources_dir() / DEMO_CLIP)]
        except Exception as exc:  # noqa: BLE001 - a missing demo must not stop the app from starting
            window.show_error("The demo clip is missing", str(exc), "Open a video with File ▸ Open video….")
    window.show()
    if paths:
        first = paths[0]

        def open_first() -> None:
            # After show(): the window paints before the decoder starts, never a blank wait.
            if model_dir and not first.lower().endswith(".vxs"):
                window.open_video(first, analyse_with=model_dir)
            else:
                window.open_path(first)

        QTimer.singleShot(0, open_first)
    code = app.exec()
    window.shutdown()
    return int(code)
