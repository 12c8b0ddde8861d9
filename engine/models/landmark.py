"""Landmark-sequence model (METHODS §8; seed 003): one binary CNN+LSTM per emotion on P frames of landmarks.

Input: N×P×L×2 float32, P frames of L normalised landmarks (``normalise_landmarks``) — all 68 dlib points
or the subset ``spec.sequence["points"]`` a pruning step kept. Each emotion has its own small network
(temporal 1-D convolutions over the 2L coordinates of each frame, an LSTM over the frames, a linear read-out
of the last state) trained one-vs-rest; ``forward`` stacks their logits into N×C.

Decision without a softmax: the C binary models are independent detectors, so a clip may score high for
two emotions or for none. The analysis reports σ(logit) per class as the class scores (they do not sum to
1) and the predicted class is the one whose detector is most confident, argmax of the logits; the EWMA
and video decision then work on those scores like on any other model's.

Normalisation (``normalise_landmarks``), per frame, from the eyes only so that expressions do not move the
reference: the origin is the midpoint of the two eye centres (means of points 36–41 and 42–47), the
in-plane rotation turns the line from the right-eye centre to the left-eye centre horizontal, and the
scale makes the distance between the eye centres 1. What is left is the face's shape and its movement
(brows, lids, mouth, jaw) in units of the inter-ocular distance; yaw and pitch are not undone.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.models.spec import ModelSpec

# Facial parts in dlib's 0-based order (for grouping attributions).
LANDMARK_PARTS: dict[str, tuple[int, ...]] = {
    "jaw": tuple(range(17)),
    "brows": tuple(range(17, 27)),
    "nose": tuple(range(27, 36)),
    "eyes": tuple(range(36, 48)),
    "mouth": tuple(range(48, 68)),
}

# jitter: σ of the Gaussian noise added to training windows, in inter-ocular units (dlib's landmarks jitter
# by about that much from frame to frame); it also keeps the model smooth enough for IG's path integral.
SEQUENCE_DEFAULTS: dict = {"window": 16, "points": list(range(68)), "channels": 32, "hidden": 32, "jitter": 0.02}


def sequence_settings(spec_sequence: dict | None) -> dict:
    """The full ``ModelSpec.sequence`` dict: defaults filled in, points as a sorted list of ints."""
    s = {**SEQUENCE_DEFAULTS, **dict(spec_sequence or {})}
    s["points"] = sorted(int(p) for p in s["points"])
    s["window"] = int(s["window"])
    if s["window"] < 1 or not s["points"] or min(s["points"]) < 0 or max(s["points"]) > 67:
        raise ValueError(f"invalid landmark sequence settings {s}: window >= 1, points within 0..67")
    return s


def part_of(point: int) -> str:
    return next(name for name, idx in LANDMARK_PARTS.items() if point in idx)


def normalise_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(…, 68, 2) frame-pixel landmarks → the same shape, eye-centred, eye line horizontal, inter-ocular
    distance 1 (see the module doc). Frames with NaN landmarks (no face) stay NaN."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must be …×68×2, got {lm.shape}")
    right = lm[..., 36:42, :].mean(axis=-2)  # the subject's right eye: image left
    left = lm[..., 42:48, :].mean(axis=-2)
    centre = (right + left) / 2
    d = left - right
    dist = np.linalg.norm(d, axis=-1)
    dist = np.where(dist > 1e-9, dist, np.nan)
    cos, sin = d[..., 0] / dist, d[..., 1] / dist
    p = lm - centre[..., None, :]
    # Rotate by −θ (θ the eye line's angle), then scale.
    x = (p[..., 0] * cos[..., None] + p[..., 1] * sin[..., None]) / dist[..., None]
    y = (-p[..., 0] * sin[..., None] + p[..., 1] * cos[..., None]) / dist[..., None]
    return np.stack([x, y], axis=-1).astype(np.float32)


class _Detector(nn.Module):
    """One emotion's binary CNN+LSTM: N×P×F → N (logit)."""

    def __init__(self, features: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(features, channels, 3, padding=1), nn.Tanh(),
                                  nn.Conv1d(channels, channels, 3, padding=1), nn.Tanh())
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.transpose(1, 2)).transpose(1, 2)  # N×P×channels
        seq, _ = self.lstm(h)
        return self.out(seq[:, -1]).squeeze(-1)


class LandmarkSequenceModel(nn.Module):
    """C one-vs-rest detectors; ``forward(x N×P×L×2)`` → logits N×C (see the module doc)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        s = sequence_settings(spec.sequence)
        self.window, self.points = s["window"], s["points"]
        f = 2 * len(self.points)
        self.detectors = nn.ModuleList(_Detector(f, int(s["channels"]), int(s["hidden"]))
                                       for _ in range(spec.n_classes))
        # IG baselines the trainer fills (saved with the weights): per class the training window nearest
        # to that class's mean window (a real, typical sequence; METHODS §8), and the mean window overall.
        p, n = self.window, len(self.points)
        self.register_buffer("typical", torch.zeros(spec.n_classes, p, n, 2))
        self.register_buffer("mean_window", torch.zeros(p, n, 2))
        # Per-coordinate standardisation of the training data (expressions move points by a few hundredths
        # of the inter-ocular distance; unscaled, those differences are too small to learn from quickly).
        self.register_buffer("input_mean", torch.zeros(n, 2))
        self.register_buffer("input_std", torch.ones(n, 2))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.window, len(self.points), 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (len(self.points), 2):
            raise ValueError(f"a landmark model on {len(self.points)} points needs N×P×{len(self.points)}×2 "
                             f"input, got {tuple(x.shape)}")
        flat = ((x - self.input_mean) / self.input_std).flatten(2)
        return torch.stack([d(flat) for d in self.detectors], dim=1)

    def explain(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.forward(x)}

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class detector probabilities σ(logit) (not a distribution; see the module doc)."""
        return torch.sigmoid(logits)


def windows(normalised: np.ndarray, window: int, points: list[int], stride: int = 1,
            ends: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows of P consecutive frames with a face in every frame: (N×P×L×2 float32, end frame N).

    ``normalised`` is T×68×2 (NaN rows: no face). ``ends`` picks the windows' last frames (default every
    ``stride``-th frame from P−1 on); windows that would include a faceless frame are left out.
    """
    t = len(normalised)
    ok = np.isfinite(normalised).all(axis=(1, 2))
    cand = np.arange(window - 1, t, stride) if ends is None else np.asarray(ends, np.int64)
    # A window ending at e is usable when frames e−P+1..e all have a face: a running count of misses.
    miss = np.concatenate([[0], np.cumsum(~ok)])
    keep = [int(e) for e in cand if e - window + 1 >= 0 and e < t and miss[e + 1] - miss[e - window + 1] == 0]
    sel = np.asarray(points)
    if not keep:
        return np.zeros((0, window, len(points), 2), np.float32), np.zeros(0, np.int64)
    out = np.stack([normalised[e - window + 1:e + 1][:, sel] for e in keep]).astype(np.float32)
    return out, np.asarray(keep, np.int64)


__all__ = ["LANDMARK_PARTS", "SEQUENCE_DEFAULTS", "LandmarkSequenceModel", "normalise_landmarks", "part_of",
           "sequence_settings", "windows"]
