"""Evaluate a checkpoint on a split: frame/image accuracy, per-class recall, confusion matrix, and on
video corpora the video-level accuracy of the EWMA decision (engine.aggregate), as analysis makes it."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.aggregate import DEFAULT_TAU_S, NO_FACE, alpha_from_tau, ewma, video_decision
from engine.checkpoint import load_checkpoint
from engine.data import DataConfig, FaceCache, PreparedData, prepare
from engine.data.cache import build_cache, canonical_preprocess
from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.models import to_input

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    model_dir: str
    split: str
    classes: list[str]
    n: int
    accuracy: float
    per_class_recall: dict[str, float | None]  # None: no sample of that class
    confusion: list[list[int]]  # rows: true class, columns: predicted
    predictions: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    videos: int = 0
    video_accuracy: float | None = None  # EWMA last-state decision per video (video corpora)
    video_confusion: list[list[int]] | None = None
    video_decisions: list[dict[str, Any]] = field(default_factory=list)
    alpha: float | None = None  # one α for every video (`alpha=` given); else each decision records its own
    tau_s: float | None = None  # the EWMA time constant, seconds (α per video from its fps and sampling)
    items: int = 0  # files (images or videos) the samples came from
    items_total: int = 0  # files of the split (some may give no sample: unreadable, no face in a video)
    reason: str = ""  # why this split / these items were used
    # CAM-COS (METHODS §7; evaluate(cam_cos=True)): Grad-CAM of the label vs the label's AU map on the same
    # samples, {"per_class", "n", "mean"} as engine.au_guidance.cam_cos_per_class gives it
    cam_cos: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _video_fps(path: str) -> float | None:
    """The frame rate of a video item (its header only); None when it cannot be read now."""
    from engine.video import open_video

    try:
        with open_video(path) as r:
            return float(r.fps) if r.fps and r.fps > 0 else None
    except Exception as exc:  # noqa: BLE001 - the cache holds the crops; the file may have moved since
        log.warning("%s: frame rate unreadable (%s); its video decision takes α at 25 fps", path, exc)
        return None


def _sampled_alpha(tau_s: float, fps: float, frames: np.ndarray) -> float:
    """EWMA α for scores of every k-th frame (k: the median gap of the sampled frames) at time constant τ."""
    gaps = np.diff(np.asarray(frames, np.int64))
    k = float(np.median(gaps)) if len(gaps) else 1.0
    return alpha_from_tau(tau_s, fps / max(k, 1.0))


def in_model_classes(cache: FaceCache, classes: list[str], model_dir: str | Path) -> FaceCache:
    """The samples labelled in the model's classes (the data's may be a subset of them); ValueError naming
    both class lists when the model cannot predict one of the data's classes."""
    try:
        return cache.in_classes(list(classes))
    except ValueError as exc:
        raise ValueError(f"{model_dir}: {exc}; evaluate it on data labelled in its classes (choose the "
                         "data's label setting with --labels)") from exc


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def _recall(cm: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    rows = cm.sum(1)
    return {c: (float(cm[i, i]) / rows[i] if rows[i] else None) for i, c in enumerate(classes)}


ALL = "all"  # every item of the data, whatever split it has


def choose_split(prepared: PreparedData, split: str | None) -> tuple[str, str]:
    """(split to evaluate, why) for data from outside: a split asked for is used as asked; a data set with its
    own test/ folder (FER2013 layout) is evaluated on that; any other folder is evaluated whole, since a
    plain <class>/<image> folder has no held-out part of its own that a model could have been kept from."""
    if split is not None:
        if split != ALL and split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; use all, train, val or test")
        what = "every item" if split == ALL else f"the {prepared.splits.method} {split} split"
        return split, f"{what}, as asked"
    if any(it.split == "test" for it in prepared.corpus.items):
        return "test", "the data set's own test/ folder (pass --split all for every item)"
    return ALL, ("every item: a plain <class>/<item> folder has no held-out part of its own "
                 "(pass --split test for a seeded 10 % test split)")


def split_items(prepared: PreparedData, split: str) -> list:
    """The items of a split; ALL is every item of the corpus (file order)."""
    if split == ALL:
        return sorted(prepared.corpus.items, key=lambda it: it.path)
    return prepared.items(split)


def split_cache(prepared: PreparedData, split: str, limit: int | None, seed: int,
                progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> FaceCache:
    """Crops of one split (or ALL); with `limit`, of a fixed seeded subset of its image files, chosen before
    cropping so only those go through face detection (video corpora are cropped whole and subset later)."""
    report = lambda d, t, m="": progress(d, t, f"{split} set: {m}")
    items = split_items(prepared, split)
    if limit is not None and limit < len(items) and all(it.kind == "image" for it in items):
        pick = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
        items = [items[i] for i in pick]
    elif split != ALL:
        return prepared.cache(split, report, cancel)
    return build_cache(items, prepared.classes, prepared.preprocess, prepared.config.sampling,
                       prepared.config.cache_root, prepared.config.workers, progress=report, cancel=cancel)


def evaluate(
    model_dir: str | Path,
    data: PreparedData | DataConfig | FaceCache | str | Path,
    split: str | None = "test",
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    limit: int | None = None,
    seed: int = 0,
    alpha: float | None = None,
    batch_size: int = 128,
    device: str = "cpu",
    tau_s: float = DEFAULT_TAU_S,
    cam_cos: bool = False,
    labels: str | None = None,
) -> EvalResult:
    """Score ``split`` of ``data`` with the checkpoint in ``model_dir``.

    The data is cropped with the checkpoint's own preprocessing (what analysis will apply). ``limit``
    keeps a seeded random subset of that many samples (frame level; videos are kept or dropped whole).
    ``split`` None lets :func:`choose_split` decide (data from outside: whole, or its own test folder);
    ``"all"`` is every item. The result says how many items it used and why (``items``, ``reason``).
    Video decisions are made as analysis makes them: the EWMA with time constant ``tau_s`` seconds, its α
    from the video's fps and the frames sampled (every k-th frame: α = 1 − exp(−k/(fps·τ))); ``alpha``
    fixes one α for every video instead. ``cam_cos``: also CAM-COS per labelled class on the same samples
    (``EvalResult.cam_cos``; frame models with a Grad-CAM layer and emotion classes the AU codebook knows).
    ``labels``: the data's label setting (default the model's); its classes may be a subset of the model's
    (a FER2013 model on CREMA-D videos, ``labels="crema-d"``): the model still chooses among all of its own.
    """
    model, _ = load_checkpoint(model_dir, device)
    spec = model.spec
    if spec.arch == "landmark-lstm":  # windows of landmarks, not face crops
        raise ValueError(f"{model_dir} is a landmark-sequence model; evaluate it with the landmark ranking "
                         "(vidxai evaluate DATA --model MODEL --landmark-ranking; engine.landmark_eval)")
    reason = "the samples given"
    if isinstance(data, FaceCache):
        cache = data
        split = split or "given"
    else:
        prepared = (
            data
            if isinstance(data, PreparedData)
            else prepare(
                data
                if isinstance(data, DataConfig)
                else DataConfig(path=str(data), label_setting=labels or spec.label_setting or None),
                spec.preprocess,
            )
        )
        if canonical_preprocess(prepared.preprocess) != canonical_preprocess(spec.preprocess):
            raise ValueError(
                f"data prepared for preprocessing {prepared.preprocess}, but {model_dir} needs "
                f"{spec.preprocess}; prepare it with the model's preprocessing"
            )
        split, reason = choose_split(prepared, split)
        cache = split_cache(prepared, split, limit, seed, progress, cancel)
    cache = in_model_classes(cache, spec.classes, model_dir)
    index = np.arange(len(cache))
    if limit is not None and limit < len(cache):
        rng = np.random.default_rng(seed)
        if (np.asarray(cache.frame_index) >= 0).any():
            chosen: list[int] = []
            count = 0
            for it in rng.permutation(np.unique(cache.item_index)):
                if count >= limit:
                    break
                chosen.append(int(it))
                count += int((cache.item_index == it).sum())
            index = np.flatnonzero(np.isin(cache.item_index, chosen))
        else:
            index = np.sort(rng.choice(len(cache), size=limit, replace=False))
    n = len(index)
    if n == 0:
        raise ValueError(f"split {split!r} has no samples to evaluate; check the data and split settings")
    probs = np.empty((n, len(spec.classes)), np.float32)
    total = (n + batch_size - 1) // batch_size
    with torch.no_grad():
        for b, s in enumerate(range(0, n, batch_size)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            idx = index[s : s + batch_size]
            x = to_input(np.array(cache.images[idx]), spec).to(device)
            probs[s : s + len(idx)] = torch.softmax(model(x).float(), 1).cpu().numpy()
            progress(b + 1, total, f"evaluating {split}")
    labels = np.asarray(cache.labels[index], np.int64)
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, len(spec.classes))
    res = EvalResult(
        str(model_dir),
        split,
        list(spec.classes),
        n,
        float((preds == labels).mean()),
        _recall(cm, list(spec.classes)),
        cm.tolist(),
        preds.tolist(),
        labels.tolist(),
    )
    res.items = len(np.unique(np.asarray(cache.item_index)[index]))
    res.items_total = len(cache.items)
    res.reason = reason + (f"; a seeded subset of {limit} (seed {seed})" if limit is not None else "")
    if cam_cos:
        from engine.au_guidance import cam_cos_per_class

        res.cam_cos = cam_cos_per_class(model, cache, spec.preprocess, progress=progress, cancel=cancel,
                                        index=index)

    frames = np.asarray(cache.frame_index[index])
    if (frames >= 0).any():
        items = np.asarray(cache.item_index[index])
        v_true, v_pred = [], []
        for it in np.unique(items):
            rows = np.flatnonzero(items == it)
            rows = rows[np.argsort(frames[rows], kind="stable")]
            source = cache.items[int(it)]["path"]
            fps = _video_fps(source) if alpha is None else None
            a = alpha if alpha is not None else _sampled_alpha(tau_s, fps or 25.0, frames[rows])
            decision = video_decision(ewma(probs[rows], a), spec.classes)
            true = int(labels[rows[0]])
            v_true.append(true)
            v_pred.append(spec.classes.index(decision) if decision != NO_FACE else -1)
            res.video_decisions.append(
                {
                    "source": source,
                    "label": spec.classes[true],
                    "decision": decision,
                    "frames": len(rows),
                    "fps": fps,  # None: α given, or the file unreadable now (α taken at 25 fps)
                    "alpha": a,
                }
            )
        vt, vp = np.array(v_true), np.array(v_pred)
        res.videos = len(vt)
        res.video_accuracy = float((vt == vp).mean())
        ok = vp >= 0
        res.video_confusion = confusion_matrix(vt[ok], vp[ok], len(spec.classes)).tolist()
        res.alpha, res.tau_s = alpha, (None if alpha is not None else tau_s)
    log.info(
        "%s on %s: accuracy %.4f over %d samples%s",
        model_dir,
        split,
        res.accuracy,
        n,
        ""
        if res.video_accuracy is None
        else f", video accuracy {res.video_accuracy:.4f} ({res.videos} videos)",
    )
    return res


def _plot_confusion(cm: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: runs in jobs, CI and worker threads
    import matplotlib.pyplot as plt

    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2.5, 1.0 * len(classes) + 2))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{norm[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(result: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``evaluation.json``, ``confusion.png`` (+ ``video_confusion.png`` for videos) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "evaluation.json", "confusion": out / "confusion.png"}
    paths["json"].write_text(json.dumps(result.to_json(), indent=1))
    _plot_confusion(
        np.array(result.confusion),
        result.classes,
        f"{result.split}: accuracy {result.accuracy:.1%} (n={result.n})",
        paths["confusion"],
    )
    if result.video_confusion is not None:
        paths["video_confusion"] = out / "video_confusion.png"
        _plot_confusion(
            np.array(result.video_confusion),
            result.classes,
            f"videos (EWMA {f'α={result.alpha}' if result.alpha is not None else f'τ={result.tau_s} s'}): "
            f"{result.video_accuracy:.1%} (n={result.videos})",
            paths["video_confusion"],
        )
    return paths


__all__ = ["ALL", "EvalResult", "choose_split", "confusion_matrix", "evaluate", "split_items", "write_report"]
