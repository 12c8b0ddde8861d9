"""Make the README's issue-16 window pictures from real sessions, as a clinician sees them:

- docs/landmarks_window.png: a session analysed by a landmark model (points coloured by signed IG and sized
  by |IG|, their key, the Landmarks dock's bars, the timeline's AU agreement track), face view on;
- docs/au_regions.png: a frame model's session (Grad-CAM heatmap) with View ▸ Show expected AU regions on:
  the predicted class's AU regions beside the map, their names and the frame's AU agreement.

    vidxai train ../shared/data/videos/crema-d --arch landmark-lstm --window 8 --epochs 30 --batch-size 16 \\
        --out /tmp/lmk/crema-lstm
    vidxai analyze ../shared/data/videos/crema-d/1001_DFA_HAP_XX.flv --model /tmp/lmk/crema-lstm --out /tmp/lmk/s
    vidxai analyze ../shared/data/videos/crema-d/1001_DFA_HAP_XX.flv --model resources/models/cnn \\
        --explain gradcam --out /tmp/lmk/cnn
    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_landmark_shots.py /tmp/lmk/s/1001_DFA_HAP_XX.vxs \\
        /tmp/lmk/cnn/1001_DFA_HAP_XX.vxs [--frame K]

Run by hand, not by the tests (it needs the analysed sessions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docs.make_screenshot import pump
from docs.make_stage_shots import settle, start_window
from vidxai_gui.app import save_screenshot


def show(app, w, path: Path, frame: int) -> None:
    """Open a session, wait for its landmark evidence, go to ``frame`` in the face view."""
    w.open_path(path)
    pump(app, lambda: w.data is not None and Path(w.data.path).resolve() == path.resolve()
         and w.data.probs is not None and w.player.current >= 0)
    pump(app, lambda: w.landmark_view.evidence is not None and w.landmark_view.evidence.path == path)
    w.player.set_face_view(True)
    w.player.seek(frame)
    pump(app, lambda: w.review.frame == frame)
    settle(app)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("landmark_session", type=Path, help="a session analysed by a landmark-lstm model")
    ap.add_argument("frame_session", type=Path, help="a session analysed by a frame model with a heatmap method")
    ap.add_argument("--frame", type=int, default=30)
    ap.add_argument("--out", type=Path, default=REPO / "docs")
    args = ap.parse_args()
    app, w = start_window(1400, 900)
    show(app, w, args.landmark_session.resolve(), args.frame)
    print(save_screenshot(w, args.out / "landmarks_window.png"))
    show(app, w, args.frame_session.resolve(), args.frame)
    w.docks["preprocess"].raise_()  # a frame model: the Landmarks dock has nothing to show
    w.au_regions_action.setChecked(True)
    pump(app, lambda: w.player.view.heat_item.isVisible())
    settle(app)
    print(save_screenshot(w, args.out / "au_regions.png"))
    w.shutdown()


if __name__ == "__main__":
    main()
