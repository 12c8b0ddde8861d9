"""Runtime hook of the VidXAI bundle: runs before the app's first import.

- matplotlib is bundled with the Agg backend only (confusion matrices and curves are PNG files).
- A ``cpu`` bundle carries only the CUDA libraries the loader demands when torch is imported, not the ones
  CUDA code paths load later (cuDNN's engines, …); it hides every GPU from torch so those paths never run.
- PyInstaller's own PySide6 hook points Qt at the bundled plugins; a QT_PLUGIN_PATH or QT_QPA_PLATFORM_PLUGIN_PATH
  inherited from a system Qt (KDE sets one) would load that Qt's plugins into ours, so they are dropped.
"""

import json
import os
import sys

_root = getattr(sys, "_MEIPASS", os.path.dirname(os.path.abspath(__file__)))
os.environ["MPLBACKEND"] = "Agg"
try:
    with open(os.path.join(_root, "vidxai_bundle.json"), encoding="utf-8") as _f:
        _info = json.load(_f)
except (OSError, ValueError):
    _info = {}
if _info.get("target") == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
for _var in ("QT_QPA_PLATFORM_PLUGIN_PATH",):
    _val = os.environ.get(_var, "")
    if _val and not os.path.abspath(_val).startswith(os.path.abspath(_root)):
        del os.environ[_var]
