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
