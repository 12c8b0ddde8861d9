"""engine.models: spec/input, backbones, ProtoPNet (METHODS §1), PatchSAE (METHODS §2), CNN baseline."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from engine.jobs import Cancelled, CancelToken
from engine.models import (
    LatentReferences,
    ModelSpec,
    PatchSAEModel,
    ProtoPNet,
    build_model,
    from_input,
    percentile_box,
    protopnet_loss,
    provenance_to_json,
    push_prototypes,
    sae_loss,
    to_input,
)
from engine.models.backbones import _adapt_first_conv

torch.manual_seed(0)


def _spec(arch: str, backbone: str = "small", classes=("neg", "neu", "pos"), **kw) -> ModelSpec:
    return ModelSpec(arch=arch, backbone=backbone, classes=list(classes), **kw)


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               and not getattr(m, "_backward_pre_hooks", {}) for m in model.modules())


# ---------------------------------------------------------------- spec and input


def test_spec_json_round_trip_and_derived_fields():
    s = _spec("protopnet", prototypes_per_class=3, proto_dim=16)
    assert s.preprocess == {"mode": "face", "size": 48, "grayscale": True, "margin": 0.1}
    assert (s.input_size, s.in_channels, s.n_prototypes) == (48, 1, 9)
    s2 = ModelSpec.from_json(s.to_json())
    assert s2 == s
    colour = _spec("cnn", preprocess={"size": 64, "grayscale": False})
    assert (colour.input_size, colour.in_channels) == (64, 3)
    with pytest.raises(ValueError, match="unknown model arch"):
        _spec("transformer")
    with pytest.raises(ValueError, match="unknown fields"):
        ModelSpec.from_json({**s.to_json(), "future_field": 1})


def test_to_input_normalisation_and_inverse():
    s = _spec("cnn")
    imgs = np.array([[[0, 128], [255, 64]]], np.uint8)
    s.preprocess["size"] = 2
    x = to_input(imgs, s)
    assert x.shape == (1, 1, 2, 2) and x.dtype == torch.float32
    np.testing.assert_allclose(x[0, 0].numpy(), (imgs[0] / 255 - 0.5) / 0.25, atol=1e-6)
    assert np.array_equal(from_input(x, s)[..., 0], imgs)
    colour = _spec("cnn", preprocess={"size": 2, "grayscale": False})
    xc = to_input(imgs[..., None], colour)  # grey replicated for a colour model
    assert xc.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(xc[0, 1].numpy(), (imgs[0] / 255 - 0.456) / 0.224, atol=1e-6)
    with pytest.raises(ValueError, match="expects 2×2"):
        to_input(np.zeros((1, 3, 3), np.uint8), s)


# ---------------------------------------------------------------- backbones


@pytest.mark.parametrize("backbone,shape", [("small", (256, 6, 6)), ("resnet18", (512, 2, 2)),
                                            ("vgg16_bn", (512, 1, 1))])
def test_backbone_shapes_and_no_inplace(backbone, shape):
    m = build_model(_spec("cnn", backbone)).eval()
    assert m.feature_shape == shape
    feats = m.explain(torch.randn(2, 1, 48, 48))["features"]
    assert tuple(feats.shape[1:]) == shape
    assert not any(getattr(mod, "inplace", False) for mod in m.modules())
    assert isinstance(m.target_layer(), nn.Module)


def test_receptive_field_box_contains_every_pixel_that_matters():
    m = build_model(_spec("cnn")).eval()
    rf = m.receptive_field
    assert (rf.size, rf.jump, rf.start) == (52.0, 8.0, 4.0)
    for h, w in [(0, 0), (2, 3), (5, 5)]:
        x = torch.randn(1, 1, 48, 48, requires_grad=True)
        m.backbone(x)[0, :, h, w].sum().backward()
        ys, xs = np.nonzero(x.grad[0, 0].abs().numpy() > 0)
        x0, y0, x1, y1 = rf.box(h, w, 48)
        assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1


def test_pretrained_without_cache_falls_back_to_random(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with caplog.at_level(logging.WARNING):
        m = build_model(_spec("cnn", "resnet18", pretrained=True))
    assert not m.pretrained_loaded
    assert "random weights" in caplog.text and str(tmp_path) in caplog.text


def test_first_conv_adapted_to_grey_gives_same_response():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    grey = _adapt_first_conv(conv, 1)
    x = torch.randn(2, 1, 10, 10)
    torch.testing.assert_close(grey(x), conv(x.expand(-1, 3, -1, -1)), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- ProtoPNet


def _fer_batch(fer_dir: Path, classes=("angry", "happy", "neutral"), per_class=4):
    imgs, ys, ids = [], [], []
    for c, name in enumerate(classes):
        for p in sorted((fer_dir / "train" / name).glob("*.jpg"))[:per_class]:
            imgs.append(np.asarray(Image.open(p).convert("L").resize((48, 48))))
            ys.append(c)
            ids.append({"source": str(p), "frame": 0})
    return np.stack(imgs), torch.tensor(ys), ids


def test_protopnet_structure_and_init():
    m = build_model(_spec("protopnet", prototypes_per_class=2, proto_dim=16))
    assert isinstance(m, ProtoPNet)
    assert m.prototype_vectors.shape == (6, 16, 1, 1)
    assert 0 <= m.prototype_vectors.min() and m.prototype_vectors.max() < 1
    assert m.prototype_classes.tolist() == [0, 0, 1, 1, 2, 2]
    w = m.last_layer.weight
    assert m.last_layer.bias is None
    assert w[0, 0] == 1 and w[0, 2] == -0.5 and w[2, 5] == 1 and w[1, 0] == -0.5
    assert isinstance(m.add_on[1], nn.ReLU) and isinstance(m.add_on[3], nn.Sigmoid)


def test_protopnet_explain_decomposes_logits_and_leaves_no_hooks():
    m = build_model(_spec("protopnet", prototypes_per_class=3, proto_dim=32)).eval()
    with torch.no_grad():
        m.last_layer.weight.normal_()  # not just the ±1/−0.5 init
    x = torch.randn(4, 1, 48, 48)
    e = m.explain(x)
    assert e["sim_maps"].shape == (4, 9, 6, 6) and e["contributions"].shape == (4, 3, 9)
    torch.testing.assert_close(e["contributions"].sum(-1), e["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(e["logits"], m(x), atol=1e-6, rtol=0)
    # s is a decreasing function of d, so the best position's similarity is the map's maximum.
    torch.testing.assert_close(e["sim_maps"].flatten(2).max(-1).values, e["similarities"])
    assert (e["min_distances"] >= 0).all()
    assert _no_hooks(m)
    x.requires_grad_(True)
    m(x)[:, 1].sum().backward()
    assert x.grad.abs().sum() > 0


def test_protopnet_losses_match_hand_computed_case():
    m = build_model(_spec("protopnet", classes=("a", "b"), prototypes_per_class=1, proto_dim=2))
    with torch.no_grad():
        m.prototype_vectors.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1))
    # Feature map set by hand (N=2, D=2, h=1, w=2), bypassing backbone and add-on.
    z = torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]]],     # image 0 (class a): positions (1,0), (.5,.5)
                      [[[1.0, 2.0]], [[1.0, 0.0]]]])    # image 1 (class b): positions (1,1), (2,0)
    m.features = lambda x: z  # type: ignore[method-assign]
    y = torch.tensor([0, 1])
    out = m.forward_train(torch.zeros(2, 1, 48, 48))
    # distances: img0 → p0 min(1, .5)=.5, p1 min(1, .5)=.5; img1 → p0 min(2, 4)=2, p1 min(0, 2)=0
    torch.testing.assert_close(out["min_distances"], torch.tensor([[0.5, 0.5], [2.0, 0.0]]))
    losses = protopnet_loss(m, out, y)
    assert losses["clst"].item() == pytest.approx((0.5 + 0.0) / 2)
    assert losses["sep"].item() == pytest.approx((0.5 + 2.0) / 2)
    assert losses["l1"].item() == pytest.approx(1.0)  # two −0.5 off-class weights

    def s(d):
        return math.log((d + 1) / (d + 1e-4))

    # logits = W s with W = [[1, −.5], [−.5, 1]]
    l0 = [s(0.5) - 0.5 * s(0.5), -0.5 * s(0.5) + s(0.5)]
    l1 = [s(2.0) - 0.5 * s(0.0), -0.5 * s(2.0) + s(0.0)]
    ce = (-(l0[0] - math.log(math.exp(l0[0]) + math.exp(l0[1])))
          - (l1[1] - math.log(math.exp(l1[0]) + math.exp(l1[1])))) / 2
    assert losses["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert losses["total"].item() == pytest.approx(ce + 0.8 * 0.25 - 0.08 * 1.25 + 1e-4 * 1.0, rel=1e-5)


def test_push_copies_own_class_features_exactly(fer_dir):
    torch.manual_seed(1)
    imgs, y, ids = _fer_batch(fer_dir)
    spec = _spec("protopnet", prototypes_per_class=2, proto_dim=16)
    m = build_model(spec)
    x = to_input(imgs, spec)
    batches = [(x[:5], y[:5], ids[:5]), (x[5:], y[5:], ids[5:])]
    calls = []
    old = m.prototype_vectors.detach().clone()[:, :, 0, 0]
    prov = push_prototypes(m, batches, progress=lambda d, t, msg: calls.append((d, t)))
    assert calls[-1] == (2, 2)
    m.eval()
    with torch.no_grad():
        z = torch.cat([m.features(b[0]) for b in batches])  # same batching as the push
    assert len(prov) == 6
    for j, p in enumerate(prov):
        c = int(m.prototype_classes[j])
        proto = m.prototype_vectors[j, :, 0, 0]
        i = ids.index(p["source"])
        h, w = p["position"]
        assert int(y[i]) == c, "prototype came from another class"
        assert torch.equal(z[i, :, h, w], proto)
        # and it was the own-class feature vector nearest to the prototype before the push
        own = z[y == c].permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        d_old = ((own - old[j]) ** 2).sum(1)
        assert d_old.min().item() == pytest.approx(p["distance"], abs=1e-4)
        assert ((z[i, :, h, w] - old[j]) ** 2).sum().item() == pytest.approx(d_old.min().item(), abs=1e-4)
        assert p["class"] == spec.classes[c]
        x0, y0, x1, y1 = p["act_box"]
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
        assert p["crop"].shape == (y1 - y0, x1 - x0, 1) and p["crop"].dtype == np.uint8
        assert np.array_equal(p["image"][..., 0], imgs[i])
        assert p["similarity_map"].shape == (6, 6)
        assert len(p["rf_box"]) == 4
    # After the push each prototype's min distance on its source image is (numerically) zero.
    with torch.no_grad():
        md = m.explain(x)["min_distances"]
    for j, p in enumerate(prov):
        assert md[ids.index(p["source"]), j] < 1e-4
    js = provenance_to_json(prov)
    assert "crop" not in js[0] and isinstance(js[0]["similarity_map"], list)


def test_push_only_onto_allowed_positions_and_away_from_featureless_inputs(fer_dir):
    from engine.models import null_inputs, similarity

    torch.manual_seed(1)
    imgs, y, ids = _fer_batch(fer_dir)
    spec = _spec("protopnet", prototypes_per_class=2, proto_dim=16)
    m = build_model(spec)
    x = to_input(imgs, spec)
    batches = [(x[:5], y[:5], ids[:5]), (x[5:], y[5:], ids[5:])]
    asked = []

    def centre_only(src, image, h, w):
        asked.append(src)
        mask = np.zeros((h, w), bool)
        mask[2:4, 2:4] = True
        return mask

    prov = push_prototypes(m, batches, allowed=centre_only)
    assert asked and all(2 <= p["position"][0] < 4 and 2 <= p["position"][1] < 4 for p in prov)
    assert all(p["on_allowed"] for p in prov)
    # With featureless inputs: every prototype's similarity to them is recorded and, where a candidate
    # allowed it, below the threshold; prototypes stay exact copies of own-class features.
    m2 = build_model(spec)
    nulls = null_inputs(x)
    prov2 = push_prototypes(m2, batches, null_x=nulls, candidates=4)
    m2.eval()
    with torch.no_grad():
        zn = m2.features(nulls)
        z = torch.cat([m2.features(b[0]) for b in batches])
    for j, p in enumerate(prov2):
        s_null = similarity(((zn - m2.prototype_vectors[j][None]) ** 2).sum(1)).max()
        assert float(s_null) == pytest.approx(p["null_similarity"], abs=1e-3)
        if not p["featureless"]:
            assert p["null_similarity"] < p["featureless_threshold"]
        h, w = p["position"]
        assert torch.equal(z[ids.index(p["source"]), :, h, w], m2.prototype_vectors[j, :, 0, 0])


def test_push_cancel_leaves_prototypes_unchanged():
    spec = _spec("protopnet", prototypes_per_class=1, proto_dim=8)
    m = build_model(spec)
    before = m.prototype_vectors.detach().clone()
    tok = CancelToken()
    tok.cancel()
    with pytest.raises(Cancelled):
        push_prototypes(m, [(torch.randn(2, 1, 48, 48), torch.tensor([0, 1]), ["a", "b"])], cancel=tok)
    assert torch.equal(m.prototype_vectors, before)


def test_percentile_box_covers_the_peak():
    sim = np.zeros((6, 6), np.float32)
    sim[1, 4] = 5.0
    (x0, y0, x1, y1), up = percentile_box(sim, 48)
    assert up.shape == (48, 48)
    # cell (h=1, w=4) covers rows 8..16, columns 32..40
    assert 28 <= x0 < 36 < x1 <= 44 and 4 <= y0 < 12 < y1 <= 20
    assert ((x1 - x0) * (y1 - y0)) <= 0.1 * 48 * 48


# ---------------------------------------------------------------- PatchSAE


def test_patchsae_training_steps_keep_unit_decoder_rows():
    torch.manual_seed(2)
    m = build_model(_spec("patchsae", n_latents=64))
    assert isinstance(m, PatchSAEModel)
    assert not any(p.requires_grad for p in m.backbone.parameters())
    m.train()
    assert not m.backbone.training  # frozen BatchNorm statistics
    x = torch.randn(8, 1, 48, 48)
    with torch.no_grad():
        tokens = m.tokens(x).reshape(-1, 256)
    m.sae.init_b_dec(tokens, method="mean")
    torch.testing.assert_close(m.sae.b_dec.detach(), tokens.mean(0))
    opt = torch.optim.Adam(m.sae.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        out = sae_loss(m.sae, tokens, l1=8e-5)
        assert (out["latents"] >= 0).all()
        opt.zero_grad()
        out["total"].backward()
        m.sae.remove_parallel_grad()
        par = (m.sae.W_dec.grad * m.sae.W_dec).sum(1)
        assert par.abs().max() < 1e-5
        opt.step()
        m.sae.normalize_decoder()
        norms = m.sae.W_dec.norm(dim=1)
        assert (norms - 1).abs().max() <= 1e-6
        losses.append(out["total"].item())
    assert losses[-1] < losses[0]


def test_sae_loss_formula():
    torch.manual_seed(3)
    m = build_model(_spec("patchsae", n_latents=16)).sae
    x = torch.randn(5, 256)
    out = sae_loss(m, x, l1=0.5)
    x_hat, f = m(x)
    mse = ((x_hat - x) ** 2 / x.norm(dim=1, keepdim=True)).mean()
    torch.testing.assert_close(out["total"], mse + 0.5 * f.abs().sum(1).mean())


def test_geometric_median_init_resists_outliers():
    sae = build_model(_spec("patchsae", n_latents=8)).sae
    pts = torch.zeros(11, 256)
    pts[:, 0] = torch.tensor([-1.0, -0.5, 0, 0.5, 1, 0.1, -0.1, 0.2, -0.2, 0, 1000.0])
    sae.init_b_dec(pts, method="median")
    assert abs(sae.b_dec[0].item()) < 0.2  # the mean would be ≈ 91


def test_patchsae_explain_decomposes_logits():
    m = build_model(_spec("patchsae", n_latents=32)).eval()
    with torch.no_grad():
        m.head.bias.normal_()
        m.sae.b_enc.fill_(0.1)  # so some latents fire on random weights
    x = torch.randn(3, 1, 48, 48, requires_grad=True)
    e = m.explain(x)
    assert e["latent_maps"].shape == (3, 32, 6, 6) and e["latents"].shape == (3, 32)
    assert (e["latent_maps"] >= 0).all() and (e["latents"] > 0).any()
    torch.testing.assert_close(e["latent_maps"].mean((2, 3)), e["latents"])
    torch.testing.assert_close(e["contributions"].sum(-1) + e["bias"], e["logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(m(x), e["logits"])
    m(x)[:, 0].sum().backward()
    assert x.grad.abs().sum() > 0
    assert _no_hooks(m)


def test_latent_references_keep_running_top():
    refs = LatentReferences(top=2)
    g1 = torch.tensor([[0.1, 0.0], [0.5, 0.0], [0.3, 2.0]])
    maps = torch.arange(3 * 2 * 2 * 2, dtype=torch.float32).view(3, 2, 2, 2)
    refs.update(g1, ["a", "b", "c"], maps)
    refs.update(torch.tensor([[0.4, 0.0], [0.05, 1.0]]), ["d", "e"])
    r0 = refs.references(0)
    assert [r["source"] for r in r0] == ["b", "d"]
    assert [r["source"] for r in refs.references(1)] == ["c", "e"]
    assert refs.references(1)[0]["map"] == maps[2, 1].tolist() and refs.references(1)[0]["peak"] == [1, 1]
    js = refs.to_json()
    assert js["n_frames"] == 5
    assert refs.patches() == {}  # no images given: no patches

    # With the model inputs, each reference keeps the patch where its latent fires most.
    from engine.models.protopnet import percentile_box

    withimg = LatentReferences(top=2)
    images = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 1), dtype=np.uint8)
    withimg.update(g1, ["a", "b", "c"], maps, images)
    patches = withimg.patches()
    assert set(patches) == {(0, 0), (0, 1), (1, 0)}  # latent 0: b then c; latent 1: c only
    (x0, y0, x1, y1), _ = percentile_box(maps[1, 0].numpy(), 8)
    np.testing.assert_array_equal(patches[(0, 0)], images[1, y0:y1, x0:x1])
    assert js["latents"][1]["frequency"] == pytest.approx(2 / 5)
    assert js["latents"][0]["mean_activation"] == pytest.approx((0.1 + 0.5 + 0.3 + 0.4 + 0.05) / 5)


# ---------------------------------------------------------------- baseline


def test_cnn_baseline():
    m = build_model(_spec("cnn")).eval()
    x = torch.randn(2, 1, 48, 48)
    e = m.explain(x)
    torch.testing.assert_close(e["logits"], m(x))
    torch.testing.assert_close(m.head(e["features"].mean((2, 3))), e["logits"])
    assert m.target_layer() is m.backbone.body[-1]
