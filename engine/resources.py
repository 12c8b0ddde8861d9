"""Where the shipped resources live: the default models and the demo clip.

Looked up in this order: ``$VIDXAI_RESOURCES``; the PyInstaller bundle (``sys._MEIPASS/resources``);
the ``resources`` folder beside the packages (a source checkout or an editable install)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL = "protopnet"
PREFERENCE = (DEFAULT_MODEL, "patchsae", "cnn")
DEMO_CLIP = "demo_crema-d_1001_DFA_HAP_XX.flv"


class ResourceError(FileNotFoundError):
    """A shipped file is missing: the installation is incomplete."""


def resources_dir() -> Path:
    candidates = []
    if os.environ.get("VIDXAI_RESOURCES"):
        candidates.append(Path(os.environ["VIDXAI_RESOURCES"]))
    if getattr(sys, "_MEIPASS", None):
        candidates.append(Path(sys._MEIPASS) / "resources")  # type: ignore[attr-defined]
    candidates.append(Path(__file__).resolve().parents[1] / "resources")
    for c in candidates:
        if c.is_dir():
            return c
    raise ResourceError(f"VidXAI resources folder not found (looked in {', '.join(map(str, candidates))}); "
                        "reinstall VidXAI or set VIDXAI_RESOURCES to the folder holding models/ and the demo clip")


def models_dir() -> Path:
    return resources_dir() / "models"


def default_model_dir(name: str | None = None) -> Path:
    """A shipped model: `name`, or the first of PREFERENCE that is installed (the interpretable ones first)."""
    names = [name] if name else list(PREFERENCE)
    for n in names:
        path = models_dir() / n
        if (path / "model.json").is_file():
            return path
    raise ResourceError(f"no default model in {models_dir()} (looked for {', '.join(names)}); "
                        "reinstall VidXAI or pass --model DIR")


def shipped_models() -> list[Path]:
    root = models_dir()
    return sorted(p for p in root.iterdir() if (p / "model.json").is_file()) if root.is_dir() else []


def demo_clip() -> Path:
    path = resources_dir() / DEMO_CLIP
    if not path.is_file():
        raise ResourceError(f"demo clip missing: {path}; reinstall VidXAI")
    return path
