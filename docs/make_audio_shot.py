"""Make docs/audio_waveform.png: the demo clip analysed by the default model, with the sound's waveform track
under the class scores, two annotations shaded over it, one of them selected and loop-playing (L, taken while
it plays), and the mute / volume controls in the player bar. Each step waits for what the window shows (a condition).

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/make_audio_shot.py [OUT.png] [--frame K]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))
sys.path.insert(0, str(REPO))

from make_screenshot import pump, settle

from vidxai_gui.app import SETTINGS_ENV, app_settings, ensure_app, save_screenshot


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(REPO / "docs" / "audio_waveform.png"))
    ap.add_argument("--frame", type=int, default=24)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vidxai-audio-shot-"))
    os.environ[SETTINGS_ENV] = str(tmp)
    app = ensure_app()
    from engine.resources import default_model_dir, demo_clip
    from vidxai_gui.audio import FakeSink
    from vidxai_gui.main_window import MainWindow

    settings = app_settings()
    settings.setValue("sessions_dir", str(tmp / "sessions"))
    w = MainWindow(settings)
    w.resize(1280, 800)
    w.show()
    w.player.audio.sink = FakeSink()  # offscreen machines have no audio device: the loop still runs
    w.open_video(demo_clip(), analyse_with=default_model_dir())
    pump(app, lambda: w.analysis_worker is not None, what="the analysis")
    pump(app, lambda: w.analysis_worker is None and not w.jobs.is_busy(), what="the analysis")
    # The session reloaded after the analysis (stages come with it) before annotating: a reload replaces the
    # window's annotations with the file's.
    pump(app, lambda: w.data is not None and w.data.probs is not None and bool(w.timeline.stages)
         and w.timeline.wave_plot.isVisible() and not w.jobs.loading, what="the reloaded session and the waveform")
    w.add_annotation_segment("neutral", 2, 14, tier="reviewer emotion", note="before the sentence")
    w.add_annotation_segment("happy", 18, 34, tier="reviewer emotion", agreement="agree",
                             note="smile while saying the words")
    w.docks["annotations"].raise_()
    pump(app, lambda: w.annotation_panel.table.rowCount() == 2, what="the annotation list")
    w.annotation_panel.table.selectRow(1)
    w.player.seek(args.frame)
    pump(app, lambda: w.player.current == args.frame and w.player.view.heat_item.isVisible(),
         what=f"frame {args.frame} with its heatmap")
    w.player.volume.setValue(70)
    w.toggle_annotation_loop()  # L: the selected annotation plays again and again with its sound
    pump(app, lambda: w.player.sound_on and w.player.current >= args.frame + 4, what="the loop")
    settle(app, w)
    print(save_screenshot(w, args.out))
    w.player.stop_range()
    w.shutdown()


if __name__ == "__main__":
    main()
