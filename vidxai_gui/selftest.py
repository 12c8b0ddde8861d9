"""The checks behind ``vidxai --self-test`` that run before and after the window's analysis.

``preflight`` runs before any QApplication exists, so that what a broken installation (a PyInstaller bundle
above all) lacks is named — a missing resources/ file, the dlib landmark model, a Qt platform plugin, a
library that does not load — instead of Qt aborting the process or an analysis failing somewhere deep.
``check_outputs`` then makes sure the session was written and reopens, and the screenshot is a real PNG;
``check_explanations`` that the prototype crops and the frame's heatmap reached the window; ``check_audio``
(in the preflight) that Qt Multimedia loads and the demo clip's sound track is found and decodes.
Each returns a list of problems, one line each; an empty list means all is well.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Imported up front: the analysis path and the explainers import some of them only when first used.
LIBRARIES = ("numpy", "torch", "torchvision", "cv2", "av", "dlib", "h5py", "scipy", "sklearn", "safetensors",
             "zennit", "captum.attr", "pytorch_grad_cam", "matplotlib", "pyqtgraph", "PIL")

_PLUGIN_PATTERNS = {"win32": "q{}*.dll", "darwin": "libq{}*.dylib"}


def bundle_info() -> dict | None:
    """What packaging/vidxai.spec recorded about this bundle (target, torch version…), None outside a bundle."""
    root = getattr(sys, "_MEIPASS", None)
    if not root:
        return None
    try:
        return json.loads((Path(root) / "vidxai_bundle.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def qt_plugin_dirs() -> list[Path]:
    """Folders Qt searches for plugins: $QT_PLUGIN_PATH, then the library's own plugins folder."""
    from PySide6.QtCore import QLibraryInfo

    dirs = [Path(p) for p in os.environ.get("QT_PLUGIN_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)))
    return dirs


def check_qt_platform(platform: str | None = None) -> list[str]:
    """The Qt platform plugin(s) named by ``platform`` (default $QT_QPA_PLATFORM, e.g. "offscreen" or
    "wayland;xcb"): a problem unless one of them is found."""
    spec = platform if platform is not None else os.environ.get("QT_QPA_PLATFORM", "")
    names = [part.split(":", 1)[0].strip() for part in spec.split(";") if part.strip()]
    if not names:
        return []  # Qt picks its default; nothing specific to check
    pattern = _PLUGIN_PATTERNS.get(sys.platform, "libq{}*.so")
    explicit = os.environ.get("QT_QPA_PLATFORM_PLUGIN_PATH")
    dirs = ([Path(explicit)] if explicit else []) + [d / "platforms" for d in qt_plugin_dirs()]
    for name in names:
        for d in dirs:
            if d.is_dir() and any(d.glob(pattern.format(name))):
                return []
    where = ", ".join(str(d) for d in dirs)
    return [f"Qt platform plugin missing: {pattern.format(names[0]).replace('*', '')} "
            + f"(for QT_QPA_PLATFORM={spec!r}; looked in {where})"]


def check_libraries(names: tuple[str, ...] = LIBRARIES) -> list[str]:
    problems = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - ImportError, OSError from a missing .so, …: all reported
            problems.append(f"cannot load {name}: {type(exc).__name__}: {exc}")
    if "torchvision" in names and not any("torchvision" in p for p in problems):
        from torchvision import extension

        if not extension._has_ops():  # the C++ operators live in a .so loaded by path, easy to leave out
            problems.append("torchvision's C++ operators did not load: "
                            f"{Path(extension.__file__).parent}/_C*.so missing or incompatible with torch")
    return problems


def check_resources() -> list[str]:
    """The demo clip, the default model and the dlib landmark and face-recognition models, each named when
    missing."""
    from engine.resources import default_model_dir, demo_clip

    problems = []
    for find in (demo_clip, default_model_dir):
        try:
            find()
        except Exception as exc:  # noqa: BLE001 - ResourceError names the file
            problems.append(str(exc))
    try:
        from engine.faces import landmark_model_path, recognition_model_path

        landmark_model_path()
        recognition_model_path()
    except Exception as exc:  # noqa: BLE001 - FaceModelError names the file; ImportError names the library
        problems.append(str(exc))
    return problems


def check_audio() -> list[str]:
    """Sound: Qt Multimedia (QAudioSink) loads, and the demo clip's audio stream is found and decodes to speech."""
    problems = []
    try:
        importlib.import_module("PySide6.QtMultimedia")
    except Exception as exc:  # noqa: BLE001 - a missing library or plugin is the finding
        problems.append(f"cannot load Qt Multimedia (PySide6.QtMultimedia, for the sound): {type(exc).__name__}: "
                        f"{exc}")
    try:
        from engine.resources import demo_clip

        clip = demo_clip()
    except Exception:  # noqa: BLE001 - check_resources names the missing clip
        return problems
    from engine.audio import AudioReader, audio_info

    info = audio_info(clip)
    if info is None:
        return problems + [f"no audio stream found in the demo clip {clip} (PyAV)"]
    x = AudioReader(clip, info).read(0, info.sample_rate)
    if len(x) < info.sample_rate or not float(abs(x).max()) > 0.01:
        problems.append(f"the demo clip's sound ({info.codec}, {info.sample_rate} Hz) decodes to {len(x)} samples "
                        "of silence")
    return problems


def preflight() -> list[str]:
    """Everything the self-test needs before it opens a window."""
    problems = check_libraries() + check_resources() + check_audio() + check_qt_platform()
    log.debug("self-test preflight: %d problem(s)", len(problems))
    return problems


def check_outputs(session_path: Path | None, screenshot: Path | None) -> list[str]:
    """The session on disk reopens with a complete analysis; the screenshot is a non-empty PNG."""
    problems = []
    if session_path is None or not Path(session_path).is_file():
        problems.append(f"no session file was written (expected one at {session_path})")
    else:
        from sessions import Session

        try:
            with Session.open(session_path) as s:
                info = s.analysis_info()
            if not info or not info.get("complete"):
                problems.append(f"the session {session_path} holds no complete analysis")
        except Exception as exc:  # noqa: BLE001 - a damaged session is the finding
            problems.append(f"the session {session_path} does not reopen: {exc}")
    if screenshot is None or not Path(screenshot).is_file():
        problems.append(f"no screenshot was written (expected {screenshot})")
    elif Path(screenshot).read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        problems.append(f"the screenshot {screenshot} is not a PNG file")
    return problems


def check_explanations(window: Any) -> list[str]:
    """What explains the decision reached the screen: a ProtoPNet's prototype crops are in the gallery
    (their PNGs travel with the model) and the current frame's heatmap is drawn."""
    problems = []
    data = window.data
    from vidxai_gui.review import SIMILARITIES

    if data is not None and SIMILARITIES in getattr(data, "extra", {}):
        pngs = [p for p in window.gallery.prototypes.values() if p.image is not None]
        if not pngs:
            problems.append("the prototype images of the model could not be loaded (check the model folder's "
                            "prototypes/*.png)")
    if not window.player.view.heat_item.isVisible():
        problems.append("no explanation heatmap is drawn on the frame")
    loader = getattr(window, "waveform_loader", None)
    if loader is not None and loader.loaded and not window.timeline.wave_plot.isVisible():
        problems.append("the demo clip's sound has no waveform on the timeline")
    return problems
