"""engine.checkpoint: safetensors + model.json round trip and refusal of damaged or foreign files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from engine.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_json,
    save_checkpoint,
)
from engine.models import ModelSpec, build_model


def _model(arch: str, backbone: str = "small"):
    torch.manual_seed(0)
    spec = ModelSpec(arch=arch, backbone=backbone, classes=["neg", "neu", "pos"], label_setting="V1",
                     prototypes_per_class=2, proto_dim=16, n_latents=32)
    m = build_model(spec)
    with torch.no_grad():  # make BatchNorm statistics non-trivial so their saving matters
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _saved(tmp_path: Path, arch: str = "protopnet") -> tuple[Path, torch.nn.Module]:
    m = _model(arch)
    folder = save_checkpoint(tmp_path / "ckpt", m, {"metrics": {"acc": 0.5}}, None)
    return folder, m


def _rewrite_json(folder: Path, edit) -> None:
    doc = json.loads((folder / "model.json").read_text())
    edit(doc)
    (folder / "model.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("arch,backbone", [("protopnet", "small"), ("patchsae", "small"), ("cnn", "small"),
                                           ("cnn", "resnet18")])
def test_round_trip_gives_identical_logits(tmp_path, arch, backbone):
    m = _model(arch, backbone)
    x = torch.randn(3, 1, 48, 48)
    crops = {0: np.full((10, 12, 1), 200, np.uint8), 3: np.zeros((5, 5), np.uint8)}
    meta = {"metrics": {"acc": 0.61}, "provenance": [{"prototype": 0, "source": {"source": "a.jpg", "frame": 0}}]}
    folder = save_checkpoint(tmp_path / "ck", m, meta, crops)
    loaded, meta2 = load_checkpoint(folder)
    assert type(loaded) is type(m) and loaded.spec == m.spec and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    assert meta2["metrics"] == meta["metrics"] and meta2["provenance"] == meta["provenance"]
    assert meta2["checkpoint"]["format_version"] == FORMAT_VERSION
    doc = json.loads((folder / "model.json").read_text())
    assert doc["weights"]["tensors"] == {k: list(v.shape) for k, v in m.state_dict().items()}
    assert doc["spec"]["preprocess"]["size"] == 48
    png = Image.open(folder / "prototypes" / "0.png")
    assert png.size == (12, 10) and np.asarray(png).max() == 200
    assert (folder / "prototypes" / "3.png").is_file()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_half_precision_round_trip(tmp_path):
    m = _model("protopnet")
    folder = save_checkpoint(tmp_path / "h", m, {}, None, half=True)
    tensors = load_file(folder / "model.safetensors")
    assert tensors["prototype_vectors"].dtype == torch.float16
    assert all(t.is_contiguous() for t in tensors.values())
    loaded, meta = load_checkpoint(folder)
    assert meta["checkpoint"]["dtype"] == "float16"
    assert loaded.prototype_vectors.dtype == torch.float32
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m(x), atol=5e-2, rtol=5e-2)


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"model\.json not found.*choose the folder"):
        load_checkpoint(tmp_path)
    folder, _ = _saved(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors not found"):
        load_checkpoint(folder)


def test_truncated_weights_refused(tmp_path):
    folder, _ = _saved(tmp_path)
    w = folder / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors cannot be read as safetensors.*truncated"):
        load_checkpoint(folder)


def test_pickle_renamed_to_safetensors_refused_without_unpickling(tmp_path):
    folder, m = _saved(tmp_path)

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("the checkpoint loader unpickled a file",))

    with open(folder / "model.safetensors", "wb") as f:
        pickle.dump({"weights": Boom(), **{k: v.numpy() for k, v in m.state_dict().items()}}, f)
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*pickle.*never loads"):
        load_checkpoint(folder)


def test_edited_sha_refused(tmp_path):
    folder, _ = _saved(tmp_path)
    _rewrite_json(folder, lambda d: d["weights"].__setitem__("sha256", "0" * 64))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match the sha256.*modified"):
        load_checkpoint(folder)


def test_tampered_weights_refused(tmp_path):
    folder, _ = _saved(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["last_layer.weight"] = tensors["last_layer.weight"] + 1
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(folder)


def _replace_weights_consistently(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A self-consistent but wrong checkpoint: weights rewritten and the sha/listing updated to match."""
    import hashlib

    save_file(tensors, folder / "model.safetensors")
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    def edit(d):
        d["weights"]["sha256"] = sha
        d["weights"]["tensors"] = {k: list(v.shape) for k, v in tensors.items()}

    _rewrite_json(folder, edit)


def test_wrong_shape_refused(tmp_path):
    folder, _ = _saved(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["prototype_vectors"] = torch.rand(7, 16, 1, 1)
    _replace_weights_consistently(folder, tensors)
    with pytest.raises(CheckpointError, match=r"tensor prototype_vectors has shape \[7, 16, 1, 1\].*needs \[6, 16"):
        load_checkpoint(folder)


def test_missing_and_extra_tensors_refused(tmp_path):
    folder, _ = _saved(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["last_layer.weight"]
    tensors["evil.extra"] = torch.zeros(1)
    _replace_weights_consistently(folder, tensors)
    with pytest.raises(CheckpointError, match=r"missing tensors \['last_layer.weight'\].*unexpected \['evil.extra'\]"):
        load_checkpoint(folder)


def test_json_listing_disagreeing_with_file_refused(tmp_path):
    folder, _ = _saved(tmp_path)
    _rewrite_json(folder, lambda d: d["weights"]["tensors"].__setitem__("prototype_vectors", [1, 2, 3, 4]))
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_checkpoint(folder)


def test_unknown_arch_and_newer_format_refused(tmp_path):
    folder, _ = _saved(tmp_path)
    _rewrite_json(folder, lambda d: d["spec"].__setitem__("arch", "videomae"))
    with pytest.raises(CheckpointError, match=r"unknown model architecture 'videomae'"):
        load_checkpoint(folder)
    folder2, _ = _saved(tmp_path / "b")
    _rewrite_json(folder2, lambda d: d.__setitem__("format_version", FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=r"newer VidXAI.*update VidXAI"):
        read_checkpoint_json(folder2)
    (folder2 / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"model\.json is damaged"):
        load_checkpoint(folder2)


def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path):
    folder, m = _saved(tmp_path)
    other = _model("protopnet")
    with torch.no_grad():
        other.last_layer.weight.mul_(3)
    with pytest.raises(ValueError, match="not plain JSON"):
        save_checkpoint(folder, other, {"bad": object()}, {0: np.zeros((4, 4), np.uint8)})
    loaded, _ = load_checkpoint(folder)
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    assert not (folder / "prototypes").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_latent_patches_round_trip_and_tampering(tmp_path):
    from engine.checkpoint import read_latent_patches

    m = _model("patchsae")
    rng = np.random.default_rng(0)
    patches = {(j, r): rng.integers(0, 255, (10 + r, 9, 1), dtype=np.uint8) for j in (0, 5, 31) for r in range(3)}
    folder = save_checkpoint(tmp_path / "sae", m, {}, None, latent_patches=patches)
    back = read_latent_patches(folder)
    assert sorted(back) == [0, 5, 31] and all(len(v) == 3 for v in back.values())
    for (j, r), a in patches.items():
        np.testing.assert_array_equal(back[j][r], a)  # best first: rank r is position r
    assert read_latent_patches(save_checkpoint(tmp_path / "plain", m, {}, None)) == {}
    # saving again without patches removes the old file with its record
    save_checkpoint(folder, m, {}, None)
    assert not (folder / "latent_patches.safetensors").exists() and read_latent_patches(folder) == {}
    save_checkpoint(folder, m, {}, None, latent_patches=patches)
    f = folder / "latent_patches.safetensors"
    t = load_file(str(f))
    t["0.0"] = torch.zeros_like(t["0.0"])
    save_file(t, str(f))
    with pytest.raises(CheckpointError, match="sha256"):
        read_latent_patches(folder)
    f.unlink()
    with pytest.raises(CheckpointError, match="missing"):
        read_latent_patches(folder)
