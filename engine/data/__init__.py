"""Training and evaluation data: corpora, label settings, splits, the face-crop cache, the Dataset.

``prepare(DataConfig(path=...), preprocess)`` is the one call the trainer, the evaluator and the CLI
make: discover → split → (optional per-class limit) → crop into the cache → ``PreparedData``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.data.cache import (
    FaceCache,
    SamplingConfig,
    build_cache,
    cache_key,
    canonical_preprocess,
    default_cache_root,
)
from engine.data.dataset import (
    NO_AUGMENT,
    AugmentConfig,
    ClipDataset,
    FaceDataset,
    augment_batch,
    clip_windows,
    collate_batch,
)
from engine.data.labels import (
    FER_CLASSES,
    LABEL_SETTINGS,
    RAVDESS_EMOTIONS,
    Corpus,
    CremaName,
    DataError,
    Item,
    LabelSetting,
    RavdessName,
    discover,
    get_label_setting,
    parse_crema,
    parse_ravdess,
)
from engine.data.splits import SplitConfig, Splits, limit_per_class, split
from engine.jobs import CancelToken, ProgressFn, no_progress

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class DataConfig:
    """Where the data is and how it becomes samples (recorded in model.json)."""

    path: str
    label_setting: str | None = None  # None: guessed from the layout
    split: SplitConfig = field(default_factory=SplitConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    max_per_class: dict[str, int] = field(default_factory=dict)  # e.g. {"train": 150, "test": 50}
    cache_root: str | None = None  # None: ~/.cache/vidxai/crops
    workers: int = 1  # processes cropping faces

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DataConfig:
        d = dict(d)
        d["split"] = SplitConfig(**d.get("split", {}))
        d["sampling"] = SamplingConfig(**d.get("sampling", {}))
        return cls(**d)


@dataclass
class PreparedData:
    """Crops of each split, ready for a Dataset. Splits are built lazily (evaluation needs only one)."""

    config: DataConfig
    corpus: Corpus
    splits: Splits
    preprocess: dict[str, Any]
    _caches: dict[str, FaceCache] = field(default_factory=dict, repr=False)

    @property
    def classes(self) -> list[str]:
        return self.corpus.classes

    @property
    def label_setting(self) -> str:
        return self.corpus.label_setting

    def items(self, name: str) -> list[Item]:
        cap = self.config.max_per_class.get(name)
        return limit_per_class(self.splits[name], cap, self.config.split.seed)

    def cache(
        self, name: str, progress: ProgressFn = no_progress, cancel: CancelToken | None = None
    ) -> FaceCache:
        if name not in self._caches:
            self._caches[name] = build_cache(
                self.items(name),
                self.classes,
                self.preprocess,
                self.config.sampling,
                self.config.cache_root,
                self.config.workers,
                progress=progress,
                cancel=cancel,
            )
        return self._caches[name]

    def summary(self) -> dict[str, Any]:
        out = {
            "corpus": self.corpus.summary(),
            "split": self.splits.summary(),
            "config": self.config.to_json(),
        }
        out["used"] = {n: len(self.items(n)) for n in SPLIT_NAMES}
        out["samples"] = {n: len(c) for n, c in self._caches.items()}
        return out


def prepare(data: DataConfig | str | Path, preprocess: Any) -> PreparedData:
    """Discover and split a corpus for a given preprocessing (``PreprocessConfig`` or its JSON dict)."""
    cfg = data if isinstance(data, DataConfig) else DataConfig(path=str(data))
    corpus = discover(cfg.path, cfg.label_setting)
    pp = canonical_preprocess(preprocess)
    return PreparedData(cfg, corpus, split(corpus, cfg.split), pp)


__all__ = [
    "FER_CLASSES",
    "LABEL_SETTINGS",
    "NO_AUGMENT",
    "RAVDESS_EMOTIONS",
    "SPLIT_NAMES",
    "AugmentConfig",
    "ClipDataset",
    "Corpus",
    "CremaName",
    "DataConfig",
    "DataError",
    "FaceCache",
    "FaceDataset",
    "Item",
    "LabelSetting",
    "PreparedData",
    "RavdessName",
    "SamplingConfig",
    "SplitConfig",
    "Splits",
    "augment_batch",
    "build_cache",
    "cache_key",
    "canonical_preprocess",
    "clip_windows",
    "collate_batch",
    "default_cache_root",
    "discover",
    "get_label_setting",
    "limit_per_class",
    "parse_crema",
    "parse_ravdess",
    "prepare",
    "split",
]
