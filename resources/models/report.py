"""Print the README's model tables from what `vidxai evaluate --record` stored in each model.json.

    .venv/bin/python resources/models/report.py [resources/models]

Nothing here is typed by hand: accuracy, per-class recall and the confusion matrices come from the
``metadata.evaluations`` records (keys ``fer2013:test:all:seed0`` and ``fer2013:test:700:seed0``),
and the before/after-push validation accuracy from the ProtoPNet's training record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FULL, SUBSET = "fer2013:test:all:seed0", "fer2013:test:700:seed0"
ORDER = ("cnn", "protopnet", "patchsae")


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
        print(f"| `{n}` | {100 * full['accuracy']:.1f} % ({full['n']})" if full else f"| `{n}` | – ",
              end="")
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


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
