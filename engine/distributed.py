"""Data-parallel training across processes (torchrun, SLURM): the pieces `engine.train` uses when a
process group is up. README "Beyond one workstation"; issue 19.

The rule is that N processes compute exactly what one process computes with the same global batch and
seed, so a distributed run is the single-process run, faster:

- Every rank draws the *global* batch from the same seeded DataLoader as a single process would (the
  same sampler permutation, augmentation and occlusion draws, featureless inputs), then keeps its
  interleaved share ``batch[rank::world]`` for the forward and backward pass. The data work is repeated
  per rank; the model work, the costly part, is split.
- Gradients are averaged over ranks with one all-reduce per step (what DistributedDataParallel's reducer
  does; the module is not wrapped in ``nn.parallel.DistributedDataParallel`` because the trainer's stages
  call ``forward_train``/``tokens``/``last_layer``, not ``forward``, which DDP's hooks need). Each rank's
  loss is weighted by its share of the batch, so an uneven last batch still gives the global mean.
- BatchNorm uses the statistics of the global batch (:class:`GlobalBatchNorm2d`, a differentiable
  all-reduce of Σx and Σx²: SyncBatchNorm, which torch implements for GPUs only, on any backend).
- Metrics are summed over ranks; validation and the ProtoPNet push are sharded and merged
  (:class:`PushMerge`: each rank pushes its shard, the global nearest patch wins).
- Rank 0 alone writes checkpoints and metrics; resume reads them on every rank (a shared folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        dist.barrier()

    def share(self, n: int) -> slice:
        return slice(self.rank, None, self.world)

    def weight(self, local: int, total: int) -> float:
        """Loss factor of a rank holding `local` of a global batch of `total`: the averaged gradients are
        then those of the global mean loss."""
        return local * self.world / total

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """All-reduce the gradients of `params` (those that require one) in one flat buffer, then ÷ world."""
        ps = [p for p in params if p.requires_grad]
        if not ps:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps])
        dist.all_reduce(flat)
        flat /= self.world
        i = 0
        for p in ps:
            n = p.numel()
            p.grad = flat[i:i + n].view_as(p).clone()
            i += n

    def gather_bytes(self, data: bytes) -> list[bytes]:
        """Every rank's bytes, in rank order (JSON text here: nothing is pickled)."""
        t = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
        n = torch.tensor([t.numel()], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        m = int(max(int(s) for s in sizes))
        buf = torch.zeros(m, dtype=torch.uint8)
        buf[: t.numel()] = t
        out = [torch.zeros(m, dtype=torch.uint8) for _ in range(self.world)]
        dist.all_gather(out, buf)
        return [bytes(o[: int(s)].numpy()) for o, s in zip(out, sizes)]

    def gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's tensor (same shape but for the first dimension), in rank order."""
        t = t.contiguous()
        n = torch.tensor([t.shape[0]], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        m = int(max(int(s) for s in sizes))
        buf = torch.zeros((m, *t.shape[1:]), dtype=t.dtype)
        buf[: t.shape[0]] = t
        out = [torch.zeros_like(buf) for _ in range(self.world)]
        dist.all_gather(out, buf)
        return [o[: int(s)] for o, s in zip(out, sizes)]


def current() -> Dist | None:
    """The process group this process belongs to, or None (a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Dist(dist.get_rank(), dist.get_world_size())
    return None


def launched() -> bool:
    """True under torchrun / srun torchrun (the launcher sets WORLD_SIZE and the rendezvous)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str) -> Dist | None:
    """Join the launcher's process group: NCCL on GPUs, gloo on CPUs. None when not launched."""
    if not launched():
        return None
    if not dist.is_initialized():
        gpu = device != "cpu" and torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpu else "gloo")
    return current()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- BatchNorm over the global batch ----------------------------------------------------------------------

_REPLICATED = [False]


@contextlib.contextmanager
def replicated() -> Iterator[None]:
    """Inputs that are the same on every rank (the featureless inputs): BatchNorm uses them as they are,
    as one process does, rather than W copies of them."""
    _REPLICATED[0] = True
    try:
        yield
    finally:
        _REPLICATED[0] = False


def global_median(d: Dist, values: torch.Tensor) -> torch.Tensor:
    """The median (torch's: the lower middle) of every rank's `values` together."""
    return torch.cat(d.gather(values.detach().cpu())).median().to(values.device)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (every rank's share); eval mode
    and the state dict are BatchNorm2d's. Σx and Σx² are all-reduced in float64 with autograd, so the
    gradient is that of the single-process BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized() or _REPLICATED[0]:
            return super().forward(x)
        with warnings.catch_warnings():  # its replacement is private (torch.distributed._functional_collectives)
            warnings.simplefilter("ignore", FutureWarning)
            from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xd = x.double()
        local = torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)),
                           xd.new_tensor([x.numel() / c])])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            tot = all_reduce(local)
        n = tot[-1]
        mean = tot[:c] / n
        var = (tot[c:2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.to(x.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_((var * n / (n - 1)).to(x.dtype), alpha=m)
        y = (x - mean.to(x.dtype)[None, :, None, None]) * torch.rsqrt(var.to(x.dtype) + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def global_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm2d of `module` for a GlobalBatchNorm2d sharing its parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            child.__class__ = GlobalBatchNorm2d  # same fields, same state dict
        else:
            global_batchnorm(child)
    return module


# --- ProtoPNet push over every rank's shard ---------------------------------------------------------------

def shard_range(n: int, d: Dist) -> tuple[int, int]:
    """Contiguous share [start, stop) of n items for rank d.rank (rank order = item order)."""
    per = -(-n // d.world)
    return min(n, d.rank * per), min(n, (d.rank + 1) * per)


class PushMerge:
    """`push_prototypes(..., merge=PushMerge(d))`: after each rank scanned its contiguous shard, the kept
    candidates of all ranks are merged in rank (= training set) order, so the nearest wins and ties go to
    the earlier image as in one pass; the reference features are the first ones of the whole set. After
    the choice, the winners' images and distance maps come from the ranks that found them."""

    def __init__(self, d: Dist) -> None:
        self.d = d

    @staticmethod
    def _light(rec: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if rec is None else {"id": rec["id"], "position": list(rec["position"])}

    def candidates(self, cand_d: torch.Tensor, cand_z: torch.Tensor, cand: list, any_d: torch.Tensor,
                   any_best: list, ref_z: list[torch.Tensor], reference: int):
        d = self.d
        k, nc = cand_d.shape
        all_d = torch.stack(d.gather(cand_d.unsqueeze(0)), 0).reshape(d.world, k, nc)
        all_z = torch.stack(d.gather(cand_z.unsqueeze(0)), 0).reshape(d.world, k, nc, -1)
        meta = [json.loads(b) for b in d.gather_bytes(json.dumps(
            {"cand": [[self._light(r) for r in row] for row in cand],
             "any": [None if a is None else self._light(a[1]) for a in any_best]}).encode())]
        new_d, new_z = torch.empty_like(cand_d), torch.empty_like(cand_z)
        new_cand: list[list] = []
        for j in range(k):
            flat_d = all_d[:, j].reshape(-1)          # rank-major: earlier images first
            order = torch.argsort(flat_d, stable=True)[:nc].tolist()
            row = []
            for c, o in enumerate(order):
                r, lc = divmod(o, nc)
                new_d[j, c], new_z[j, c] = flat_d[o], all_z[r, j, lc]
                row.append(cand[j][lc] if r == d.rank else
                           None if meta[r]["cand"][j][lc] is None else {**meta[r]["cand"][j][lc], "rank": r})
            new_cand.append(row)
        all_any_d = torch.stack(d.gather(any_d.unsqueeze(0)), 0).reshape(d.world, k)
        dim = cand_z.shape[-1]
        any_z = torch.stack([a[0] if a is not None else torch.zeros(dim) for a in any_best])
        all_any_z = torch.stack(d.gather(any_z.unsqueeze(0)), 0).reshape(d.world, k, dim)
        win = all_any_d.argmin(0)                     # the first (lowest rank) of equal distances
        new_any_d = all_any_d.gather(0, win.unsqueeze(0)).squeeze(0)
        new_any: list = []
        for j in range(k):
            r = int(win[j])
            rec = any_best[j][1] if r == d.rank and any_best[j] is not None else \
                None if meta[r]["any"][j] is None else {**meta[r]["any"][j], "rank": r}
            new_any.append(None if rec is None else (all_any_z[r, j].clone(), rec))
        refs = d.gather(torch.cat(ref_z) if ref_z else torch.zeros((0, *cand_z.shape[-1:], 1, 1)))
        ref = torch.cat([t for t in refs if t.numel()])[:reference] if any(t.numel() for t in refs) else None
        return new_d, new_z, new_cand, new_any_d, new_any, [] if ref is None else [ref]

    def fill(self, best: list[dict[str, Any] | None], hw: tuple[int, int], image_shape: tuple[int, ...]) -> list:
        """The distance maps and images of the chosen records, from the ranks that hold them."""
        k = len(best)
        maps = torch.zeros((k, *hw), dtype=torch.float32)
        images = torch.zeros((k, *image_shape), dtype=torch.float32)
        for j, b in enumerate(best):
            if b is not None and "rank" not in b:
                maps[j] = b["distances"].float()
                images[j] = torch.from_numpy(np.asarray(b["image"], dtype=np.float32))
        maps, images = self.d.all_sum(maps), self.d.all_sum(images)
        out = []
        for j, b in enumerate(best):
            if b is None:
                out.append(None)
                continue
            rec = {k_: v for k_, v in b.items() if k_ != "rank"}
            rec["position"] = tuple(rec["position"])
            rec["distances"] = maps[j]
            rec["image"] = images[j].numpy().astype(np.uint8)
            out.append(rec)
        return out
