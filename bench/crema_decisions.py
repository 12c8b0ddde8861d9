"""Video decisions of the bundled models on the shared CREMA-D clips, next to the actor's intended emotion
and the crowd's face-only vote; prints the README's table.

    .venv/bin/python bench/crema_decisions.py [--work DIR] [--models protopnet,patchsae,cnn]

Each clip is analysed by `vidxai analyze` with the defaults (EWMA τ, intrinsic map) and the decision is read
back with `vidxai info --json`, as a user would."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "videos" / "crema-d"
CODES = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
VOTES = {"A": "angry", "D": "disgust", "F": "fear", "H": "happy", "N": "neutral", "S": "sad"}


def vidxai(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="folder for the sessions (default: a temporary one)")
    ap.add_argument("--models", default="protopnet,patchsae,cnn", help="bundled model names, comma-separated")
    a = ap.parse_args()
    if not CLIPS.is_dir():
        print(f"no clips: {CLIPS} is missing (the shared data folder beside the repository)")
        return 2
    clips = sorted(CLIPS.glob("*.flv"))
    with open(CLIPS / "crema-d_1001_DFA_perceived.csv", newline="") as f:
        crowd = {r["FileName"]: VOTES.get(r["FaceVote"], r["FaceVote"]) for r in csv.DictReader(f)}
    models = [m for m in a.models.split(",") if m]
    work = a.work or Path(tempfile.mkdtemp(prefix="vx_crema_"))
    decisions: dict[str, dict[str, str]] = {}
    for m in models:
        out = work / m
        vidxai("analyze", *map(str, clips), "--model", str(ROOT / "resources" / "models" / m), "--out", str(out))
        for c in clips:
            info = json.loads(vidxai("info", str(out / f"{c.stem}.vxs"), "--json"))
            decisions.setdefault(c.stem, {})[m] = str(info.get("decision"))
    print("| clip | intended | crowd, face only | " + " | ".join(models) + " |")
    print("|---" * (3 + len(models)) + "|")
    for c in clips:
        intended = CODES.get(c.stem.split("_")[2], "?")
        row = [c.stem, intended, crowd.get(c.stem, "?")] + [decisions[c.stem][m] for m in models]
        print("| " + " | ".join(row) + " |")
    for m in models:
        right = sum(decisions[c.stem][m] == CODES.get(c.stem.split("_")[2]) for c in clips)
        print(f"{m}: {right}/{len(clips)} intended")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
