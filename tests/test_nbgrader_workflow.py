"""The instructor's nbgrader round trip on the fixture chapter, graded outside the kernel.

Three students: one correct (whose answer also writes to stderr, which must not cost marks),
one wrong, one empty. Release -> collect -> autograde -> feedback -> export, and the
gradebook, the feedback HTML and the CSV say what they should.
"""

from __future__ import annotations

import csv

import pytest

from tests.course_layout import FIXTURE
from utils import nbgrader_course, notebooks
from utils.grading.runner import load_checks_module
from utils.grading.sandbox import bubblewrap_path
from utils.rehearse import rehearse, submission_with

pytestmark = pytest.mark.skipif(bubblewrap_path() is None,
                                reason="instructor grading needs bubblewrap (apt-get install "
                                       "bubblewrap); `make test` installs it as root")

CORRECT = {
    "center_rows": "import sys, warnings\n"
                   "def center_rows(x):\n"
                   "    print('a torch-style warning', file=sys.stderr)\n"
                   "    warnings.warn('deprecated thing')\n"
                   "    return x - x.mean(dim=-1, keepdim=True)\n",
    "mask_future": "import torch as t\n"
                   "def mask_future(scores):\n"
                   "    n, m = scores.shape[-2:]\n"
                   "    bad = t.ones(n, m, dtype=t.bool).triu(1)\n"
                   "    return scores.masked_fill(bad, float('-inf'))\n",
}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    nbgrader_course.init_course(root, checks_dir=str(FIXTURE.checks))
    released = nbgrader_course.release(root, FIXTURE.name, FIXTURE.solutions)
    inbox = tmp_path_factory.mktemp("inbox")
    mutants = load_checks_module(FIXTURE.name, FIXTURE.checks).MUTANTS
    wrong = {"center_rows": CORRECT["center_rows"],
             "mask_future": mutants["mask_future"]["masks_diagonal"]}
    notebooks.write_notebook(submission_with(released, CORRECT), inbox / "alice.ipynb")
    notebooks.write_notebook(submission_with(released, wrong), inbox / "bob.ipynb")
    notebooks.write_notebook(submission_with(released, {}), inbox / "carol.ipynb")
    students = nbgrader_course.collect_folder(root, FIXTURE.name, inbox)
    assert students == ["alice", "bob", "carol"]
    nbgrader_course.autograde(root, FIXTURE.name)
    nbgrader_course.feedback(root, FIXTURE.name)
    csv_path = nbgrader_course.export(root, root / "grades.csv")
    return root, released, csv_path


def test_release_matches_course_build(course):
    _, released, _ = course
    ours = notebooks.read_notebook(FIXTURE.student_notebook)
    theirs = notebooks.read_notebook(released)
    assert [c.source for c in theirs.cells] == [c.source for c in ours.cells]


def test_gradebook_scores(course):
    from nbgrader.api import Gradebook

    root, _, _ = course
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        scores = {s: gradebook.find_submission(FIXTURE.name, s).score
                  for s in ("alice", "bob", "carol")}
    assert scores == {"alice": 3.0, "bob": 1.0, "carol": 0.0}


def test_feedback_has_results_but_no_hidden_tests(course):
    root, _, _ = course
    checks_text = (FIXTURE.checks / f"test_{FIXTURE.name}.py").read_text()
    secret_lines = [line.strip() for line in checks_text.splitlines() if len(line.strip()) > 30]
    for student in ("alice", "bob", "carol"):
        html = (root / "feedback" / student / FIXTURE.name / f"{FIXTURE.name}.html").read_text()
        assert "instructor-only sanity check" not in html
        assert "BEGIN HIDDEN TESTS" not in html
        assert not [line for line in secret_lines if line in html]
    bob = (root / "feedback" / "bob" / FIXTURE.name / f"{FIXTURE.name}.html").read_text()
    assert "Hidden checks failed" in bob and "masked positions are wrong" in bob


def test_csv_export(course):
    _, _, csv_path = course
    with open(csv_path) as f:
        rows = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert rows == {"alice": 3.0, "bob": 1.0, "carol": 0.0}


def test_rehearsal_of_the_grading_day(tmp_path, capsys):
    problems = rehearse(FIXTURE.name, tmp_path / "course", FIXTURE.solutions, FIXTURE.checks)
    out = capsys.readouterr().out
    assert problems == [], out
    assert "rehearsal passed" in out
    # ada full marks, ben nothing, cy the first exercise only, dee all but the first
    assert [line.split()[:3] for line in out.splitlines()[2:6]] == [
        ["ada", "3", "3"], ["ben", "0", "0"], ["cy", "1", "1"], ["dee", "2", "2"]]
