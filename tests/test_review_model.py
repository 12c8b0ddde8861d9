"""The review model says what changed, and only that (docs/GUI.md); its heatmap default follows the record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidxai_gui.review import Rows, empty_review
from vidxai_gui.review_model import ReviewModel

pytestmark = pytest.mark.gui


def _record(model: ReviewModel) -> list[tuple]:
    seen: list[tuple] = []
    for name in ("sessionChanged", "rowsMerged", "frameChanged", "heatChanged", "methodDeltasChanged",
                 "prototypeSelected", "alphaChanged"):
        getattr(model, name).connect(lambda *args, n=name: seen.append((n, *args)))
    return seen


def _streamed(T: int = 10) -> tuple[ReviewModel, Rows]:
    model = ReviewModel()
    data = empty_review(Path("s.vxs"), T, np.arange(T) / 25.0, {"path": "v.mp4", "fps": 25.0})
    model.set_session(data, Path("s.vxs"), emit=False)
    rows = Rows(2, 5, 5, np.ones(3, bool), np.zeros((3, 4), np.float32), np.zeros((3, 68, 2), np.float32),
                np.ones(3, np.float32), frames_done=5, classes=["happy", "sad"], explanations=["intrinsic", "lrp"],
                valid=np.ones(3, bool), probs=np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    return model, rows


def test_merged_rows_signal_their_range_and_the_default_method_follows_the_recorded_faithfulness(qtbot) -> None:
    model, rows = _streamed()
    seen = _record(model)
    model.merge_rows(rows)
    assert seen == [("rowsMerged", 2, 5), ("heatChanged",)]
    assert model.heat_method == "lrp"  # nothing measured: LRP when the session has it
    np.testing.assert_array_equal(model.data.probs[2:5], rows.probs)
    assert np.isnan(model.data.probs[:2]).all() and model.data.classes == ["happy", "sad"]
    seen.clear()
    model.set_method_deltas({"intrinsic": 0.2, "lrp": -0.1})
    assert model.heat_method == "intrinsic" and seen == [("methodDeltasChanged",), ("heatChanged",)]
    model.set_heat("lrp")  # the reviewer's choice is kept over the record
    model.set_method_deltas({"intrinsic": 0.3, "lrp": -0.1})
    assert model.heat_method == "lrp" and model.heat_chosen


def test_each_change_emits_its_own_signal_once(qtbot) -> None:
    model = ReviewModel()
    seen = _record(model)
    model.set_frame(7)
    model.select_prototype(3)
    model.set_alpha(0.55)
    model.set_alpha(0.55)  # no change, no signal
    model.set_heat(top_x=True)
    assert seen == [("frameChanged", 7), ("prototypeSelected", 3), ("alphaChanged", 0.55), ("heatChanged",)]
    assert model.top_x and model.heat_method == "" and not model.heat_chosen
    seen.clear()
    model.clear()
    assert seen == [("sessionChanged",), ("heatChanged",)] and model.prototype == -1 and model.data is None
