"""Training the landmark-sequence model (``--arch landmark-lstm``; METHODS §8, engine.models.landmark).

The same job contract as ``engine.train`` (which hands ``landmark-lstm`` runs to ``train_landmarks``):
progress, cancel within one batch, ``on_record`` dicts, ``out_dir/last/`` after every epoch (safetensors
weights and optimiser state, JSON step counter) so ``resume=True`` continues a cancelled run,
``out_dir/metrics.jsonl`` and the final ``out_dir/model/``. Loss: the sum over emotions of each detector's
binary cross-entropy (one-vs-rest, positives weighted by negatives/positives so every detector sees a
balanced problem). model.json's ``training.input`` says what the model saw (video windows or still-image
one-frame sequences, counts per class and split).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.data import DataConfig, PreparedData, prepare
from engine.data.landmarks import LandmarkSet, landmark_set
from engine.jobs import Cancelled, CancelToken, ProgressFn, RecordFn, no_progress, no_record
from engine.models import ModelSpec, build_model
from engine.models.landmark import LandmarkSequenceModel, sequence_settings

log = logging.getLogger(__name__)

STATE_JSON = "training_state.json"
OPTIM_TENSORS = "optimizer.safetensors"


def _prepared(data: Any, cfg: Any) -> PreparedData:
    if isinstance(data, PreparedData):
        return data
    if not isinstance(data, (DataConfig, str, Path)):
        raise TypeError("a landmark model trains from a data folder, a DataConfig or PreparedData, not "
                        f"{type(data).__name__} (it needs the videos' landmark tracks, not face crops)")
    dc = data if isinstance(data, DataConfig) else DataConfig(path=str(data))
    if cfg.label_setting is not None and dc.label_setting is None:
        dc = dataclasses.replace(dc, label_setting=cfg.label_setting)
    return prepare(dc, cfg.preprocess)


def landmark_sets(prepared: PreparedData, seq: dict[str, Any], progress: ProgressFn = no_progress,
                  cancel: CancelToken | None = None) -> tuple[LandmarkSet, LandmarkSet | None, dict[str, Any]]:
    """Train and validation windows for the sequence settings (window forced to 1 on still images)."""
    if prepared.splits.train and prepared.splits.train[0].kind == "image":
        seq["window"] = 1
    tr = landmark_set(prepared, "train", seq["window"], progress=progress, cancel=cancel)
    if tr is None:
        raise ValueError("the training split is empty; check the data folder and split settings")
    val = landmark_set(prepared, "val", seq["window"], progress=progress, cancel=cancel)
    return tr, val, {"train": tr.summary(), "val": None if val is None else val.summary()}


def fill_baselines(model: LandmarkSequenceModel, x: torch.Tensor, y: torch.Tensor) -> None:
    """The input standardisation and the IG baselines (METHODS §8): per class the training window nearest to the class's mean window,
    and the mean window of all classes. ``x`` N×P×L×2 in the model's points."""
    with torch.no_grad():
        model.input_mean.copy_(x.mean((0, 1)))
        # One spread for every coordinate: per-coordinate scaling would blow the nearly still points up and
        # make the model (and IG's path integrals) needlessly steep.
        spread = float((x - x.mean((0, 1))).std()) if len(x) > 1 else 1.0
        model.input_std.fill_(max(spread, 1e-3))
        model.mean_window.copy_(x.mean(0))
        for c in range(model.spec.n_classes):
            xc = x[y == c]
            if len(xc):
                d = (xc - xc.mean(0)).flatten(1).norm(dim=1)
                model.typical[c].copy_(xc[int(d.argmin())])
            else:
                model.typical[c].copy_(model.mean_window)


def _pick(x: np.ndarray, points: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x[:, :, points], dtype=np.float32))


@torch.no_grad()
def accuracy(model: LandmarkSequenceModel, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float | None:
    if len(y) == 0:
        return None
    model.eval()
    pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(y), batch)])
    return float((pred == y).float().mean())


@contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op CPU thread while a landmark model runs: these models are tiny (a few thousand weights
    per detector), so more threads only add synchronisation; on a busy machine they cost 10–100×."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def train_landmarks(data: Any, cfg: Any, progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
                    resume: bool = False, on_record: RecordFn = no_record) -> Path:
    """Train a landmark-lstm model (``cfg``: ``engine.train.TrainConfig`` with ``sequence`` settings)."""
    with single_thread():
        return _train_landmarks(data, cfg, progress, cancel, resume, on_record)


def _train_landmarks(data: Any, cfg: Any, progress: ProgressFn, cancel: CancelToken | None, resume: bool,
                     on_record: RecordFn) -> Path:
    torch.manual_seed(cfg.seed)
    prepared = _prepared(data, cfg)
    seq = sequence_settings(cfg.sequence)
    tr, val, seen = landmark_sets(prepared, seq, progress, cancel)
    points = seq["points"]
    xt, yt = _pick(tr.x, points), torch.from_numpy(tr.labels)
    xv = _pick(val.x, points) if val is not None else torch.zeros(0, *xt.shape[1:])
    yv = torch.from_numpy(val.labels) if val is not None else torch.zeros(0, dtype=torch.int64)
    spec = ModelSpec(arch="landmark-lstm", classes=list(prepared.classes), preprocess=dict(cfg.preprocess),
                     label_setting=prepared.label_setting or "", sequence=seq)
    model = build_model(spec)
    assert isinstance(model, LandmarkSequenceModel)
    fill_baselines(model, xt, yt)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr_cnn, weight_decay=cfg.weight_decay)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last, metrics = out / "last", out / "metrics.jsonl"
    done = 0
    if resume and (last / STATE_JSON).exists():
        state = json.loads((last / STATE_JSON).read_text())
        if state.get("config") != cfg.to_json():
            raise ValueError(f"{last}: that run had other settings; resume it with its own settings or start "
                             "a new run in another out_dir")
        src, _ = load_checkpoint(last)
        model.load_state_dict(src.state_dict())
        opt_state = load_file(str(last / OPTIM_TENSORS))
        from engine.train import optimizer_state_from_files

        opt.load_state_dict(optimizer_state_from_files(opt_state, state["optimizer"]))
        done = int(state["done"])
        lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()] if metrics.exists() else []
        metrics.write_text("".join(ln + "\n" for ln in lines if json.loads(ln).get("epoch", -1) < done))
        log.info("resuming %s after epoch %d of %d", out, done, cfg.epochs)
    else:
        shutil.rmtree(last, ignore_errors=True)
        metrics.unlink(missing_ok=True)
    n_pos = torch.bincount(yt, minlength=spec.n_classes).float()
    pos_weight = ((len(yt) - n_pos) / n_pos.clamp(min=1)).clamp(max=100.0)
    target = F.one_hot(yt, spec.n_classes).float()
    bs = cfg.batch_size
    per_epoch = (len(yt) + bs - 1) // bs
    total = per_epoch * cfg.epochs
    rec: dict[str, Any] = {}

    def meta(final: bool) -> dict[str, Any]:
        return {"classes": list(spec.classes), "label_setting": spec.label_setting,
                "preprocess": dict(cfg.preprocess),
                "training": {"config": cfg.to_json(), "command": list(sys.argv), "seed": cfg.seed,
                             "data": prepared.summary(), "input": {**seen, "points": len(points)},
                             "train_samples": len(yt), "val_samples": len(yv), "steps_done": done,
                             "steps_total": cfg.epochs, "complete": final},
                "metrics": {"last_epoch": rec}}

    try:
        while done < cfg.epochs:
            from engine.train import optimizer_state_to_files

            t0 = time.perf_counter()
            model.train()
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + done)
            perm = torch.randperm(len(yt), generator=gen)
            loss_sum, correct = 0.0, 0
            for b in range(per_epoch):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                idx = perm[b * bs:(b + 1) * bs]
                xb = xt[idx]
                if seq["jitter"] > 0:
                    xb = xb + float(seq["jitter"]) * torch.randn(xb.shape, generator=gen)
                logits = model(xb)
                loss = F.binary_cross_entropy_with_logits(logits, target[idx], pos_weight=pos_weight,
                                                          reduction="none").mean(0).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(idx)
                correct += int((logits.detach().argmax(1) == yt[idx]).sum())
                step = done * per_epoch + b + 1
                on_record({"kind": "batch", "batch": step, "loss": loss_sum / min(len(yt), (b + 1) * bs)})
                progress(step, total, f"landmark epoch {done + 1} batch {b + 1}/{per_epoch}")
            rec = {"kind": "epoch", "epoch": done, "stage": "landmark", "stage_epoch": done, "step": done,
                   "loss": loss_sum / len(yt), "train_acc": correct / len(yt),
                   "val_acc": accuracy(model, xv, yv), "lr": {"all": cfg.lr_cnn},
                   "time_s": time.perf_counter() - t0}
            done += 1
            tmp = out / "last.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            save_checkpoint(tmp, model, meta(False))
            tensors, doc = optimizer_state_to_files(opt)
            save_file(tensors, str(tmp / OPTIM_TENSORS))
            (tmp / STATE_JSON).write_text(json.dumps({"done": done, "config": cfg.to_json(), "optimizer": doc}))
            shutil.rmtree(last, ignore_errors=True)
            tmp.rename(last)
            with open(metrics, "a") as f:
                f.write(json.dumps(rec) + "\n")
            on_record({**rec, "end_batch": done * per_epoch})
            log.info("%s", json.dumps(rec))
    except Cancelled:
        log.info("landmark training cancelled after %d of %d epochs; %s holds the last one", done, cfg.epochs,
                 last)
        raise
    final = out / "model"
    save_checkpoint(final, model, meta(True))
    shutil.copyfile(metrics, final / "metrics.jsonl")
    if not cfg.keep_last:
        shutil.rmtree(last, ignore_errors=True)
    progress(total, total, "training finished")
    return final


__all__ = ["accuracy", "fill_baselines", "landmark_sets", "single_thread", "train_landmarks"]
