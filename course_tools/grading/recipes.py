"""Trusted values the sandbox builds for checks: models and activation caches.

Named by checks through :func:`course_tools.grading.checks.sandbox_model` and friends. These run
in the grading worker *before* any submitted code, once per distinct set of arguments.
"""

from __future__ import annotations

import torch


def model(name: str):
    """``"smollm2"``, a capstone variant (``capstone_a``, ..., ``capstone_private``: the shared
    copy ``utils.planted_models.load_planted_model(name)`` returns, so an answer that loads
    the variant itself passes it to a trusted call by name) or a shipped toy model's name
    (``utils/weights/<name>``)."""
    if name == "smollm2":
        from utils.smollm2 import load_smollm2

        return load_smollm2()
    if name.startswith("capstone_"):
        from utils.planted_models import load_planted_model

        return load_planted_model(name)
    from utils.toy_models import load_toy_model

    return load_toy_model(name)


def activation_cache(model_name: str, tokens: torch.Tensor, names: list[str] | None = None):
    """The activation cache of ``model_name`` on ``tokens`` (optionally only ``names``)."""
    m = model(model_name)
    with torch.no_grad():
        _, cache = m.run_with_cache(tokens, names_filter=names)
    return cache
