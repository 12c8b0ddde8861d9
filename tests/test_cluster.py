"""Issue 19: `vidxai analyze --engine ray` on a local Ray (2 CPUs, one instance for the module).

Acceptance: the sessions' scores equal the serial CLI's, the manifest has one entry per clip, a corrupt
file is reported with the serial one-line error while the rest finish, and a SIGKILLed worker leaves
every clip analysed or reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import cli
from sessions import Session

ray = pytest.importorskip("ray", reason="Ray is the `cluster` extra: pip install 'vidxai[cluster]'")

REPO = Path(__file__).resolve().parents[1]


def test_no_ray_cluster_at_the_address_is_one_line(tmp_path: Path, crema_clips: list[Path]) -> None:
    """Run first, before the module's local Ray starts; as a command (`python -m engine.cli` is __main__)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    r = subprocess.run([sys.executable, "-m", "engine.cli", "analyze", str(crema_clips[0]), "--out", str(tmp_path),
                        "--engine", "ray", "--address", "auto", "--device", "cpu"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "cannot start or reach Ray at auto" in r.stderr


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for every test here (starting it costs ~10 s on 2 cores)."""
    from engine.cluster import connect

    connect(None, 2, REPO)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_pipeline import make_model

    return make_model(tmp_path_factory.mktemp("models") / "protopnet", "protopnet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, crema_clips: list[Path]) -> list[str]:
    """The shared CREMA-D clips plus a corrupt one, given as a list file."""
    d = tmp_path_factory.mktemp("corpus")
    bad = d / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096))
    videos = [str(c) for c in crema_clips[:3]] + [str(bad)]  # the first two: test 1; all three: test 2
    return videos


def _validate(doc: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json.loads((REPO / "docs" / "corpus.schema.json").read_text()))


# Light settings (the mechanics, not the scores, are under test): the face detector every 25th frame.
SERIAL = ["--device", "cpu", "--no-spray", "--detect-every", "25"]


def test_ray_corpus_equals_serial_and_reports_the_corrupt_file(local_ray, model_dir: Path, corpus: list[str],
                                                               tmp_path: Path, capsys) -> None:
    serial, ray_out = tmp_path / "serial", tmp_path / "ray"
    corpus = [*corpus[:2], corpus[-1]]
    lst = Path(corpus[-1]).parent / "two.txt"
    lst.write_text("\n".join(corpus) + "\n")
    assert cli.main(["analyze", *corpus, "--out", str(serial), "--model", str(model_dir), *SERIAL]) == 2
    serial_err = next(ln for ln in capsys.readouterr().err.splitlines() if "corrupt.mp4" in ln)
    assert cli.main(["analyze", str(lst), "--out", str(ray_out), "--model", str(model_dir), *SERIAL,
                     "--engine", "ray", "--workers", "2"]) == 2
    doc = json.loads((ray_out / "corpus.json").read_text())
    _validate(doc)
    entries = {Path(e["video"]).name: e for e in doc["videos"].values()}
    assert sorted(entries) == sorted(Path(v).name for v in corpus)
    bad = entries.pop("corrupt.mp4")
    assert bad["status"] == "failed" and f"vidxai: {bad['error']}" == serial_err
    assert len({e["worker"]["pid"] for e in entries.values()}) == 2  # both workers took clips
    for name, e in entries.items():
        assert e["status"] == "done" and e["frames"] > 0, e
        with Session.open(serial / (Path(name).stem + ".vxs")) as a, Session.open(Path(e["session"])) as b:
            pa, pb = a.read("probs"), b.read("probs")
            np.testing.assert_array_equal(np.isnan(pa), np.isnan(pb))
            np.testing.assert_allclose(pa, pb, atol=1e-3, equal_nan=True)  # float16 tolerance
            assert a.info()["decision"] == b.info()["decision"] == e["decision"]
    # Running again skips what is finished and tries the corrupt file once more.
    before = {n: (ray_out / (Path(n).stem + ".vxs")).stat().st_mtime_ns for n in entries}
    assert cli.main(["analyze", str(lst), "--out", str(ray_out), "--model", str(model_dir), *SERIAL,
                     "--engine", "ray", "--workers", "2"]) == 2
    doc = json.loads((ray_out / "corpus.json").read_text())
    assert {Path(e["video"]).name: e["status"] for e in doc["videos"].values()} == \
        {**{n: "skipped" for n in entries}, "corrupt.mp4": "failed"}
    assert before == {n: (ray_out / (Path(n).stem + ".vxs")).stat().st_mtime_ns for n in entries}


def test_a_killed_worker_leaves_every_clip_analysed_or_reported(local_ray, model_dir: Path, corpus: list[str],
                                                                tmp_path: Path) -> None:
    from engine.cluster import run_corpus
    from engine.pipeline import AnalyzeSettings

    good = corpus[:-1]
    pids: list[int] = []
    killed: list[int] = []

    def started(actors: list) -> None:
        pids.extend(ray.get([a.pid.remote() for a in actors]))

    def result(video: str, entry: dict) -> None:
        if not killed:  # the first result is in: the other worker is mid-clip; kill it
            victim = next(p for p in pids if p != entry["worker"]["pid"])
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    doc = run_corpus(good, tmp_path / "out", model_dir, AnalyzeSettings(device="cpu", spray=False, detect_every=25),
                     workers=2, retries=1, on_start=started, on_result=result)
    _validate(doc)
    assert killed
    entries = list(doc["videos"].values())
    assert len(entries) == len(good)
    assert all(e["status"] in ("done", "failed") for e in entries), entries
    assert all(e["error"] for e in entries if e["status"] == "failed")
    retried = [e for e in entries if e["attempts"] > 1]
    assert retried and all(e["status"] == "done" for e in retried), entries  # the killed clip ran again
    for e in entries:
        with Session.open(Path(e["session"])) as s:
            assert s.info()["analysed"] and s.info()["complete"]
