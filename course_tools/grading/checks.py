"""What hidden checks are written with: remote calls into the sandbox and clear assertions.

A hidden check is a function ``test_<exercise>(submission)`` in
``tests/hidden/test_<chapter>.py``. It calls the learner's function through
``submission.function(name)``; the call runs in the sandbox and comes back as plain data
(tensors, numbers, lists, dicts), so the comparison below runs in the trusted process
against an independent reference. Failures raise ``AssertionError`` with a message written
for the learner (it appears in their report).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from course_tools.grading.codec import SandboxValue
from course_tools.grading.diagnosis import RecordedCall, describe_difference


class SubmissionError(AssertionError):
    """The submitted function raised, crashed, timed out or misbehaved."""


class CallFailed(SubmissionError):
    """The learner's function raised, crashed or timed out: its message says so already."""


class OutOfTime(CallFailed):
    """The notebook's grading time ran out before (or during) this call."""


def points(value: float) -> Callable:
    """Decorator: how many points a check is worth (default 1)."""

    def mark(func: Callable) -> Callable:
        func.points = float(value)
        return func

    return mark


def sandbox_model(name: str) -> SandboxValue:
    """A model loaded *inside* the sandbox: ``"smollm2"`` or a shipped toy model's name."""
    return SandboxValue("course_tools.grading.recipes:model", name=name)


def sandbox_cache(model_name: str, tokens: torch.Tensor, names: list[str] | None = None
                  ) -> SandboxValue:
    """An ``ActivationCache`` of ``model_name`` on ``tokens``, made inside the sandbox."""
    return SandboxValue("course_tools.grading.recipes:activation_cache", model_name=model_name,
                        tokens=tokens, names=names)


class RemoteFunction:
    """A learner's function, callable from a check; runs in the sandbox on each call."""

    def __init__(self, submission: Submission, name: str, source: str, timeout: float,
                 memory_mb: int, allow_input_mutation: bool) -> None:
        self.submission = submission
        self.name = name
        self.source = source
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.allow_input_mutation = allow_input_mutation
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        budget = self.submission.budget
        if budget.remaining() <= 0:
            raise OutOfTime(f"{self.name}: not run: this notebook's grading time ran out")
        timeout = min(self.timeout, budget.remaining())
        started = time.monotonic()
        try:
            header, value = self.submission.sandbox.call(
                self.source, self.name, args, kwargs, timeout, self.memory_mb)
        finally:
            budget.spend(time.monotonic() - started)
        status = header.get("status")
        self.submission.calls.append(RecordedCall(self.name, args, kwargs, self.timeout,
                                                  self.memory_mb, status == "ok", value))
        if status == "timeout" and timeout < self.timeout:
            raise OutOfTime(f"{self.name}: stopped: this notebook's grading time ran out")
        if status == "internal":
            raise RuntimeError(f"grader could not prepare inputs: {header.get('message')}")
        if status != "ok":
            message = header.get("message") or status
            log = (header.get("log") or "").strip()
            hint = f"\n  last output of your code: ...{log[-300:]}" if log else ""
            raise CallFailed(f"{self.name}: {message}{hint}")
        mutated = header.get("mutated") or []
        if mutated and not self.allow_input_mutation:
            raise SubmissionError(
                f"{self.name} changed its input: {'; '.join(mutated)}. Leave inputs as they "
                "were: compute on new tensors (e.g. `x = x + 1`, not `x += 1`)")
        return value


class TimeBudget:
    """Seconds the learner's code may run in all of one notebook's calls together. Only the
    sandboxed calls spend it: what the trusted side computes (references, truths of
    investigations) is the course's own, bounded cost, and a slow machine must not turn it
    into the learner's lost marks."""

    def __init__(self, seconds: float = math.inf) -> None:
        self.seconds = seconds
        self.spent = 0.0

    def remaining(self) -> float:
        return self.seconds - self.spent

    def spend(self, seconds: float) -> None:
        self.spent += seconds


class Submission:
    """The learner's answers as seen by one check; its calls together stay within ``budget``."""

    def __init__(self, sandbox, sources: dict[str, str], budget: TimeBudget | None = None
                 ) -> None:
        self.sandbox = sandbox
        self.sources = sources
        self.budget = budget or TimeBudget()
        self.calls: list[RecordedCall] = []  # what each call got and returned (for diagnosis)

    def function(self, name: str, timeout: float = 60.0, memory_mb: int = 1024,
                 allow_input_mutation: bool = False) -> RemoteFunction:
        """The learner's function ``name`` (from its answer cell)."""
        source = self.sources.get(name)
        if source is None:
            raise SubmissionError(
                f"no answer cell for `{name}` was found; if you deleted it, copy it back from "
                "a fresh copy of the chapter")
        return RemoteFunction(self, name, source, timeout, memory_mb, allow_input_mutation)

    def finding(self, name: str, timeout: float = 120.0, memory_mb: int = 3000) -> Any:
        """An investigation's answer: call ``name()`` (no arguments) and return the finding.
        Its limits allow an answer that loads SmolLM2 and computes the finding itself."""
        try:
            return self.function(name, timeout=timeout, memory_mb=memory_mb)()
        except CallFailed as error:
            if "NameError" in str(error):
                raise SubmissionError(
                    f"{error}. When graded, {name} runs on its own, without the notebook's "
                    "variables or your other functions: return the value you found (e.g. a "
                    "literal), or compute it inside the function from what it loads itself"
                ) from None
            raise


# ----------------------------------------------------------------------- assertions
def _dims(names: str, shape: tuple) -> str:
    labels = names.split()
    if len(labels) == len(shape):
        return "[" + ", ".join(f"{n}={s}" for n, s in zip(labels, shape)) + "]"
    return str(list(shape))


def expect_tensor(value: Any, name: str, dims: str, shape: tuple[int, ...],
                  dtype: torch.dtype | None = None) -> torch.Tensor:
    """Assert ``value`` is a tensor of ``shape``; ``dims`` names the axes, TL style.

    The message reads: ``expected [batch, pos, d_model] = [2, 5, 576], got [2, 576]``.
    """
    if not isinstance(value, torch.Tensor):
        raise SubmissionError(
            f"{name} should return a tensor [{', '.join(dims.split())}], "
            f"got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise SubmissionError(
            f"{name}: expected shape [{', '.join(dims.split())}] = {list(shape)}, "
            f"got {list(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise SubmissionError(f"{name}: expected dtype {dtype}, got {value.dtype}")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise SubmissionError(f"{name}: the result contains NaN or infinite values")
    return value


def assert_close(got: torch.Tensor, expected: torch.Tensor, name: str, atol: float = 1e-4,
                 rtol: float = 1e-4, what: str = "values", dims: str | None = None,
                 inputs: str = "") -> None:
    """Assert two tensors agree; else say where they differ first and how (a factor, a sign,
    a shift, ...). ``dims`` names the axes TL style; ``inputs`` says in words what the check
    used (``"a 2-token vocabulary, 3 positions"``)."""
    got = got.to(torch.float64)
    expected = expected.to(torch.float64)
    if got.shape != expected.shape:
        raise SubmissionError(f"{name}: expected shape {list(expected.shape)}, "
                              f"got {list(got.shape)}")
    close = torch.isclose(got, expected, atol=atol, rtol=rtol)
    if not bool(close.all()):
        bad = (~close).nonzero()[0].tolist()
        idx = tuple(bad)
        frac = 1 - close.double().mean().item()
        labels = dims.split() if dims else None
        how = describe_difference(got, expected, atol, rtol, labels)
        where = (", ".join(f"{n}={i}" for n, i in zip(labels, idx))
                 if labels and len(labels) == len(idx) else ", ".join(map(str, idx)))
        raise SubmissionError(
            f"{name}: {what} differ from the reference at {frac:.1%} of entries"
            + (f" (on {inputs})" if inputs else "")
            + (f": {how}" if how else "")
            + f"; first at [{where}]: expected {expected[idx].item():.6g}, "
            f"got {got[idx].item():.6g}")


def assert_number(got: Any, expected: float, name: str, atol: float = 1e-4, rtol: float = 1e-4,
                  what: str = "value") -> float:
    """Assert a scalar (float, int or one-element tensor) is close to ``expected``."""
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise SubmissionError(f"{name} should return a single number, got a tensor of "
                                  f"shape {list(got.shape)}")
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        raise SubmissionError(f"{name} should return a number, got {type(got).__name__}")
    if not abs(got - expected) <= atol + rtol * abs(expected):
        raise SubmissionError(f"{name}: expected {what} {expected:.6g}, got {got:.6g}")
    return float(got)


# ----------------------------------------------------------------------- reference models
_REFERENCE_MODELS: dict[str, Any] = {}


def reference_model(name: str) -> Any:
    """A model for the checks' own references, loaded once per grading process and shared.

    ``"smollm2"`` or a shipped toy model's name (as :func:`sandbox_model`); every checks module
    gets the same object, so treat it as read-only (hooks removed, weights untouched).
    """
    if name not in _REFERENCE_MODELS:
        if name == "smollm2":
            from utils.smollm2 import load_smollm2

            _REFERENCE_MODELS[name] = load_smollm2(verbose=False)
        else:
            from utils.toy_models import load_toy_model

            _REFERENCE_MODELS[name] = load_toy_model(name)
    return _REFERENCE_MODELS[name]


def warm_up_loading(*names: str) -> Callable[[], None]:
    """A checks module's ``warm_up()``: load its reference models while the worker starts."""

    def warm_up() -> None:
        for name in names:
            reference_model(name)

    return warm_up
