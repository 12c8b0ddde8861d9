"""torch Dataset over a face-crop cache, with cheap batch-wise augmentation (numpy only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.data.cache import FaceCache


@dataclass(frozen=True)
class AugmentConfig:
    """Light augmentation: what a face crop can plausibly look like from the same video path."""

    flip: bool = True  # random horizontal flip (faces are roughly symmetric)
    shift: float = 0.08  # random crop/shift, up to this fraction of the side, edge-padded
    brightness: float = 0.2  # multiply by U[1 − b, 1 + b]

    def to_json(self) -> dict:
        return asdict(self)


NO_AUGMENT = AugmentConfig(flip=False, shift=0.0, brightness=0.0)


def augment_batch(images: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
                  maps: np.ndarray | None = None) -> np.ndarray:
    """Augment uint8 N×S×S×C images (a new array; the cache is never written). ``maps`` (N×S×S, e.g. the
    AU target maps of AU-guided training) get the same flips and shifts, in place, zero-padded."""
    out = np.array(images, dtype=np.uint8, copy=True)
    n, s = out.shape[0], out.shape[1]
    if n == 0:
        return out
    if cfg.flip:
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
        if maps is not None:
            maps[flip] = maps[flip, :, ::-1]
    pad = round(cfg.shift * s)
    if pad > 0:
        padded = np.pad(out, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        dy = rng.integers(0, 2 * pad + 1, n)
        dx = rng.integers(0, 2 * pad + 1, n)
        for i in range(n):
            out[i] = padded[i, dy[i] : dy[i] + s, dx[i] : dx[i] + s]
        if maps is not None:
            mp = np.pad(maps, ((0, 0), (pad, pad), (pad, pad)))
            for i in range(n):
                maps[i] = mp[i, dy[i] : dy[i] + s, dx[i] : dx[i] + s]
    if cfg.brightness > 0:
        gain = rng.uniform(1 - cfg.brightness, 1 + cfg.brightness, n).astype(np.float32)
        out = np.clip(out.astype(np.float32) * gain[:, None, None, None], 0, 255).round().astype(np.uint8)
    return out


class FaceDataset(Dataset):
    """Samples of a :class:`FaceCache` as (uint8 images N×S×S×C, int64 labels N) batches.

    ``__getitems__`` lets the DataLoader fetch a whole batch with one fancy index and augment it in one
    vectorised pass (use ``collate_fn=collate_batch``); the trainer normalises with
    ``engine.models.to_input`` on the model's device. Augmentation draws its seed from torch's RNG, so
    ``torch.manual_seed`` (and the DataLoader's worker seeding) makes it reproducible.

    ``maps`` (N×S×S, one per sample: AU-guided training's target maps) make a batch a triple (images,
    labels, maps as float32 N×S×S) with the maps flipped and shifted like their images.
    """

    def __init__(self, cache: FaceCache, augment: AugmentConfig | None = None,
                 maps: np.ndarray | None = None) -> None:
        self.cache = cache
        self.augment = augment if augment is not None else NO_AUGMENT
        if maps is not None and len(maps) != len(cache):
            raise ValueError(f"{len(maps)} maps for {len(cache)} samples")
        self.maps = maps

    def __len__(self) -> int:
        return len(self.cache)

    def _augmenting(self) -> bool:
        a = self.augment
        return a.flip or a.shift > 0 or a.brightness > 0

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        idx = np.asarray(indices, dtype=np.int64)
        # Sorted reads are far kinder to a memory-mapped cache; the order is restored after.
        order = np.argsort(idx, kind="stable")
        images = np.empty((len(idx), *self.cache.images.shape[1:]), np.uint8)
        images[order] = self.cache.images[idx[order]]
        maps = None if self.maps is None else np.asarray(self.maps[idx], dtype=np.float32)
        if self._augmenting():
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
            images = augment_batch(images, self.augment, rng, maps)
        labels = torch.from_numpy(np.asarray(self.cache.labels[idx], dtype=np.int64))
        if maps is None:
            return torch.from_numpy(images), labels
        return torch.from_numpy(images), labels, torch.from_numpy(maps)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([int(i)]))


def collate_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The DataLoader's collate_fn for :class:`FaceDataset`: the batch is already stacked."""
    return batch


def clip_windows(cache: FaceCache, frames: int, stride: int) -> np.ndarray:
    """Sample rows of T-frame windows, W×T int64: each video's cached frames (in frame order, the frame
    sampler's ``stride`` apart) cut into windows of ``frames`` starting every ``stride`` samples, the last
    window flush with the video's end; a video with fewer samples, or a still image, repeats its last one."""
    if frames < 1 or stride < 1:
        raise ValueError(f"clip windows need frames >= 1 and stride >= 1, got {frames}, {stride}")
    order = np.lexsort((np.asarray(cache.frame_index), np.asarray(cache.item_index)))
    items = np.asarray(cache.item_index)[order]
    cuts = np.flatnonzero(np.diff(items)) + 1
    out: list[np.ndarray] = []
    for rows in np.split(order, cuts):
        if len(rows) == 0:
            continue
        if len(rows) < frames:
            out.append(np.concatenate([rows, np.repeat(rows[-1:], frames - len(rows))]))
            continue
        starts = list(range(0, len(rows) - frames + 1, stride))
        if starts[-1] != len(rows) - frames:
            starts.append(len(rows) - frames)
        out.extend(rows[s:s + frames] for s in starts)
    return np.stack(out).astype(np.int64) if out else np.zeros((0, frames), np.int64)


class ClipDataset(FaceDataset):
    """T-frame clips of a :class:`FaceCache` (``clip_windows``) as (uint8 N×T×S×S×C, int64 N) batches.
    One augmentation per clip: every frame of a clip is flipped, shifted and brightened alike."""

    def __init__(self, cache: FaceCache, frames: int, stride: int, augment: AugmentConfig | None = None) -> None:
        super().__init__(cache, augment)
        self.windows = clip_windows(cache, frames, stride)

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        win = self.windows[np.asarray(indices, dtype=np.int64)]              # N×T
        n, t = win.shape
        flat = win.ravel()
        order = np.argsort(flat, kind="stable")
        images = np.empty((flat.size, *self.cache.images.shape[1:]), np.uint8)
        images[order] = self.cache.images[flat[order]]
        clips = images.reshape(n, t, *images.shape[1:])
        if self._augmenting():
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
            # The clip's frames as channels of one image: augment_batch then treats them alike.
            s, c = clips.shape[2], clips.shape[4]
            stacked = clips.transpose(0, 2, 3, 1, 4).reshape(n, s, s, t * c)
            stacked = augment_batch(stacked, self.augment, rng)
            clips = stacked.reshape(n, s, s, t, c).transpose(0, 3, 1, 2, 4)
        labels = np.asarray(self.cache.labels[win[:, 0]], dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(clips)), torch.from_numpy(labels)
