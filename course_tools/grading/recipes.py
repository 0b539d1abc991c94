"""Trusted values the sandbox builds for checks: models and activation caches.

Named by checks through :func:`course_tools.grading.checks.sandbox_model` and friends. These run
in the grading worker *before* any submitted code, once per distinct set of arguments.
"""

from __future__ import annotations

import torch


def model(name: str):
    """``"smollm2"`` or the name of a shipped toy model (``utils/weights/<name>``)."""
    if name == "smollm2":
        from utils.smollm2 import load_smollm2

        return load_smollm2()
    from utils.toy_models import load_toy_model

    return load_toy_model(name)


def activation_cache(model_name: str, tokens: torch.Tensor, names: list[str] | None = None):
    """The activation cache of ``model_name`` on ``tokens`` (optionally only ``names``)."""
    m = model(model_name)
    with torch.no_grad():
        _, cache = m.run_with_cache(tokens, names_filter=names)
    return cache
