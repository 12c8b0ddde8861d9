"""Train/val/test splits: subject-disjoint by default, seeded and independent of file-system order."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from engine.data.labels import Corpus, DataError, Item

log = logging.getLogger(__name__)

SPLIT_METHODS = ("auto", "subject", "random", "predefined")


@dataclass(frozen=True)
class SplitConfig:
    """How a corpus is divided.

    ``auto``: the dataset's own train/test folders if it has them (FER2013; validation is then a seeded,
    class-stratified part of train), else subject-disjoint when subjects are known (RAVDESS/CREMA-D
    actors), else random. ``random`` is the thesis's 70/20/10 partition (stratified by class), which lets
    one actor's frames land in train and test: optimistic, kept for comparison with the thesis.
    """

    method: str = "auto"
    train: float = 0.7
    val: float = 0.2
    test: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in SPLIT_METHODS:
            raise ValueError(f"split method {self.method!r}; choose one of {', '.join(SPLIT_METHODS)}")
        if min(self.train, self.val, self.test) < 0 or abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(
                f"split fractions must be >= 0 and sum to 1, got {self.train}/{self.val}/{self.test}"
            )

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Splits:
    train: list[Item]
    val: list[Item]
    test: list[Item]
    method: str

    def __getitem__(self, name: str) -> list[Item]:
        if name not in ("train", "val", "test"):
            raise KeyError(f"unknown split {name!r}; use train, val or test")
        return getattr(self, name)

    def summary(self) -> dict:
        return {"method": self.method, "train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    # Largest-remainder rounding, then make sure every non-zero fraction gets at least one unit
    # when there are enough units (a 3-actor corpus still yields a test actor).
    raw = np.array(fractions) * n
    k = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - k), kind="stable")[: n - int(k.sum())]:
        k[i] += 1
    for i in range(3):
        if fractions[i] > 0 and k[i] == 0 and n >= sum(f > 0 for f in fractions):
            k[int(np.argmax(k))] -= 1
            k[i] += 1
    return int(k[0]), int(k[1]), int(k[2])


def _stratified(
    items: list[Item], fractions: tuple[float, float, float], rng: np.random.Generator
) -> tuple[list[Item], list[Item], list[Item]]:
    out: tuple[list[Item], list[Item], list[Item]] = ([], [], [])
    for label in sorted({it.label for it in items}):
        group = [it for it in items if it.label == label]
        order = rng.permutation(len(group))
        a, b, _ = _counts(len(group), fractions)
        for j, idx in enumerate(order):
            out[0 if j < a else 1 if j < a + b else 2].append(group[idx])
    return out


def split(corpus: Corpus, cfg: SplitConfig = SplitConfig()) -> Splits:
    """Divide ``corpus`` into train/val/test (deterministic for a given seed and file list)."""
    items = sorted(corpus.items, key=lambda it: it.path)
    rng = np.random.default_rng(cfg.seed)
    method = cfg.method
    has_split = any(it.split in ("train", "test") for it in items)
    has_subjects = all(it.subject is not None for it in items)
    if method == "auto":
        method = "predefined" if has_split else "subject" if has_subjects else "random"
    fractions = (cfg.train, cfg.val, cfg.test)

    if method == "predefined":
        if not has_split:
            raise DataError(
                f"{corpus.root}: 'predefined' split needs train/ and test/ folders; use 'subject' or 'random'"
            )
        pool = [it for it in items if it.split == "train"]
        test = [it for it in items if it.split == "test"]
        given_val = [it for it in items if it.split == "val"]
        if given_val:
            train, val = pool, given_val
        else:
            val_share = cfg.val / max(cfg.train + cfg.val, 1e-9)
            train, val, _ = _stratified(pool, (1.0 - val_share, val_share, 0.0), rng)
        result = Splits(train, val, test, "predefined")
    elif method == "subject":
        if not has_subjects:
            missing = next(it.path for it in items if it.subject is None)
            raise DataError(
                f"{missing}: no subject known, so a subject-disjoint split is impossible; use a "
                "label setting that names actors (ravdess-*, crema-d), a JSON mapping with "
                "'subject', or split='random'"
            )
        subjects = sorted({str(it.subject) for it in items})
        order = [subjects[i] for i in rng.permutation(len(subjects))]
        a, b, _ = _counts(len(order), fractions)
        which = {s: ("train" if j < a else "val" if j < a + b else "test") for j, s in enumerate(order)}
        result = Splits(
            [it for it in items if which[str(it.subject)] == "train"],
            [it for it in items if which[str(it.subject)] == "val"],
            [it for it in items if which[str(it.subject)] == "test"],
            "subject",
        )
    else:
        train, val, test = _stratified(items, fractions, rng)
        result = Splits(train, val, test, "random")
    log.info("split %s: %s", corpus.root, result.summary())
    return result


def limit_per_class(items: list[Item], n: int | None, seed: int = 0) -> list[Item]:
    """A seeded subset of at most ``n`` items per class (quick experiments, tests); order kept."""
    if n is None:
        return items
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for label in sorted({it.label for it in items}):
        idx = [i for i, it in enumerate(items) if it.label == label]
        keep.update(idx[j] for j in rng.permutation(len(idx))[:n])
    return [it for i, it in enumerate(items) if i in keep]
