"""``vidxai evaluate --landmark-ranking``: the seed's main table on our data (METHODS §8; seed 003).

1. Rank the landmarks of a trained landmark-sequence model by IG (``rank_landmarks``: per emotion, the
   mean over that emotion's training windows of |IG| summed over frames and coordinates, baselines the
   other emotions' typical windows; overall: the mean over emotions).
2. The pruning ladder 68 → 34 → 17 → 8 (the seed's 468 → 234 → … scaled to dlib's 68): keep the top-n
   landmarks of the overall ranking and retrain the same model (same settings, data and seed) on them.
3. Accuracy per size on the held-out windows (test split, else validation, else — flagged — training).

Writes ``ranking.json``, ``ladder.json``, ``ladder.md`` (the table) and ``ranking.png`` (top landmarks by
part, and the mean face with each point sized by its relevance) into the report folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.checkpoint import load_checkpoint, resolve_model_dir
from engine.data import DataConfig, prepare
from engine.data.landmarks import landmark_set
from engine.explain.landmark_ig import part_relevance, rank_landmarks
from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.landmark_train import accuracy
from engine.models.landmark import LANDMARK_PARTS, LandmarkSequenceModel, part_of

log = logging.getLogger(__name__)

LADDER = (68, 34, 17, 8)


def _held_out(prepared: Any, window: int) -> tuple[str, Any]:
    for split in ("test", "val"):
        s = landmark_set(prepared, split, window) if prepared.items(split) else None
        if s is not None and len(s):
            return split, s
    return "train (no held-out split: optimistic)", landmark_set(prepared, "train", window)


def _acc(model: LandmarkSequenceModel, s: Any) -> float | None:
    x = torch.from_numpy(np.ascontiguousarray(s.x[:, :, model.points]))
    return accuracy(model, x, torch.from_numpy(s.labels))


def landmark_ranking(model_dir: str | Path, data: str | Path, out_dir: str | Path, ladder: tuple[int, ...] = LADDER,
                     baseline: str = "others", steps: int = 50, per_class: int = 64, epochs: int | None = None,
                     progress: ProgressFn = no_progress, cancel: CancelToken | None = None) -> dict[str, Any]:
    """Rank, prune and retrain (see the module doc); returns what ``ladder.json`` holds."""
    from engine.landmark_train import single_thread

    with single_thread():
        return _ladder(model_dir, data, out_dir, ladder, baseline, steps, per_class, epochs, progress, cancel)


def _ladder(model_dir: str | Path, data: str | Path, out_dir: str | Path, ladder: tuple[int, ...], baseline: str,
            steps: int, per_class: int, epochs: int | None, progress: ProgressFn,
            cancel: CancelToken | None) -> dict[str, Any]:
    from engine.train import TrainConfig, train

    folder = resolve_model_dir(model_dir)
    model, meta = load_checkpoint(folder)
    if not isinstance(model, LandmarkSequenceModel):
        raise TypeError(f"{folder} holds a {model.spec.arch} model; --landmark-ranking needs a landmark-lstm one")
    if len(model.points) != 68:
        raise ValueError(f"{folder} already uses {len(model.points)} landmarks; rank a model on all 68")
    training = meta["training"]
    cfg = TrainConfig.from_json(training["config"])
    dc = DataConfig.from_json({**training["data"]["config"], "path": str(data)})
    prepared = prepare(dc, cfg.preprocess)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tr = landmark_set(prepared, "train", model.window, progress=progress, cancel=cancel)
    ranking = rank_landmarks(model, tr.x, tr.labels, baseline, steps, per_class, cfg.seed, progress, cancel)
    ranking["parts"] = part_relevance(np.asarray(ranking["overall_relevance"]), ranking["points"])
    (out / "ranking.json").write_text(json.dumps(ranking, indent=1))
    split, held = _held_out(prepared, model.window)
    rows = [{"landmarks": 68, "points": list(range(68)), "accuracy": _acc(model, held), "model": str(folder),
             "retrained": False}]
    for n in ladder:
        if n >= 68:
            continue
        if cancel is not None:
            cancel.raise_if_cancelled()
        keep = sorted(ranking["overall"][:n])
        sub = dataclasses.replace(cfg, sequence={**model.spec.sequence, "points": keep},
                                  out_dir=str(out / "ladder" / f"{n}"), epochs=epochs or cfg.epochs)
        progress(len(rows), len(ladder), f"retraining on the top {n} landmarks")
        m, _ = load_checkpoint(train(prepared, sub, cancel=cancel))
        rows.append({"landmarks": n, "points": keep, "accuracy": _acc(m, held), "model": str(out / "ladder" / f"{n}" / "model"),
                     "retrained": True})
    result = {"model": str(folder), "data": str(data), "split": split, "windows": len(held),
              "baseline": baseline, "steps": steps, "rows": rows, "ranking_top": ranking["overall"][:17],
              "parts": ranking["parts"]}
    (out / "ladder.json").write_text(json.dumps(result, indent=1))
    (out / "ladder.md").write_text(ladder_table(result))
    _plot(ranking, model, out / "ranking.png")
    return result


def ladder_table(result: dict[str, Any]) -> str:
    lines = [(f"Landmark pruning ladder — {result['model']} on {result['data']} ({result['split']}, "
             f"{result['windows']} windows; IG baseline {result['baseline']}, m = {result['steps']})"), "",
             "| landmarks | accuracy | retrained |", "|---:|---:|:---|"]
    for r in result["rows"]:
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(f"| {r['landmarks']} | {acc} | {'yes' if r['retrained'] else 'no (the model ranked)'} |")
    lines += ["", "Top 17 landmarks (dlib 0-based): " + ", ".join(map(str, result["ranking_top"])),
              "Relevance by part: " + ", ".join(f"{k} {v:.3g}" for k, v in result["parts"].items()), ""]
    return "\n".join(lines)


def _plot(ranking: dict[str, Any], model: LandmarkSequenceModel, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = np.asarray(ranking["overall_relevance"])
    points = ranking["points"]
    colours = dict(zip(LANDMARK_PARTS, ("#8c564b", "#2ca02c", "#ff7f0e", "#1f77b4", "#d62728"), strict=True))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2))
    top = np.argsort(-rel, kind="stable")[:20]
    a.bar(range(len(top)), rel[top], color=[colours[part_of(points[i])] for i in top])
    a.set_xticks(range(len(top)), [str(points[i]) for i in top], fontsize=7)
    a.set_xlabel("landmark (dlib 0-based)")
    a.set_ylabel("mean Σ|IG| over frames and x, y")
    a.set_title("Top 20 landmarks")
    shape = model.mean_window.mean(0).numpy()
    size = 10 + 300 * rel / max(rel.max(), 1e-12)
    b.scatter(shape[:, 0], shape[:, 1], s=size, c=[colours[part_of(p)] for p in points], alpha=0.7)
    b.invert_yaxis()
    b.set_aspect("equal")
    b.set_axis_off()
    b.set_title("Mean face, point size = relevance")
    for name, c in colours.items():
        a.bar([0], [0], color=c, label=name)
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["LADDER", "ladder_table", "landmark_ranking"]
