"""docs/GUI.md's "Adding a dock" example, run as written, in the real window on a real session."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sessions import Session
from tests.conftest import REPO
from vidxai_gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(300)]


def _example() -> dict:
    text = (REPO / "docs" / "GUI.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "docs/GUI.md should hold exactly one Python example"
    namespace: dict = {"__name__": "gui_md_example"}
    exec(compile(blocks[0], "docs/GUI.md", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


def test_the_documented_dock_plugs_in_and_follows_the_frame(window: MainWindow, qtbot,
                                                            analysed_session: Path) -> None:
    example = _example()
    example["plug_in"](window)
    label = window.docks["score"].widget()
    assert label.text() == "no scores"
    assert window.docks["score"].toggleViewAction() in window.view_menu.actions()
    window.open_path(analysed_session)
    qtbot.waitUntil(lambda: window.data is not None and window.player.current == 0, timeout=20_000)
    with Session.open(analysed_session) as s:
        probs, valid, classes = s.read("probs"), s.read("valid"), s.analysis_info()["classes"]
    k = int(np.flatnonzero(valid)[len(np.flatnonzero(valid)) // 2])
    window.timeline.seekRequested.emit(k)
    qtbot.waitUntil(lambda: window.player.current == k, timeout=10_000)
    c = int(np.argmax(probs[k]))
    assert label.text() == f"frame {k}: {classes[c]} {probs[k, c]:.2f}"
