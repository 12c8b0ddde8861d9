"""LRP, Grad-CAM, Integrated Gradients and Top-X on small real models (METHODS §3, §4, §8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from zennit.attribution import Gradient

from engine.explain import hook_count, integrated_gradients, lrp_explain, top_x
from engine.explain.gradcam import gradcam
from engine.explain.lrp import canonizers_for, lrp, make_composite

torch.set_num_threads(1)


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    # Fresh BN layers are the identity in eval mode; random statistics make the merge non-trivial.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def seq_cnn(channels: int = 1, n_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(
        nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
            nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, n_classes),
        )
    )


def vgg_like() -> nn.Module:
    torch.manual_seed(1)
    feats = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16),
        nn.ReLU(), nn.MaxPool2d(2),
    )
    return _randomise_bn(nn.Sequential(feats, nn.Flatten(), nn.Linear(16 * 8 * 8, 4)))


def tiny_resnet() -> nn.Module:
    torch.manual_seed(2)
    return _randomise_bn(resnet18(weights=None, num_classes=3))


MODELS = {
    "seq": (seq_cnn, (1, 24, 24)),
    "vgg": (vgg_like, (3, 32, 32)),
    "resnet18": (tiny_resnet, (3, 32, 32)),
}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_canonizer_keeps_outputs(name: str) -> None:
    build, shape = MODELS[name]
    model = build().eval()
    x = torch.randn(4, *shape)
    with torch.no_grad():
        ref = model(x)
    composite = make_composite("epsilon_plus_flat", canonizers=canonizers_for(model))
    with composite.context(model) as modified, torch.no_grad():
        merged = modified(x)
        # The BN layers really were reduced to the identity, so the test is not vacuous.
        bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        assert torch.allclose(bn.weight, torch.ones_like(bn.weight))
    assert (merged - ref).abs().max().item() < 1e-5


def test_canonizer_choice() -> None:
    assert type(canonizers_for(tiny_resnet())[0]).__name__ == "ExactResNetCanonizer"
    assert type(canonizers_for(vgg_like())[0]).__name__ == "ExactMergeBatchNorm"


@pytest.mark.parametrize("name", list(MODELS))
def test_lrp_leaves_model_untouched(name: str) -> None:
    build, shape = MODELS[name]
    model = build().train()  # training mode must survive the call, and BN must not update
    x = torch.randn(3, *shape)
    before = _state(model)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    model.train()
    rel = lrp(model, x, torch.tensor([0, 1, 2]))
    assert rel.shape == (3, shape[1], shape[2]) and rel.dtype == np.float32
    assert np.isfinite(rel).all() and np.abs(rel).sum() > 0
    assert hook_count(model) == 0
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert model.training and all(m.training for m in model.modules())
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), ref, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_lrp_logits_match_model_and_targets_differ() -> None:
    model = seq_cnn().eval()
    x = torch.randn(2, 1, 24, 24)
    res = lrp_explain(model, x, 0)
    with torch.no_grad():
        assert np.allclose(res.logits, model(x).numpy(), atol=1e-5)
    other = lrp(model, x, 2)
    assert not np.allclose(res.relevance, other)


def bias_free_relu_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16, bias=False), nn.ReLU(), nn.Linear(16, 3, bias=False),
    ).eval()


def test_lrp_conserves_relevance_on_bias_free_net() -> None:
    # The "epsilon" composite with a vanishing epsilon is LRP-0. On a bias-free ReLU network the
    # output is positively homogeneous, so LRP-0 = gradient × input and Σ R = f_c(x) (Euler).
    # EpsilonPlusFlat is not used here: its epsilon absorbs relevance at dense layers by design.
    model = bias_free_relu_net()
    x = torch.randn(5, 1, 16, 16)
    target = torch.tensor([0, 1, 2, 0, 1])
    res = lrp_explain(model, x, target, composite="epsilon", epsilon=1e-9)
    f_c = res.logits[np.arange(5), target.numpy()]
    assert np.abs(f_c).min() > 1e-3  # non-trivial logits, else the check is empty
    assert np.allclose(res.relevance.sum(axis=(1, 2)), f_c, atol=1e-3, rtol=1e-3)


def test_lrp_epsilon_plus_flat_direct_zennit_agrees() -> None:
    # Our wrapper must equal a hand-written Zennit call with the same composite.
    model = vgg_like().eval()
    x = torch.randn(2, 3, 32, 32)
    comp = make_composite("epsilon_plus_flat", epsilon=0.1, canonizers=canonizers_for(model))
    with Gradient(model=model, composite=comp) as attributor:
        out, ref = attributor(x, torch.eye(4)[[1, 1]])
    # LRP is linear in the output relevance: ours starts from f_c(x), Zennit's call above from 1.
    ref = (ref * out[:, 1].view(-1, 1, 1, 1)).detach()
    assert np.allclose(lrp(model, x, 1), ref.sum(1).numpy(), atol=1e-6)


def test_gradcam_normalised_hook_free_and_localised() -> None:
    model = seq_cnn().train()
    x = torch.randn(3, 1, 24, 24)
    layer = model[4]
    maps = gradcam(model, x, [0, 1, 2], target_layer=layer)
    assert maps.shape == (3, 24, 24)
    assert maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6
    assert hook_count(model) == 0
    assert model.training
    assert all(p.grad is None for p in model.parameters())

    # A model whose only evidence is a bright blob: the CAM must peak on the blob.
    conv = nn.Conv2d(1, 2, 1, bias=False)
    conv.weight.data[:] = torch.tensor([1.0, 0.5]).view(2, 1, 1, 1)
    head = nn.Linear(2 * 16 * 16, 2, bias=False)
    head.weight.data.fill_(1.0)
    blob_model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), head)
    img = torch.zeros(1, 1, 16, 16)
    img[0, 0, 2:6, 9:13] = 1.0
    cam = gradcam(blob_model, img, 0, target_layer=conv)[0]
    assert cam[2:6, 9:13].mean() > 0.9 and cam[10:, :6].max() < 0.1


def test_gradcam_default_layer_uses_target_layer_method() -> None:
    class WithTarget(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = seq_cnn()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

        def target_layer(self) -> nn.Module:
            return self.body[0]

    model = WithTarget()
    maps = gradcam(model, torch.randn(2, 1, 24, 24), 1)
    assert maps.shape == (2, 24, 24) and hook_count(model) == 0


def test_ig_linear_is_exact() -> None:
    torch.manual_seed(4)
    lin = nn.Linear(2 * 8 * 8, 3)
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.randn(4, 2, 8, 8)
    base = torch.randn(1, 2, 8, 8)
    target = torch.tensor([0, 2, 1, 2])
    attr, delta = integrated_gradients(model, x, target, baseline=base, steps=7, reduce_channels=False)
    expected = lin.weight.detach()[target].view(4, 2, 8, 8) * (x - base)
    assert np.allclose(attr, expected.numpy(), atol=1e-5)
    assert np.abs(delta).max() < 1e-4
    summed, _ = integrated_gradients(model, x, target, baseline=base, steps=7)
    assert np.allclose(summed, expected.sum(1).numpy(), atol=1e-5)


def test_ig_completeness_on_cnn() -> None:
    model = seq_cnn().eval()
    x = torch.randn(2, 1, 24, 24)
    attr, delta = integrated_gradients(model, x, 1, steps=300, internal_batch_size=300)
    with torch.no_grad():
        diff = (model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]).numpy()
    total = attr.sum(axis=(1, 2))
    assert np.allclose(delta, total - diff, atol=1e-4)  # Captum's delta is the completeness error
    assert np.all(np.abs(total - diff) <= 0.02 * np.abs(diff) + 1e-3)
    assert hook_count(model) == 0


def test_top_x_keeps_fewest_features() -> None:
    rng = np.random.default_rng(0)
    rel = rng.normal(size=(20, 20))
    for frac in (0.1, 0.25, 0.5, 1.0):
        out = top_x(rel, frac)
        mass = np.clip(rel, 0, None).sum()
        kept = out[out != 0]
        assert kept.sum() >= frac * mass - 1e-9
        assert (kept > 0).all()  # negatives never kept
        if frac < 1.0:
            assert kept.sum() - kept.min() < frac * mass  # dropping the smallest falls short
        dropped_pos = rel[(out == 0) & (rel > 0)]
        if dropped_pos.size:
            assert kept.min() >= dropped_pos.max()
        assert np.array_equal(out[out != 0], rel[out != 0])
    assert np.count_nonzero(top_x(rel, 1.0)) == np.count_nonzero(rel > 0)
    assert not top_x(-np.abs(rel)).any()
    with pytest.raises(ValueError):
        top_x(rel, 25)
