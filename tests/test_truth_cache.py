"""Kept truths: computed once per machine, recomputed when the code changes, private, and out of
the sandbox's sight."""

from __future__ import annotations

import importlib.util
import stat
import sys

import pytest
import torch

from course_tools import notebooks
from course_tools.grading import truth_cache
from course_tools.grading.runner import Grader
from course_tools.grading.sandbox import bubblewrap_path
from tests.course_layout import FIXTURE
from utils import paths

TRUTH_MODULE = '''
import torch
from course_tools.grading.truth_cache import kept_truth

CALLS = []


@kept_truth
def expensive(n):
    CALLS.append(n)
    return {"mean": float(n) / 2, "rows": torch.arange(n), "layers": {1, 2}}


@kept_truth
def not_plain():
    CALLS.append("object")
    return object()
'''


@pytest.fixture
def truths(tmp_path, monkeypatch):
    monkeypatch.setenv(truth_cache.DIR_ENV, str(tmp_path / "truths"))
    monkeypatch.delenv(truth_cache.SWITCH_ENV, raising=False)
    return tmp_path / "truths"


def _fresh_module(path, source=TRUTH_MODULE):
    """The module as a new grading process would import it."""
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"truths_{len(sys.modules)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_truth_is_computed_once_per_machine(truths, tmp_path):
    first = _fresh_module(tmp_path / "checks_x.py")
    value = first.expensive(4)
    assert first.expensive(4) is value and first.CALLS == [4]
    second = _fresh_module(tmp_path / "checks_x.py")
    kept = second.expensive(4)
    assert second.CALLS == [], "a second process must read the kept value"
    assert kept["mean"] == 2.0 and kept["layers"] == {1, 2}
    assert torch.equal(kept["rows"], torch.arange(4))
    second.expensive(5)
    assert second.CALLS == [5], "other arguments are another truth"


def test_a_changed_checks_module_computes_it_again(truths, tmp_path):
    _fresh_module(tmp_path / "checks_x.py").expensive(3)
    changed = _fresh_module(tmp_path / "checks_x.py", TRUTH_MODULE.replace("/ 2", "/ 3"))
    assert changed.expensive(3)["mean"] == 1.0 and changed.CALLS == [3]
    assert len(list(truths.glob("checks_x.expensive.*.pt"))) == 1, "the old copy is removed"


def test_the_folder_is_private_and_holds_only_plain_values(truths, tmp_path):
    module = _fresh_module(tmp_path / "checks_y.py")
    module.expensive(2)
    assert isinstance(module.not_plain(), object) and module.CALLS == [2, "object"]
    assert stat.S_IMODE(truths.stat().st_mode) == 0o700
    kept = list(truths.iterdir())
    assert [p.name.split(".")[1] for p in kept] == ["expensive"]
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600


def test_a_damaged_copy_is_computed_again(truths, tmp_path):
    _fresh_module(tmp_path / "checks_z.py").expensive(2)
    [kept] = truths.iterdir()
    kept.write_bytes(b"not a torch file")
    again = _fresh_module(tmp_path / "checks_z.py")
    assert again.expensive(2)["mean"] == 1.0 and again.CALLS == [2]


def test_switched_off_nothing_is_written(truths, tmp_path, monkeypatch):
    monkeypatch.setenv(truth_cache.SWITCH_ENV, "off")
    module = _fresh_module(tmp_path / "checks_w.py")
    module.expensive(2)
    module.expensive(2)
    assert module.CALLS == [2] and not truths.exists()


def test_a_nested_function_is_refused():
    def outer():
        @truth_cache.kept_truth
        def inner():
            return 1
    with pytest.raises(ValueError, match="module-level"):
        outer()


PEEK = """
import os
def center_rows(x):
    folder = "{folder}"
    for name in os.listdir(folder):
        open(os.path.join(folder, name), "rb").read()
        return x - x.mean(dim=-1, keepdim=True)  # only a learner who read a truth gets here
    return x
"""


@pytest.mark.skipif(bubblewrap_path() is None, reason="the sandbox needs bubblewrap")
@pytest.mark.parametrize("where", ["default", "inside the model cache"])
def test_graded_code_cannot_read_the_truths(where, tmp_path, monkeypatch):
    if where == "default":
        monkeypatch.delenv(truth_cache.DIR_ENV, raising=False)
    else:  # a folder the sandbox binds: it must hide the truths anyway
        monkeypatch.setenv(truth_cache.DIR_ENV, str(paths.cache_dir() / "truths-test"))
    folder = truth_cache.private_folder()
    secret = folder / "test_00_fixture.peek.0.0.pt"
    torch.save({"answer": 1.0}, secret)
    try:
        nb = notebooks.read_notebook(FIXTURE.student_notebook)
        for cell in nb.cells:
            if notebooks.nbgrader_meta(cell).get("grade_id") == "center_rows":
                cell.source = PEEK.format(folder=folder)
        path = tmp_path / "peek.ipynb"
        notebooks.write_notebook(nb, path)
        with Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters,
                    require_isolation=True) as grader:
            result = {e.id: e for e in grader.grade_notebook(path).exercises}["center_rows"]
        assert not result.passed, "graded code read a kept truth"
    finally:
        secret.unlink()
        if where != "default":
            folder.rmdir()
