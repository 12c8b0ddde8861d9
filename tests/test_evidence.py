"""ProtoPNet/PatchSAE evidence maps, gradient × input and the PRP-style LRP (docs/EXPLANATIONS.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.explain import evidence
from engine.explain.hooks import hook_count
from engine.explain.occlusion import faithfulness_curves, fill_values
from engine.explain.onface import cell_centres, face_cells
from engine.explain.prp import prp_explain
from engine.models import ModelSpec, build_model
from tests.test_occlusion import P, one_patch_data, one_patch_model, saliency


def _protopnet(classes: list[str], per_class: int, seed: int = 0):
    torch.manual_seed(seed)
    spec = ModelSpec(arch="protopnet", backbone="small", classes=classes, prototypes_per_class=per_class,
                     proto_dim=16)
    return build_model(spec).eval()


def test_argmax_evidence_sits_at_the_prototypes_best_position() -> None:
    # One prototype per class; the class-0 prototype is the feature vector at cell (2, 3), the other's
    # weight to class 0 is negative (−0.5), so class 0's evidence is that one prototype's.
    model = _protopnet(["a", "b"], 1)
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        z = model.features(x)
        model.prototype_vectors[0].copy_(z[0, :, 2, 3].view(-1, 1, 1))  # distance 0 at cell (2, 3)
        out = model.explain(x)
    assert int(out["sim_maps"][0, 0].flatten().argmax()) == 2 * 6 + 3
    m = evidence.proto_argmax(model, out, target=[0])[0]
    assert m.shape == (6, 6)
    w = float(model.last_layer.weight[0, 0].detach())
    assert m[2, 3] == pytest.approx(w * float(out["similarities"][0, 0]), rel=1e-5)
    assert np.count_nonzero(m) == 1
    spread = evidence.proto_argmax(model, out, target=[0], spread=1.0)[0]
    assert np.unravel_index(spread.argmax(), spread.shape) == (2, 3)
    # The similarity-sum map of the same model spreads over every cell.
    assert np.count_nonzero(evidence.proto_sum(model, out, target=[0])[0]) == 36


def test_prp_conserves_relevance_on_a_bias_free_protopnet() -> None:
    model = _protopnet(["a", "b", "c"], 2, seed=1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d | nn.Linear) and mod.bias is not None:
                mod.bias.zero_()
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
                mod.bias.zero_()
                mod.weight.uniform_(0.5, 1.5)
        x = torch.randn(4, 1, 48, 48)
        z = model.features(x)
        model.prototype_vectors.copy_(z[:3, :, 1, 1].reshape(3, -1, 1, 1).repeat(2, 1, 1, 1))
    rel, logits = prp_explain(model, x)
    target = logits.argmax(1)
    total = rel.reshape(4, -1).sum(1)
    want = logits[np.arange(4), target]
    np.testing.assert_allclose(total, want, atol=1e-3 * max(1.0, float(np.abs(want).max())))
    assert hook_count(model) == 0


def test_gradient_x_input_is_exact_for_a_linear_model() -> None:
    model = one_patch_model()
    x, y = one_patch_data(8)
    g = evidence.gradient_x_input(model, x, y.numpy())
    with torch.no_grad():
        lin = model[1]
        logit = (x.flatten(1) @ lin.weight.t())[torch.arange(8), y]
    np.testing.assert_allclose(g.reshape(8, -1).sum(1), logit.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fill", ["mean", "noise"])
def test_one_patch_model_passes_morf_lerf_with_every_fill(fill: str) -> None:
    model = one_patch_model()
    x, y = one_patch_data()
    curves = faithfulness_curves(model, x, y, saliency(model, x, y), patch=P, fill=fill)
    assert all(a == 1.0 for a in curves["lerf"])
    assert max(curves["morf"][1:]) <= 0.75 and curves["delta"][1] >= 0.25


def test_blur_fill_keeps_what_a_patch_mean_reader_reads() -> None:
    # The one-patch model reads the patch's mean brightness, which a blur keeps: MoRF cannot hurt it.
    # That is the known limit of the blur fill (docs/EXPLANATIONS.md §6), checked so it stays documented.
    model = one_patch_model()
    x, y = one_patch_data()
    curves = faithfulness_curves(model, x, y, saliency(model, x, y), patch=P, fill="blur")
    assert all(a == 1.0 for a in curves["lerf"]) and min(curves["morf"]) >= 0.9


def test_fill_values() -> None:
    x = torch.randn(2, 1, 48, 48)
    assert fill_values(x, "mean") == 0.0
    b = fill_values(x, "blur")
    assert b.shape == x.shape and float(b.std()) < 0.5 * float(x.std())
    assert torch.equal(fill_values(x, "noise"), fill_values(x, "noise"))  # seeded
    with pytest.raises(ValueError):
        fill_values(x, "zebra")


def test_face_cells_use_receptive_field_centres() -> None:
    model = _protopnet(["a", "b"], 1)
    rf = model.receptive_field
    c = cell_centres(rf, 6, 6)
    assert c[0, 0].tolist() == [3.5, 3.5] and c[5, 5].tolist() == [43.5, 43.5]  # centres of the 8-px patches
    square = np.array([[12, 12], [36, 12], [36, 36], [12, 36]], np.float32)
    cells = face_cells(square, rf, 6, 6)
    assert cells[1:5, 1:5].sum() == 9 and not cells[0].any() and not cells[:, 5].any()
    assert not face_cells(None, rf, 6, 6).any()


def test_random_patch_occlusion_hides_whole_patches_at_the_test_fill() -> None:
    from engine.explain.occlusion import random_patch_occlusion

    x = torch.randn(64, 1, 48, 48) + 5.0            # nothing is 0 before occlusion
    g = torch.Generator().manual_seed(0)
    xo = random_patch_occlusion(x, 0.5, 8, g)
    hidden = (xo == 0).view(64, 6, 8, 6, 8).permute(0, 1, 3, 2, 4).reshape(64, 36, 64)
    per_patch = hidden.float().mean(-1)
    assert set(per_patch.unique().tolist()) <= {0.0, 1.0}          # whole 8×8 patches only
    frac = per_patch.mean(1)
    assert float(frac.max()) <= 0.5 + 1e-6 and float(frac.min()) < 0.1 and float(frac.mean()) > 0.15
    assert torch.equal(xo[xo != 0], x[xo != 0])                    # the rest untouched
    assert torch.equal(xo, random_patch_occlusion(x, 0.5, 8, torch.Generator().manual_seed(0)))
    assert random_patch_occlusion(x, 0.0) is x



def test_occlusion_evidence_is_the_prototype_evidence_a_hidden_patch_takes_away() -> None:
    model = _protopnet(["a", "b", "c"], 2, seed=2)
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        out = model.explain(x)
        m = evidence.proto_occlusion(model, x, out, target=[0, 2])
        assert m.shape == (2, 6, 6) and (m >= 0).all()
        # By definition, for every patch: Σ_j max(W_ĉj, 0) · max(s_j − s_j(patch hidden), 0).
        for n, c in ((0, 0), (1, 2)):
            for i, j in ((0, 0), (2, 3), (5, 4)):
                xo = x[n:n + 1].clone()
                xo[..., 8 * i:8 * i + 8, 8 * j:8 * j + 8] = 0.0
                drop = (out["similarities"][n] - model.explain(xo)["similarities"][0]).clamp_min(0)
                want = float((model.last_layer.weight[c].clamp_min(0) * drop).sum())
                assert m[n, i, j] == pytest.approx(want, rel=1e-4, abs=1e-6)
        # The shared-out variant conserves the positive part of the logit.
        mn = evidence.proto_occlusion(model, x, out, target=[0, 2], normalise=True)
        w = model.last_layer.weight[[0, 2]] * out["similarities"]
        np.testing.assert_allclose(mn.reshape(2, -1).sum(1), w.clamp_min(0).sum(1).numpy(), rtol=1e-4)


def test_record_merge_keeps_the_other_methods_and_refuses_other_samples(tmp_path) -> None:
    import json
    import shutil
    from pathlib import Path

    from engine.faithfulness import PREFERRED_RECORD, OcclusionReport, record_faithfulness, recorded_deltas

    src = Path(__file__).resolve().parents[1] / "resources" / "models" / "cnn" / "model.json"
    if not src.is_file():
        pytest.skip("no shipped CNN (resources/models/train.sh)")
    shutil.copy(src, tmp_path / "model.json")
    old = json.loads(src.read_text())["metadata"]["faithfulness"][PREFERRED_RECORD]
    before = recorded_deltas(json.loads(src.read_text()))
    curve = {"fractions": [0.0, 0.1], "morf": [0.5, 0.2], "lerf": [0.5, 0.5], "delta": [0.0, 0.3]}
    rep = OcclusionReport(str(tmp_path), old["split"], [], old["n"], old["accuracy"], old["patch"], old["fill"],
                          curves={"new-map": curve})
    record_faithfulness(tmp_path, PREFERRED_RECORD, rep, "test", merge=True)
    after = recorded_deltas(json.loads((tmp_path / "model.json").read_text()))
    assert after == {**before, "new-map": pytest.approx(0.3)}
    rep.accuracy += 0.01                      # another model or other samples: no merge
    with pytest.raises(ValueError):
        record_faithfulness(tmp_path, PREFERRED_RECORD, rep, "test", merge=True)
