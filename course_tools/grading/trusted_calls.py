"""Earlier exercises' trusted versions, callable from a later answer while it is graded.

A chapter's checks module may list ``REFERENCES = {"per_token_loss": reference.per_token_loss,
...}``: the course's own versions of functions that later answers may call by name. While an
answer is graded in the sandbox, each name it may use (every listed function that is not an
exercise of this chapter, and the exercises that come *before* the one graded) is bound in the
answer's namespace to a stand-in: calling it sends the arguments, as data, over the call's own
socket to the trusted grader, which runs the reference and sends the result back. So an answer
builds on earlier ideas without re-implementing them, is graded on its own work (never on the
learner's earlier answer), and never sees the reference's code: it is not on the sandbox's disk,
and only values cross. An answer cell that defines the function itself uses its own.

Arguments are tensors, numbers, strings and containers of them, as for any graded call, plus
models the sandbox built from a trusted recipe (``sandbox_model``): those cross by name, and
the trusted side uses its own copy. A trusted call has no time limit of its own (the answer's
call is killed at its limit, but a computation already started on the trusted side runs to
its end), so list only functions whose work is bounded by the size of their arguments (no
``steps`` or ``n_samples`` a caller chooses).
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from typing import Any

import torch

from course_tools.grading import codec

MAX_CALLS = 10_000  # per graded call: an answer that loops on a stand-in cannot keep us busy
# Only models cross by name: a cache recipe would let an answer make the trusted side run a
# forward pass of any size.
TRUSTED_RECIPES = ("course_tools.grading.recipes:model",)


def available(references: dict[str, Callable], exercises: list[str], graded: str
              ) -> dict[str, Callable]:
    """The trusted functions an answer to ``graded`` may call: other chapters' functions
    always; this chapter's exercises only when they come before ``graded``."""
    position = exercises.index(graded) if graded in exercises else len(exercises)
    return {name: func for name, func in references.items()
            if name != graded and (name not in exercises or exercises.index(name) < position)}


_BUILT: dict[str, Any] = {}


def _resolve_recipe(recipe: str, kwargs: dict) -> Any:
    """The trusted side's own copy of a value the sandbox built from ``recipe``."""
    if recipe not in TRUSTED_RECIPES:
        raise codec.EncodingError(f"{recipe!r} is not a grading recipe a stand-in accepts "
                                  "(models cross by name; pass tensors for anything else)")
    tree, blob = codec.encode(kwargs)
    key = recipe + repr(tree) + hashlib.sha256(blob).hexdigest()
    if key not in _BUILT:
        if len(_BUILT) >= 16:  # a few models and caches per chapter; never grow without end
            _BUILT.clear()
        module_name, func_name = recipe.split(":")
        _BUILT[key] = getattr(importlib.import_module(module_name), func_name)(**kwargs)
    return _BUILT[key]


def answer(helpers: dict[str, Callable], header: dict, blob: bytes) -> tuple[dict, bytes]:
    """Run one stand-in call's trusted function; the reply for the sandbox."""
    name = header.get("name")
    func = helpers.get(name) if isinstance(name, str) else None
    if func is None:
        return {"status": "error",
                "message": f"{name!r} is not one of the functions this answer may call"}, b""
    try:
        args, kwargs = codec.decode(header.get("args"), blob, _resolve_recipe)
        with torch.no_grad():
            result = func(*args, **kwargs)
        tree, out = codec.encode(result)
    except Exception as exc:  # noqa: BLE001 - bad arguments are the answer's problem
        return {"status": "error", "message": f"the course's {name} could not run on these "
                f"arguments ({type(exc).__name__}: {str(exc)[:300]})"}, b""
    return {"status": "ok", "result": tree}, out
