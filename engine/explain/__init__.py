"""Post-hoc explainers for any frame model (N×C×S×S → logits N×C) and their analyses.

Submodules: ``lrp`` (Zennit), ``gradcam`` (pytorch-grad-cam), ``ig`` (Captum), ``topx``, ``spray``
(SpRAy + temporal prototypes), ``occlusion`` (MoRF/LeRF faithfulness), ``au`` (action-unit maps).
Every explainer leaves the model's hooks, mode and parameters as it found them.
"""

from engine.explain.au import alignment_loss, au_map, cam_cos
from engine.explain.gradcam import gradcam
from engine.explain.hooks import hook_count
from engine.explain.ig import integrated_gradients
from engine.explain.lrp import lrp, lrp_explain
from engine.explain.topx import top_x

__all__ = [
    "alignment_loss",
    "au_map",
    "cam_cos",
    "gradcam",
    "hook_count",
    "integrated_gradients",
    "lrp",
    "lrp_explain",
    "top_x",
]
