"""What a model folder says about itself, read without torch: ``model.json``, the faithfulness record in it,
a PatchSAE's reference patches.

The window reads these when a session opens (the default heatmap follows the recorded faithfulness; the
latent dock shows reference patches); loading torch for that would cost ~500 MB and seconds of the GUI's
time (tests/test_explain_lazy.py checks it stays unloaded). ``engine.checkpoint`` loads and saves the
weights and re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

FORMAT = "vidxai-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "model.json"
PROTOTYPES = "prototypes"
LATENT_PATCHES = "latent_patches.safetensors"


# The architectures and backbones a model.json may name (torch-free, so the GUI's dialogs list them
# without importing torch; engine.models.spec re-exports them).
ARCHS = ("protopnet", "patchsae", "cnn", "timesformer", "landmark-lstm")
CLIP_ARCHS = ("timesformer",)  # take N×T×C×S×S clips (a still image is a one-frame clip)
BACKBONES = ("small", "vgg16_bn", "resnet18")


class CheckpointError(Exception):
    """A checkpoint folder that cannot be loaded; the message names the file and what to do."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _describe_non_safetensors(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
        return ("it looks like a pickle / torch.save file, which VidXAI never loads because it can run code; "
                "export the weights with safetensors instead")
    return "it is truncated or not a safetensors file; copy the checkpoint again"


def resolve_model_dir(folder: str | os.PathLike[str]) -> Path:
    """The checkpoint folder a user meant: the folder itself, or the ``model/`` a training run wrote in it."""
    folder = Path(folder)
    if not (folder / META).is_file() and (folder / "model" / META).is_file():
        return folder / "model"
    return folder


def read_model_json(folder: str | os.PathLike[str], archs: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
    """Read and validate ``model.json`` only (cheap: for listing models without loading weights); the
    architecture is checked against ``archs`` when given (``engine.checkpoint.read_checkpoint_json`` does)."""
    folder = resolve_model_dir(folder)
    meta_path = folder / META
    if not meta_path.is_file():
        raise CheckpointError(f"{meta_path} not found: {folder} is not a VidXAI checkpoint folder; "
                              "choose the folder that holds model.json and model.safetensors")
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path} is damaged ({e}); copy the checkpoint again") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a VidXAI model description (format field missing)")
    version = doc.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{meta_path} has no valid format_version; copy the checkpoint again")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path} was written by a newer VidXAI (checkpoint format {version}, this "
                              f"version reads up to {FORMAT_VERSION}); update VidXAI to load it")
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise CheckpointError(f"{meta_path} has no model spec; copy the checkpoint again")
    if archs is not None and spec.get("arch") not in archs:
        arch = spec.get("arch") if isinstance(spec, dict) else None
        raise CheckpointError(f"{meta_path} names an unknown model architecture {arch!r} (this VidXAI knows "
                              f"{', '.join(archs)}); update VidXAI or choose another checkpoint")
    return doc


def model_arch(folder: str | os.PathLike[str]) -> str | None:
    """The architecture a model folder declares (None when unreadable here: loading it says why)."""
    try:
        return str(read_model_json(folder)["spec"]["arch"])
    except (CheckpointError, OSError, KeyError):
        return None


def read_latent_patches(folder: str | os.PathLike[str]) -> dict[int, list[np.ndarray]]:
    """A PatchSAE checkpoint's reference patches: latent → uint8 patches, best first ({} when it has none).
    The file's sha256 must match model.json's record."""
    folder = resolve_model_dir(folder)
    entry = read_model_json(folder).get("latent_patches")
    if not entry:
        return {}
    path = folder / str(entry.get("file", LATENT_PATCHES))
    if not path.is_file():
        raise CheckpointError(f"{path} is missing, but {folder / META} lists it; copy the whole model folder")
    if _sha256(path) != entry.get("sha256"):
        raise CheckpointError(f"{path} does not match the sha256 recorded in {folder / META}: it was modified "
                              "or damaged; copy the model folder again")
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    for key, t in load_file(str(path)).items():
        j, _, r = key.partition(".")
        out.setdefault(int(j), []).append((int(r), np.asarray(t)))
    return {j: [a for _, a in sorted(v, key=lambda x: x[0])] for j, v in out.items()}


FAITHFULNESS_KEY = "faithfulness"  # model.json metadata section written by `evaluate --occlusion --record`
PREFERRED_RECORD = "fer2013:test:700:seed0"


def recorded_deltas(doc: dict[str, Any], name: str | None = None) -> dict[str, float]:
    """Method → recorded mean Δ from a model.json document (``read_model_json``): the record
    ``name``, else the FER2013 700-subset one, else the first; {} when nothing was recorded."""
    recs = (doc.get("metadata") or {}).get(FAITHFULNESS_KEY) or {}
    if not recs:
        return {}
    rec = recs.get(name or PREFERRED_RECORD) or recs.get(PREFERRED_RECORD) or next(iter(recs.values()))
    return {m: float(v["mean_delta"]) for m, v in (rec.get("methods") or {}).items()}


def most_faithful(deltas: dict[str, float], available: list[str] | tuple[str, ...]) -> str | None:
    """The available method with the largest recorded Δ (None when none of them was measured)."""
    have = [m for m in available if m in deltas]
    return max(have, key=lambda m: deltas[m]) if have else None
