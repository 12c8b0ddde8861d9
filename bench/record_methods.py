"""Measure some explanation methods of a model on the FER2013 700-subset and merge their MoRF/LeRF
curves into its model.json faithfulness record (the other methods' entries stay): for when a method's
definition changed and the model did not (docs/EXPLANATIONS.md §8).

    .venv/bin/python bench/record_methods.py resources/models/protopnet proto-occ [--intrinsic]

``--intrinsic``: the model's intrinsic map is the first method named (engine.analyzer.INTRINSIC_MAP), so
its curves are recorded as "intrinsic" too (the same function on the same inputs; computed once).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.analyzer import INTRINSIC_MAP
from engine.checkpoint import read_checkpoint_json
from engine.faithfulness import PREFERRED_RECORD, occlusion_evaluate, record_faithfulness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("methods", nargs="+")
    ap.add_argument("--intrinsic", action="store_true")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "images" / "fer2013"))
    args = ap.parse_args()
    arch = read_checkpoint_json(args.model)["spec"]["arch"]
    if args.intrinsic and INTRINSIC_MAP.get(arch) != args.methods[0]:
        raise SystemExit(f"the intrinsic map of a {arch} is {INTRINSIC_MAP.get(arch)!r}, not {args.methods[0]!r}")
    rep = occlusion_evaluate(args.model, args.data, limit=700, seed=0, methods=tuple(args.methods), parts=False)
    if args.intrinsic:
        rep.curves["intrinsic"] = rep.curves[args.methods[0]]
    print(rep.summary())
    cmd = "bench/record_methods.py " + " ".join(sys.argv[1:])
    print("merged into", record_faithfulness(args.model, PREFERRED_RECORD, rep, cmd, merge=True))


if __name__ == "__main__":
    main()
