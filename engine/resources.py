"""Where the shipped resources live: the default models and the demo clip.

Looked up in this order: ``$VIDXAI_RESOURCES``; the PyInstaller bundle (``sys._MEIPASS/resources``);
the ``resources`` folder beside the packages (a source checkout or an editable install)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL = "protopnet"
PREFERENCE = (DEFAULT_MODEL, "patchsae", "cnn")  # only when no shipped model records its measurements
ACCURACY_RECORD = "fer2013:test:all:seed0"      # model.json evaluations: FER2013's whole test split
ACCURACY_TOLERANCE = 0.01                        # models within 1 point of the most accurate are "as accurate"
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


def measured_choice(records: dict[str, tuple[float | None, float | None]]) -> str | None:
    """The default among models by measurement, not architecture: ``records`` maps a name to (FER2013
    test accuracy, recorded mean Δ of its default "intrinsic" map). Of the models within
    ACCURACY_TOLERANCE of the most accurate one, the one whose default map is the most faithful (then the
    more accurate). None when no model has both figures."""
    full = {n: (a, d) for n, (a, d) in records.items() if a is not None and d is not None}
    if not full:
        return None
    best = max(a for a, _ in full.values())
    close = [n for n, (a, _) in full.items() if a >= best - ACCURACY_TOLERANCE]
    return max(close, key=lambda n: (full[n][1], full[n][0]))


def model_measurements(path: Path) -> tuple[float | None, float | None]:
    """(FER2013 test accuracy, intrinsic map's mean Δ) recorded in a model.json, None where missing."""
    import json

    try:
        meta = json.loads((path / "model.json").read_text()).get("metadata") or {}
    except (OSError, ValueError):
        return None, None
    acc = ((meta.get("evaluations") or {}).get(ACCURACY_RECORD) or {}).get("accuracy")
    recs = meta.get("faithfulness") or {}
    rec = recs.get("fer2013:test:700:seed0") or next(iter(recs.values()), {})
    delta = ((rec.get("methods") or {}).get("intrinsic") or {}).get("mean_delta")
    return acc, delta


def default_model_dir(name: str | None = None) -> Path:
    """A shipped model: `name`, or the one :func:`measured_choice` picks from the records in the shipped
    model.json files (FER2013 test accuracy and the faithfulness of the default map), or, when none has
    records, the first of PREFERENCE that is installed."""
    if not name:
        shipped = shipped_models()
        pick = measured_choice({p.name: model_measurements(p) for p in shipped})
        if pick is not None:
            return models_dir() / pick
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
