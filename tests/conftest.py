"""Shared fixtures: the real data in ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VIDXAI_SHARED_DATA", REPO.parent / "shared" / "data"))
VIDEOS = SHARED_DATA / "videos"
CREMA = VIDEOS / "crema-d"
EDGE = VIDEOS / "edge"
FER = SHARED_DATA / "images" / "fer2013"
ARTIFACTS = REPO / "tests" / "artifacts"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found at {path} (clone with ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def crema_dir() -> Path:
    return _need(CREMA)


@pytest.fixture(scope="session")
def crema_clips(crema_dir: Path) -> list[Path]:
    return sorted(crema_dir.glob("*.flv"))


@pytest.fixture(scope="session")
def edge_dir() -> Path:
    return _need(EDGE)


@pytest.fixture(scope="session")
def all_clips() -> list[Path]:
    _need(VIDEOS)
    return sorted(p for p in VIDEOS.rglob("*") if p.suffix.lower() in {".flv", ".mp4", ".mov", ".avi", ".mkv", ".webm"})


@pytest.fixture(scope="session")
def fer_dir() -> Path:
    return _need(FER)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
