"""Per-frame scores and relevance of a clip model over a video: sliding T-frame windows.

The windows run over the frames that have a face (preprocessed crops), T consecutive such frames each,
one starting every ``stride`` of them, the last flush with the end (fewer than T frames: one shorter
window). **Per-frame rule: a frame's scores are the mean of the logits/probabilities of every window
that contains it** (with stride < T each frame is in T/stride windows, so its score is steadier than one
window's); its space map and temporal relevance are likewise the mean of its maps and of its share of
each containing window's relevance (engine.explain.spacetime). Frames without a face get NaN, as frame
models give them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine.explain.hooks import model_device
from engine.explain.spacetime import relevance
from engine.jobs import CancelToken
from engine.models import TimeSformer, to_input


def window_starts(n: int, frames: int, stride: int) -> list[int]:
    """Start rows of the windows over ``n`` face frames (the last flush with the end)."""
    if n <= frames:
        return [0] if n else []
    starts = list(range(0, n - frames + 1, stride))
    if starts[-1] != n - frames:
        starts.append(n - frames)
    return starts


@dataclass
class ClipScores:
    logits: np.ndarray                                   # K×C (NaN where no face)
    probs: np.ndarray                                    # K×C
    maps: dict[str, np.ndarray] = field(default_factory=dict)       # method → K×h×w (token grid)
    temporal: dict[str, np.ndarray] = field(default_factory=dict)   # method → K
    windows: int = 0


def score_windows(model: TimeSformer, crops: np.ndarray, valid: np.ndarray, stride: int = 4,
                  methods: tuple[str, ...] = (), batch: int = 4, fusion: str = "min",
                  cancel: CancelToken | None = None) -> ClipScores:
    """Score K frames (``crops`` V×S×S×C uint8 for the V frames where ``valid`` K is True) with sliding
    windows of ``model.frames``; ``methods`` from engine.explain.spacetime.METHODS."""
    valid = np.asarray(valid, bool)
    k, c = valid.size, model.spec.n_classes
    if int(valid.sum()) != len(crops):
        raise ValueError(f"{len(crops)} crops for {int(valid.sum())} frames with a face")
    t = model.frames
    starts = window_starts(len(crops), t, stride)
    n_in = np.zeros(len(crops))
    sums = {"logits": np.zeros((len(crops), c)), "probs": np.zeros((len(crops), c))}
    g = model.grid
    msum = {m: np.zeros((len(crops), g, g)) for m in methods}
    tsum = {m: np.zeros(len(crops)) for m in methods}
    dev = model_device(model)
    for b in range(0, len(starts), batch):
        if cancel is not None:
            cancel.raise_if_cancelled()
        group = starts[b:b + batch]
        length = min(t, len(crops))
        rows = np.stack([np.arange(s, s + length) for s in group])            # W×T
        x = to_input(crops[rows.ravel()], model.spec)
        x = x.view(len(group), length, *x.shape[1:]).to(dev)
        with torch.inference_mode():
            logits = model(x).float()
        probs = torch.softmax(logits, 1).cpu().numpy()
        logits_np = logits.cpu().numpy()
        for w, r in enumerate(rows):
            n_in[r] += 1
            sums["logits"][r] += logits_np[w]
            sums["probs"][r] += probs[w]
        for m in methods:
            rel = relevance(model, x, m, fusion=fusion)
            maps, temp = rel.maps.cpu().numpy(), rel.temporal.cpu().numpy()
            for w, r in enumerate(rows):
                msum[m][r] += maps[w]
                tsum[m][r] += temp[w]
    out = ClipScores(np.full((k, c), np.nan, np.float32), np.full((k, c), np.nan, np.float32), windows=len(starts))
    idx = np.flatnonzero(valid)
    if len(crops):
        out.logits[idx] = sums["logits"] / n_in[:, None]
        out.probs[idx] = sums["probs"] / n_in[:, None]
    for m in methods:
        maps = np.full((k, g, g), np.nan, np.float32)
        temp = np.full(k, np.nan, np.float32)
        if len(crops):
            maps[idx] = msum[m] / n_in[:, None, None]
            temp[idx] = tsum[m] / n_in
        out.maps[m], out.temporal[m] = maps, temp
    return out


__all__ = ["ClipScores", "score_windows", "window_starts"]
