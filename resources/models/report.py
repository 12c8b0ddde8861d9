"""Print the README's model tables from what `vidxai evaluate --record` stored in each model.json.

    .venv/bin/python resources/models/report.py [resources/models]
    .venv/bin/python resources/models/report.py --au-guidance MODEL|MODEL.json …   (issue 16's table)

Nothing here is typed by hand: accuracy, per-class recall and the confusion matrices come from the
``metadata.evaluations`` records (keys ``fer2013:test:all:seed0`` and ``fer2013:test:700:seed0``),
and the before/after-push validation accuracy from the ProtoPNet's training record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FULL, SUBSET = "fer2013:test:all:seed0", "fer2013:test:700:seed0"
LANDMARK_LADDER = "fer2013:test:landmark-ladder"  # vidxai evaluate --landmark-ranking --record
ORDER = ("cnn", "protopnet", "patchsae", "cnn-au", "timesformer", "landmark")


def _mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main(root: Path) -> None:
    docs = {d.name: json.loads((d / "model.json").read_text())
            for d in sorted(root.iterdir()) if (d / "model.json").is_file()}
    names = [n for n in ORDER if n in docs] + [n for n in docs if n not in ORDER]
    print("| model | FER2013 test, all | 700-image subset | size |")
    print("|---|---|---|---|")
    for n in names:
        ev = docs[n]["metadata"].get("evaluations", {})
        full, sub = ev.get(FULL), ev.get(SUBSET)
        lmk = ev.get(LANDMARK_LADDER)  # a landmark model: its accuracy on the same test images, from landmarks
        if full:
            print(f"| `{n}` | {100 * full['accuracy']:.1f} % ({full['n']})", end="")
        elif lmk:
            print(f"| `{n}` | {100 * lmk['accuracy']:.1f} % ({lmk['windows']}, landmarks)", end="")
        else:
            print(f"| `{n}` | – ", end="")
        print(f" | {100 * sub['accuracy']:.1f} %" if sub else " | –", end="")
        print(f" | {_mb(root / n):.1f} MB |")
    print()
    classes = docs[names[0]]["spec"]["classes"]
    print("Per-class recall, full test split:\n")
    print("| model | " + " | ".join(classes) + " |")
    print("|---|" + "---|" * len(classes))
    for n in names:
        full = docs[n]["metadata"].get("evaluations", {}).get(FULL)
        if full:
            rec = full["per_class_recall"]
            print(f"| `{n}` | " + " | ".join(f"{rec[c]:.2f}" for c in classes) + " |")
    for n in names:
        full = docs[n]["metadata"].get("evaluations", {}).get(FULL)
        if not full:
            continue
        print(f"\nConfusion matrix of `{n}` (rows: true class, columns: predicted):\n")
        print("| true \\ predicted | " + " | ".join(classes) + " |")
        print("|---|" + "---|" * len(classes))
        for c, row in zip(classes, full["confusion"]):
            print(f"| **{c}** | " + " | ".join(str(v) for v in row) + " |")
    for n in names:
        metrics = docs[n]["metadata"].get("metrics", {})
        for rec in metrics.get("push", []) or []:
            last = (metrics.get("last_epoch") or {}).get("val_acc")
            tail = f", {100 * last:.1f} % after the last-layer epochs" if last is not None else ""
            print(f"\n`{n}` push: validation accuracy {100 * rec['val_acc_before_push']:.1f} % before, "
                  f"{100 * rec['val_acc_after_push']:.1f} % right after{tail}")


def _doc(path: Path) -> dict:
    """A model folder's model.json, or a model.json file kept without its weights (bench/results)."""
    return json.loads((path / "model.json" if path.is_dir() else path).read_text())


def au_guidance_table(paths: list[Path]) -> None:
    """Issue 16's guided-vs-unguided table (METHODS §7), from what `vidxai evaluate --record` stored: test
    accuracy on the whole FER2013 test split and, with `--cam-cos`, CAM-COS per labelled class on the
    700-image subset (Grad-CAM of the label vs its AU map; neutral has no map)."""
    docs = [(p, _doc(p)) for p in paths]
    classes = [c for c in docs[0][1]["spec"]["classes"] if c != "neutral"]
    print("| model | started from | epochs | λ | val acc | test acc (all) | test acc (700) | CAM-COS (700) | "
          + " | ".join(classes) + " |")
    print("|---|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(classes))
    for p, doc in docs:
        meta = doc["metadata"]
        cfg = meta["training"]["config"]
        ev = meta.get("evaluations", {})
        full, sub = ev.get(FULL) or {}, ev.get(SUBSET) or {}
        cc = sub.get("cam_cos") or {"per_class": {}, "mean": None}
        start = Path(cfg["init_checkpoint"]).name if cfg.get("init_checkpoint") else "scratch"
        val = (meta.get("metrics", {}).get("last_epoch") or {}).get("val_acc")

        def pct(v: float | None) -> str:
            return "–" if v is None else f"{100 * v:.1f} %"

        def f3(v: float | None) -> str:
            return "–" if v is None else f"{v:.3f}"

        name = p.parent.name if p.name == "model" else p.name.removesuffix(".model.json")
        print(f"| `{name}` | {start} | {cfg['epochs']} | {cfg.get('au_guidance', 0.0):g} | {pct(val)} | "
              f"{pct(full.get('accuracy'))} | {pct(sub.get('accuracy'))} | {f3(cc['mean'])} | "
              + " | ".join(f3(cc["per_class"].get(c)) for c in classes) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--au-guidance":
        au_guidance_table([Path(a) for a in sys.argv[2:]])
    else:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
