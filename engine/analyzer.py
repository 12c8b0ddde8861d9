"""One loaded model, scoring frames: the shared core of `vidxai analyze` and the GUI's live re-scoring.

The same code path turns a frame + face into the model's input (engine.preprocess with the policy the
model was trained with, from model.json), runs it, and condenses the model's intrinsic explanation
into per-frame arrays small enough to store for every frame of a long video.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.checkpoint import load_checkpoint, resolve_model_dir
from engine.faces import FaceResult
from engine.models import FrameModel, to_input
from engine.preprocess import InputMapping, PreprocessConfig, Preprocessed, preprocess

log = logging.getLogger(__name__)

POST_HOC = ("lrp", "gradcam", "ig", "gxi", "prp")   # prp: ProtoPNet only
# Which evidence map (engine.explain.evidence, docs/EXPLANATIONS.md) is a model's "intrinsic" map: the most
# faithful of the candidates measured by bench/explain_quality.py.
INTRINSIC_MAP = {"protopnet": "proto-occ", "patchsae": "latent-sum", "timesformer": "rollout"}
TOP_LATENTS = 16


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but torch sees no GPU here; use --device cpu")
    return torch.device(device)


@dataclass
class FrameScore:
    """The model's reading of one frame."""

    logits: np.ndarray                     # (C,)
    probs: np.ndarray                      # (C,)
    input_image: np.ndarray                # S×S×C uint8: exactly what the model saw
    mapping: InputMapping                  # model input → frame coordinates
    explain: dict[str, np.ndarray] = field(default_factory=dict)   # per-frame arrays (see condense)

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))


def condense(model: FrameModel, out: dict[str, torch.Tensor], x: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Per-frame intrinsic arrays for a batch of `model.explain` output.

    Always `maps` (N×h×w): the evidence for the predicted class over the feature grid, non-negative —
    ProtoPNet: INTRINSIC_MAP's evidence map (proto-occ: the prototypes' class evidence Σ_j max(W_ĉj, 0)·s_j
    that hiding each cell's patch takes away, needs the input ``x``; docs/EXPLANATIONS.md §1); PatchSAE: Σ_j max(W_ĉj, 0)·f_j; CNN: the class
    activation map (exact for global-average-pool + linear). Plus the model's own terms: ProtoPNet's
    similarities and similarity maps, PatchSAE's top latents (index, value g_j, map f_j).
    """
    logits = out["logits"]
    pred = logits.argmax(1)
    arch = model.spec.arch
    res: dict[str, np.ndarray] = {}
    if arch == "protopnet":
        sim_maps = out["sim_maps"]
        name = INTRINSIC_MAP["protopnet"]
        if name == "proto-occ" and x is None:
            raise ValueError("the proto-occ evidence map needs the model input x")
        res["maps"] = (_intrinsic_maps()[name](model, out, pred) if name != "proto-occ"
                       else _proto_occ(model, x, out, pred))
        res["similarities"] = out["similarities"].cpu().numpy()
        res["sim_maps"] = sim_maps.cpu().numpy()
    elif arch == "patchsae":
        lm = out["latent_maps"]
        res["maps"] = _intrinsic_maps()[INTRINSIC_MAP["patchsae"]](model, out, pred)
        k = min(TOP_LATENTS, out["latents"].shape[1])
        vals, idx = out["latents"].topk(k, dim=1)
        res["top_latents"] = idx.to(torch.int32).cpu().numpy()
        res["top_values"] = vals.cpu().numpy()
        res["top_maps"] = torch.gather(lm, 1, idx[:, :, None, None].expand(-1, -1, *lm.shape[2:])).cpu().numpy()
    elif arch == "timesformer":
        # A clip model reading single frames (one-frame clips): its attention rollout (min head fusion).
        from engine.explain.spacetime import relevance

        if x is None:
            raise ValueError("the rollout map needs the model input x")
        res["maps"] = relevance(model, x, INTRINSIC_MAP["timesformer"], target=pred).maps[:, 0].cpu().numpy()
    else:
        w = model.head.weight[pred]                                           # N×F
        res["maps"] = torch.einsum("nf,nfhw->nhw", w, out["features"]).clamp_min(0).cpu().numpy()
    return res


def _argmax_g1(model: FrameModel, out: dict[str, torch.Tensor], target: torch.Tensor) -> np.ndarray:
    from engine.explain import evidence

    return evidence.proto_argmax(model, out, target, spread=1.0)


def _proto_occ(model: FrameModel, x: torch.Tensor, out: dict[str, torch.Tensor], target: torch.Tensor) -> np.ndarray:
    from engine.explain import evidence

    return evidence.proto_occlusion(model, x, out, target)


def _intrinsic_maps() -> dict:
    from engine.explain import evidence

    return {"proto-sum": evidence.proto_sum, "proto-argmax": evidence.proto_argmax, "proto-argmax-g1": _argmax_g1,
            "latent-sum": evidence.latent_sum, "latent-signed": evidence.latent_signed}


def head_weights(model: FrameModel) -> tuple[np.ndarray, np.ndarray | None]:
    """The linear read-out whose terms the explanation decomposes: W (C×K or C×L or C×F) and bias."""
    layer = model.last_layer if model.spec.arch == "protopnet" else model.head
    bias = None if layer.bias is None else layer.bias.detach().cpu().numpy()
    return layer.weight.detach().cpu().numpy(), bias


class FrameAnalyzer:
    """A checkpoint loaded once, scoring frames in batches or one at a time."""

    def __init__(self, model_dir: str | Path, device: str = "cpu") -> None:
        self.device = pick_device(device)
        self.model_dir = resolve_model_dir(model_dir)
        self.model, self.meta = load_checkpoint(self.model_dir, device=str(self.device))
        # channels_last: ProtoPNet's prototype distances and the small convolutions run 2-3x faster on CPU.
        self.model = self.model.to(memory_format=torch.channels_last).eval()
        self.spec = self.model.spec
        self.classes: list[str] = list(self.spec.classes)
        self.preprocess_config = PreprocessConfig.from_json(self.spec.preprocess)

    @property
    def identity(self) -> dict:
        """What a session records about the model. ``sha256`` is that of its weights (model.json records it):
        a session analysed by one model is re-analysed, not resumed, by another."""
        return {"name": self.meta.get("name", self.model_dir.name), "path": str(self.model_dir.resolve()),
                "sha256": str((self.meta.get("checkpoint") or {}).get("sha256", "")), "arch": self.spec.arch, "backbone": self.spec.backbone,
                "label_setting": self.spec.label_setting, "preprocess": self.spec.preprocess}

    def config(self, mode: str | None = None, occlude: frozenset[str] | None = None) -> PreprocessConfig:
        """The model's preprocessing policy, with the mode or occlusion changed when asked."""
        cfg = self.preprocess_config
        if mode is not None:
            cfg = dataclasses.replace(cfg, mode=mode)
        if occlude is not None:
            cfg = dataclasses.replace(cfg, occlude=frozenset(occlude))
        return cfg

    def prepare(self, frame: np.ndarray, face: FaceResult | None,
                cfg: PreprocessConfig | None = None) -> Preprocessed | None:
        return preprocess(frame, face, cfg or self.preprocess_config)

    def tensor(self, images: np.ndarray) -> torch.Tensor:
        return to_input(images, self.spec).to(self.device).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Logits, probabilities and condensed intrinsic arrays for N model-input images (uint8)."""
        x = self.tensor(images)
        out = self.model.explain(x)
        logits = out["logits"].float()
        return logits.cpu().numpy(), F.softmax(logits, 1).cpu().numpy(), condense(self.model, out, x)

    @torch.inference_mode()
    def probs(self, images: np.ndarray) -> np.ndarray:
        return F.softmax(self.model(self.tensor(images)).float(), 1).cpu().numpy()

    def score(self, frame: np.ndarray, face: FaceResult | None,
              cfg: PreprocessConfig | None = None) -> FrameScore | None:
        """One frame as the model reads it; None when the mode needs a face and there is none."""
        pre = self.prepare(frame, face, cfg)
        if pre is None:
            return None
        logits, probs, extra = self.run(pre.image[None])
        return FrameScore(logits[0], probs[0], pre.image, pre.mapping, {k: v[0] for k, v in extra.items()})
