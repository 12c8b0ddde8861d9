"""Make docs/screenshot.png: the demo clip analysed by the default model, as `make demo` shows it, at a
frame where the smile is on, in the face view (the face fills the player, so the heatmap reads at the
README's size), with the model's own explanation dock on top: for a ProtoPNet the prototype
gallery with the strongest prototype selected (its similarity drawn on the timeline), for a PatchSAE the
frame's strongest latents and their reference patches. Each step waits for what the window shows (a
condition), never for a fixed time.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_screenshot.py [OUT.png] [--frame K] [--model DIR] [--whole-frame]
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


def pump(app, cond, timeout: float = 300.0, what: str = "the window") -> None:
    """Run the event loop's work until cond() holds. processEvents() alone skips deferred deletes, which a
    real event loop runs (Qt drops a dock tab bar it replaced that way: skipped, it stays on screen)."""
    from PySide6.QtCore import QCoreApplication, QEvent

    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} did not get there in {timeout:.0f} s")
        time.sleep(0.01)


def settle(app, w) -> None:
    """Until no job is running and no event is left to handle (the docks drawn from the last update)."""
    pump(app, lambda: not w.jobs.is_busy(), what="the background jobs")
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(REPO / "docs" / "screenshot.png"))
    ap.add_argument("--frame", type=int, default=38)
    ap.add_argument("--model", default=None, help="model folder (default: the bundled default model)")
    ap.add_argument("--whole-frame", action="store_true",
                    help="the whole frame instead of the player's face view (F), in which the face fills the view")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vidxai-shot-"))
    os.environ[SETTINGS_ENV] = str(tmp)
    app = ensure_app()
    from engine.resources import default_model_dir, demo_clip
    from vidxai_gui.main_window import MainWindow
    from vidxai_gui.review import SIMILARITIES, TOP_LATENTS

    model = Path(args.model) if args.model else default_model_dir()
    settings = app_settings()
    # A fresh session, as on a new machine: not one an earlier run left in the app's sessions folder.
    settings.setValue("sessions_dir", str(tmp / "sessions"))
    w = MainWindow(settings)
    w.resize(1280, 800)
    w.show()
    w.open_video(demo_clip(), analyse_with=model)
    pump(app, lambda: w.analysis_worker is not None, what="the analysis")
    pump(app, lambda: w.analysis_worker is None and not w.jobs.is_busy(), what="the analysis")
    pump(app, lambda: w.data is not None and w.data.probs is not None and bool(w.timeline.stages),
         what="the reloaded session (scores and stages)")
    if not args.whole_frame:
        w.player.set_face_view(True)
    w.player.seek(args.frame)
    pump(app, lambda: w.player.current == args.frame and w.player.view.heat_item.isVisible(),
         what=f"frame {args.frame} with its heatmap")
    extra = w.data.extra
    if SIMILARITIES in extra:  # ProtoPNet: the gallery, strongest prototype selected
        w.docks["prototypes"].raise_()
        pump(app, lambda: w.gallery.table.rowCount() > 0 and bool(w.gallery.prototypes), what="the gallery")
        w.gallery.table.selectRow(0)
    elif TOP_LATENTS in extra:  # PatchSAE: the frame's latents and where they fire in training faces
        w.docks["latents"].raise_()
        pump(app, lambda: bool(w.latents.patches), what="the SAE reference patches")
        w.frame_docks.update(args.frame)
        pump(app, lambda: w.latents.plot.isVisible() and bool(w.latents.shown_patch_latents()),
             what="the SAE latents dock")
    w.docks["annotations"].raise_()  # the Jobs tab (raised by the analysis) only says "done" by now
    settle(app, w)
    print(save_screenshot(w, args.out))

    w.shutdown()


if __name__ == "__main__":
    main()
