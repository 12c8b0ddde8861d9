"""Shared fixtures: the real data in ../shared/data, skipped with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


GUI_CLASSES = ["angry", "disgust", "fear", "happy", "neutral", "sad"]


@pytest.fixture(scope="session")
def tiny_protopnet(tmp_path_factory: pytest.TempPathFactory, fer_dir: Path) -> Path:
    """A real checkpoint of a small ProtoPNet with random weights (the GUI tests' model): the window must
    show exactly what the engine wrote, not what a trained model would say."""
    import torch

    from engine.checkpoint import save_checkpoint
    from engine.models import build_model
    from engine.models.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(arch="protopnet", backbone="small", classes=GUI_CLASSES, prototypes_per_class=2, proto_dim=32)
    model = build_model(spec)
    rng = np.random.default_rng(0)
    crops = {j: rng.integers(0, 255, (48, 48, 1), dtype=np.uint8) for j in range(2 * len(GUI_CLASSES))}
    folder = tmp_path_factory.mktemp("model") / "tiny-protopnet"
    # Provenance as the trainer's push records it: each prototype's training sample (a real image here).
    prov = []
    for j in range(2 * len(GUI_CLASSES)):
        cls = GUI_CLASSES[j // 2]
        image = sorted((fer_dir / "train" / cls).glob("*.jpg"))[j % 2]
        prov.append({"prototype": j, "class": cls, "source": {"path": str(image), "label": cls, "frame": -1}})
    return save_checkpoint(folder, model, {"note": "random weights: GUI tests only", "prototypes": prov}, crops)


@pytest.fixture(scope="session")
def analysed_session(tmp_path_factory: pytest.TempPathFactory, hap_clip: Path, tiny_protopnet: Path) -> Path:
    """The CREMA-D happy clip analysed once by the tiny ProtoPNet: intrinsic and Grad-CAM maps, occlusion."""
    from engine.pipeline import AnalyzeSettings, analyze

    out = tmp_path_factory.mktemp("analysed") / f"{hap_clip.stem}.vxs"
    settings = AnalyzeSettings(explain=("intrinsic", "gradcam"), occlusion=True, batch_size=16, au=False)
    return Path(analyze(hap_clip, tiny_protopnet, out, settings))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared, loaded CPU: one torch thread trains them several times faster than two
    fighting over the cores (measured ~6–10×); the count is restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


LANDMARK_SEQ = {"window": 8, "channels": 16, "hidden": 16}


def landmark_config(out: Path, **kw):
    """A tiny landmark-sequence model's training settings (tests only: the machinery, not accuracy)."""
    from engine.train import TrainConfig

    return TrainConfig(**{"arch": "landmark-lstm", "epochs": 30, "batch_size": 16, "lr_cnn": 1e-3,
                          "weight_decay": 0.1, "sequence": LANDMARK_SEQ, "device": "cpu", "out_dir": str(out),
                          **kw})


@pytest.fixture(scope="session")
def crema_data(crema_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The six CREMA-D clips prepared for training (one actor, one clip per emotion, all in train)."""
    from engine.data import DataConfig, SplitConfig, prepare

    dc = DataConfig(str(crema_dir), split=SplitConfig(method="random", train=1.0, val=0.0, test=0.0),
                    cache_root=str(tmp_path_factory.mktemp("cache") / "crops"))
    return prepare(dc, {"mode": "face"})


@pytest.fixture(scope="session")
def tiny_landmark_model(crema_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny landmark-sequence model trained once per test run on the CREMA-D clips (one torch thread,
    as `one_thread`: several times faster on a loaded 2-core machine)."""
    import torch

    from engine.train import train

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(crema_data, landmark_config(tmp_path_factory.mktemp("lmk")))
    finally:
        torch.set_num_threads(n)
