"""Application entry: QApplication, settings location, the main window; ``run`` is what the launcher calls."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, QTimer
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


# Qt Multimedia's probing of optional system libraries (PipeWire, VA-API) is logged line by line on every
# start; the status bar already says when a video plays silently. A user's own QT_LOGGING_RULES wins.
QUIET_MULTIMEDIA = "qt.multimedia.symbolsresolver=false;qt.multimedia.ffmpeg=false"


def ensure_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        os.environ.setdefault("QT_LOGGING_RULES", QUIET_MULTIMEDIA)
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


def _default_model() -> tuple[str | None, str]:
    """The bundled model folder, or None and why not."""
    try:
        from engine.resources import default_model_dir

        return str(default_model_dir()), ""
    except Exception as exc:  # noqa: BLE001 - a missing model only means "no analysis", never "no window"
        return None, str(exc)


EXIT_ENV = "VIDXAI_EXIT_AFTER_ANALYSIS"
"""Set (to a PNG path, or empty) to quit once the opened video is analysed: scripted demos, README screenshots
and the test that drives exactly the README's run command."""


def settle(ms: int) -> None:
    """Run the real event loop for ``ms`` milliseconds. Unlike processEvents() this also runs deferred
    deletions (Qt drops a dock tab bar it replaced that way; skipped, it stays on screen)."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _exit_when_analysed(app: QApplication, window: QWidget, screenshot: str, timeout_s: float = 600.0) -> None:
    timer = QTimer(window)
    waited = {"ms": 0}

    def check() -> None:
        waited["ms"] += 250
        data = getattr(window, "data", None)
        done = (window.analysis_worker is None and data is not None and bool(data.analysis)
                and data.analysis.get("complete") is True and not window.jobs.loading)  # prototype crops too
        if done or waited["ms"] > timeout_s * 1000:
            timer.stop()
            if done and screenshot:
                save_screenshot(window, screenshot)
            print(f"{'analysed' if done else 'timed out'}: {window.session_path}", flush=True)
            app.exit(0 if done else 1)

    timer.timeout.connect(check)
    timer.start(250)


def run(argv_paths: list[str], demo: bool = False, model_dir: str | None = None, analyze: bool = True) -> int:
    """Open the window with the given files (a video or a .vxs session); returns the exit code.

    ``demo`` opens the shipped CREMA-D clip. A video is analysed as it opens (``analyze``) with
    ``model_dir``, or with the bundled model when none is given; sessions open as they are.
    """
    from vidxai_gui.main_window import MainWindow

    app = ensure_app()
    window = MainWindow(app_settings(), model_dir=model_dir)
    paths = list(argv_paths)
    if demo and not paths:
        try:
            from engine.resources import demo_clip

            paths = [str(demo_clip())]
        except Exception as exc:  # noqa: BLE001 - a missing demo must not stop the app from starting
            window.show_error("The demo clip is missing", str(exc), "Open a video with File ▸ Open video….")
    model = model_dir
    if analyze and model is None and paths and not paths[0].lower().endswith(".vxs"):
        model, why = _default_model()
        if model is None:
            window.statusBar().showMessage(f"Opened without analysis: {why}", 15000)
    window.show()
    if paths:
        first = paths[0]

        def open_first() -> None:
            # After show(): the window paints before the decoder starts, never a blank wait.
            if analyze and model and not first.lower().endswith(".vxs"):
                window.open_video(first, analyse_with=model)
            else:
                window.open_path(first)

        QTimer.singleShot(0, open_first)
    if os.environ.get(EXIT_ENV) is not None:
        _exit_when_analysed(app, window, os.environ[EXIT_ENV])
    code = app.exec()
    window.shutdown()
    return int(code)


def self_test(timeout_s: float = 600.0, out_dir: str | os.PathLike[str] | None = None) -> int:
    """Offscreen smoke test of an installation: analyse the demo clip with the bundled model, save the
    session and a screenshot; 0 when all of it worked, else 1 with the reason on stderr."""
    import tempfile

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    out = Path(out_dir or tempfile.mkdtemp(prefix="vidxai-self-test-"))
    os.environ[SETTINGS_ENV] = str(out / "settings")
    from vidxai_gui import selftest

    problems = selftest.preflight()  # before any QApplication: Qt aborts on a missing platform plugin
    for problem in problems:
        print(f"self-test failed: {problem}", file=sys.stderr)
    if problems:
        return 1
    from PySide6.QtCore import QElapsedTimer

    from vidxai_gui.main_window import MainWindow

    ensure_app()
    settings = app_settings()
    settings.setValue("sessions_dir", str(out))
    try:
        from engine.resources import default_model_dir, demo_clip

        clip, model = demo_clip(), default_model_dir()
    except Exception as exc:  # noqa: BLE001 - reported as the test's result
        print(f"self-test: {exc}", file=sys.stderr)
        return 1
    window = MainWindow(settings)
    window.resize(1280, 800)
    window.show()
    errors: list[str] = []
    window.player.videoFailed.connect(errors.append)
    window.open_video(clip, analyse_with=model)
    clock = QElapsedTimer()
    clock.start()
    started = False
    while clock.elapsed() < timeout_s * 1000 and not errors and getattr(window, "last_error", None) is None:
        settle(20)
        started = started or window.analysis_worker is not None
        data = window.data
        if started and window.analysis_worker is None and data is not None and data.analysis \
                and data.analysis.get("complete") is True and window.player.current >= 0:
            break
    problems: list[str] = []
    ok = window.data is not None and bool(window.data.analysis) and window.data.analysis.get("complete") is True
    if ok:
        # What the reviewer sees next: the prototype crops and the frame's overlays, loaded on worker threads.
        while window.jobs.loading and clock.elapsed() < timeout_s * 1000:
            settle(20)
        settle(300)
        shot = save_screenshot(window, out / "self-test.png")
        problems = selftest.check_outputs(window.session_path, shot)
        problems += selftest.check_explanations(window)
        for problem in problems:
            print(f"self-test failed: {problem}", file=sys.stderr)
        ok = not problems
    if ok:
        print(f"self-test: analysed {clip.name} with {Path(model).name}; decision "
              f"{window.data.analysis.get('decision')!r}; session {window.session_path}; screenshot {shot}"
              + ("; bundle target {target}, torch {torch}".format_map(
                  {"target": "?", "torch": "?", **selftest.bundle_info()}) if selftest.bundle_info() is not None else ""))
    elif not problems:
        why = errors[0] if errors else getattr(getattr(window, "last_error", None), "text", lambda: "")() or \
            f"the analysis did not finish within {timeout_s:.0f} s"
        print(f"self-test failed: {why}", file=sys.stderr)
    window.shutdown()
    return 0 if ok else 1
