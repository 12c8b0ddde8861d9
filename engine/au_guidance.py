"""AU-guided training (METHODS §7; seed 001): L = CE + λ · (1 − cos(T_l, A)).

A is the action-unit map of the sample's **labelled** class (``engine.explain.au``, the one codebook),
drawn from that training crop's 68 landmarks in crop pixels. The face-crop cache stores those landmarks
(``landmarks.npy``, mapped from the frame the crop was cut from); for caches built before that, or in fast
mode, they are found once on the source image or on the crop itself (``engine.explain.onface``, the same
path as the push's on-face test) and written into the cache folder, so the second run finds them.

T_l is the channel mean of the last feature layer the stage trains: the CNN's backbone output, the
ProtoPNet's add-on output z (the trunk its prototypes live in; the backbone below it is trained through
it in the joint stage). Samples whose class has no AU (neutral; RAVDESS calm) or whose face gave no
landmarks carry no A and contribute only CE; the alignment term is the mean over the rest of the batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.data.cache import FaceCache
from engine.explain.au import alignment_loss, au_map, canonical_expression
from engine.jobs import CancelToken, ProgressFn, no_progress

log = logging.getLogger(__name__)

LANDMARKS_FILE = "landmarks.npy"


def cache_landmarks(cache: FaceCache, preprocess: dict[str, Any], progress: ProgressFn = no_progress,
                    cancel: CancelToken | None = None) -> np.ndarray:
    """float32 N×68×2: every crop's landmarks in crop pixels (NaN where no face was found at all).

    Rows the cache does not hold yet are found and, when the cache lives in a folder, saved there.
    """
    from engine.explain.onface import input_landmarks

    n = len(cache)
    have = cache.landmarks
    out = np.full((n, 68, 2), np.nan, np.float32) if have is None else np.array(have, np.float32)
    missing = np.flatnonzero(~np.isfinite(out).all(axis=(1, 2)))
    if missing.size == 0:
        return out
    log.info("finding the landmarks of %d of %d cached crops", missing.size, n)
    for j, i in enumerate(missing):
        if cancel is not None and j % 64 == 0:
            cancel.raise_if_cancelled()
        lm = input_landmarks(cache.source(int(i)), np.asarray(cache.images[i]), preprocess)
        if lm is not None:
            out[i] = lm
        if j % 64 == 0 or j == missing.size - 1:
            progress(j + 1, missing.size, f"landmarks of the cached crops ({j + 1}/{missing.size})")
    if cache.path is not None:
        _save_beside(Path(cache.path) / LANDMARKS_FILE, out)
    cache.landmarks = out
    return out


def _save_beside(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, arr, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache still trains; it only finds the landmarks again next time
        log.warning("%s: cannot store the crops' landmarks (%s); they are found again next run", path, e)
        tmp.unlink(missing_ok=True)


def au_targets(landmarks: np.ndarray, labels: np.ndarray, classes: list[str], size: int) -> np.ndarray:
    """uint8 N×S×S target maps A (255 = the map's maximum), all zero where the class has no AU
    (neutral, calm) or the crop has no landmarks. Classes outside the codebook are refused."""
    try:
        names = [canonical_expression(c) for c in classes]
    except KeyError as e:
        raise ValueError(f"AU guidance needs emotion classes the FACS codebook knows; {e.args[0]}") from e
    out = np.zeros((len(labels), size, size), np.uint8)
    for i, (lm, y) in enumerate(zip(landmarks, np.asarray(labels))):
        if np.isfinite(lm).all():
            out[i] = np.round(au_map(lm, names[int(y)], (size, size)) * 255).astype(np.uint8)
    return out


def guided_term(t_l: torch.Tensor, maps: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ · mean(1 − cos) over the samples that have an A, their mean cosine); zeros when none has."""
    has = maps.flatten(1).amax(1) > 0
    if not bool(has.any()):
        zero = t_l.sum() * 0.0
        return zero, zero.detach()
    loss = alignment_loss(t_l[has].float(), maps[has].to(t_l.device), lam)
    return loss, (1.0 - loss.detach() / lam) if lam > 0 else loss.detach()


def feature_layer(model: nn.Module) -> nn.Module:
    """The module whose output is T_l: the ProtoPNet's add-on (z), otherwise the backbone."""
    add_on = getattr(model, "add_on", None)
    return add_on if add_on is not None else model.backbone  # type: ignore[return-value]


@contextmanager
def captured(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The outputs of ``module`` during the block (a forward hook removed on exit, whatever happens)."""
    got: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: got.append(out))
    try:
        yield got
    finally:
        handle.remove()


def cam_cos_per_class(model: nn.Module, cache: FaceCache, preprocess: dict[str, Any], batch: int = 64,
                      progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
                      index: np.ndarray | None = None) -> dict[str, Any]:
    """CAM-COS per labelled class (METHODS §7): Grad-CAM of the labelled class vs that class's AU map,
    both at input resolution, averaged over the class's samples that have a map (neutral has none).
    ``index``: only those rows of the cache (``vidxai evaluate --cam-cos``: the evaluated subset).
    Returns {"per_class": {class: mean or None}, "n": {class: samples}, "mean": mean over samples}."""
    from engine.explain.au import cam_cos
    from engine.explain.gradcam import gradcam
    from engine.models import to_input

    spec = model.spec  # type: ignore[attr-defined]
    lm = cache_landmarks(cache, preprocess, progress, cancel)
    labels = np.asarray(cache.labels)
    maps = au_targets(lm, labels, list(spec.classes), spec.input_size)
    cos = np.full(len(labels), np.nan)
    rows = np.arange(len(labels)) if index is None else np.asarray(index, np.int64)
    for s in range(0, len(rows), batch):
        if cancel is not None:
            cancel.raise_if_cancelled()
        idx = rows[s:s + batch]
        has = maps[idx].reshape(len(idx), -1).max(1) > 0
        if not has.any():
            continue
        idx = idx[has]
        cams = gradcam(model, to_input(np.asarray(cache.images[idx]), spec), torch.from_numpy(labels[idx]))
        cos[idx] = [cam_cos(c, maps[i].astype(np.float32)) for c, i in zip(cams, idx, strict=True)]
        progress(min(s + batch, len(rows)), len(rows), "CAM-COS")
    per, n = {}, {}
    for c, name in enumerate(spec.classes):
        v = cos[(labels == c) & np.isfinite(cos)]
        per[name], n[name] = (float(v.mean()) if len(v) else None), len(v)
    ok = np.isfinite(cos)
    return {"per_class": per, "n": n, "mean": float(cos[ok].mean()) if ok.any() else None}


__all__ = ["au_targets", "cache_landmarks", "cam_cos_per_class", "captured", "feature_layer", "guided_term"]
