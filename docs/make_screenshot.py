"""Make docs/screenshot.png: the demo clip analysed by the default model, as `make demo` shows it, at a
frame where the smile is on, with the strongest prototype selected (its similarity drawn on the timeline).

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_screenshot.py [OUT.png] [--frame K]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidxai_gui.app import SETTINGS_ENV, app_settings, ensure_app, save_screenshot


def pump(app, cond, timeout: float = 300.0) -> None:
    """Run the event loop's work until cond() holds. processEvents() alone skips deferred deletes, which a
    real event loop runs (Qt drops a dock tab bar it replaced that way: skipped, it stays on screen)."""
    from PySide6.QtCore import QCoreApplication, QEvent

    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the window did not get there in time")
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(REPO / "docs" / "screenshot.png"))
    ap.add_argument("--frame", type=int, default=38)
    args = ap.parse_args()
    os.environ[SETTINGS_ENV] = tempfile.mkdtemp(prefix="vidxai-shot-")
    app = ensure_app()
    from engine.resources import default_model_dir, demo_clip
    from vidxai_gui.main_window import MainWindow

    w = MainWindow(app_settings())
    w.resize(1280, 800)
    w.show()
    w.open_video(demo_clip(), analyse_with=default_model_dir())
    pump(app, lambda: w.analysis_worker is not None)
    pump(app, lambda: w.analysis_worker is None and not w.jobs.is_busy())
    pump(app, lambda: w.data is not None and bool(w.data.probs is not None))
    w.player.seek(args.frame)
    pump(app, lambda: w.player.current == args.frame and w.player.view.heat_item.isVisible())
    w.docks["prototypes"].raise_()
    pump(app, lambda: w.gallery.table.rowCount() > 0 and bool(w.gallery.prototypes))
    w.gallery.table.selectRow(0)
    t_end = time.monotonic() + 1.0
    pump(app, lambda: time.monotonic() > t_end)
    print(save_screenshot(w, args.out))

    w.shutdown()


if __name__ == "__main__":
    main()
