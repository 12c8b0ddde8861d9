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


@pytest.fixture(scope="session")
def hap_clip(crema_dir: Path) -> Path:
    """The CREMA-D happy clip (56 frames), the GUI tests' standard video."""
    return _need(crema_dir / "1001_DFA_HAP_XX.flv")


@pytest.fixture
def gui_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings in a temp INI file and sessions in tmp: tests never touch the user's settings or files."""
    from vidxai_gui.app import SETTINGS_ENV, app_settings

    monkeypatch.setenv(SETTINGS_ENV, str(tmp_path / "settings"))
    monkeypatch.setenv("VIDXAI_CACHE", str(tmp_path / "cache"))
    settings = app_settings()
    settings.setValue("sessions_dir", str(tmp_path / "sessions"))
    settings.sync()
    return settings


@pytest.fixture
def window(qtbot, gui_settings):
    """The real main window, shown offscreen at 1280×800."""
    from vidxai_gui.main_window import MainWindow

    w = MainWindow(gui_settings)
    qtbot.addWidget(w)
    w.resize(1280, 800)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.shutdown()
