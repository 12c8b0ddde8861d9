"""The layering rule of ARCHITECTURE.md, checked on the source: engine and sessions know no Qt,
sessions knows no torch or engine. An AST walk sees every import, including ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "engine": {"PySide6", "PyQt5", "PyQt6", "pyqtgraph", "vidxai_gui", "shiboken6"},
    "sessions": {"PySide6", "PyQt5", "PyQt6", "pyqtgraph", "vidxai_gui", "shiboken6", "torch", "torchvision",
                 "engine", "cv2", "dlib", "zennit", "captum", "pytorch_grad_cam"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module", "__import__"
        } and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            roots.add(node.args[0].value.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    offenders = {
        str(f.relative_to(REPO)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package} must not import these: {offenders}"


def test_checker_sees_function_level_imports(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from PySide6 import QtCore\n    import importlib\n"
                   "    importlib.import_module('torch.nn')\n")
    assert {"PySide6", "torch"} <= imported_roots(bad)


def test_engine_import_loads_no_qt() -> None:
    """Importing the headless layers in a fresh interpreter must not pull Qt in through a dependency."""
    import subprocess
    import sys

    code = ("import sys, importlib, pkgutil, engine, sessions\n"
            "for pkg in (engine, sessions):\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph')]\n"
            "print(bad); sys.exit(1 if bad else 0)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
