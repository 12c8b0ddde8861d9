"""A session analysed by one model and then by another holds the second model's analysis and head, so it
opens (a bug: every shipped model had an empty sha256 in the analyzer's identity, so the second analysis
was taken for a resume of the first and kept the first's scores beside the second's head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.analyzer import FrameAnalyzer
from engine.checkpoint import read_checkpoint_json, save_checkpoint
from engine.models import build_model
from engine.models.spec import ModelSpec
from engine.pipeline import AnalyzeSettings, analyze
from sessions import Session


def test_identity_records_the_weights_sha256(tiny_protopnet: Path) -> None:
    sha = read_checkpoint_json(tiny_protopnet)["weights"]["sha256"]
    assert sha and FrameAnalyzer(tiny_protopnet).identity["sha256"] == sha


def test_another_model_replaces_the_analysis(tiny_protopnet: Path, hap_clip: Path, tmp_path: Path) -> None:
    classes = read_checkpoint_json(tiny_protopnet)["spec"]["classes"]
    torch.manual_seed(1)
    sae = save_checkpoint(tmp_path / "sae", build_model(ModelSpec(arch="patchsae", backbone="small", classes=classes,
                                                                  n_latents=64)), {"note": "random weights"})
    out = tmp_path / "clip.vxs"
    settings = AnalyzeSettings(explain=("intrinsic",), spray=False, au=False, batch_size=16)
    analyze(hap_clip, tiny_protopnet, out, settings)
    analyze(hap_clip, sae, out, settings)
    with Session.open(out) as s:
        info = s.analysis_info()
        assert info["model"]["arch"] == "patchsae" and info["complete"]
        assert s.head_weight().shape == (len(classes), 64)
        probs = s.read("probs")
    direct = FrameAnalyzer(sae)
    with Session.open(out) as s:
        k = int(np.flatnonzero(s.read("valid"))[0])
    assert np.isfinite(probs[k]).all() and direct.identity["sha256"] == info["model_sha256"]
