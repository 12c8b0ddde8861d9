"""Checkpoint folders: ``model.safetensors`` + ``model.json`` + ``prototypes/<j>.png``.

Nothing here ever unpickles: weights are safetensors, everything else JSON and PNG. A checkpoint from a
colleague is verified (format version, sha256 of the weights, every tensor name and shape) before any
weight reaches the model, so a tampered or damaged folder is refused with a message naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from engine.model_card import (  # torch-free; re-exported here
    FORMAT,
    FORMAT_VERSION,
    LATENT_PATCHES,
    META,
    PROTOTYPES,
    WEIGHTS,
    CheckpointError,
    _describe_non_safetensors,
    _sha256,
    read_latent_patches,  # noqa: F401 - re-exported
    read_model_json,
    resolve_model_dir,
)
from engine.models import ARCHS, FrameModel, ModelSpec, build_model

log = logging.getLogger(__name__)


def read_checkpoint_json(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``model.json`` only, its architecture included (cheap: no weights are loaded)."""
    return read_model_json(folder, ARCHS)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on every platform (Windows)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(folder: str | os.PathLike[str], model: FrameModel, metadata: dict[str, Any],
                    prototype_crops: dict[int, np.ndarray] | None = None, half: bool = False,
                    latent_patches: dict[tuple[int, int], np.ndarray] | None = None) -> Path:
    """Write ``model`` into ``folder`` (created if needed) and return the folder.

    ``latent_patches`` (PatchSAE): (latent, rank) → uint8 reference patch, stored in one safetensors file
    (``latent_patches.safetensors``, keys ``"<latent>.<rank>"``) whose sha256 model.json records.

    Every file is written to a temporary name, fsynced and swapped in with ``os.replace``; model.json
    goes last and records the sha256 of the weights, so a half-finished save never loads as valid.
    ``half=True`` stores floating tensors as float16 (loaded back as float32).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    tensors: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(dtype)
        # clone: safetensors refuses tensors that share storage or are views.
        tensors[name] = t.contiguous().clone()

    # Stage everything under temporary names first, so a failure (bad metadata, full disk) leaves the
    # previous checkpoint untouched; then swap weights, crops and finally model.json.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{WEIGHTS}.", suffix=".tmp")
    os.close(fd)
    staging: Path | None = None
    extra: list[Path] = []  # other temporary files, removed on failure
    try:
        save_file(tensors, tmp, metadata={"format": FORMAT})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        sha = _sha256(Path(tmp))
        patches_doc = None
        if latent_patches:
            pfd, ptmp = tempfile.mkstemp(dir=folder, prefix=f".{LATENT_PATCHES}.", suffix=".tmp")
            os.close(pfd)
            extra.append(Path(ptmp))
            save_file({f"{j}.{r}": torch.from_numpy(np.ascontiguousarray(a, dtype=np.uint8))
                       for (j, r), a in sorted(latent_patches.items())}, ptmp, metadata={"format": FORMAT})
            with open(ptmp, "rb+") as f:
                os.fsync(f.fileno())
            patches_doc = {"file": LATENT_PATCHES, "sha256": _sha256(Path(ptmp)), "count": len(latent_patches)}
        png_names: list[str] = []
        if prototype_crops:
            staging = Path(tempfile.mkdtemp(dir=folder, prefix=f".{PROTOTYPES}.", suffix=".tmp"))
            for j, crop in sorted(prototype_crops.items()):
                a = np.asarray(crop)
                if a.dtype != np.uint8:
                    raise ValueError(f"prototype crop {j} must be uint8, got {a.dtype}")
                if a.ndim == 3 and a.shape[2] == 1:
                    a = a[:, :, 0]
                p = staging / f"{int(j)}.png"
                Image.fromarray(a).save(p)
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
                png_names.append(f"{PROTOTYPES}/{int(j)}.png")
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "spec": model.spec.to_json(),
            "metadata": metadata,
            "weights": {
                "file": WEIGHTS,
                "sha256": sha,
                "dtype": "float16" if half else "float32",
                "tensors": {k: list(v.shape) for k, v in tensors.items()},
            },
            "prototypes": png_names,
        }
        if patches_doc is not None:
            doc["latent_patches"] = patches_doc
        try:
            text = json.dumps(doc, indent=1, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"checkpoint metadata for {folder} is not plain JSON: {e}") from e

        os.replace(tmp, folder / WEIGHTS)
        if patches_doc is not None:
            os.replace(extra.pop(), folder / LATENT_PATCHES)
        else:
            (folder / LATENT_PATCHES).unlink(missing_ok=True)
        old = folder / PROTOTYPES
        if staging is not None or old.exists():
            trash = folder / f".{PROTOTYPES}.old"
            shutil.rmtree(trash, ignore_errors=True)
            if old.exists():
                os.replace(old, trash)
            if staging is not None:
                os.replace(staging, old)
                staging = None
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        for f in extra:
            f.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_atomic(folder / META, text.encode("utf-8"))
    _fsync_dir(folder)
    log.info("saved %s checkpoint to %s (sha256 %s)", model.spec.arch, folder, sha[:12])
    return folder


def record_in_model_json(folder: str | os.PathLike[str], key: str, name: str, value: Any) -> Path:
    """Add ``value`` under ``doc[key][name]`` in a checkpoint's model.json (e.g. a test-set evaluation),
    atomically; the weights and their sha256 are untouched."""
    folder = resolve_model_dir(folder)
    doc = read_checkpoint_json(folder)
    section = doc.setdefault("metadata", {}).setdefault(key, {})
    section[name] = value
    _write_atomic(folder / META, json.dumps(doc, indent=1, allow_nan=False).encode("utf-8"))
    return folder / META


def load_checkpoint(folder: str | os.PathLike[str], device: str | torch.device = "cpu"
                    ) -> tuple[FrameModel, dict[str, Any]]:
    """Build the model ``model.json`` describes and load its verified weights (model in eval mode).

    Returns (model, metadata) where metadata is what was saved plus ``"checkpoint"``: folder, sha256,
    format_version, dtype and the prototype PNG paths.
    """
    folder = resolve_model_dir(folder)
    doc = read_checkpoint_json(folder)
    meta_path = folder / META
    try:
        spec = ModelSpec.from_json(doc["spec"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_path} has an invalid model spec ({e})") from e
    weights = doc.get("weights") or {}
    wpath = folder / str(weights.get("file", WEIGHTS))
    if not wpath.is_file():
        raise CheckpointError(f"{wpath} not found: the checkpoint is incomplete; copy the whole folder again")

    # Parse the header first: a wrong kind of file gets a precise message rather than a bare sha mismatch.
    try:
        with safe_open(str(wpath), framework="pt", device="cpu") as f:
            names = list(f.keys())
            tensors = {k: f.get_tensor(k) for k in names}
    except Exception as e:  # safetensors raises its own error types and OSError for short files
        raise CheckpointError(f"{wpath} cannot be read as safetensors: {_describe_non_safetensors(wpath)} "
                              f"({type(e).__name__}: {e})") from e

    sha = _sha256(wpath)
    if sha != weights.get("sha256"):
        raise CheckpointError(f"{wpath} does not match the sha256 recorded in {meta_path} (file {sha[:12]}…, "
                              f"recorded {str(weights.get('sha256'))[:12]}…): it was modified or damaged; "
                              "copy the checkpoint again from its source")

    listed = weights.get("tensors")
    if isinstance(listed, dict):
        for k, t in tensors.items():
            if k in listed and list(listed[k]) != list(t.shape):
                raise CheckpointError(f"{wpath}: tensor {k} has shape {list(t.shape)} but {meta_path} lists "
                                      f"{listed[k]}; the files do not belong together")

    model = build_model(spec)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{wpath} does not fit a {spec.arch}/{spec.backbone} model: missing tensors "
                              f"{missing[:5]}{'…' if len(missing) > 5 else ''}, unexpected "
                              f"{unexpected[:5]}{'…' if len(unexpected) > 5 else ''}; the weights and "
                              f"{META} do not belong together")
    for k, ref in expected.items():
        t = tensors[k]
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(f"{wpath}: tensor {k} has shape {list(t.shape)}, but the {spec.arch}/"
                                  f"{spec.backbone} model in {META} needs {list(ref.shape)}; the weights "
                                  "and model.json do not belong together")
        if t.is_floating_point() != ref.is_floating_point():
            raise CheckpointError(f"{wpath}: tensor {k} has dtype {t.dtype}, expected {ref.dtype}")
        if t.is_floating_point():
            tensors[k] = t.to(ref.dtype)
    model.load_state_dict(tensors, strict=True)
    model.to(device)
    model.eval()
    metadata = dict(doc.get("metadata") or {})
    metadata["checkpoint"] = {
        "folder": str(folder),
        "sha256": sha,
        "format_version": doc["format_version"],
        "dtype": weights.get("dtype", "float32"),
        "prototypes": [str(folder / p) for p in doc.get("prototypes", [])],
    }
    return model, metadata
