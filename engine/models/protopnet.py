"""ProtoPNet ("this looks like that", Chen et al. 2019) exactly as docs METHODS.md §1 defines it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.models.base import FrameModel
from engine.models.spec import ModelSpec, from_input

log = logging.getLogger(__name__)

SIM_EPS = 1e-4


def similarity(d: torch.Tensor) -> torch.Tensor:
    """s = log((d + 1) / (d + 1e-4)): large when the distance is small."""
    return torch.log((d + 1) / (d + SIM_EPS))


class ProtoPNet(FrameModel):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        c, d, k, n_cls = self.backbone.out_channels, spec.proto_dim, spec.n_prototypes, spec.n_classes
        self.add_on = nn.Sequential(nn.Conv2d(c, d, 1), nn.ReLU(), nn.Conv2d(d, d, 1), nn.Sigmoid())
        for m in self.add_on.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.prototype_vectors = nn.Parameter(torch.rand(k, d, 1, 1))
        # Derived from the spec, so not saved: prototype j belongs to class floor(j / (K / C)).
        identity = torch.zeros(k, n_cls)
        identity[torch.arange(k), torch.arange(k) // spec.prototypes_per_class] = 1
        self.register_buffer("prototype_class_identity", identity, persistent=False)
        self.distance_relu = nn.ReLU()
        self.last_layer = nn.Linear(k, n_cls, bias=False)
        self.set_last_layer_incorrect_connection(-0.5)

    @property
    def prototype_classes(self) -> torch.Tensor:
        return self.prototype_class_identity.argmax(1)

    def set_last_layer_incorrect_connection(self, strength: float = -0.5) -> None:
        with torch.no_grad():
            own = self.prototype_class_identity.t()
            self.last_layer.weight.copy_(own + strength * (1 - own))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """z = add-on(backbone(x)): N×D×h×w, the space the prototypes live in."""
        return self.add_on(self.backbone(x))

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared L2 distance of every prototype to every position: N×K×h×w."""
        p = self.prototype_vectors
        z2 = (z * z).sum(1, keepdim=True)
        zp = F.conv2d(z, p)
        p2 = (p * p).sum((1, 2, 3)).view(1, -1, 1, 1)
        return self.distance_relu(z2 - 2 * zp + p2)

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits plus the min distances the losses need (one pass)."""
        d = self.distances(self.features(x))
        min_d = d.flatten(2).min(-1).values
        return {"logits": self.last_layer(similarity(min_d)), "min_distances": min_d}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_train(x)["logits"]

    def explain(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        d = self.distances(self.features(x))
        min_d = d.flatten(2).min(-1).values
        s = similarity(min_d)
        w = self.last_layer.weight
        return {
            "logits": self.last_layer(s),
            "similarities": s,
            "sim_maps": similarity(d),
            "contributions": w.unsqueeze(0) * s.unsqueeze(1),
            "min_distances": min_d,
        }


@dataclass
class ProtoPNetLossWeights:
    """Coefficients of CE + clst·Clst − sep·Sep + l1·L1 (defaults from the reference)."""

    ce: float = 1.0
    clst: float = 0.8
    sep: float = 0.08
    l1: float = 1e-4


def protopnet_loss(model: ProtoPNet, out: Mapping[str, torch.Tensor], y: torch.Tensor,
                   weights: ProtoPNetLossWeights | None = None) -> dict[str, torch.Tensor]:
    """Losses from ``out`` (``model.forward_train(x)`` or ``model.explain(x)``) and labels ``y``.

    Clst: mean over samples of the smallest distance to a prototype of the sample's class; Sep: the
    same over other-class prototypes; L1 on the last-layer weights that connect to other classes.
    """
    w = weights or ProtoPNetLossWeights()
    min_d = out["min_distances"]
    own = model.prototype_class_identity[:, y].t().bool()  # N×K
    inf = torch.finfo(min_d.dtype).max
    clst = min_d.masked_fill(~own, inf).min(1).values.mean()
    sep = min_d.masked_fill(own, inf).min(1).values.mean()
    l1 = (model.last_layer.weight * (1 - model.prototype_class_identity.t())).abs().sum()
    ce = F.cross_entropy(out["logits"], y)
    total = w.ce * ce + w.clst * clst - w.sep * sep + w.l1 * l1
    return {"ce": ce, "clst": clst, "sep": sep, "l1": l1, "total": total}


def null_inputs(x: torch.Tensor) -> torch.Tensor:
    """Featureless versions of a normalised batch (docs/EXPLANATIONS.md §5): one flat image at the
    normalisation mean (0, the occlusion fill), and up to three each of heavy blurs (box filter a third
    of the side, twice) and of noise, ≈ N/8 + 1 images in all."""
    n, c, s, _ = x.shape
    m = max(1, min(3, n // 16))
    k = max(3, (s // 3) | 1)
    b = x[:m]
    for _ in range(2):
        b = F.avg_pool2d(b, k, stride=1, padding=k // 2, count_include_pad=False)
    return torch.cat([x.new_zeros(1, c, s, s), b, torch.randn(m, c, s, s, device=x.device, dtype=x.dtype)])


def null_input_loss(model: ProtoPNet, out: Mapping[str, torch.Tensor], x_null: torch.Tensor,
                    margin: float = 1.0, real_top: torch.Tensor | None = None) -> torch.Tensor:
    """Featureless inputs carry no class signal: CE against the uniform distribution (minus its
    minimum, log C) plus a hinge on each null input's top prototype similarity above
    (median over the real batch of its top similarity) − margin. ``out`` is the real batch's output;
    ``real_top``, that median when the real batch is spread over processes (engine.distributed)."""
    o = model.forward_train(x_null)
    logp = F.log_softmax(o["logits"].float(), 1)
    ce_uniform = -logp.mean(1).mean() - math.log(logp.shape[1])
    if real_top is None:
        real_top = similarity(out["min_distances"].detach()).max(1).values.median()
    null_top = similarity(o["min_distances"]).max(1).values
    return ce_uniform + F.relu(null_top - (real_top - margin)).mean()


def percentile_box(sim_map: torch.Tensor | np.ndarray, input_size: int,
                   percentile: float = 95.0) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Bicubically upsample an h×w similarity map to the input and box the pixels at or above the
    percentile. Returns ((x0, y0, x1, y1) exclusive, upsampled map)."""
    m = torch.as_tensor(np.asarray(sim_map, dtype=np.float32))[None, None]
    up = F.interpolate(m, size=(input_size, input_size), mode="bicubic", align_corners=False)[0, 0].numpy()
    mask = up >= np.percentile(up, percentile)
    ys, xs = np.nonzero(mask)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), up


PositionMask = Callable[[Any, np.ndarray, int, int], np.ndarray]


def push_prototypes(model: ProtoPNet, batches: Iterable[tuple[torch.Tensor, torch.Tensor, Sequence[Any]]],
                    progress: ProgressFn = no_progress, cancel: CancelToken | None = None,
                    total: int | None = None, allowed: PositionMask | None = None,
                    null_x: torch.Tensor | None = None, null_margin: float = 1.0, candidates: int = 16,
                    reference: int = 1024, merge: Any = None) -> list[dict[str, Any]]:
    """Project every prototype onto the nearest training feature vector of its own class.

    ``batches`` yields (x normalised N×C×S×S, y N, ids: one JSON-able id per image, e.g.
    ``{"source": path, "frame": k}``). Prototypes are replaced only after the whole pass, so a cancelled
    push leaves the model unchanged. Returns one provenance dict per prototype: ``prototype``,
    ``class``, ``source`` (the id, or None when its class had no images), ``distance``, ``position``
    (h, w), ``rf_box`` and ``act_box`` (x0, y0, x1, y1 input pixels, exclusive), ``similarity_map``
    (h×w float32), ``crop`` (uint8 of the act_box region) and ``image`` (the whole uint8 input).

    Two restrictions, both docs/EXPLANATIONS.md §4 (each prototype is then the nearest patch that
    passes them):
    - ``allowed(id, image, h, w)`` → h×w bool: the positions a prototype may be pushed onto (e.g.
      :func:`engine.explain.onface.face_cells`: on the face). It is asked only about images that could
      improve some prototype. A prototype with no allowed position anywhere falls back to its nearest
      position of any kind (``"on_allowed": False``).
    - ``merge``: under data-parallel training each rank scans its contiguous shard of the training set
      and ``merge`` (engine.distributed.PushMerge) combines the ranks' candidates, so every rank picks what
      one pass over the whole set picks.
    - ``null_x``, featureless inputs (:func:`null_inputs`): of each prototype's ``candidates`` nearest
      allowed patches (one per image) the nearest whose similarity to every featureless input stays
      below M − ``null_margin`` is taken, M being the median over the first ``reference`` training images
      of their top similarity to the nearest candidates. ``"null_similarity"`` records it; a prototype
      with no such candidate keeps the least featureless one (``"featureless": True``).
    """
    k = model.prototype_vectors.shape[0]
    dim = model.prototype_vectors.shape[1]
    classes = model.prototype_classes
    nc = max(1, candidates) if null_x is not None else 1
    inf = float("inf")
    cand_d = torch.full((k, nc), inf)
    cand_z = model.prototype_vectors.detach().cpu().view(k, 1, dim).repeat(1, nc, 1).clone()
    cand: list[list[dict[str, Any] | None]] = [[None] * nc for _ in range(k)]
    # Nearest position of any kind, the fallback for prototypes with no allowed position.
    any_d = torch.full((k,), inf)
    any_best: list[tuple[torch.Tensor, dict[str, Any]] | None] = [None] * k
    ref_z: list[torch.Tensor] = []
    n_ref = 0
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)  # type: ignore[arg-type]
    was_training = model.training
    model.eval()

    def record(i: int, j: int, pos: int, w: int, d: torch.Tensor, ids: Sequence[Any], images: np.ndarray) -> dict:
        return {"id": ids[i], "position": (pos // w, pos % w), "distances": d[i, j].cpu(), "image": images[i].copy()}

    try:
        with torch.no_grad():
            for bi, (x, y, ids) in enumerate(batches):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                x = x.to(model.prototype_vectors.device)
                y = torch.as_tensor(y).to(x.device)
                z = model.features(x)
                d = model.distances(z)  # N×K×h×w
                h, w = d.shape[2:]
                if null_x is not None and n_ref < reference:
                    ref_z.append(z[: reference - n_ref].cpu())
                    n_ref += ref_z[-1].shape[0]
                # Mask images of other classes so each prototype only sees its own class.
                own = classes.unsqueeze(0) == y.unsqueeze(1)  # N×K
                dm = d.masked_fill(~own[:, :, None, None], inf)
                images = None
                if allowed is not None:
                    vals, idx = dm.permute(1, 0, 2, 3).reshape(k, -1).min(1)
                    for j in torch.nonzero(vals.cpu() < any_d).flatten().tolist():
                        i, pos = divmod(int(idx[j]), h * w)
                        any_d[j] = vals[j].cpu()
                        images = from_input(x, model.spec) if images is None else images
                        any_best[j] = (z[i, :, pos // w, pos % w].cpu().clone(), record(i, j, pos, w, d, ids, images))
                    # Only images that could beat some prototype's kept candidates are asked.
                    per_img = dm.flatten(2).min(-1).values.cpu()  # N×K
                    ask = torch.nonzero((per_img < cand_d[:, -1].unsqueeze(0)).any(1)).flatten().tolist()
                    mask = torch.zeros(d.shape[0], h, w, dtype=torch.bool)
                    if ask:
                        images = from_input(x, model.spec) if images is None else images
                    for i in ask:
                        mask[i] = torch.as_tensor(np.asarray(allowed(ids[i], images[i], h, w), dtype=bool))
                    dm = dm.masked_fill(~mask[:, None].to(dm.device), inf)
                v, p = dm.flatten(2).min(-1)  # N×K: each image's nearest (allowed) position per prototype
                v, p = v.cpu(), p.cpu()
                better = v < cand_d[:, -1].unsqueeze(0)
                for j in torch.nonzero(better.any(0)).flatten().tolist():
                    ii = torch.nonzero(better[:, j]).flatten()
                    allv = torch.cat([cand_d[j], v[ii, j]])
                    order = torch.argsort(allv, stable=True)[:nc].tolist()
                    new_d, new_z, new_rec = [], [], []
                    for o in order:
                        if o < nc:
                            new_d.append(cand_d[j, o])
                            new_z.append(cand_z[j, o])
                            new_rec.append(cand[j][o])
                        else:
                            i = int(ii[o - nc])
                            pos = int(p[i, j])
                            images = from_input(x, model.spec) if images is None else images
                            new_d.append(v[i, j])
                            new_z.append(z[i, :, pos // w, pos % w].cpu())
                            new_rec.append(record(i, j, pos, w, d, ids, images))
                    cand_d[j] = torch.stack(new_d)
                    cand_z[j] = torch.stack(new_z)
                    cand[j] = new_rec
                progress(bi + 1, total or 0, "pushing prototypes")
            if merge is not None:
                cand_d, cand_z, cand, any_d, any_best, ref_z = merge.candidates(
                    cand_d, cand_z, cand, any_d, any_best, ref_z, reference)
            chosen = [0] * k
            null_sim: torch.Tensor | None = None
            threshold = None
            featureless = [False] * k
            if null_x is not None:
                zn = model.features(null_x.to(model.prototype_vectors.device)).cpu()
                zn = zn.permute(0, 2, 3, 1).reshape(-1, dim)                            # M×D
                null_sim = similarity(torch.cdist(cand_z.view(-1, dim), zn).pow(2).min(1).values).view(k, nc)
                if ref_z:
                    ref = torch.cat(ref_z)                                              # R×D×h×w
                    rf_ = ref.permute(0, 2, 3, 1).reshape(ref.shape[0], -1, dim)         # R×hw×D
                    dist = torch.cdist(rf_, cand_z[:, 0].unsqueeze(0).expand(ref.shape[0], k, dim)).pow(2)
                    threshold = float(similarity(dist.min(1).values).max(1).values.median()) - null_margin
                for j in range(k):
                    ok = [c for c in range(nc) if cand[j][c] is not None
                          and (threshold is None or float(null_sim[j, c]) < threshold)]
                    if ok:
                        chosen[j] = ok[0]
                    elif cand[j][0] is not None:
                        have = [c for c in range(nc) if cand[j][c] is not None]
                        chosen[j] = min(have, key=lambda c: float(null_sim[j, c]))
                        featureless[j] = True
                        log.warning("push: every candidate of prototype %d resembles a featureless input "
                                    "(similarity ≥ %.2f); the least featureless one is used", j, threshold)
    finally:
        model.train(was_training)
    best_z = model.prototype_vectors.detach().clone()
    best_d = torch.full((k,), inf)
    best: list[dict[str, Any] | None] = [None] * k
    for j in range(k):
        c = chosen[j]
        if cand[j][c] is not None:
            best[j], best_d[j] = cand[j][c], cand_d[j, c]
            best_z[j] = cand_z[j, c].view(-1, 1, 1).to(best_z.device)
    on_allowed = [b is not None for b in best]
    if allowed is not None:
        for j in range(k):
            if best[j] is None and any_best[j] is not None:
                log.warning("push: prototype %d found no allowed position; nearest position used", j)
                zj, best[j] = any_best[j]
                best_z[j] = zj.view(-1, 1, 1).to(best_z.device)
                best_d[j] = any_d[j]
    if merge is not None:
        size = model.spec.input_size
        best = merge.fill(best, (h, w), (size, size, model.spec.in_channels))
    with torch.no_grad():
        model.prototype_vectors.copy_(best_z)
    rf = model.receptive_field
    size = model.spec.input_size
    names = model.spec.classes
    out: list[dict[str, Any]] = []
    for j in range(k):
        c = int(classes[j])
        b = best[j]
        if b is None:
            log.warning("push: no training image of class %s; prototype %d left unchanged", names[c], j)
            out.append({"prototype": j, "class": names[c], "source": None})
            continue
        sim = similarity(b["distances"]).numpy().astype(np.float32)
        act_box, _ = percentile_box(sim, size)
        x0, y0, x1, y1 = act_box
        ph, pw = b["position"]
        extra: dict[str, Any] = {}
        if allowed is not None:
            extra["on_allowed"] = on_allowed[j]
        if null_sim is not None and on_allowed[j]:
            extra.update(null_similarity=float(null_sim[j, chosen[j]]), featureless=featureless[j],
                         featureless_threshold=threshold, candidate_rank=chosen[j])
        out.append({
            "prototype": j,
            "class": names[c],
            "source": b["id"],
            "distance": float(best_d[j]),
            "position": [ph, pw],
            **extra,
            "rf_box": list(rf.box(ph, pw, size)),
            "act_box": [x0, y0, x1, y1],
            "similarity_map": sim,
            "crop": b["image"][y0:y1, x0:x1].copy(),
            "image": b["image"],
        })
    return out


def provenance_to_json(prov: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSON-able part of :func:`push_prototypes`' result (images go to PNG files instead)."""
    res = []
    for p in prov:
        q = {k: v for k, v in p.items() if k not in ("crop", "image")}
        if isinstance(q.get("similarity_map"), np.ndarray):
            q["similarity_map"] = np.round(q["similarity_map"], 6).tolist()
        res.append(q)
    return res
