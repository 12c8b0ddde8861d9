"""Explainer libraries load only when an explainer that needs them runs (engine/explain/__init__.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("zennit", "captum", "pytorch_grad_cam")


def _loaded_after(code: str) -> set[str]:
    probe = code + f"\nimport sys; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    return set(filter(None, out.stdout.rstrip("\n").split("\n")[-1].split(",")))


def test_intrinsic_analysis_imports_leave_the_explainer_libraries_unloaded() -> None:
    # What the window and an intrinsic-only analysis import.
    assert _loaded_after("from engine.explain import evidence, au_map, top_x; import engine.analyzer, "
                         "engine.pipeline, engine.overlay") == set()


def test_each_explainer_loads_its_library_on_first_use() -> None:
    assert _loaded_after("from engine.explain import lrp_explain") == {"zennit"}
    assert _loaded_after("from engine.explain.gradcam import gradcam") >= {"pytorch_grad_cam"}
    assert "captum" in _loaded_after("from engine.explain import integrated_gradients")


def test_lazy_names_are_the_functions_whatever_was_imported_before() -> None:
    """A submodule imported first must not shadow a lazy name (the bug: `lrp` became the module)."""
    import importlib
    import pkgutil

    import engine.explain as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"engine.explain.{m.name}")
    for name in pkg.__all__:
        assert callable(getattr(pkg, name)) and not isinstance(getattr(pkg, name), type(pkg)), name


WINDOW_PROBE = """
import os, sys, tempfile, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from vidxai_gui.app import SETTINGS_ENV, app_settings, ensure_app
os.environ[SETTINGS_ENV] = tempfile.mkdtemp()
app = ensure_app()
from vidxai_gui.main_window import MainWindow
w = MainWindow(app_settings())
w.show()
w.open_path(sys.argv[1])
t = time.time()
while time.time() - t < 60 and not (w.data is not None and w.data.probs is not None and w.player.current >= 0
                                    and not w.jobs._live):
    app.processEvents()
    time.sleep(0.01)
for _ in range(100):
    app.processEvents()
    time.sleep(0.01)
print("loaded" if w.data is not None and w.data.probs is not None else "not loaded")
print("modules:" + ",".join(m for m in ("torch",) + HEAVY if m in sys.modules))
w.shutdown()
"""


def test_reviewing_a_session_does_not_load_torch(analysed_session: Path) -> None:
    """Opening an analysed session to review it reads model.json, the faithfulness record and the maps
    without torch (engine.model_card): ~500 MB and seconds of the window's time saved."""
    code = f"HEAVY = {HEAVY!r}\n" + WINDOW_PROBE
    out = subprocess.run([sys.executable, "-c", code, str(analysed_session)], cwd=REPO, capture_output=True,
                         text=True, timeout=240, check=False)
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stderr[-2000:]
    assert "loaded" in lines, out.stdout
    assert "modules:" in lines, f"loaded on opening a session: {lines[-1]}"


def test_listing_models_and_the_train_dialog_do_not_load_torch() -> None:
    """The model chooser reads model.json only and the train dialog lists architectures from
    engine.model_card: opening either in a review-only window costs no torch import."""
    code = """
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from pathlib import Path
from PySide6.QtWidgets import QApplication
app = QApplication([])
from vidxai_gui.dialogs import ModelChooser, TrainDialog
chooser = ModelChooser([Path("resources/models/cnn"), Path("resources/models/protopnet")])
train = TrainDialog()
print("listed:" + str(chooser.list.count()))
print("torch" if "torch" in sys.modules else "no torch")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "listed:2" in lines and lines[-1] == "no torch", out.stdout
