"""Corpora on disk: file-name and folder label parsers, label settings, and layout discovery.

A corpus is a flat list of items (an image or a video file with its label and, where the dataset
says so, its subject). Everything downstream (splits, the face-crop cache, training, evaluation)
works on that list, so adding a dataset means adding a parser here and nothing else.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Everything Pillow reads that image corpora ship in (JAFFE is TIFF, some lab sets PGM/PPM).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm",
                              ".ppm", ".pbm", ".pnm", ".gif", ".jp2", ".j2k", ".tga", ".ras", ".sr", ".pcx"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".flv", ".mov", ".avi", ".mkv", ".webm", ".m4v"})


class DataError(Exception):
    """A corpus that cannot be read as asked; the message names the path and what to do."""


@dataclass(frozen=True)
class Item:
    """One file of a corpus. ``split`` is the dataset's own split folder ("train"/"test") if any."""

    path: str
    label: str
    subject: str | None = None
    kind: str = "image"  # "image" | "video"
    split: str | None = None

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "label": self.label,
            "subject": self.subject,
            "kind": self.kind,
            "split": self.split,
        }


@dataclass
class Corpus:
    items: list[Item]
    classes: list[str]
    label_setting: str
    root: str
    excluded: int = 0  # files the label setting leaves out (e.g. RAVDESS disgust in "Original")

    def summary(self) -> dict:
        counts = Counter(it.label for it in self.items)
        subjects = {it.subject for it in self.items if it.subject is not None}
        return {
            "root": self.root,
            "label_setting": self.label_setting,
            "classes": list(self.classes),
            "items": len(self.items),
            "per_class": {c: counts.get(c, 0) for c in self.classes},
            "subjects": len(subjects),
            "excluded": self.excluded,
            "kind": self.items[0].kind if self.items else None,
        }


# --- file-name parsers ---------------------------------------------------------------------------

RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
_RAVDESS_RE = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@dataclass(frozen=True)
class RavdessName:
    modality: str
    channel: str
    emotion: str  # the word, e.g. "happy"
    intensity: str
    statement: str
    repetition: str
    actor: str  # "12"


def parse_ravdess(name: str | Path) -> RavdessName:
    """Parse modality-channel-emotion-intensity-statement-repetition-actor (e.g. 01-01-03-02-01-01-12)."""
    stem = Path(name).stem
    m = _RAVDESS_RE.match(stem)
    if m is None or m.group(3) not in RAVDESS_EMOTIONS:
        raise DataError(
            f"{name}: not a RAVDESS file name (expected e.g. 01-01-03-02-01-01-12.mp4, "
            "emotion code 01..08); rename it or use the 'folders' or 'json' label setting"
        )
    mod, ch, emo, inten, stmt, rep, actor = m.groups()
    return RavdessName(mod, ch, RAVDESS_EMOTIONS[emo], inten, stmt, rep, actor)


CREMA_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
_CREMA_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2}|X{2})$")


@dataclass(frozen=True)
class CremaName:
    actor: str
    sentence: str
    emotion: str  # the word, e.g. "angry"
    level: str


def parse_crema(name: str | Path) -> CremaName:
    """Parse CREMA-D actor_sentence_EMOTION_level (e.g. 1001_DFA_ANG_XX)."""
    stem = Path(name).stem
    m = _CREMA_RE.match(stem)
    if m is None or m.group(3) not in CREMA_EMOTIONS:
        raise DataError(
            f"{name}: not a CREMA-D file name (expected e.g. 1001_DFA_ANG_XX.flv with emotion "
            "ANG/DIS/FEA/HAP/NEU/SAD); rename it or use the 'folders' or 'json' label setting"
        )
    actor, sentence, emo, level = m.groups()
    return CremaName(actor, sentence, CREMA_EMOTIONS[emo], level)


# --- label settings ------------------------------------------------------------------------------

# Parsers return (label or None when the setting excludes the file, subject or None).
FileLabeler = Callable[[Path], tuple[str | None, str | None]]


@dataclass(frozen=True)
class LabelSetting:
    name: str
    classes: tuple[str, ...]  # empty: taken from the data (folders, json)
    kind: str  # "image" | "video" | "any"
    description: str
    labeler: FileLabeler | None = None  # None: the label comes from the folder or the mapping file


def _ravdess_labeler(groups: dict[str, str]) -> FileLabeler:
    def label(path: Path) -> tuple[str | None, str | None]:
        n = parse_ravdess(path)
        return groups.get(n.emotion), n.actor

    return label


def _crema_labeler(path: Path) -> tuple[str | None, str | None]:
    n = parse_crema(path)
    return n.emotion, n.actor


def _folder_labeler(path: Path) -> tuple[str | None, str | None]:
    return path.parent.name, None


FER_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
RAVDESS_ORIGINAL = ("neutral", "calm", "happy", "sad", "angry", "fearful")

LABEL_SETTINGS: dict[str, LabelSetting] = {
    s.name: s
    for s in [
        LabelSetting(
            "fer2013", FER_CLASSES, "image", "FER2013: 7 classes from the class folder names", _folder_labeler
        ),
        LabelSetting(
            "crema-d",
            tuple(CREMA_EMOTIONS.values()),
            "video",
            "CREMA-D: 6 classes from actor_sentence_EMOTION_level; subject = actor",
            _crema_labeler,
        ),
        LabelSetting(
            "ravdess-original",
            RAVDESS_ORIGINAL,
            "video",
            "RAVDESS 6 classes (thesis 'Original'); disgust and surprised excluded",
            _ravdess_labeler({e: e for e in RAVDESS_ORIGINAL}),
        ),
        LabelSetting(
            "ravdess-v1",
            ("positive", "neutral", "negative"),
            "video",
            "RAVDESS V1 valence: positive {happy}, neutral {neutral, calm}, negative {sad, angry}",
            _ravdess_labeler(
                {
                    "happy": "positive",
                    "neutral": "neutral",
                    "calm": "neutral",
                    "sad": "negative",
                    "angry": "negative",
                }
            ),
        ),
        LabelSetting(
            "ravdess-v2",
            ("positive", "neutral", "negative"),
            "video",
            "RAVDESS V2 interference: positive {happy}, neutral {neutral, calm, sad}, negative {angry}",
            _ravdess_labeler(
                {
                    "happy": "positive",
                    "neutral": "neutral",
                    "calm": "neutral",
                    "sad": "neutral",
                    "angry": "negative",
                }
            ),
        ),
        LabelSetting(
            "folders", (), "any", "Any corpus laid out as <class>/<file> (images or videos)", _folder_labeler
        ),
        LabelSetting(
            "json",
            (),
            "any",
            'A JSON mapping file {"classes": [...], "items": [{"path", "label", "subject"}]}',
        ),
    ]
}


def get_label_setting(name: str) -> LabelSetting:
    try:
        return LABEL_SETTINGS[name]
    except KeyError:
        raise DataError(
            f"unknown label setting {name!r}; choose one of {', '.join(LABEL_SETTINGS)}"
        ) from None


# --- discovery -----------------------------------------------------------------------------------


def _kind_of(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _files(root: Path) -> list[Path]:
    # Sorted so that discovery (and with it every seeded split) does not depend on the file system order.
    return sorted(
        p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".") and _kind_of(p) is not None
    )


def _guess_setting(root: Path, files: list[Path]) -> str:
    videos = [p for p in files if _kind_of(p) == "video"]
    if videos:
        if all(_RAVDESS_RE.match(p.stem) for p in videos):
            return "ravdess-original"
        if all(_CREMA_RE.match(p.stem) for p in videos):
            return "crema-d"
        return "folders"
    class_names = {p.parent.name for p in files}
    return "fer2013" if class_names and class_names <= set(FER_CLASSES) else "folders"


def _split_folder(root: Path, path: Path) -> str | None:
    # FER-style layout root/{train,test,val}/<class>/<file>: the dataset's own split.
    rel = path.relative_to(root).parts
    if len(rel) >= 3 and rel[0].lower() in {"train", "test", "val", "valid", "validation"}:
        return {"valid": "val", "validation": "val"}.get(rel[0].lower(), rel[0].lower())
    return None


def _discover_json(path: Path) -> Corpus:
    try:
        doc = json.loads(path.read_text())
        classes = [str(c) for c in doc["classes"]]
        rows = doc["items"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"{path}: not a readable mapping file ({e}); it must hold "
            '{"classes": [...], "items": [{"path": ..., "label": ..., "subject": ...}]}'
        ) from e
    items = []
    for i, row in enumerate(rows):
        try:
            p = Path(row["path"])
            label = str(row["label"])
        except (KeyError, TypeError) as e:
            raise DataError(f"{path}: item {i} lacks 'path' or 'label'; fix the mapping file") from e
        p = p if p.is_absolute() else (path.parent / p)
        if label not in classes:
            raise DataError(f"{path}: item {i} ({p.name}) has label {label!r}, not one of the listed classes")
        kind = _kind_of(p)
        if kind is None:
            raise DataError(f"{path}: item {i} ({p}) is neither an image nor a video file")
        subject = row.get("subject")
        items.append(
            Item(str(p.resolve()), label, None if subject is None else str(subject), kind, row.get("split"))
        )
    return Corpus(items, classes, "json", str(path))


def discover(data_path: str | Path, label_setting: str | None = None) -> Corpus:
    """Index a corpus: a JSON mapping file, a FER-style train/test tree, class folders, or a RAVDESS /
    CREMA-D video folder (recognised by the file names). ``label_setting=None`` guesses it."""
    root = Path(data_path).expanduser()
    if not root.exists():
        raise DataError(
            f"{root}: no such file or folder; pass the folder of the data set or its mapping file"
        )
    if root.is_file() or label_setting == "json":
        if root.is_dir():
            candidates = sorted(root.glob("*.json"))
            if len(candidates) != 1:
                raise DataError(
                    f"{root}: label setting 'json' needs the mapping file itself (found "
                    f"{len(candidates)} .json files here)"
                )
            root = candidates[0]
        if root.suffix.lower() != ".json":
            raise DataError(f"{root}: a single file must be a JSON mapping file; pass a folder otherwise")
        return _discover_json(root)

    root = root.resolve()
    files = _files(root)
    if not files:
        raise DataError(
            f"{root}: no image or video files found; expected <class>/<image> folders, a FER-style "
            "train/test tree, RAVDESS or CREMA-D videos, or a JSON mapping file"
        )
    name = label_setting or _guess_setting(root, files)
    setting = get_label_setting(name)
    kinds = {_kind_of(p) for p in files}
    if setting.kind != "any" and setting.kind not in kinds:
        raise DataError(f"{root}: label setting {name!r} needs {setting.kind} files, found {sorted(kinds)}")
    if setting.kind in ("image", "video"):
        files = [p for p in files if _kind_of(p) == setting.kind]
    elif len(kinds) > 1:
        # A mixed folder is almost always a mistake (thumbnails beside clips); keep the videos.
        log.warning("%s holds images and videos; using the videos only", root)
        files = [p for p in files if _kind_of(p) == "video"]

    items: list[Item] = []
    excluded = 0
    assert setting.labeler is not None
    for p in files:
        label, subject = setting.labeler(p)
        if label is None:
            excluded += 1
            continue
        if setting.classes and label not in setting.classes:
            raise DataError(
                f"{p}: folder {label!r} is not a class of {name!r} ({', '.join(setting.classes)}); "
                "move it out or use the 'folders' label setting"
            )
        items.append(Item(str(p), label, subject, _kind_of(p) or "image", _split_folder(root, p)))
    classes = list(setting.classes) if setting.classes else sorted({it.label for it in items})
    if not items:
        raise DataError(f"{root}: label setting {name!r} keeps none of the {len(files)} files")
    log.info("%s: %d items, %d classes (%s), %d excluded", root, len(items), len(classes), name, excluded)
    return Corpus(items, classes, name, str(root), excluded)
