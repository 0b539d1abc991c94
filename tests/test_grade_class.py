"""Grading a class in parallel: every student graded, attacks contained, table and CSV right."""

from __future__ import annotations

import csv

import pytest

from course_tools import grade_class, notebooks
from course_tools.grading.diagnosis import source_of
from course_tools.grading.runner import load_checks_module
from course_tools.grading.sandbox import bubblewrap_path
from tests.course_layout import FIXTURE

pytestmark = pytest.mark.skipif(bubblewrap_path() is None, reason="needs bubblewrap")

GOOD_CENTER = "def center_rows(x):\n    return x - x.mean(dim=-1, keepdim=True)\n"
GOOD_MASK = ("import torch as t\ndef mask_future(s):\n"
             "    future = t.ones(s.shape[-2:], dtype=t.bool).triu(1)\n"
             "    return s.masked_fill(future, -float('inf'))\n")
KILLER = "import os, signal\ndef center_rows(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n"


def _write(folder, student, answers, nested=False):
    nb = notebooks.read_notebook(FIXTURE.student_notebook)
    for cell in nb.cells:
        gid = notebooks.nbgrader_meta(cell).get("grade_id")
        if notebooks.is_answer_cell(cell) and gid in answers:
            cell.source = answers[gid]
    target = folder / student / f"{FIXTURE.name}.ipynb" if nested else folder / f"{student}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    notebooks.write_notebook(nb, target)


def test_class_of_twelve_graded_in_parallel(tmp_path):
    mutant = source_of(load_checks_module(FIXTURE.name, FIXTURE.checks)
                       .MUTANTS["mask_future"]["masks_past"])
    expected = {}
    for i in range(12):
        student = f"s{i:02d}"
        kind = i % 4
        answers = [{"center_rows": GOOD_CENTER, "mask_future": GOOD_MASK},
                   {"center_rows": GOOD_CENTER, "mask_future": mutant},
                   {},
                   {"center_rows": KILLER, "mask_future": GOOD_MASK}][kind]
        expected[student] = [3.0, 1.0, 0.0, 2.0][kind]
        _write(tmp_path / "inbox", student, answers, nested=bool(i % 2))
    reports = grade_class.grade_class(tmp_path / "inbox", FIXTURE.name, jobs=2,
                                      checks=FIXTURE.checks, released=FIXTURE.chapters,
                                      require_sandbox=True)
    assert {s: r.score for s, r in reports.items()} == expected
    text = grade_class.table(reports)
    assert "s00" in text and "3/3" in text and "center_rows" in text
    grade_class.write_csv(reports, tmp_path / "class.csv")
    with open(tmp_path / "class.csv") as f:
        rows = {r["student"]: float(r["score"]) for r in csv.DictReader(f)}
    assert rows == expected
