"""Occlusion sanity sweep for the clip relevance methods (README §TimeSformer, METHODS §6).

    .venv/bin/python bench/timesformer_occlusion.py

Tiny TimeSformers (depth 1 and 2, seeds 0-3) trained on 4-frame noise clips whose label is the sign of one
8×8 patch of frame 2; for each relevance method: the share of test clips whose top frame is frame 2, and
MoRF / LeRF accuracy with 10 % of the patches plus the top (bottom) frame occluded.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch
import torch.nn.functional as F

from engine.explain.occlusion import faithfulness_curves
from engine.explain.spacetime import METHODS, relevance
from engine.models import ModelSpec, build_model

T, S, P = 4, 24, 8


def data(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, T, 1, S, S, generator=g) * 0.5
    y = torch.randint(0, 2, (n,), generator=g)
    x[:, 2, 0, 8:16, 8:16] = x[:, 2, 0, 8:16, 8:16] * 0.25 + (y.float() * 4 - 2)[:, None, None]
    return x, y


class ChannelsFirst(torch.nn.Module):   # engine.explain.occlusion's clips are N×C×T×H×W
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.inner(clip.transpose(1, 2))


def main() -> None:
    torch.set_num_threads(1)
    for depth in (1, 2):
        for seed in range(4):
            torch.manual_seed(seed)
            m = build_model(ModelSpec(arch="timesformer", classes=["a", "b"], preprocess={"size": S},
                                      options={"frames": T, "dim": 16, "depth": depth, "heads": 2, "patch": P,
                                               "tokens": "patch"}))
            opt = torch.optim.Adam(m.parameters(), 3e-3)
            g = torch.Generator().manual_seed(seed)
            for _ in range(120):
                x, y = data(32, g)
                loss = F.cross_entropy(m(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            m.eval()
            x, y = data(200, torch.Generator().manual_seed(100))
            with torch.no_grad():
                acc = float((m(x).argmax(1) == y).float().mean())
            row = [f"depth {depth} seed {seed} acc {acc:.2f}"]
            for method in METHODS:
                rel = relevance(m, x, method, target=y)
                heat = rel.maps.repeat_interleave(P, 2).repeat_interleave(P, 3).numpy()
                c = faithfulness_curves(ChannelsFirst(m), x.transpose(1, 2), y, heat, fractions=(0.0, 0.1),
                                        patch=P, frames=(0, 1))
                top2 = float((rel.temporal.argmax(1) == 2).float().mean())
                row.append(f"{method} frame-2 {top2:.2f} MoRF {c['morf'][1][1]:.2f} LeRF {c['lerf'][1][1]:.2f}")
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
