"""Where a training sample came from, named so that another machine can find it.

A shipped model.json names a prototype's (or latent's) source image relative to its data set,
``"fer2013:train/happy/Training_67382012.jpg"`` (data set = the corpus folder's name), never by an
absolute path of the machine that trained it. :func:`resolve_ref` finds the file again under a data
folder the user names (the data set's folder itself, its parent, or any folder above that holds it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_ref(path: str | Path, root: str | Path) -> str | None:
    """``"<root name>:<path relative to root>"`` (POSIX separators), or None when path is not under root."""
    try:
        rel = Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return None
    return f"{Path(root).resolve().name}:{rel.as_posix()}"


def relative_source(src: dict[str, Any] | None, root: str | Path | None) -> dict[str, Any] | None:
    """A sample's provenance with its absolute ``path`` replaced by ``ref`` (unchanged if not under root)."""
    if not isinstance(src, dict) or root is None or "path" not in src:
        return src
    ref = make_ref(src["path"], root)
    if ref is None:
        return src
    return {"ref": ref, **{k: v for k, v in src.items() if k != "path"}}


def split_ref(ref: str) -> tuple[str, str]:
    dataset, sep, rel = str(ref).partition(":")
    if not sep or not dataset or not rel:
        raise ValueError(f"not a data-set reference (dataset:relative/path): {ref!r}")
    return dataset, rel


def ref_candidates(ref: str, data_folder: str | Path) -> list[Path]:
    """Where ``ref`` may lie under ``data_folder``, in the order they are tried."""
    dataset, rel = split_ref(ref)
    base = Path(data_folder)
    cands = [base / rel] if base.name == dataset else []
    cands += [base / dataset / rel, base / "images" / dataset / rel, base / "videos" / dataset / rel]
    return cands


def resolve_ref(ref: str, data_folder: str | Path) -> Path | None:
    """The file ``ref`` names under ``data_folder``, or None when it is not there."""
    for c in ref_candidates(ref, data_folder):
        if c.is_file():
            return c
    return None


def source_path(src: dict[str, Any] | None, data_folder: str | Path | None = None) -> Path | None:
    """A provenance record's file: its ``ref`` under ``data_folder``, else a legacy absolute ``path``."""
    if not isinstance(src, dict):
        return None
    if src.get("ref") and data_folder is not None:
        p = resolve_ref(src["ref"], data_folder)
        if p is not None:
            return p
    if src.get("path") and Path(str(src["path"])).is_file():
        return Path(str(src["path"]))
    return None
