"""Make the README's issue-14 pictures from real sessions (a bundled model, a shared clip), as a clinician sees
them in the window:

- docs/stages_before_after.png: the timeline (scores, face track, stage strip) of one clip analysed with
  SpRAy as published, with the temporal term only, and with the defaults (temporal term + minimum stage
  duration), stacked with a caption each;
- docs/stage_selected.png: the whole window with a stage of the default session selected (its range on the
  timeline, the Stage dock with its mean map over the face and its prototypes) and the heatmap's colour bar;
- docs/input_dock.png: the Input dock (model input and occlusion) at that frame (the model input shown at once).

    .venv/bin/python -m engine.cli analyze CLIP --model resources/models/protopnet --out DIR/published \\
        --spray-temporal-weight 0 --min-stage-s 0      # and --out DIR/temporal --min-stage-s 0, DIR/default
    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_stage_shots.py DIR/published/X.vxs \\
        DIR/temporal/X.vxs DIR/default/X.vxs [--frame K]

Run by hand, not by the tests (it needs the analysed sessions).
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

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from docs.make_screenshot import pump
from vidxai_gui.app import SETTINGS_ENV, app_settings, ensure_app, save_screenshot


def grab(widget) -> Image.Image:
    """The widget as drawn, as a Pillow image."""
    from PySide6.QtCore import QBuffer, QIODevice

    buf = QBuffer()
    buf.open(QIODevice.OpenModeFlag.WriteOnly)
    widget.grab().save(buf, "PNG")
    import io

    return Image.open(io.BytesIO(bytes(buf.data()))).convert("RGB")


def open_session(app, w, path: Path) -> None:
    """Open a session and wait until its own stages are on the strip (not the previous session's)."""
    from sessions import Session

    with Session.open(path) as s:
        shown = [(st.start, st.end) for st in s.display_stages()]
    w.open_path(path)
    pump(app, lambda: w.data is not None and Path(w.data.path).resolve() == path.resolve()
         and w.data.probs is not None and [(st.start, st.end) for st in w.timeline.stages] == shown
         and w.player.current >= 0)
    settle(app)


def start_window(width: int, height: int):
    """The application and a main window of that size, shown, with settings in a fresh temporary folder."""
    os.environ[SETTINGS_ENV] = tempfile.mkdtemp(prefix="vidxai-shot-")
    app = ensure_app()
    from vidxai_gui.main_window import MainWindow

    w = MainWindow(app_settings())
    w.resize(width, height)
    w.show()
    return app, w


def settle(app, seconds: float = 1.0) -> None:
    t_end = time.monotonic() + seconds
    pump(app, lambda: time.monotonic() > t_end)


def caption(img: Image.Image, text: str) -> Image.Image:
    font = ImageFont.load_default(size=15)
    out = Image.new("RGB", (img.width, img.height + 26), "white")
    ImageDraw.Draw(out).text((8, 5), text, fill="black", font=font)
    out.paste(img, (0, 26))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("published", type=Path, help="session analysed with --spray-temporal-weight 0 --min-stage-s 0")
    ap.add_argument("temporal", type=Path, help="session analysed with --min-stage-s 0")
    ap.add_argument("default", type=Path, help="session analysed with the defaults")
    ap.add_argument("--frame", type=int, default=-1, help="frame on screen (default: in the selected stage)")
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    args = ap.parse_args()
    app, w = start_window(1400, 900)
    from sessions import Session

    rows = []
    for path, what in ((args.published, "SpRAy as published (temporal weight 0, no minimum duration)"),
                       (args.temporal, "with the temporal term (weight 2), no minimum duration"),
                       (args.default, "defaults: temporal term + stages of at least 0.6 s")):
        open_session(app, w, path)
        with Session.open(path) as s:
            n, T, model = len(s.display_stages()), s.frame_count, s.analysis_info()["model_name"]
        tl = w.timeline
        rows.append(caption(grab(tl), f"{Path(str(w.data.video.get('path', path))).name}, {model}: {what}: "
                                      f"{n} stages in {T} frames ({100 * (1 - n / T):.0f} % reduction)"))
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows) + 8 * (len(rows) - 1)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 8
    sheet.save(args.out / "stages_before_after.png")
    print(args.out / "stages_before_after.png")

    # The default session with its longest stage selected, the map on the frame, the Stage dock raised.
    tl = w.timeline
    lengths = [st.end - st.start for st in tl.stages]
    i = int(np.argmax(lengths))
    st = tl.stages[i]
    w.select_stage(i)
    pump(app, lambda: w.review.stage == i and w.review.stage_info is not None)
    key = int(w.review.stage_info.get("key_frame", -1))
    frame = args.frame if args.frame >= 0 else (key if key >= 0 else (st.start + st.end) // 2)
    w.player.seek(frame)
    pump(app, lambda: w.player.current == frame and w.player.view.heat_item.isVisible())
    w.docks["stage"].raise_()
    settle(app, 1.5)
    print(save_screenshot(w, args.out / "stage_selected.png"), f"stage {i} ({st.label}), frame {frame}")
    # The Input dock at the same frame: the model input shown at once, no toggle touched.
    w.docks["preprocess"].raise_()
    view = w.preprocess.input_view
    pump(app, lambda: view.pixmap() is not None and not view.pixmap().isNull()
         and w.preprocess.status.text().startswith(f"frame {frame}:"))
    settle(app, 0.5)
    print(save_screenshot(w.docks["preprocess"], args.out / "input_dock.png"))
    w.shutdown()


if __name__ == "__main__":
    main()
