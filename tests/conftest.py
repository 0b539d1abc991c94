"""Shared fixtures. Hidden checks (``test_<exercise>(submission)``) run against the solution
notebook by default, or against ``--submission NOTEBOOK``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.course_layout import layout_for_checks_file
from utils import notebooks
from utils.grading.checks import Submission
from utils.grading.runner import Grader


def pytest_addoption(parser):
    parser.addoption("--submission", type=Path, default=None,
                     help="grade this notebook with the hidden checks instead of the solution")


@pytest.fixture(scope="module")
def _chapter_grader(request):
    layout = layout_for_checks_file(Path(request.module.__file__))
    grader = Grader(layout.name, layout.checks, layout.chapters)
    with grader:
        yield layout, grader


@pytest.fixture
def submission(_chapter_grader, request):
    layout, grader = _chapter_grader
    path = request.config.getoption("--submission") or layout.solution_notebook
    return Submission(grader.sandbox, notebooks.answer_cells(notebooks.read_notebook(path)))
