"""Post-hoc explainers for any frame model (N×C×S×S → logits N×C) and their analyses.

Submodules: ``lrp`` (Zennit), ``gradcam`` (pytorch-grad-cam), ``ig`` (Captum), ``topx``, ``spray``
(SpRAy + temporal prototypes), ``occlusion`` (MoRF/LeRF faithfulness), ``au`` (action-unit maps).
Every explainer leaves the model's hooks, mode and parameters as it found them.

The names below are imported on first use (PEP 562): Zennit, Captum and pytorch-grad-cam with what they
pull in cost ~300 MB of memory, which a session that shows only intrinsic maps never needs
(`tests/test_explain_lazy.py`). ``lrp`` and ``gradcam`` are not among them: those names are also the
submodules', and once a submodule is imported the package attribute is the module, so a lazy function of
the same name cannot be served reliably. Import them from their modules:
``from engine.explain.lrp import lrp``, ``from engine.explain.gradcam import gradcam``.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "alignment_loss": "au",
    "au_map": "au",
    "cam_cos": "au",
    "hook_count": "hooks",
    "integrated_gradients": "ig",
    "lrp_explain": "lrp",
    "top_x": "topx",
}

__all__ = ["alignment_loss", "au_map", "cam_cos", "hook_count", "integrated_gradients", "lrp_explain",
           "top_x"]  # the keys of _WHERE


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value  # the next lookup is a plain global
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
