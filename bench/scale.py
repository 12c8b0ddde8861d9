"""Beyond one workstation (issue 19): corpus throughput on Ray and data-parallel training throughput.

    nice -n 19 .venv/bin/python bench/scale.py [--repeat R] [--workers 1,2] [--model DIR] [--skip-ddp]

Corpus: the shared CREMA-D clips, each linked R times under another name, analysed into fresh folders by
the serial CLI (`vidxai analyze`, one process) and by `vidxai analyze --engine ray --workers N` for each
N; videos/s and frames/s of the whole command (Ray's start included) and, for Ray, of the steady part
(first task start to last task end, from the manifest's timings). Training: one CNN epoch on
a FER2013 subset in one process and in two torchrun gloo processes (same global batch); images/s from
the epoch's own train time. Everything is printed as ratios to the serial / one-process figure measured
in the same run, so a loaded machine still gives comparable numbers (it does not give absolute ones).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VIDXAI_SHARED_DATA", REPO.parent / "shared" / "data"))
PY = sys.executable


def run(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                       capture_output=True, text=True, check=False)
    if r.returncode not in (0,):
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t0


def corpus(folder: Path, repeat: int) -> list[Path]:
    clips = sorted((DATA / "videos" / "crema-d").glob("*.flv"))
    if not clips:
        sys.exit(f"no shared clips in {DATA / 'videos' / 'crema-d'}")
    out = []
    for r in range(repeat):
        for c in clips:
            link = folder / f"{c.stem}_r{r}{c.suffix}"
            link.symlink_to(c)
            out.append(link)
    return out


def frames_of(out: Path) -> int:
    sys.path.insert(0, str(REPO))
    from sessions import Session

    n = 0
    for p in sorted(out.glob("*.vxs")):
        with Session.open(p) as s:
            n += s.frame_count
    return n


def bench_corpus(args: argparse.Namespace, tmp: Path) -> list[tuple[str, float, float, float | None]]:
    (tmp / "videos").mkdir()
    videos = corpus(tmp / "videos", args.repeat)
    base = [PY, "-m", "engine.cli", "analyze", *map(str, videos), "--device", "cpu"]
    if args.model:
        base += ["--model", args.model]
    rows = []
    t = run([*base, "--out", str(tmp / "serial")])
    frames = frames_of(tmp / "serial")
    rows.append(("serial CLI", len(videos) / t, frames / t, None))
    for n in args.workers:
        out = tmp / f"ray{n}"
        t = run([*base, "--out", str(out), "--engine", "ray", "--workers", str(n)])
        doc = json.loads((out / "corpus.json").read_text())
        es = [e for e in doc["videos"].values() if e["status"] == "done"]
        if len(es) != len(videos):
            sys.exit(f"ray {n}: {len(videos) - len(es)} videos not analysed: {out / 'corpus.json'}")
        steady = max(e["started"] + e["seconds"] for e in es) - min(e["started"] for e in es)
        rows.append((f"ray, {n} worker(s)", len(videos) / t, frames / t, len(videos) / steady))
    print(f"\ncorpus: {len(videos)} videos ({args.repeat}× the shared CREMA-D clips), {frames} frames")
    print(f"{'':<20} {'videos/s':>9} {'frames/s':>9} {'× serial':>9} {'steady videos/s':>16} {'× serial':>9}")
    s = rows[0][1]
    for name, vps, fps, steady in rows:
        st = f"{steady:16.3f} {steady / s:9.2f}" if steady else f"{'':>16} {'':>9}"
        print(f"{name:<20} {vps:9.3f} {fps:9.1f} {vps / s:9.2f} {st}")
    return rows


def bench_ddp(args: argparse.Namespace, tmp: Path) -> None:
    data = DATA / "images" / "fer2013" / "train"
    if not data.exists():
        print(f"no FER2013 at {data}: DDP skipped")
        return
    train = ["--arch", "cnn", "--backbone", "small", "--labels", "fer2013", "--epochs", "1",
             "--batch-size", "32", "--limit-per-class", str(args.per_class), "--device", "cpu",
             ]
    env = {"VIDXAI_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
    res = {}
    for n in (1, 2):
        launch = [PY, "-m", "engine.train"] if n == 1 else \
            [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), "-m", "engine.train"]
        out = tmp / f"ddp{n}"
        run([*launch, str(data), "--out", str(out), *train], env=env)
        rec = json.loads((out / "model" / "metrics.jsonl").read_text().splitlines()[0])
        samples = json.loads((out / "model" / "model.json").read_text())["metadata"]["training"]["train_samples"]
        res[n] = samples / rec["train_time_s"]
    print(f"\nDDP (gloo, CPU, one thread per process), CNN epoch (every layer trained), {args.per_class} images per class:")
    for n, ips in res.items():
        print(f"{n} process(es): {ips:8.1f} images/s  × {ips / res[1]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=2, help="times each shared clip appears in the corpus")
    p.add_argument("--workers", default="1,2", help="Ray worker counts, comma-separated")
    p.add_argument("--model", default=None, help="model folder (default: the bundled ProtoPNet)")
    p.add_argument("--per-class", type=int, default=60, help="FER2013 training images per class for DDP")
    p.add_argument("--skip-ddp", action="store_true")
    p.add_argument("--skip-corpus", action="store_true")
    args = p.parse_args()
    args.workers = [int(w) for w in args.workers.split(",") if w]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory(prefix="vidxai-scale-") as d:
        tmp = Path(d)
        if not args.skip_corpus:
            bench_corpus(args, tmp)
        if not args.skip_ddp:
            bench_ddp(args, tmp)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
