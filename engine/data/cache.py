"""Face-crop cache: every training/evaluation sample cropped once, stored as plain .npy arrays.

Cropping runs dlib (detector + shape predictor) per image or frame, far slower than a training step, so
the crops of a given (file list, preprocessing, sampling) are built once and memory-mapped afterwards.
Layout of ``<root>/<key>/``: ``images.npy`` uint8 N×S×S×C, ``labels.npy`` int64 N, ``item_index.npy``
int64 N (row of meta["items"]), ``frame_index.npy`` int64 N (video frame, −1 for images), ``meta.json``
(items, classes, preprocessing, sampling, skipped files). Never pickled: np.load(allow_pickle=False).

Building is a job (progress, cancel). Finished chunks are kept in ``<key>.partial/`` so a cancelled or
crashed build resumes where it stopped; the finished cache appears with one ``os.replace``, so a
reader never sees half a cache. Two processes asking for the same cache at once (two trainings started
side by side) do not both crop: the second waits on ``<key>.lock`` (an OS file lock, released by the
kernel if the holder dies) and then loads what the first built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from engine.data.labels import DataError, Item
from engine.jobs import CancelToken, ProgressFn, no_progress

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def default_cache_root() -> Path:
    return Path(os.environ.get("VIDXAI_CACHE", Path.home() / ".cache" / "vidxai")) / "crops"


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames of a video become samples, and how image crops are made.

    ``fast`` (image corpora only) skips dlib and takes the whole image as the face: right for corpora that
    are already tight, aligned face crops (FER2013, CK+48) and ~100× quicker to build, but the crop then
    ignores the landmark-based margin of the video path, so a model trained this way sees slightly
    differently framed faces at analysis time. The default follows ARCHITECTURE.md: detector, else the
    whole image as the box, then landmarks and the same crop policy as video.
    """

    stride: int = 5  # every stride-th video frame (frames are tracked in between)
    max_frames: int = 32  # per video, 0 = no limit; evenly spread when a video has more
    detect_every: int = 5  # FaceTracker re-detection period
    fast: bool = False

    def __post_init__(self) -> None:
        if self.stride < 1 or self.max_frames < 0 or self.detect_every < 1:
            raise ValueError(f"invalid sampling {self}: stride/detect_every >= 1, max_frames >= 0")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class FaceCache:
    """Samples in memory or memory-mapped from a cache folder (``path`` None for in-memory arrays)."""

    images: np.ndarray  # uint8 N×S×S×C
    labels: np.ndarray  # int64 N
    classes: list[str]
    item_index: np.ndarray  # int64 N: row of ``items``
    frame_index: np.ndarray  # int64 N: video frame, −1 for still images
    items: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    landmarks: np.ndarray | None = None  # float32 N×68×2 in crop pixels, NaN unknown; None: not stored

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> FaceCache:
        n = len(labels)
        items = [
            {"path": f"sample-{i}", "label": classes[int(lab)], "kind": "image"}
            for i, lab in enumerate(labels)
        ]
        return cls(
            np.asarray(images, dtype=np.uint8),
            np.asarray(labels, dtype=np.int64),
            list(classes),
            np.arange(n, dtype=np.int64),
            np.full(n, -1, dtype=np.int64),
            items,
        )

    def subset(self, index: np.ndarray) -> FaceCache:
        index = np.asarray(index, dtype=np.int64)
        return FaceCache(
            np.asarray(self.images[index]),
            self.labels[index],
            self.classes,
            self.item_index[index],
            self.frame_index[index],
            self.items,
            self.path,
            self.meta,
            None if self.landmarks is None else np.asarray(self.landmarks[index]),
        )

    def in_classes(self, classes: list[str]) -> FaceCache:
        """The same samples labelled by index into ``classes`` (a model's), which must include every class of
        this cache: e.g. a FER2013 model (7 classes) on CREMA-D videos (6 of them). Raises ValueError otherwise."""
        classes = list(classes)
        if list(self.classes) == classes:
            return self
        missing = [c for c in self.classes if c not in classes]
        if missing:
            raise ValueError(f"the data's classes {list(self.classes)} include {missing}, which the model "
                             f"(classes {classes}) cannot predict")
        to_model = np.array([classes.index(c) for c in self.classes], dtype=np.int64)
        return replace(self, labels=to_model[np.asarray(self.labels)], classes=classes)

    def source(self, i: int) -> dict[str, Any]:
        """Provenance of sample ``i``: file, label, subject and frame (−1 for a still image)."""
        return {**self.items[int(self.item_index[i])], "frame": int(self.frame_index[i])}

    @classmethod
    def load(cls, folder: str | Path) -> FaceCache:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            arrays = {
                name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                for name in ("images", "labels", "item_index", "frame_index")
            }
        except (OSError, ValueError) as e:
            raise DataError(
                f"{folder}: unreadable face-crop cache ({e}); delete the folder to rebuild it"
            ) from e
        lm_path = folder / "landmarks.npy"
        landmarks = np.load(lm_path, allow_pickle=False) if lm_path.exists() else None
        return cls(
            arrays["images"],
            np.asarray(arrays["labels"]),
            list(meta["classes"]),
            np.asarray(arrays["item_index"]),
            np.asarray(arrays["frame_index"]),
            meta["items"],
            folder,
            meta,
            landmarks if landmarks is not None and len(landmarks) == len(arrays["labels"]) else None,
        )


def canonical_preprocess(preprocess: Any) -> dict[str, Any]:
    """The full, canonical JSON form, so {"size": 48} and PreprocessConfig(size=48) share one cache."""
    from engine.preprocess import PreprocessConfig

    if not hasattr(preprocess, "to_json"):
        preprocess = PreprocessConfig.from_json(dict(preprocess))
    return dict(preprocess.to_json())


def cache_key(items: list[Item], classes: list[str], preprocess: Any, sampling: SamplingConfig) -> str:
    """Hash of the file list (path, label, size, mtime), classes, preprocessing and sampling."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "version": CACHE_VERSION,
                "classes": classes,
                "preprocess": canonical_preprocess(preprocess),
                "sampling": sampling.to_json(),
            },
            sort_keys=True,
        ).encode()
    )
    for it in items:
        st = os.stat(it.path)
        h.update(f"{it.path}\0{it.label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


# --- per-item work (runs in worker processes; must stay importable without torch state) -------------


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float scans: scale, do not clip
                a = np.asarray(im, np.float64)
                lo, hi = float(a.min()), float(a.max())
                a = np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)
                return np.repeat(a[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DataError(f"{path}: cannot read the image ({e}); remove or replace the file") from e


def _fast_crop(rgb: np.ndarray, size: int, grayscale: bool) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(rgb).convert("L" if grayscale else "RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


NO_LANDMARKS = np.full((68, 2), np.nan, np.float32)


def crop_landmarks(out: Any, landmarks: np.ndarray | None) -> np.ndarray:
    """A face's 68 landmarks in the crop's pixels (NaN when the crop has no single face geometry)."""
    if landmarks is None or len(out.mapping.pieces) != 1:
        return NO_LANDMARKS
    return out.mapping.pieces[0].from_frame(np.asarray(landmarks, np.float64)).astype(np.float32)


def _crop_item(item: dict, pp: dict, sampling: dict) -> tuple[list[np.ndarray], list[int], str | None, list[np.ndarray]]:
    """Crops of one file as (images, frame indices, reason when nothing came out, landmarks in crop pixels)."""
    size, grey = int(pp["size"]), bool(pp.get("grayscale", True))
    if item["kind"] == "image":
        rgb = _read_image(item["path"])
        if sampling["fast"]:
            return [_fast_crop(rgb, size, grey)], [-1], None, [NO_LANDMARKS]
        from engine.faces import face_from_crop_image
        from engine.preprocess import PreprocessConfig, preprocess

        face = face_from_crop_image(rgb)
        out = preprocess(rgb, face, PreprocessConfig.from_json(pp))
        if out is None:
            return [], [], "no face", []
        return [out.image], [-1], None, [crop_landmarks(out, face.landmarks)]

    from engine.faces import FaceTracker
    from engine.preprocess import PreprocessConfig, preprocess
    from engine.video import open_video

    cfg = PreprocessConfig.from_json(pp)
    tracker = FaceTracker(detect_every=int(sampling["detect_every"]))
    images: list[np.ndarray] = []
    frames: list[int] = []
    marks: list[np.ndarray] = []
    stride = int(sampling["stride"])
    with open_video(item["path"]) as reader:
        n = len(reader)
        wanted = range(0, n, stride)
        if sampling["max_frames"] and len(wanted) > sampling["max_frames"]:
            pick = np.linspace(0, len(wanted) - 1, int(sampling["max_frames"])).round().astype(int)
            wanted_set = {wanted[i] for i in pick}
        else:
            wanted_set = set(wanted)
        last = max(wanted_set) if wanted_set else -1
        # The tracker needs consecutive frames, so every frame up to the last wanted one is read.
        for k, frame in reader.iter_frames(0, last + 1):
            face = tracker.process(frame)
            if k in wanted_set and face.found:
                out = preprocess(frame, face, cfg)
                if out is not None:
                    images.append(out.image)
                    frames.append(k)
                    marks.append(crop_landmarks(out, face.landmarks))
    return images, frames, None if images else "no face in the sampled frames", marks


def _crop_chunk(items: list[dict], pp: dict, sampling: dict) -> dict[str, Any]:
    size, channels = int(pp["size"]), 1 if pp.get("grayscale", True) else 3
    images: list[np.ndarray] = []
    item_pos: list[int] = []
    frames: list[int] = []
    marks: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    for j, item in enumerate(items):
        try:
            imgs, fr, reason, lms = _crop_item(item, pp, sampling)
        except Exception as e:  # noqa: BLE001 - one unreadable file must not end a multi-hour build
            imgs, fr, reason, lms = [], [], f"{type(e).__name__}: {e}", []
        if reason:
            skipped.append({"path": item["path"], "reason": reason})
        images.extend(imgs)
        item_pos.extend([j] * len(imgs))
        frames.extend(fr)
        marks.extend(lms)
    arr = np.stack(images).astype(np.uint8) if images else np.zeros((0, size, size, channels), np.uint8)
    return {
        "images": arr,
        "item_pos": np.asarray(item_pos, np.int64),
        "frames": np.asarray(frames, np.int64),
        "landmarks": np.stack(marks).astype(np.float32) if marks else np.zeros((0, 68, 2), np.float32),
        "skipped": skipped,
    }


# --- the build job ---------------------------------------------------------------------------------


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, arr, allow_pickle=False)
    os.replace(tmp, path)


@contextmanager
def build_lock(
    path: Path, what: str, total: int, progress: ProgressFn = no_progress, cancel: CancelToken | None = None
) -> Iterator[None]:
    """Hold an exclusive OS lock on ``path`` (POSIX ``flock``) while building; waits, cancellably, while
    another process holds it. Where there is no ``fcntl`` (Windows) builds are not serialised; the
    per-process temporary names and the final ``os.replace`` still keep a concurrent build correct."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        announced = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not announced:
                    log.info("%s: another process is building it; waiting", what)
                    progress(0, total, "waiting for another process that is cropping the same faces")
                    announced = True
                if cancel is not None:
                    cancel.raise_if_cancelled()
                time.sleep(0.25)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_cache(
    items: list[Item],
    classes: list[str],
    preprocess: Any,
    sampling: SamplingConfig = SamplingConfig(),
    root: str | Path | None = None,
    workers: int = 1,
    chunk_size: int = 0,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> FaceCache:
    """Crop every item (or load the finished cache of the same inputs). ``workers`` > 1 crops in
    that many processes. Resumes a cancelled build from its finished chunks."""
    if not items:
        raise DataError(
            "no items to cache: the split is empty (check the data folder and the split settings)"
        )
    pp = canonical_preprocess(preprocess)
    if sampling.fast and any(it.kind == "video" for it in items):
        raise DataError(
            f"{items[0].path}: fast mode is for pre-cropped image corpora; videos need face "
            "detection (turn 'fast' off)"
        )
    root = Path(root) if root is not None else default_cache_root()
    key = cache_key(items, classes, pp, sampling)
    final = root / key
    if (final / "meta.json").exists():
        log.info("face-crop cache hit %s", final)
        progress(len(items), len(items), "face crops cached")
        return FaceCache.load(final)
    with build_lock(root / f"{key}.lock", str(final), len(items), progress, cancel):
        if (final / "meta.json").exists():  # built by the process we waited for
            log.info("face-crop cache %s was built by another process", final)
            progress(len(items), len(items), "face crops cached")
            return FaceCache.load(final)
        _build(items, classes, pp, sampling, final, root / f"{key}.partial", workers, chunk_size, progress,
               cancel)
    return FaceCache.load(final)


def _build(
    items: list[Item],
    classes: list[str],
    pp: dict,
    sampling: SamplingConfig,
    final: Path,
    partial: Path,
    workers: int,
    chunk_size: int,
    progress: ProgressFn,
    cancel: CancelToken | None,
) -> None:
    partial.mkdir(parents=True, exist_ok=True)
    plain = [it.to_json() for it in items]
    if chunk_size <= 0:
        # Video chunks are slow (a whole clip each), so they are one clip; images go in small chunks
        # so progress and cancellation stay responsive (~1-2 s per chunk with dlib).
        chunk_size = 1 if items[0].kind == "video" else (2048 if sampling.fast else 64)
    chunks = [(i, plain[i : i + chunk_size]) for i in range(0, len(plain), chunk_size)]
    todo = [(i, c) for i, c in chunks if not (partial / f"{i:08d}.json").exists()]
    done = len(items) - sum(len(c) for _, c in todo)
    if done:
        log.info("resuming face-crop cache %s: %d of %d items already cropped", partial, done, len(items))
    t0 = time.perf_counter()
    progress(done, len(items), "cropping faces")

    def store(start: int, res: dict[str, Any]) -> None:
        nonlocal done
        _save_npy(partial / f"{start:08d}_images.npy", res["images"])
        _save_npy(partial / f"{start:08d}_items.npy", res["item_pos"] + start)
        _save_npy(partial / f"{start:08d}_frames.npy", res["frames"])
        _save_npy(partial / f"{start:08d}_landmarks.npy", res["landmarks"])
        # The marker comes last: a chunk counts as done only when all its arrays are on disk.
        (partial / f"{start:08d}.json").write_text(json.dumps({"skipped": res["skipped"]}))
        done += int(sum(len(c) for s, c in chunks if s == start))
        progress(done, len(items), f"cropping faces ({done}/{len(items)})")

    sd = sampling.to_json()
    if workers > 1 and len(todo) > 1:
        # spawn, not fork: the parent may hold torch/OpenMP threads, which do not survive a fork.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            pending: dict[Future, int] = {}
            queue = list(todo)
            try:
                while queue or pending:
                    while queue and len(pending) < 2 * workers:
                        start, chunk = queue.pop(0)
                        pending[pool.submit(_crop_chunk, chunk, pp, sd)] = start
                    finished, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        store(pending.pop(fut), fut.result())
                    if cancel is not None:
                        cancel.raise_if_cancelled()
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
    else:
        for start, chunk in todo:
            if cancel is not None:
                cancel.raise_if_cancelled()
            store(start, _crop_chunk(chunk, pp, sd))
    _assemble(partial, final, chunks, plain, classes, pp, sampling)
    log.info("face-crop cache %s built: %d items in %.1f s", final, len(items), time.perf_counter() - t0)


def _assemble(
    partial: Path,
    final: Path,
    chunks: list[tuple[int, list[dict]]],
    plain: list[dict],
    classes: list[str],
    pp: dict,
    sampling: SamplingConfig,
) -> None:
    counts = [
        np.load(partial / f"{s:08d}_images.npy", mmap_mode="r", allow_pickle=False).shape[0]
        for s, _ in chunks
    ]
    total = int(sum(counts))
    size, channels = int(pp["size"]), 1 if pp.get("grayscale", True) else 3
    if total == 0:
        raise DataError(
            f"{plain[0]['path']} and the other {len(plain) - 1} files gave no face crop; check the "
            "data (or use fast mode for pre-cropped images)"
        )
    index = {c: i for i, c in enumerate(classes)}
    staging = partial / "assembled"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    # Written through a memmap so a large video cache never sits in memory twice.
    images = np.lib.format.open_memmap(
        staging / "images.npy", mode="w+", dtype=np.uint8, shape=(total, size, size, channels)
    )
    item_index = np.empty(total, np.int64)
    frame_index = np.empty(total, np.int64)
    landmarks = np.full((total, 68, 2), np.nan, np.float32)  # chunks of a build begun before: unknown
    skipped: list[dict] = []
    pos = 0
    for (s, _), n in zip(chunks, counts):
        images[pos : pos + n] = np.load(partial / f"{s:08d}_images.npy", allow_pickle=False)
        item_index[pos : pos + n] = np.load(partial / f"{s:08d}_items.npy", allow_pickle=False)
        frame_index[pos : pos + n] = np.load(partial / f"{s:08d}_frames.npy", allow_pickle=False)
        if (partial / f"{s:08d}_landmarks.npy").exists():
            landmarks[pos : pos + n] = np.load(partial / f"{s:08d}_landmarks.npy", allow_pickle=False)
        skipped += json.loads((partial / f"{s:08d}.json").read_text())["skipped"]
        pos += n
    images.flush()
    del images
    labels = np.array([index[plain[i]["label"]] for i in item_index], dtype=np.int64)
    np.save(staging / "labels.npy", labels, allow_pickle=False)
    np.save(staging / "item_index.npy", item_index, allow_pickle=False)
    np.save(staging / "frame_index.npy", frame_index, allow_pickle=False)
    np.save(staging / "landmarks.npy", landmarks, allow_pickle=False)
    meta = {
        "version": CACHE_VERSION,
        "classes": classes,
        "preprocess": pp,
        "sampling": sampling.to_json(),
        "items": plain,
        "samples": total,
        "skipped": skipped,
    }
    (staging / "meta.json").write_text(json.dumps(meta))
    if skipped:
        log.warning(
            "%d of %d files gave no face crop (listed in %s)", len(skipped), len(plain), final / "meta.json"
        )
    try:
        os.replace(staging, final)
    except OSError:
        if not (final / "meta.json").exists():  # another process finishing the same cache first is fine
            raise
    shutil.rmtree(partial, ignore_errors=True)
