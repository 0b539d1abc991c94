"""Adversarial submissions: none earns an unearned mark, and every run completes.

Each case is a full notebook (the released fixture chapter) whose `center_rows` answer is
hostile and whose `mask_future` answer is correct, so each report must show center_rows
failed *and* mask_future still passed. Cases that tamper with the notebook itself (edited or
deleted cells) are built separately. After the hostile ones, an honest student graded by the
same grader must get full marks: one student's attack never costs another student anything.
"""

from __future__ import annotations

import hashlib
import time

import pytest

from course_tools import notebooks
from course_tools.grading.runner import Grader
from course_tools.grading.sandbox import bubblewrap_path
from tests.course_layout import FIXTURE
from utils import paths

pytestmark = pytest.mark.skipif(bubblewrap_path() is None,
                                reason="the sandbox needs bubblewrap (apt-get install "
                                       "bubblewrap); `make test` installs it as root")

CORRECT_CENTER = "def center_rows(x):\n    return x - x.mean(dim=-1, keepdim=True)\n"
CORRECT_MASK = ("import torch as t\n"
                "def mask_future(scores):\n"
                "    bad = t.ones(scores.shape[-2:], dtype=t.bool).triu(1)\n"
                "    return scores.masked_fill(bad, float('-inf'))\n")
SECRET_FILES = [paths.REPO_ROOT / "tests" / "fixture_chapter" / "hidden" / "test_00_fixture.py",
                paths.REPO_ROOT / "tests" / "fixture_chapter" / "solutions" / "00_fixture.ipynb",
                paths.REPO_ROOT / "course_tools" / "grading" / "checks.py"]

HOSTILE = {
    "eq_always_true": """
class Anything:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
def center_rows(x):
    return Anything()
""",
    "tensor_subclass_lies": """
import torch
class Liar(torch.Tensor):
    def __eq__(self, other): return torch.ones_like(other, dtype=torch.bool)
    def allclose(self, *a, **k): return True
    def isclose(self, other, *a, **k): return torch.ones_like(other, dtype=torch.bool)
def center_rows(x):
    return torch.zeros_like(x).as_subclass(Liar)
""",
    "monkeypatch_torch": """
import torch, torch.testing
torch.allclose = lambda *a, **k: True
torch.isclose = lambda a, b, *r, **k: torch.ones_like(a, dtype=torch.bool)
torch.equal = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
def center_rows(x):
    return torch.zeros_like(x)
""",
    "monkeypatch_numpy": """
import numpy as np
np.allclose = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
def center_rows(x):
    return x * 0
""",
    "sys_exit_at_import": """
import sys
sys.exit(0)
def center_rows(x):
    return x - x.mean(dim=-1, keepdim=True)
""",
    "os_exit": """
import os
def center_rows(x):
    os._exit(0)
""",
    "infinite_loop": """
def center_rows(x):
    while True:
        pass
""",
    "memory_bomb": """
def center_rows(x):
    hoard = []
    while True:
        hoard.append(bytearray(50_000_000))
""",
    "stdout_flood": """
def center_rows(x):
    while True:
        print("spam " * 1000)
""",
    "read_hidden_checks": """
import runpy
def center_rows(x):
    ns = runpy.run_path("%(checks)s")
    return ns["reference_center_rows"](x)
""",
    "read_solution_notebook": """
import json
def center_rows(x):
    nb = json.load(open("%(solution)s"))
    src = [c["source"] for c in nb["cells"] if "def center_rows" in "".join(c["source"])]
    ns = {}
    exec("".join(src[0]), ns)
    return ns["center_rows"](x)
""",
    "import_reference_package": """
import importlib
def center_rows(x):
    importlib.import_module("utils.reference")
    return x * 0
""",
    "overwrite_grader_code": """
def center_rows(x):
    with open("%(checks_py)s", "a") as f:
        f.write("\\ndef assert_close(*a, **k):\\n    return None\\n")
    return x * 0
""",
    "write_outside_home": """
import os
def center_rows(x):
    for target in ("%(repo)s/owned.txt", os.path.expanduser("~/owned.txt"), "/owned.txt"):
        open(target, "w").write("owned")
    return x * 0
""",
    "open_network_socket": """
import socket
def center_rows(x):
    s = socket.create_connection(("127.0.0.1", 22), timeout=2)
    return x * 0
""",
    "kill_the_worker": """
import os, signal
def center_rows(x):
    os.kill(os.getppid(), signal.SIGKILL)
    return x * 0
""",
    "freeze_the_worker": """
import os, signal
def center_rows(x):
    os.kill(os.getppid(), signal.SIGSTOP)
    return x * 0
""",
    "leave_a_daemon": """
import os, time
def center_rows(x):
    if os.fork() == 0:
        os.setsid()
        time.sleep(30)
        os._exit(0)
    return x * 0
""",
    "nan_result": """
import torch
def center_rows(x):
    return torch.full_like(x, float("nan"))
""",
    "unencodable_return": """
def center_rows(x):
    return lambda: x
""",
}


def _notebook(answers: dict[str, str]):
    nb = notebooks.read_notebook(FIXTURE.student_notebook)
    for cell in nb.cells:
        grade_id = notebooks.nbgrader_meta(cell).get("grade_id")
        if notebooks.is_answer_cell(cell) and grade_id in answers:
            cell.source = answers[grade_id]
    return nb


def _digests() -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in SECRET_FILES}


@pytest.fixture(scope="module")
def grader():
    with Grader(FIXTURE.name, FIXTURE.checks, FIXTURE.chapters, require_isolation=True) as g:
        yield g


def _grade(grader, nb, tmp_path, name):
    path = tmp_path / f"{name}.ipynb"
    notebooks.write_notebook(nb, path)
    return {e.id: e for e in grader.grade_notebook(path).exercises}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_answer_earns_nothing_and_others_are_graded(grader, tmp_path, case):
    before = _digests()
    code = HOSTILE[case] % {"checks": SECRET_FILES[0], "solution": SECRET_FILES[1],
                            "checks_py": SECRET_FILES[2], "repo": paths.REPO_ROOT}
    started = time.monotonic()
    results = _grade(grader, _notebook({"center_rows": code, "mask_future": CORRECT_MASK}),
                     tmp_path, case)
    assert time.monotonic() - started < 120, "the run must complete"
    assert not results["center_rows"].passed and results["center_rows"].points == 0
    assert "internal grader error" not in results["center_rows"].message
    assert results["mask_future"].passed, results["mask_future"].message
    assert _digests() == before, "a submission changed the instructor's files"
    assert not (paths.REPO_ROOT / "owned.txt").exists()


def test_edited_test_cells_change_nothing(grader, tmp_path):
    nb = _notebook({"center_rows": "def center_rows(x):\n    return x\n",
                    "mask_future": CORRECT_MASK})
    for cell in nb.cells:
        if notebooks.is_test_cell(cell):
            cell.source = "pass"
            cell.metadata["nbgrader"]["points"] = 100
    results = _grade(grader, nb, tmp_path, "edited_tests")
    assert not results["center_rows"].passed
    assert results["mask_future"].points == 2.0  # points come from the checks, not the notebook


def test_deleted_cells_and_metadata_are_survived(grader, tmp_path):
    nb = _notebook({"center_rows": CORRECT_CENTER, "mask_future": CORRECT_MASK})
    nb.cells = [c for c in nb.cells if not notebooks.is_test_cell(c)]
    for cell in nb.cells:
        cell.metadata.pop("nbgrader", None)  # answers found again by their `def`
    results = _grade(grader, nb, tmp_path, "deleted_cells")
    assert results["center_rows"].passed and results["mask_future"].passed


def test_deleted_answer_cell_costs_only_that_exercise(grader, tmp_path):
    nb = _notebook({"mask_future": CORRECT_MASK})
    nb.cells = [c for c in nb.cells
                if notebooks.nbgrader_meta(c).get("grade_id") != "center_rows"]
    results = _grade(grader, nb, tmp_path, "deleted_answer")
    assert not results["center_rows"].passed and "no answer cell" in results["center_rows"].message
    assert results["mask_future"].passed


def test_honest_student_after_the_attackers_gets_full_marks(grader, tmp_path):
    results = _grade(grader, _notebook({"center_rows": CORRECT_CENTER,
                                        "mask_future": CORRECT_MASK}), tmp_path, "honest")
    assert all(r.passed for r in results.values()), {k: r.message for k, r in results.items()}


def test_broken_notebook_file_gets_a_report(grader, tmp_path):
    path = tmp_path / "00_fixture.ipynb"
    path.write_text('{"cells": [')
    report = grader.grade_notebook(path)
    assert report.score == 0 and report.errors
    assert "not a readable notebook" in report.exercises[0].message
