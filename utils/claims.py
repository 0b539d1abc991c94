"""`claim`: state a finding about a model in the prose's words, measure it, and assert it.

Every number or qualitative statement a chapter's text makes about a model is computed in the
notebook and passed through :func:`claim`, so a retrained model or a library upgrade that makes
a sentence false stops the notebook (and CI) instead of leaving a wrong sentence behind::

    claim("the induction head attends to the token after the earlier copy", mean_attention,
          at_least=0.5)
    claim("layer 0's MLP writes the largest norm at BOS", ratio, between=(20, 40))
    claim("only K-composition stands out", k_score > 3 * baseline)      # a plain truth value

It prints one line (``✓ statement: measured 0.734 (at least 0.5)``) and raises
:class:`ClaimFailed` saying what the text says and what this run measured otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["ClaimFailed", "claim"]


class ClaimFailed(AssertionError):
    """A sentence of the chapter is not true of what this run measured."""


def _as_number(value: Any) -> float | bool:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"claim() measures one number, got a tensor of shape "
                            f"{list(value.shape)}: reduce it first (mean, max, ...)")
        value = value.item()
    if isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"claim() measures a number or a truth value, got "
                        f"{type(value).__name__}") from None


def _show(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:,.0f}"


def claim(statement: str, measured: Any, *, at_least: float | None = None,
          at_most: float | None = None, between: tuple[float, float] | None = None,
          near: float | None = None, rtol: float = 0.1, equals: Any = None) -> Any:
    """Assert that ``measured`` supports ``statement``; print it; return ``measured``.

    With no bound, ``measured`` must be true (a comparison the cell already made). Otherwise
    give one of: ``at_least`` and/or ``at_most``, ``between=(low, high)`` (inclusive),
    ``near=x`` (within ``rtol`` relative, default 10%), ``equals=x`` (exact, for ints,
    labels and indices).
    """
    if equals is not None:
        ok, bound = measured == equals, f"equal to {equals!r}"
        shown = repr(measured)
    else:
        value = _as_number(measured)
        shown = str(value) if isinstance(value, bool) else _show(value)
        if between is not None:
            at_least, at_most = between
        parts = []
        ok = True
        if at_least is None and at_most is None and near is None:
            ok, bound = bool(value), "true"
        else:
            if math.isnan(value):
                ok = False
            if at_least is not None:
                ok = ok and value >= at_least
                parts.append(f"at least {_show(at_least)}")
            if at_most is not None:
                ok = ok and value <= at_most
                parts.append(f"at most {_show(at_most)}")
            if near is not None:
                ok = ok and abs(value - near) <= rtol * abs(near)
                parts.append(f"within {rtol:.0%} of {_show(near)}")
            bound = " and ".join(parts)
    if not ok:
        raise ClaimFailed(
            f"The text says: {statement}. This run measured {shown}, which is not {bound}. "
            "If you changed the model, the data or a library, the sentence is out of date; "
            "if you did not, an earlier cell's result differs from the chapter's (re-run the "
            "notebook from the top, and check your answers above).")
    print(f"✓ {statement}: measured {shown}" + ("" if bound == "true" else f" ({bound})"))
    return measured
