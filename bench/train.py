"""Trainer overhead: images/s of engine.train vs a plain PyTorch loop on the same model, data, optimiser
and batch size. Prints both rates and their ratio (≥ 0.9 expected).

    .venv/bin/python bench/train.py                   # CPU, FER2013 crops (fast mode) or random data
    .venv/bin/python bench/train.py --device cuda --backbone vgg16_bn --size 224 --grayscale 0

Each side runs ``--repeats`` times alternately and the best run counts, so another process stealing the
CPU for a moment does not decide the ratio. The trainer's time is the whole ``train()`` call: data
loading, per-epoch checkpoints of ``last/`` and the final save included.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import NO_AUGMENT, DataConfig, FaceCache, SamplingConfig, prepare
from engine.models import ModelSpec, build_model, to_input
from engine.train import TrainConfig, TrainData, select_device, train

log = logging.getLogger("bench.train")
FER = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "fer2013"


def load_data(n: int, pp: dict, seed: int) -> tuple[FaceCache, str]:
    if FER.is_dir() and pp["mode"] == "face":
        dc = DataConfig(str(FER), sampling=SamplingConfig(fast=True), max_per_class={"train": n // 7 + 1})
        cache = prepare(dc, pp).cache("train")
        idx = np.arange(min(n, len(cache)))
        return cache.subset(idx), f"FER2013 train crops (fast mode), {len(idx)} images"
    rng = np.random.default_rng(seed)
    c = 1 if pp["grayscale"] else 3
    images = rng.integers(0, 256, (n, pp["size"], pp["size"], c), dtype=np.uint8)
    return FaceCache.from_arrays(
        images, rng.integers(0, 7, n), [str(i) for i in range(7)]
    ), f"random, {n} images"


def plain_loop(
    cache: FaceCache,
    spec: ModelSpec,
    epochs: int,
    bs: int,
    lr: float,
    device: torch.device,
    seed: int,
    amp: bool,
) -> float:
    torch.manual_seed(seed)
    model = build_model(spec).to(device)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images, labels = np.asarray(cache.images), torch.from_numpy(np.asarray(cache.labels))
    n = len(labels)
    gen = torch.Generator().manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).numpy()
        for s in range(0, n, bs):
            idx = perm[s : s + bs]
            x = to_input(images[idx], spec).to(device, non_blocking=True)
            y = labels[idx].to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=amp):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * n / (time.perf_counter() - t0)


def ours(cache: FaceCache, cfg: TrainConfig) -> tuple[float, float]:
    """(images/s over the whole train() call, images/s over the epochs' batch loops only)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg.out_dir = tmp
        t0 = time.perf_counter()
        train(TrainData(cache, None, cache.classes, "bench"), cfg)
        wall = time.perf_counter() - t0
        loops = sum(
            json.loads(ln)["train_time_s"] for ln in (Path(tmp) / "metrics.jsonl").read_text().splitlines()
        )
    n = cfg.epochs * len(cache)
    return n / wall, n / loops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backbone", default="small")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--grayscale", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    pp = {
        "mode": "face",
        "size": args.size,
        "grayscale": bool(args.grayscale),
        "margin": 0.1,
        "occlude": [],
        "fill": 0,
    }
    device = select_device(args.device)
    amp = device.type == "cuda"
    cache, what = load_data(args.images, pp, 0)
    # Materialise once so neither side pays for the first read of a memory-mapped cache.
    cache = FaceCache(
        np.array(cache.images),
        np.array(cache.labels),
        cache.classes,
        cache.item_index,
        cache.frame_index,
        cache.items,
    )
    spec = ModelSpec(arch="cnn", backbone=args.backbone, classes=cache.classes, preprocess=pp)
    cfg = TrainConfig(
        arch="cnn",
        backbone=args.backbone,
        preprocess=pp,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr_cnn=1e-3,
        optimizer="adam",
        augment=NO_AUGMENT,
        device=str(device),
        amp=amp,
        num_workers=0,
        keep_last=False,
    )
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"device {device} ({where}), "
        f"cnn/{args.backbone} {args.size}², batch {args.batch_size}, {args.epochs} epochs, data: {what}"
    )
    best_plain = best_wall = best_loop = 0.0
    for r in range(args.repeats):
        p = plain_loop(cache, spec, args.epochs, args.batch_size, 1e-3, device, 0, amp)
        w, lp = ours(cache, TrainConfig(**{**cfg.to_json(), "augment": NO_AUGMENT}))
        print(f"  run {r + 1}: plain {p:8.1f} img/s   trainer {w:8.1f} img/s (batch loops only {lp:8.1f})")
        best_plain, best_wall, best_loop = max(best_plain, p), max(best_wall, w), max(best_loop, lp)
    print(f"plain loop   {best_plain:8.1f} images/s")
    print(f"our trainer  {best_wall:8.1f} images/s (whole train() call; batch loops only {best_loop:.1f})")
    print(f"ratio        {best_wall / best_plain:.3f} (loops only {best_loop / best_plain:.3f})")


if __name__ == "__main__":
    main()
