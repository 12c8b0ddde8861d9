"""The README's run command (`make demo` runs `.venv/bin/vidxai open --demo`), driven as a user starts it:
offscreen, it opens the window on the bundled demo clip and analyses it with the bundled model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.resources import demo_clip, shipped_models
from sessions import Session

REPO = Path(__file__).resolve().parents[1]


def test_makefile_demo_runs_the_readme_command() -> None:
    readme = (REPO / "README.md").read_text()
    make = (REPO / "Makefile").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "$(BIN)/vidxai open --demo" in make


def test_run_command_opens_the_demo_analysed(tmp_path: Path, artifacts_dir: Path) -> None:
    if not shipped_models():
        pytest.skip("no default model in resources/models yet (see resources/models/train.sh)")
    shot = artifacts_dir / "demo_1280x800.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "VIDXAI_SETTINGS_DIR": str(tmp_path / "settings"),
           "VIDXAI_EXIT_AFTER_ANALYSIS": str(shot), "HOME": str(tmp_path)}
    vidxai = Path(sys.executable).parent / "vidxai"
    r = subprocess.run([str(vidxai), "open", "--demo"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    session = Path(r.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    assert session.is_file() and not session.resolve().is_relative_to((REPO / "resources").resolve())
    with Session.open(session) as s:
        info = s.info()
        assert info["complete"] and info["model"] and info["decision"]
        assert Path(info["video"]["path"]).name == demo_clip().name
    assert shot.stat().st_size > 20_000
