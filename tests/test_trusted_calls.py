"""A later answer may call an earlier exercise's function: the course's version runs on the
trusted side, only values cross (course_tools/grading/trusted_calls.py)."""

from __future__ import annotations

import pytest
import torch

from course_tools.grading import trusted_calls
from course_tools.grading.checks import sandbox_model
from course_tools.grading.sandbox import Sandbox


def _n_layers(model) -> int:
    return model.cfg.n_layers


def _refuses(x):
    raise ValueError("expected a 1-d tensor")


HELPERS = {"double": lambda x: 2 * x, "n_layers": _n_layers, "refuses": _refuses}


@pytest.fixture(scope="module")
def worker():
    with Sandbox("import torch", trusted_helpers=lambda function:
                 {} if function == "double" else HELPERS) as sandbox:
        yield sandbox


def _call(sandbox, source, function, *args):
    return sandbox.call(source, function, args, {}, timeout=60, memory_mb=1024)


def test_a_later_answer_builds_on_the_course_version(worker):
    header, value = _call(worker, "def later(x):\n    return double(x) + 1\n", "later",
                          torch.tensor([1.0, 2.0]))
    assert header["status"] == "ok", header
    assert torch.equal(value, torch.tensor([3.0, 5.0]))


def test_the_stand_in_holds_no_reference_code_and_an_own_definition_wins(worker):
    header, value = _call(worker, "def later(x):\n    return repr(double)\n", "later", 0)
    assert value == "<double: the course's version, while your work is graded>"
    own = "def double(x):\n    return 3 * x\n\ndef later(x):\n    return double(x)\n"
    assert _call(worker, own, "later", 2)[1] == 6


def test_an_exercise_never_gets_its_own_reference(worker):
    header, _ = _call(worker, "def double(x):\n    return double_of(x)\n", "double", 1)
    assert header["status"] == "error" and "double_of" in header["message"]
    header, _ = _call(worker, "def helper_names():\n    return 0\n\ndef double(x):\n"
                              "    return n_layers\n", "double", 1)
    assert header["status"] == "error" and "n_layers" in header["message"]


def test_models_cross_by_name_and_errors_reach_the_answer(worker):
    header, value = _call(worker, "def later(model):\n    return n_layers(model)\n", "later",
                          sandbox_model("attn_only_2l"))
    assert (header["status"], value) == ("ok", 2)
    header, _ = _call(worker, "def later(x):\n    return refuses(x)\n", "later", 1)
    assert header["status"] == "error"
    assert "the course's refuses could not run on these arguments (ValueError: expected a " \
           "1-d tensor)" in header["message"]


def test_an_answer_that_loops_on_a_stand_in_is_stopped(worker, monkeypatch):
    monkeypatch.setattr(trusted_calls, "MAX_CALLS", 5)
    header, _ = _call(worker, "def later(x):\n    for _ in range(100):\n        x = double(x)\n"
                              "    return x\n", "later", 1)
    assert header["status"] == "crashed"
    assert "more than 5 calls to trusted functions" in header["message"]
    assert _call(worker, "def later(x):\n    return double(x)\n", "later", 1)[1] == 2


def test_only_earlier_exercises_and_other_chapters_functions_are_available():
    refs = {"first": len, "second": len, "third": len, "chapter_1_loss": len}
    order = ["first", "second", "third"]
    assert set(trusted_calls.available(refs, order, "second")) == {"first", "chapter_1_loss"}
    assert set(trusted_calls.available(refs, order, "first")) == {"chapter_1_loss"}
    assert set(trusted_calls.available(refs, order, "unlisted")) == set(refs)


def test_the_trusted_side_answers_only_for_the_functions_it_was_given():
    reply, _ = trusted_calls.answer({"double": HELPERS["double"]},
                                    {"op": "trusted_call", "name": "os.system", "args": []}, b"")
    assert reply["status"] == "error" and "not one of the functions" in reply["message"]
    reply, _ = trusted_calls.answer(HELPERS, {"name": "n_layers", "args": {"__tuple__": [
        {"__tuple__": [{"__sandbox__": "os:system", "kwargs": {}}]}, {}]}}, b"")
    assert reply["status"] == "error" and "not a grading recipe" in reply["message"]


def test_a_stand_in_says_it_cannot_carry_gradients(worker):
    header, _ = _call(worker, "def later(x):\n    return double(x.requires_grad_())\n", "later",
                      torch.ones(2))
    assert header["status"] == "error" and "without gradients" in header["message"]
