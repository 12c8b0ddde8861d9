"""Guided vs unguided (METHODS §7, issue 16): test accuracy and CAM-COS per class on the FER2013 700-subset.

    .venv/bin/python bench/au_guidance.py MODEL [MODEL …] [--limit 700] [--out bench/results/au_guidance]

For each model folder: accuracy on the seeded 700-image subset of FER2013's test split (``engine.evaluate``,
seed 0, the subset every bench uses) and, on the same crops, CAM-COS per labelled class — Grad-CAM of the
label vs the label's AU map from the crop's landmarks (``engine.evaluate(cam_cos=True)``, as
``vidxai evaluate --cam-cos`` prints it; neutral has no AU map). Writes OUT.md (the table) and OUT.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    from engine.checkpoint import load_checkpoint
    from engine.evaluate import evaluate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model folders (CNN or ProtoPNet) trained on FER2013")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "images" / "fer2013"))
    ap.add_argument("--limit", type=int, default=700)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "au_guidance"))
    args = ap.parse_args(argv)
    rows = []
    for folder in args.models:
        _, meta = load_checkpoint(folder)
        res = evaluate(folder, args.data, split="test", limit=args.limit, seed=0, cam_cos=True)
        cc = res.cam_cos or {}
        lam = (meta.get("training", {}).get("config", {}) or {}).get("au_guidance", 0.0)
        rows.append({"model": str(folder), "au_guidance": lam, "accuracy": res.accuracy, "n": res.n, **cc})
        print(json.dumps(rows[-1]), flush=True)
    classes = list(rows[0]["per_class"])
    lines = ["| model | λ | accuracy | CAM-COS mean | " + " | ".join(classes) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(classes)]
    for r in rows:
        cells = ["–" if r["per_class"][c] is None else f"{r['per_class'][c]:.3f}" for c in classes]
        lines.append(f"| {r['model']} | {r['au_guidance']:g} | {r['accuracy']:.4f} | {r['mean']:.3f} | "
                     + " | ".join(cells) + " |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
