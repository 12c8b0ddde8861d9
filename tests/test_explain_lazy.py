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
    assert _loaded_after("from engine.explain import lrp") == {"zennit"}
    assert _loaded_after("from engine import explain; explain.gradcam") >= {"pytorch_grad_cam"}
    assert "captum" in _loaded_after("from engine.explain import integrated_gradients")
