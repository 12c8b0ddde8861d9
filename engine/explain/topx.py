"""Top-X relevance projection (METHODS §4, seed paper §3.5)."""

from __future__ import annotations

import numpy as np


def top_x(relevance: np.ndarray, x: float = 0.25) -> np.ndarray:
    """Keep the fewest highest positive relevances whose sum reaches ``x`` of the positive mass.

    ``relevance`` is one map of any shape; everything else (negative values included) becomes 0.
    ``x`` is a fraction in (0, 1]. A map without positive relevance returns all zeros.
    """
    if not 0.0 < x <= 1.0:
        raise ValueError(f"Top-X fraction must be in (0, 1], got {x}")
    r = np.asarray(relevance)
    flat = r.ravel()
    pos = np.clip(flat, 0.0, None).astype(np.float64)
    mass = pos.sum()
    out = np.zeros_like(r)
    if mass <= 0.0:
        return out
    order = np.argsort(-pos, kind="stable")
    csum = np.cumsum(pos[order])
    # A relative slack keeps float rounding in the cumulative sum from adding one extra feature.
    n_keep = int(np.searchsorted(csum, x * mass * (1.0 - 1e-12), side="left")) + 1
    n_keep = min(n_keep, int(np.count_nonzero(pos)))
    keep = order[:n_keep]
    out.ravel()[keep] = flat[keep]
    return out


def top_x_maps(maps: np.ndarray, x: float = 0.25) -> np.ndarray:
    """``top_x`` applied to each map of an N×H×W stack."""
    return np.stack([top_x(m, x) for m in np.asarray(maps)]) if len(maps) else np.asarray(maps).copy()
