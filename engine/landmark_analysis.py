"""Analysis of a video with a landmark-sequence model (ARCHITECTURE "three kinds of model, one contract").

The video is ingested as for any model (``engine.pipeline.ingest``: the same tracker and person); frame t
is scored by the window of the P frames ending at t (causal; frames without P consecutive faces are not
scored), with the detectors' σ(logit) as the class scores (engine.models.landmark). The session then holds
the same per-frame scores, EWMA and decision as a frame model's, plus IG over each scored window for the
predicted class (``Session.write_landmark_ig``) and the clip's landmark ranking (``landmark_ig_info``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.aggregate import DEFAULT_TAU_S, alpha_from_tau, ewma, video_decision
from engine.checkpoint import load_checkpoint, resolve_model_dir
from engine.explain.landmark_ig import clip_relevance, landmark_ig, part_relevance
from engine.jobs import CancelToken, ProgressFn, no_progress
from engine.models.landmark import LANDMARK_PARTS, LandmarkSequenceModel, normalise_landmarks, windows

log = logging.getLogger(__name__)


@dataclass
class LandmarkAnalyzeSettings:
    alpha: float | None = None  # EWMA α; None: from ewma_tau_s and the video's frame rate
    ewma_tau_s: float = DEFAULT_TAU_S
    baseline: str = "others"  # IG baseline: others | zeros | mean (engine.explain.landmark_ig)
    steps: int = 50
    batch_size: int = 64
    detect_every: int = 5


def analyze_landmarks(video: str | Path, model_dir: str | Path, out_path: str | Path,
                      settings: LandmarkAnalyzeSettings | None = None, progress: ProgressFn = no_progress,
                      cancel: CancelToken | None = None) -> Path:
    """Ingest ``video`` into ``out_path`` (if not done yet), score it with the landmark model and store the
    scores, EWMA, decision and IG attributions. Returns the session path."""
    from engine.landmark_train import single_thread

    with single_thread():
        return _analyze(video, model_dir, out_path, settings, progress, cancel)


def _analyze(video: str | Path, model_dir: str | Path, out_path: str | Path, settings: LandmarkAnalyzeSettings | None,
             progress: ProgressFn, cancel: CancelToken | None) -> Path:
    from engine.pipeline import ingest
    from sessions import Session

    st = settings or LandmarkAnalyzeSettings()
    cancel = cancel or CancelToken()
    folder = resolve_model_dir(model_dir)
    model, meta = load_checkpoint(folder)
    if not isinstance(model, LandmarkSequenceModel):
        raise TypeError(f"{folder} holds a {model.spec.arch} model, not a landmark-sequence model")
    out_path = Path(out_path)
    ingest(video, out_path, progress, cancel, detect_every=st.detect_every)
    classes = list(model.spec.classes)
    with Session.open(out_path, writable=True) as session:
        faces = session.faces()
        lm = np.asarray(faces.landmarks, np.float32).copy()
        lm[~np.asarray(faces.found, bool)] = np.nan
        T = len(lm)
        x, ends = windows(normalise_landmarks(lm), model.window, model.points, ends=np.arange(T))
        alpha = st.alpha if st.alpha is not None else alpha_from_tau(st.ewma_tau_s, session.fps)
        identity = {"name": meta.get("name", folder.name), "path": str(folder.resolve()),
                    "sha256": meta["checkpoint"]["sha256"], "arch": model.spec.arch, "backbone": "",
                    "label_setting": model.spec.label_setting,
                    # A valid face-crop policy (readers build PreprocessConfig from it); what the model really
                    # takes is "input".
                    "preprocess": dict(model.spec.preprocess),
                    "input": {"kind": "landmarks", **model.spec.sequence}}
        session.begin_analysis(identity, classes, ["landmark_ig"], alpha, resume=False)
        logits = np.full((T, len(classes)), np.nan, np.float32)
        attr = np.full((T, *model.input_shape), np.nan, np.float32)
        deltas = []
        n = len(ends)
        for s in range(0, n, st.batch_size):
            cancel.raise_if_cancelled()
            xb = torch.from_numpy(x[s:s + st.batch_size])
            with torch.no_grad():
                lo = model(xb)
            e = ends[s:s + st.batch_size]
            logits[e] = lo.numpy()
            a, d = landmark_ig(model, xb, lo.argmax(1).numpy(), st.baseline, st.steps)
            attr[e] = a
            deltas.append(np.abs(d))
            progress(min(s + st.batch_size, n), n, f"landmark model and IG ({min(s + st.batch_size, n)}/{n} windows)")
        valid = np.zeros(T, bool)
        valid[ends] = True
        probs = 1.0 / (1.0 + np.exp(-logits))
        session.write_scores(0, valid, logits, probs)
        session.write_landmark_ig(0, attr)
        rel = clip_relevance(np.nan_to_num(attr[valid])).sum(0) if valid.any() else np.zeros(len(model.points))
        order = [model.points[i] for i in np.argsort(-rel, kind="stable")]
        session.set_landmark_ig_info(points=list(model.points), window=model.window, baseline=st.baseline,
                                     steps=st.steps, windows=int(n),
                                     max_abs_delta=float(np.concatenate(deltas).max()) if deltas else None,
                                     clip_relevance=rel.tolist(), ranking=order,
                                     parts=part_relevance(rel, list(model.points)),
                                     groups={p: list(idx) for p, idx in LANDMARK_PARTS.items()},
                                     scores="sigmoid per class (one-vs-rest detectors; not a distribution)")
        smoothed = ewma(probs, alpha, valid)
        session.finish_analysis(smoothed, alpha, video_decision(smoothed, classes))
    log.info("%s: %d of %d frames scored by %s", out_path, n, T, folder)
    return out_path


__all__ = ["LandmarkAnalyzeSettings", "analyze_landmarks"]
