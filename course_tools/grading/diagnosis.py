"""Say *which* mistake a failing answer made, not only that it failed.

Each hidden-checks module lists plausible wrong answers in ``MUTANTS``. Written as
:class:`Mistake`, each carries an explanation for the learner. When a check fails, the grader
replays the calls the check made (same inputs) with every known mistake, in the sandbox, and
if one of them returns exactly what the learner's answer returned, the report names it.
Answers that match no known mistake get :func:`describe_difference` in their message instead:
off by a factor, by a constant, with the sign flipped, transposed, reordered, shifted, or
wrong at one index only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Mistake:
    """A plausible wrong answer to one exercise, and what to tell a learner who made it.

    ``explanation`` says what the answer does wrong and how to put it right, in a sentence or
    two; ``source`` is the full answer cell of the mistaken answer; ``hint`` is the number of
    the notebook's hint that helps with it, if one does.
    """

    explanation: str
    source: str
    hint: int | None = None

    def message(self, exercise: str) -> str:
        where = f" (hint {self.hint} of the exercise helps here)" if self.hint else ""
        return f"{exercise}: looks like a known mistake: {self.explanation}{where}"


def source_of(mutant: Mistake | str) -> str:
    """A mutant's answer-cell source, whether written as a :class:`Mistake` or a bare string."""
    return mutant.source if isinstance(mutant, Mistake) else mutant


@dataclass
class RecordedCall:
    """One call a check made to a learner's function, and what came back."""

    function: str
    args: tuple
    kwargs: dict
    timeout: float
    memory_mb: int
    ok: bool
    value: Any = None

    def key(self) -> str:
        """A digest of the inputs, to reuse a mistake's output for the same call."""
        from course_tools.grading import codec

        tree, blob = codec.encode((self.function, self.args, self.kwargs))
        digest = hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode())
        digest.update(blob)
        return digest.hexdigest()


def same_value(a: Any, b: Any) -> bool:
    """Do two returned values agree (tensors to float32 round-off, structure exactly)?"""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape:
            return False
        if a.dtype == torch.bool or b.dtype == torch.bool:
            return a.dtype == b.dtype and bool(torch.equal(a, b))
        return bool(torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5,
                                   equal_nan=True))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-5 + 1e-4 * abs(float(b))
        except (TypeError, ValueError):
            return False
    return type(a) is type(b) and a == b


def describe_difference(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float,
                        dims: list[str] | None = None) -> str:
    """One phrase on how ``got`` relates to ``expected`` (same shape), or ``""``."""
    got, expected = got.double(), expected.double()

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))

    def axis_name(axis: int) -> str:
        if dims and len(dims) == got.ndim:
            return f"axis {axis} ({dims[axis]})"
        return f"axis {axis}"

    if got.numel() < 2:
        return ""
    if bool((got.abs() <= atol).all()):
        return "every value is zero (nothing computed, or the wrong entries picked?)"
    if close(got, -expected):
        return "every value has the wrong sign"
    nonzero = expected.abs() > max(atol, 1e-12)
    if nonzero.sum() >= 2:
        ratio = got[nonzero] / expected[nonzero]
        scale = ratio.median()
        if not torch.isclose(scale, torch.ones_like(scale), rtol=1e-3) and \
                close(got, expected * scale):
            return f"every value is {scale.item():.4g} times the expected one (a missing or " \
                   "extra factor?)"
    offset = (got - expected).median()
    if abs(offset.item()) > atol and close(got, expected + offset):
        return f"every value is off by the same {offset.item():+.4g} (a missing or extra term?)"
    if got.ndim >= 2 and close(got.transpose(-1, -2), expected):
        return "the last two axes are swapped"
    if close(got.sort(dim=-1).values, expected.sort(dim=-1).values):
        return "the right values, in the wrong order along the last axis"
    for axis in range(got.ndim):
        if got.shape[axis] < 3:  # on two entries a "shift" is as likely a coincidence
            continue
        n = got.shape[axis]
        if close(got.narrow(axis, 1, n - 1), expected.narrow(axis, 0, n - 1)) or \
                close(got.narrow(axis, 0, n - 1), expected.narrow(axis, 1, n - 1)):
            return f"shifted by one position along {axis_name(axis)}"
    wrong = ~torch.isclose(got, expected, rtol=rtol, atol=atol)
    for axis in range(got.ndim):
        if got.shape[axis] < 2:
            continue
        other = tuple(d for d in range(got.ndim) if d != axis)
        bad = wrong.any(dim=other) if other else wrong
        indices = bad.nonzero().flatten().tolist()
        if len(indices) == 1:
            return f"right everywhere except at index {indices[0]} along {axis_name(axis)}"
    return ""
