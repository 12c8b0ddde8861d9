"""bench/explain_quality.py: the temporal columns of a --temporal-only run merged into the table (issue 14)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

eq = pytest.importorskip("bench.explain_quality")


def _row(model: str, method: str) -> dict:
    return {"model": model, "method": method, "fer_accuracy": 0.6, "delta10": 0.1, "delta30": 0.2, "delta50": 0.3,
            "mean_delta": 0.2, "clip_accuracy": 0.4, "clip_mean_delta": 0.1, "cam_cos": None, "flicker": 0.2,
            "ms_per_frame": 1.0}


def _t(model: str, method: str, v: float) -> dict:
    return {"model": model, "method": method, "flicker_raw": v, "flicker_smoothed": v / 10, "reduction_raw": 0.7,
            "cosine_raw": 0.9, "reduction_merged": 0.97, "cosine_merged": 0.8}


def test_merge_temporal_by_model_and_method() -> None:
    rows = [_row("cnn", "gxi"), _row("cnn", "ig"), _row("patchsae", "gxi")]
    out = eq.merge_temporal(rows, [_t("patchsae", "gxi", 0.5), _t("cnn", "gxi", 0.3)])
    assert [r["t_flicker_raw"] for r in out] == [0.3, None, 0.5]
    assert out[0]["t_cosine_merged"] == 0.8 and out[1]["t_reduction_merged"] is None
    assert out[0]["flicker"] == 0.2  # the crop-map column is kept
    with pytest.raises(SystemExit):
        eq.merge_temporal(rows, [_t("cnn", "gxi", 0.3), _t("cnn", "gxi", 0.4)])


def test_table_from_adds_columns(tmp_path: Path) -> None:
    full = {"command": "x", "seconds": 60, "limit": 700, "fill": "mean", "patch": 8, "models": {"cnn": {}},
            "rows": [_row("cnn", "gxi"), _row("cnn", "centre-prior")]}
    temporal = {"command": "y", "seconds": 120, "rows": [_t("cnn", "gxi", 0.3)], "measured": {"cnn": ["gxi"]},
                "temporal": {"temporal_weight": 2.0, "min_stage_s": 0.6, "map_sigma_s": 0.1, "clips": "c"}}
    (tmp_path / "a.json").write_text(json.dumps(full))
    (tmp_path / "t.json").write_text(json.dumps(temporal))
    eq.write_table(eq.combine_runs([tmp_path / "a.json", tmp_path / "t.json"]), tmp_path / "out")
    lines = (tmp_path / "out.md").read_text().splitlines()
    assert "flicker smoothed" in lines[0] and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2].endswith("| 0.300 | 0.030 | 70.0% (0.90) | 97.0% (0.80) |")
    assert lines[3].endswith("| – | – | – | – |")
    assert "centre-prior (content-free" in (tmp_path / "out.md").read_text()
