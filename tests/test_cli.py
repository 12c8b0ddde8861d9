"""The `vidxai` command line as a user runs it: a real subprocess, real clips, exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def vidxai(*args: str, timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "vidxai_gui.launcher", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_ingest_batch_reports_bad_files_and_goes_on(tmp_path: Path, crema_clips: list[Path]) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a text file, not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    missing = tmp_path / "missing.mov"
    good = crema_clips[0]
    out = tmp_path / "out"
    r = vidxai("ingest", fake, empty, good, missing, "--out", out)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("vidxai: ")]
    for bad in (fake, empty, missing):
        lines = [line for line in err if str(bad) in line and "failed" not in line]
        assert len(lines) == 1, (bad, r.stderr)
    assert "3 of 4 failed" in r.stderr
    session = out / (good.stem + ".vxs")
    assert session.is_file()
    info = vidxai("info", session, "--json")
    assert info.returncode == 0, info.stderr
    d = json.loads(info.stdout)
    assert d["frame_count"] > 50 and d["complete"] is True
    assert d["face_found_frames"] >= 0.95 * d["frame_count"]
    assert d["fps"] == pytest.approx(29.97, abs=0.01)


def test_info_refuses_a_garbage_session_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.vxs"
    bad.write_bytes(os.urandom(4096))
    r = vidxai("info", bad, "--json")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and str(bad) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one bad input, one line (a batch adds its summary)


def test_info_export_summary_do_not_load_torch_or_qt(tmp_path: Path, crema_clips: list[Path]) -> None:
    """Reading and exporting a session on a server must start in a blink: no torch, no Qt, no cv2/dlib —
    also when the command reports a bad file (the error types are gathered without importing torch)."""
    out = tmp_path / "out"
    assert vidxai("ingest", crema_clips[0], "--out", out).returncode == 0
    session = out / (crema_clips[0].stem + ".vxs")
    garbage = tmp_path / "garbage.vxs"
    garbage.write_bytes(os.urandom(256))
    code = ("import sys; from engine import cli;"
            f"a = cli.main(['info', {str(session)!r}]);"
            f"b = cli.main(['export', {str(session)!r}, '--format', 'csv', '--out', {str(tmp_path / 'x.csv')!r}]);"
            f"c = cli.main(['info', {str(garbage)!r}]);"
            f"d = cli.main(['summary', {str(out)!r}, '--out', {str(tmp_path / 't.csv')!r}]);"
            f"e = cli.main(['export', {str(session)!r}, '--format', 'openface', '--out', {str(tmp_path / 'o.csv')!r}]);"
            "print('RESULT', a, b, c, d, e, [m for m in ('torch', 'PySide6', 'cv2', 'dlib') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "RESULT 0 0 2 0 0 []" in r.stdout, r.stdout + r.stderr
    assert (tmp_path / "x.csv").stat().st_size > 0
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 2  # header and the one session
    assert (tmp_path / "o.csv").read_text().startswith("frame, face_id, timestamp, confidence, success, x_0")


def test_every_argument_of_every_command_has_a_help_line() -> None:
    """`vidxai COMMAND --help` explains every option and positional, for every command (and `vidxai open`)."""
    import argparse

    from engine.cli import build_parser
    from vidxai_gui.launcher import _gui_parser

    def walk(parser: argparse.ArgumentParser, name: str) -> list[str]:
        missing = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help for a in action._choices_actions}
                for cmd, sub in action.choices.items():
                    if not helps.get(cmd):
                        missing.append(f"{name} {cmd} (the command itself)")
                    missing += walk(sub, f"{name} {cmd}")
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction) and (
                    not (action.help and action.help.strip()) or action.help == argparse.SUPPRESS):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
        return missing

    parser = build_parser()
    missing = walk(parser, "vidxai") + walk(_gui_parser(), "vidxai open")
    assert not missing, f"arguments without a help line: {missing}"
    # and the help text really prints, for each command
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"report", "figure", "evaluate", "summary"} <= set(commands)
    for cmd, sub in commands.items():
        text = sub.format_help()
        assert "usage:" in text and len(text.splitlines()) > 3, cmd


def test_evaluate_a_plain_folder_of_tiffs_uses_every_item_and_writes_beside_it(tmp_path: Path, fer_dir: Path) -> None:
    """An outside data set as a lab has it: <class>/<image>.tif (JAFFE ships TIFF; one 16-bit scan too), no
    split of its own. `vidxai evaluate` uses every item, says so and why, and writes its report beside the
    data, not into the installed model folder."""
    import numpy as np
    from PIL import Image

    from engine.resources import models_dir

    model = models_dir() / "protopnet"
    if not (model / "model.json").is_file():
        pytest.skip(f"no shipped ProtoPNet in {model}")
    data = tmp_path / "lab set"
    per_class = 3
    classes = sorted(p.name for p in (fer_dir / "test").iterdir() if p.is_dir())
    for c in classes:
        (data / c).mkdir(parents=True)
        for i, src in enumerate(sorted((fer_dir / "test" / c).iterdir())[:per_class]):
            with Image.open(src) as im:
                grey = im.convert("L")
            if i == 0 and c == classes[0]:  # a 16-bit greyscale TIFF, as scanners write
                Image.fromarray(np.asarray(grey, np.uint16) * 257).save(data / c / f"{i}.tiff")
            else:
                grey.save(data / c / f"{i}.tif")
    before = sorted(p.relative_to(model) for p in model.rglob("*"))
    r = vidxai("evaluate", data, "--model", model, env={"VIDXAI_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    n = per_class * len(classes)
    assert f"used {n} samples from {n} of {n} items (split all): every item" in r.stdout, r.stdout
    report = tmp_path / "lab set.evaluation" / "protopnet"
    result = json.loads((report / "evaluation.json").read_text())
    assert result["n"] == n and result["split"] == "all" and (report / "confusion.png").is_file()
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before  # nothing written into the model
    # a split asked for is used as asked
    r = vidxai("evaluate", data, "--model", model, "--split", "test", "--out", tmp_path / "t",
               env={"VIDXAI_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(split test): the random test split, as asked" in r.stdout, r.stdout
