"""Spectral Relevance Analysis and temporal prototypes (METHODS §4; Lapuschkin et al. 2019, seed 002).

Per class, the relevance maps of the frames where that class is active are sum-pooled to ≤ 32²,
normalised, joined in a symmetrised kNN graph and clustered spectrally; the number of clusters is
the eigengap of the symmetric normalised Laplacian. Clusters are lettered by first appearance
(HAPPY_A, HAPPY_B, …). A frame's descriptor is the sorted set of its active cluster names, a stage a
maximal run of equal descriptors, and the temporal prototype the ordered list of stages.

Two additions make the stages of real videos readable without changing what SpRAy computes when they
are off (``temporal_weight=0``, ``min_stage_s=0``: exactly METHODS §4):

- a temporal-neighbour term in the affinity: each clustered frame is also joined to its
  ``TEMPORAL_RADIUS`` nearest clustered frames in time on either side (within an unbroken run of the
  class's active frames) with weight ``temporal_weight``, beside the binary symmetrised kNN graph, so
  clusters prefer frames that are close in time as well as in relevance;
- a minimum stage duration (`merge_short_stages`, display only): a stage shorter than ``min_stage_s``
  is absorbed by the neighbouring stage whose mean map is closest (cosine of the pooled maps), shortest
  stage first, until none is shorter. The per-frame descriptors stay as SpRAy gave them.
"""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse
from scipy.linalg import eigh
from scipy.sparse.linalg import eigsh
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.temporal import DEFAULT_MIN_STAGE_S, DEFAULT_TEMPORAL_WEIGHT  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

NONE = "NONE"
# Dense eigendecomposition is O(n³); above this many frames the sparse Lanczos solver is used.
DENSE_LIMIT = 1500
# Frames joined in time on either side by the temporal-neighbour term.
TEMPORAL_RADIUS = 2


def prepare_maps(maps: np.ndarray, max_side: int = 32) -> np.ndarray:
    """Sum-pool T×H×W maps so no side exceeds ``max_side``, normalise each by its sum; T×D float64.

    Each map is divided by |sum| (a negative total would flip the map's sign); a map summing to
    zero is divided by its largest |value| instead, and an all-zero map stays zero.
    """
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim == 4:  # T×C×H×W: channels carry no spatial information for clustering
        m = m.sum(axis=1)
    if m.ndim != 3:
        raise ValueError(f"maps must be T×H×W, got shape {np.shape(maps)}")
    t, h, w = m.shape
    f = max(1, math.ceil(max(h, w) / max_side))
    if f > 1:
        hp, wp = math.ceil(h / f) * f, math.ceil(w / f) * f
        m = np.pad(m, ((0, 0), (0, hp - h), (0, wp - w)))
        m = m.reshape(t, hp // f, f, wp // f, f).sum(axis=(2, 4))
    feats = m.reshape(t, -1)
    total = np.abs(feats.sum(axis=1))
    peak = np.abs(feats).max(axis=1, initial=0.0)
    scale = np.where(total > 1e-12 * np.maximum(peak, 1e-300), total, peak)
    scale[scale == 0.0] = 1.0
    return feats / scale[:, None]


def knn_affinity(features: np.ndarray, k_neighbors: int = 10) -> scipy.sparse.csr_matrix:
    """Binary kNN graph (self excluded), symmetrised as (A + Aᵀ)/2 like CoRelAy's SparseKNN."""
    n = features.shape[0]
    k = min(k_neighbors, n - 1)
    nn_index = NearestNeighbors(n_neighbors=k + 1).fit(features)
    _, idx = nn_index.kneighbors(features)
    # Duplicated maps may list another frame before the query itself; drop self explicitly.
    cols = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        row = idx[i][idx[i] != i]
        cols[i] = row[:k]
    rows = np.repeat(np.arange(n), k)
    a = scipy.sparse.csr_matrix((np.ones(n * k), (rows, cols.ravel())), shape=(n, n))
    return ((a + a.T) / 2.0).tocsr()


def temporal_affinity(times: np.ndarray, weight: float, radius: int = TEMPORAL_RADIUS) -> scipy.sparse.csr_matrix:
    """Symmetric graph joining each row to the ``radius`` rows before and after it in time, weight ``weight``.

    ``times`` are the rows' frame indices, increasing. Two rows are joined only when no gap wider than
    twice the typical step (the median step: 1 for every frame, the stride for a strided subset) lies
    between them, so frames on either side of a stretch where the class is inactive stay unjoined.
    """
    t = np.asarray(times, dtype=np.int64)
    n = t.size
    if n < 2 or weight <= 0 or radius < 1:
        return scipy.sparse.csr_matrix((n, n))
    steps = np.diff(t)
    run_id = np.concatenate(([0], np.cumsum(steps > 2 * max(1, int(np.median(steps))))))
    rows, cols = [], []
    for d in range(1, radius + 1):
        i = np.flatnonzero(run_id[d:] == run_id[:-d])
        rows.append(i)
        cols.append(i + d)
    r, c = np.concatenate(rows), np.concatenate(cols)
    a = scipy.sparse.csr_matrix((np.full(r.size, float(weight)), (r, c)), shape=(n, n))
    return (a + a.T).tocsr()


def laplacian_spectrum(affinity: scipy.sparse.csr_matrix, n_eig: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest ``n_eig`` eigenvalues (ascending) and eigenvectors of L = I − D^−½ A D^−½."""
    n = affinity.shape[0]
    deg = np.asarray(affinity.sum(axis=1)).ravel()
    dinv = scipy.sparse.diags(1.0 / np.sqrt(np.maximum(deg, 1e-12)))
    norm_aff = dinv @ affinity @ dinv
    n_eig = min(n_eig, n)
    if n <= DENSE_LIMIT or n_eig >= n - 1:
        lap = np.eye(n) - norm_aff.toarray()
        vals, vecs = eigh(lap, subset_by_index=[0, n_eig - 1])
    else:
        # The smallest of L are the largest of D^−½ A D^−½, which Lanczos finds quickly.
        # A fixed start vector: ARPACK's default is random, which made the labels differ from run to run.
        v0 = np.random.default_rng(0).random(n)
        mu, vecs = eigsh(norm_aff, k=n_eig, which="LA", v0=v0)
        vals = 1.0 - mu
        order = np.argsort(vals)
        vals, vecs = vals[order], vecs[:, order]
    return np.clip(vals, 0.0, None), vecs


def eigengap(eigenvalues: np.ndarray, max_clusters: int = 10) -> int:
    """k = argmax of consecutive gaps among the smallest max_clusters+1 eigenvalues (+1)."""
    ev = np.sort(np.asarray(eigenvalues))[: max_clusters + 1]
    if ev.size < 2:
        return 1
    return int(np.argmax(np.diff(ev))) + 1


def relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0, 1, … in order of first appearance; negative labels stay as they are."""
    lab = np.asarray(labels)
    out = np.array(lab, dtype=np.int64, copy=True)
    mapping: dict[int, int] = {}
    for i, v in enumerate(lab.tolist()):
        if v < 0:
            continue
        if v not in mapping:
            mapping[v] = len(mapping)
        out[i] = mapping[v]
    return out


def cluster_letter(i: int) -> str:
    """0 → A, 25 → Z, 26 → AA, … (spreadsheet-style, so any count of clusters has a name)."""
    letters = ""
    i += 1
    while i > 0:
        i, r = divmod(i - 1, 26)
        letters = string.ascii_uppercase[r] + letters
    return letters


def letter_by_first_appearance(labels: Sequence[int] | np.ndarray) -> list[str]:
    """Letters per element: the first cluster to appear is A, the next new one B, and so on."""
    return [cluster_letter(int(v)) if v >= 0 else "" for v in relabel_by_first_appearance(np.asarray(labels))]


def spectral_cluster(
    features: np.ndarray,
    k_neighbors: int = 10,
    n_clusters: int | None = None,
    max_clusters: int = 10,
    seed: int = 0,
    temporal_weight: float = 0.0,
    times: np.ndarray | None = None,
) -> tuple[np.ndarray, int, np.ndarray]:
    """Spectral clustering of T×D features: (labels by first appearance, k, smallest eigenvalues).

    With ``temporal_weight`` > 0 the affinity also joins rows close in ``times`` (their frame indices;
    default 0, 1, …), see `temporal_affinity`."""
    feats = np.asarray(features, dtype=np.float64)
    n = feats.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0, np.zeros(0)
    if n < 3:
        return np.zeros(n, dtype=np.int64), 1, np.zeros(n)
    aff = knn_affinity(feats, k_neighbors)
    if temporal_weight > 0:
        aff = (aff + temporal_affinity(np.arange(n) if times is None else times, temporal_weight)).tocsr()
    vals, vecs = laplacian_spectrum(aff, max_clusters + 1)
    k = int(n_clusters) if n_clusters is not None else eigengap(vals, max_clusters)
    k = max(1, min(k, n))
    if k == 1:
        return np.zeros(n, dtype=np.int64), 1, vals
    emb = vecs[:, :k]
    # Ng-Jordan-Weiss: rows on the unit sphere, so cluster membership not degree drives k-means.
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(emb)
    return relabel_by_first_appearance(labels), k, vals


@dataclass(frozen=True)
class Stage:
    start: int
    end: int  # exclusive
    descriptor: tuple[str, ...]

    def __str__(self) -> str:
        return "(" + ", ".join(self.descriptor) + ")"


@dataclass
class TemporalPrototypes:
    descriptors: list[tuple[str, ...]]  # one per frame
    stages: list[Stage]

    @property
    def n_frames(self) -> int:
        return len(self.descriptors)

    @property
    def prototype(self) -> str:
        """The temporal prototype, e.g. ``(NONE)→(HAPPY_A)→(HAPPY_A, SAD_A)``."""
        return "→".join(str(s) for s in self.stages)

    @property
    def reduction(self) -> float:
        """Description-length reduction 1 − stages/frames."""
        return 1.0 - len(self.stages) / self.n_frames if self.n_frames else 0.0


def cluster_names(class_name: str, active: np.ndarray, labels: np.ndarray) -> list[str | None]:
    """Per-frame cluster name ``CLASS_LETTER`` where active, None elsewhere."""
    act = np.asarray(active, dtype=bool)
    lab = np.where(act, np.asarray(labels, dtype=np.int64), -1)
    letters = letter_by_first_appearance(lab)
    prefix = class_name.upper()
    return [f"{prefix}_{letters[i]}" if act[i] else None for i in range(act.size)]


def temporal_prototypes(per_class: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> TemporalPrototypes:
    """Frame descriptors and stages from per-class (active mask T, cluster labels T).

    Labels are read only where the mask is set; they are lettered by first appearance per class.
    """
    if not per_class:
        return TemporalPrototypes([], [])
    lengths = {len(np.asarray(a)) for a, _ in per_class.values()}
    if len(lengths) != 1:
        raise ValueError(f"all classes need the same number of frames, got lengths {sorted(lengths)}")
    t_len = lengths.pop()
    names = [cluster_names(c, a, lab) for c, (a, lab) in per_class.items()]
    descriptors: list[tuple[str, ...]] = []
    for t in range(t_len):
        active = sorted(n[t] for n in names if n[t] is not None)
        descriptors.append(tuple(active) if active else (NONE,))
    stages: list[Stage] = []
    start = 0
    for t in range(1, t_len + 1):
        if t == t_len or descriptors[t] != descriptors[start]:
            stages.append(Stage(start, t, descriptors[start]))
            start = t
    return TemporalPrototypes(descriptors, stages)


def stages_of(descriptors: Sequence[tuple[str, ...]] | Sequence[str]) -> list[Stage]:
    """Maximal runs of equal consecutive descriptors (tuples, or "A, B" strings) as Stages."""
    out: list[Stage] = []
    start = 0
    n = len(descriptors)
    for t in range(1, n + 1):
        if t == n or descriptors[t] != descriptors[start]:
            d = descriptors[start]
            out.append(Stage(start, t, tuple(d.split(", ")) if isinstance(d, str) else tuple(d)))
            start = t
    return out


def stage_durations(stages: Sequence[Stage], timestamps: np.ndarray, fps: float) -> np.ndarray:
    """Seconds each stage is shown: from its first frame's presentation time to the next stage's (the last
    frame is shown 1/fps)."""
    ts = np.asarray(timestamps, dtype=np.float64)
    ext = np.append(ts, ts[-1] + 1.0 / fps) if ts.size else np.zeros(1)
    return np.array([ext[s.end] - ext[s.start] for s in stages], dtype=np.float64)


def stage_map_sums(read: Callable[[int, int], np.ndarray], stages: Sequence[Stage],
                   chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per stage: the sum of its frames' feature rows and how many frames have a map (a non-zero row).

    ``read(start, end)`` returns frames [start, end)'s maps (n×h×w or n×D; frames without a map all
    zero or NaN), as SpRAy reads them. Returns (S×D float64, S int)."""
    if not stages:
        return np.zeros((0, 0)), np.zeros(0, np.int64)
    n_frames = stages[-1].end
    bounds = np.array([s.start for s in stages] + [n_frames])
    sums: np.ndarray | None = None
    counts = np.zeros(len(stages), np.int64)
    for a in range(0, n_frames, chunk):
        b = min(n_frames, a + chunk)
        f = np.nan_to_num(np.asarray(read(a, b), dtype=np.float64).reshape(b - a, -1))
        if sums is None:
            sums = np.zeros((len(stages), f.shape[1]))
        idx = np.searchsorted(bounds, np.arange(a, b), side="right") - 1
        has = np.abs(f).sum(axis=1) > 0
        np.add.at(sums, idx[has], f[has])
        np.add.at(counts, idx[has], 1)
    return sums, counts


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else float("nan")


def merge_short_stages(stages: Sequence[Stage], sums: np.ndarray, counts: np.ndarray, durations: np.ndarray,
                       min_stage_s: float) -> list[Stage]:
    """Absorb every stage shorter than ``min_stage_s`` seconds into a neighbouring stage.

    The shortest stage goes first (ties: the earliest); it joins the neighbour (before or after) whose
    mean map is closest to its own (cosine of the map sums), and takes that neighbour's descriptor; a
    stage without maps (no face), or with neighbours without maps, joins the longer neighbour. When the
    neighbours on both sides end up with the same descriptor they become one stage. Repeats until no
    stage is shorter than ``min_stage_s`` or one stage is left. ``min_stage_s`` = 0 returns the stages
    unchanged. O(S log S) in the number of stages S.
    """
    n = len(stages)
    if n == 0 or min_stage_s <= 0:
        return list(stages)
    import heapq

    start = [s.start for s in stages]
    end = [s.end for s in stages]
    desc = [s.descriptor for s in stages]
    total = [np.asarray(x, dtype=np.float64) for x in sums] if len(sums) else [np.zeros(0)] * n
    cnt = [int(c) for c in counts]
    dur = [float(d) for d in durations]
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    nxt[-1] = -1
    alive = [True] * n
    left = n
    heap = [(dur[i], start[i], i) for i in range(n) if dur[i] < min_stage_s]
    heapq.heapify(heap)

    def absorb(into: int, i: int) -> None:
        """Stage i joins its neighbour ``into``."""
        nonlocal left
        start[into], end[into] = min(start[into], start[i]), max(end[into], end[i])
        total[into] = total[into] + total[i]
        cnt[into] += cnt[i]
        dur[into] += dur[i]
        alive[i] = False
        left -= 1
        p, q = prev[i], nxt[i]
        if p >= 0:
            nxt[p] = q
        if q >= 0:
            prev[q] = p

    while heap and left > 1:
        d, _, i = heapq.heappop(heap)
        if not alive[i] or d != dur[i] or dur[i] >= min_stage_s:
            continue
        cands = [j for j in (prev[i], nxt[i]) if j >= 0]
        with_maps = [j for j in cands if cnt[j] > 0]
        if cnt[i] > 0 and with_maps:
            best = max(with_maps, key=lambda j: (_cos(total[i], total[j]), dur[j], -start[j]))
        else:
            best = max(cands, key=lambda j: (dur[j], -start[j]))
        absorb(best, i)
        # The absorbing stage may now touch a stage with its own descriptor on the other side.
        for other in (prev[best], nxt[best]):
            if other >= 0 and desc[other] == desc[best]:
                absorb(best, other)
        if dur[best] < min_stage_s:
            heapq.heappush(heap, (dur[best], start[best], best))
    out = [Stage(start[i], end[i], desc[i]) for i in range(n) if alive[i]]
    return sorted(out, key=lambda s: s.start)


def frame_stage_cosine(read: Callable[[int, int], np.ndarray], stages: Sequence[Stage], chunk: int = 4096) -> float:
    """Mean over frames with a map of the cosine between the frame's map and its stage's mean map (the
    pooled maps SpRAy reads); NaN when no frame has a map."""
    if not stages:
        return float("nan")
    sums, _ = stage_map_sums(read, stages, chunk)
    norms = np.linalg.norm(sums, axis=1)
    n_frames = stages[-1].end
    bounds = np.array([s.start for s in stages] + [n_frames])
    acc, n = 0.0, 0
    for a in range(0, n_frames, chunk):
        b = min(n_frames, a + chunk)
        f = np.nan_to_num(np.asarray(read(a, b), dtype=np.float64).reshape(b - a, -1))
        idx = np.searchsorted(bounds, np.arange(a, b), side="right") - 1
        fn = np.linalg.norm(f, axis=1)
        ok = (fn > 0) & (norms[idx] > 0)
        if ok.any():
            cos = np.einsum("ij,ij->i", f[ok], sums[idx[ok]]) / (fn[ok] * norms[idx[ok]])
            acc += float(cos.sum())
            n += int(ok.sum())
    return acc / n if n else float("nan")


def stage_mean_maps(maps: np.ndarray, labels: np.ndarray) -> dict[int, np.ndarray]:
    """Mean heatmap per cluster label (negative labels ignored): the image of a stage."""
    m = np.asarray(maps)
    lab = np.asarray(labels)
    return {int(c): m[lab == c].mean(axis=0) for c in np.unique(lab) if c >= 0}


@dataclass
class ClassClusters:
    frames: np.ndarray  # indices of the frames where the class is active
    labels: np.ndarray  # cluster label per active frame, 0 = A
    k: int
    eigenvalues: np.ndarray
    mean_maps: dict[str, np.ndarray] = field(default_factory=dict)  # "HAPPY_A" → mean map


@dataclass
class SprayResult:
    classes: dict[str, ClassClusters]
    prototypes: TemporalPrototypes


def active_mask(probs: np.ndarray, active: str | float = "predicted") -> np.ndarray:
    """T×C bool: the argmax class per frame ("predicted") or every class with score ≥ threshold."""
    p = np.asarray(probs, dtype=np.float64)
    finite = np.isfinite(p).all(axis=1)
    mask = np.zeros(p.shape, dtype=bool)
    if active == "predicted":
        if finite.any():
            rows = np.flatnonzero(finite)
            mask[rows, np.argmax(p[rows], axis=1)] = True
        return mask
    if isinstance(active, str):
        raise TypeError(f"active must be 'predicted' or a float threshold, got {active!r}")
    mask[finite] = p[finite] >= float(active)
    return mask


def spray_video(
    maps: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    active: str | float = "predicted",
    k_neighbors: int = 10,
    max_clusters: int = 10,
    max_side: int = 32,
    min_frames: int = 3,
    max_frames: int = 2000,
    seed: int = 0,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    temporal_weight: float = 0.0,
) -> SprayResult:
    """SpRAy per class over the frames where it is active, then the video's temporal prototype.

    ``maps`` is T×h×w (one map per frame, normally for the predicted class) or T×C×h×w (one map per
    class). A class active on fewer than ``min_frames`` frames gets a single cluster A. Above
    ``max_frames`` active frames an evenly strided subset is clustered and every other frame takes
    the label of its nearest clustered frame, which keeps the kNN graph and eigensolver tractable.
    """
    m = np.asarray(maps)
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] != len(classes) or m.shape[0] != p.shape[0]:
        raise ValueError(f"need maps T×… and probs T×{len(classes)}; got {m.shape} and {p.shape}")
    return spray_streamed(lambda a, b: m[a:b], p, classes, active, k_neighbors, max_clusters, max_side, min_frames,
                          max_frames, seed, progress=progress, cancel=cancel, temporal_weight=temporal_weight)


def spray_streamed(
    read: Callable[[int, int], np.ndarray],
    probs: np.ndarray,
    classes: Sequence[str],
    active: str | float = "predicted",
    k_neighbors: int = 10,
    max_clusters: int = 10,
    max_side: int = 32,
    min_frames: int = 3,
    max_frames: int = 2000,
    seed: int = 0,
    chunk: int = 4096,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    temporal_weight: float = 0.0,
) -> SprayResult:
    """`spray_video` with the maps read in chunks: ``read(start, end)`` returns frames [start, end)'s maps
    (n×h×w or n×C×h×w). Memory is flat in video length: only the frames a class is clustered on (at most
    ``max_frames`` per class) and one chunk are held; two passes over the maps (the clustered frames, then
    every active frame's label and the clusters' mean maps). Same result as `spray_video` on the whole
    array (labels, k, eigenvalues exactly; mean maps to float rounding)."""
    p = np.asarray(probs)
    T = p.shape[0]
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(f"need probs T×{len(classes)}; got {p.shape}")
    mask = active_mask(p, active)

    def class_rows(rows: np.ndarray, ci: int) -> np.ndarray:
        return rows[:, ci] if rows.ndim == 4 else rows

    # Which frames each class is clustered on: all its active frames, or an evenly strided subset.
    plan: dict[str, tuple[int, np.ndarray, np.ndarray | None]] = {}
    for ci, cname in enumerate(classes):
        frames = np.flatnonzero(mask[:, ci])
        if frames.size == 0:
            continue
        pick = None if frames.size < min_frames else (
            np.arange(frames.size) if frames.size <= max_frames
            else np.linspace(0, frames.size - 1, max_frames).round().astype(np.int64))
        plan[cname] = (ci, frames, pick)

    # Pass 1: the clustered frames' maps, chunk by chunk.
    picked = {c: [] for c, (_, _, pick) in plan.items() if pick is not None}
    wanted = {c: plan[c][1][plan[c][2]] for c in picked}
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        spans = {c: np.searchsorted(f, (a, b)) for c, f in wanted.items()}
        if not any(j1 > j0 for j0, j1 in spans.values()):
            continue
        rows = np.asarray(read(a, b))
        for c, (j0, j1) in spans.items():
            if j1 > j0:
                picked[c].append(class_rows(rows, plan[c][0])[wanted[c][j0:j1] - a])
    clusters: dict[str, tuple[np.ndarray | None, int, np.ndarray, Any]] = {}
    for i, (cname, (ci, frames, pick)) in enumerate(plan.items()):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(i, len(classes), f"SpRAy: {cname}")
        if pick is None:
            clusters[cname] = (np.zeros(frames.size, dtype=np.int64), 1, np.zeros(0), None)
            continue
        feats = prepare_maps(np.concatenate(picked.pop(cname)), max_side)
        times = frames[pick]
        if frames.size <= max_frames:
            labels, k, vals = spectral_cluster(feats, k_neighbors, None, max_clusters, seed, temporal_weight, times)
            clusters[cname] = (labels, k, vals, None)
        else:
            sub_labels, k, vals = spectral_cluster(feats, k_neighbors, None, max_clusters, seed, temporal_weight,
                                                   times)
            clusters[cname] = (None, k, vals, (NearestNeighbors(n_neighbors=1).fit(feats), sub_labels))

    # Pass 2: every active frame's label (nearest clustered frame) and the sum of each cluster's maps.
    labels_all = {c: (cl[0] if cl[0] is not None else np.empty(plan[c][1].size, np.int64)) for c, cl in clusters.items()}
    sums: dict[str, dict[int, np.ndarray]] = {c: {} for c in plan}
    counts: dict[str, dict[int, int]] = {c: {} for c in plan}
    for a in range(0, T, chunk):
        b = min(T, a + chunk)
        spans = {c: np.searchsorted(plan[c][1], (a, b)) for c in plan}
        if not any(j1 > j0 for j0, j1 in spans.values()):
            continue
        rows = np.asarray(read(a, b))
        for c, (j0, j1) in spans.items():
            if j1 <= j0:
                continue
            ci, frames, _ = plan[c]
            cm = class_rows(rows, ci)[frames[j0:j1] - a]
            lab = labels_all[c]
            if clusters[c][3] is not None:
                nn, sub_labels = clusters[c][3]
                _, nearest = nn.kneighbors(prepare_maps(cm, max_side))
                lab[j0:j1] = sub_labels[nearest[:, 0]]
            for v in np.unique(lab[j0:j1]):
                sel = cm[lab[j0:j1] == v].astype(np.float64)
                sums[c][int(v)] = sums[c].get(int(v), 0.0) + sel.sum(axis=0)
                counts[c][int(v)] = counts[c].get(int(v), 0) + len(sel)

    result: dict[str, ClassClusters] = {}
    per_class: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for cname, (ci, frames, _) in plan.items():
        raw = labels_all[cname]
        labels = relabel_by_first_appearance(raw) if clusters[cname][3] is not None else raw
        _, k, vals, _ = clusters[cname]
        # The relabelling is a permutation of the raw labels: carry the sums over with it.
        order = {int(r): int(l) for r, l in zip(raw, labels, strict=True)} if raw.size else {}
        means = {f"{cname.upper()}_{cluster_letter(order[r])}": sums[cname][r] / counts[cname][r]
                 for r in sorted(sums[cname], key=lambda r: order[r])}
        full = np.full(T, -1, dtype=np.int64)
        full[frames] = labels
        per_class[cname] = (mask[:, ci], full)
        result[cname] = ClassClusters(frames, labels, k, vals, means)
        log.debug("SpRAy %s: %d active frames, k=%d", cname, frames.size, k)
    progress(len(classes), len(classes), "SpRAy done")
    if not per_class:  # no face anywhere: one NONE stage over the whole clip
        descs = [(NONE,)] * T
        stages = [Stage(0, T, (NONE,))] if T else []
        return SprayResult(result, TemporalPrototypes(descs, stages))
    return SprayResult(result, temporal_prototypes(per_class))


def _cluster_maybe_subsampled(
    feats: np.ndarray, k_neighbors: int, max_clusters: int, max_frames: int, seed: int
) -> tuple[np.ndarray, int, np.ndarray]:
    n = feats.shape[0]
    if n <= max_frames:
        return spectral_cluster(feats, k_neighbors, None, max_clusters, seed)
    pick = np.linspace(0, n - 1, max_frames).round().astype(np.int64)
    sub_labels, k, vals = spectral_cluster(feats[pick], k_neighbors, None, max_clusters, seed)
    _, nearest = NearestNeighbors(n_neighbors=1).fit(feats[pick]).kneighbors(feats)
    labels = sub_labels[nearest[:, 0]]
    return relabel_by_first_appearance(labels), k, vals
