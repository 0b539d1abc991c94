"""The instructor's nbgrader round trip on the fixture chapter, graded outside the kernel.

Four students, graded with a private overlay (the fixture's checks with other inputs): one
correct (whose answer also writes to stderr, which must not cost marks, and who printed
something in the notebook), one wrong, one empty, and one whose answers print and raise their
hidden inputs. Release -> collect -> autograde -> feedback -> export, and the gradebook, the
feedback HTML and the CSV say what they should, and no feedback page shows an overlay input.
"""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from course_tools import nbgrader_course, notebooks
from course_tools.grading.diagnosis import source_of
from course_tools.grading.runner import load_checks_module
from course_tools.grading.sandbox import bubblewrap_path
from course_tools.rehearse import OWN_OUTPUT, rehearse, submission_with
from tests.course_layout import FIXTURE

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


OVERLAY_SEED = 4242  # the overlay's own input for center_rows (the public checks use 11)
LEAKY = {  # tries to carry the hidden input into the feedback: prints it, raises it
    "center_rows": "def center_rows(x):\n    print('hidden' + ' input seen:', x.tolist())\n"
                   "    raise ValueError(repr(x.tolist()))\n",
    "mask_future": "def mask_future(scores):\n    return scores * 0 + scores.sum()\n",
}
WRONG_VALUES = {"center_rows": "def center_rows(x):\n    return x - x.mean(dim=0, keepdim=True)\n",
                "mask_future": CORRECT["mask_future"]}


def overlay_input() -> torch.Tensor:
    return torch.randn(5, 7, generator=torch.Generator().manual_seed(OVERLAY_SEED)) * 3 + 1


def make_overlay(folder):
    """The fixture's checks with another hidden input: a private overlay."""
    folder.mkdir()
    text = (FIXTURE.checks / f"test_{FIXTURE.name}.py").read_text()
    assert "manual_seed(11)" in text
    (folder / f"test_{FIXTURE.name}.py").write_text(
        text.replace("manual_seed(11)", f"manual_seed({OVERLAY_SEED})"))
    return folder


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    overlay = make_overlay(tmp_path_factory.mktemp("private") / "checks")
    nbgrader_course.init_course(root, checks_dir=str(overlay))
    released = nbgrader_course.release(root, FIXTURE.name, FIXTURE.solutions)
    inbox = tmp_path_factory.mktemp("inbox")
    mutants = load_checks_module(FIXTURE.name, FIXTURE.checks).MUTANTS
    wrong = {"center_rows": CORRECT["center_rows"],
             "mask_future": source_of(mutants["mask_future"]["masks_diagonal"])}
    notebooks.write_notebook(submission_with(released, CORRECT, output=OWN_OUTPUT),
                             inbox / "alice.ipynb")
    notebooks.write_notebook(submission_with(released, wrong), inbox / "bob.ipynb")
    notebooks.write_notebook(submission_with(released, {}), inbox / "carol.ipynb")
    (inbox / "dan").mkdir()
    notebooks.write_notebook(submission_with(released, LEAKY), inbox / "dan" / "Untitled.ipynb")
    (inbox / "eli").mkdir()
    notebooks.write_notebook(submission_with(released, WRONG_VALUES),
                             inbox / "eli" / f"{FIXTURE.name}-Copy1.ipynb")
    found = nbgrader_course.collect_folder(root, FIXTURE.name, inbox)
    assert found.learners == ["alice", "bob", "carol", "dan", "eli"]
    nbgrader_course.autograde(root, FIXTURE.name)
    nbgrader_course.feedback(root, FIXTURE.name)
    csv_path = nbgrader_course.export(root, root / "grades.csv")
    return root, released, csv_path


def feedback_page(root, student):
    return (root / "feedback" / student / FIXTURE.name / f"{FIXTURE.name}.html").read_text()


def visible(html):
    return re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S | re.I)


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
                  for s in ("alice", "bob", "carol", "dan", "eli")}
    assert scores == {"alice": 3.0, "bob": 1.0, "carol": 0.0, "dan": 0.0, "eli": 2.0}


def test_feedback_has_results_but_no_hidden_tests(course):
    root, _, _ = course
    checks_text = (FIXTURE.checks / f"test_{FIXTURE.name}.py").read_text()
    secret_lines = [line.strip() for line in checks_text.splitlines() if len(line.strip()) > 30]
    for student in ("alice", "bob", "carol", "dan", "eli"):
        html = feedback_page(root, student)
        assert "instructor-only sanity check" not in html
        assert "BEGIN HIDDEN TESTS" not in html
        assert not [line for line in secret_lines if line in html]
    bob = (root / "feedback" / "bob" / FIXTURE.name / f"{FIXTURE.name}.html").read_text()
    assert "Hidden checks failed" in bob and "masked positions are wrong" in bob


def test_csv_export(course):
    _, _, csv_path = course
    with open(csv_path) as f:
        rows = {r["student_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert rows == {"alice": 3.0, "bob": 1.0, "carol": 0.0, "dan": 0.0, "eli": 2.0}


def test_no_overlay_input_or_expected_value_in_any_feedback_page(course):
    root, _, _ = course
    hidden = overlay_input()
    inputs = {f"{v:.4f}"[:6] for v in hidden.flatten().tolist()}  # 4 significant digits
    full = {}
    for student in ("bob", "dan", "eli"):
        report = json.loads((root / nbgrader_course.REPORTS / FIXTURE.name
                             / f"{student}.json").read_text())
        full[student] = " ".join(e["message"] for e in report["exercises"])
    # the full messages (the instructor's copy) do carry inputs and expected values ...
    assert any(v in full["dan"] for v in inputs)
    expected = re.search(r"expected (-?[\d.]+)", full["eli"]).group(1)
    # ... and no feedback page does
    for student in ("alice", "bob", "carol", "dan", "eli"):
        text = visible(feedback_page(root, student))
        assert not [v for v in inputs if v in text], student
        assert expected not in text, student
        assert "hidden input seen:" not in text  # dan's printed output stays out of it
    eli = visible(feedback_page(root, "eli"))
    assert "values differ from the reference" in eli and "expected …, got …" in eli
    assert "without the checks' inputs or expected values" in eli


def test_feedback_is_readable_offline_and_keeps_the_learners_output(course):
    root, _, _ = course
    html = feedback_page(root, "alice")
    assert "cdnjs" not in html and "window.MathJax" in html and "tex" in html
    assert "pre-wrap" in html
    assert OWN_OUTPUT in visible(html)


def test_autograde_table_and_log(course):
    root, _, _ = course
    table = nbgrader_course.score_table(root, FIXTURE.name)
    rows = {line.split()[0]: line.split()[1:4] for line in table.splitlines()[1:6]}
    assert rows == {"alice": ["ok", "ok", "3/3"], "bob": ["ok", "--", "1/3"],
                    "carol": ["--", "--", "0/3"], "dan": ["--", "--", "0/3"],
                    "eli": ["--", "ok", "2/3"]}
    assert "sandboxed" in table and "checks: private overlay" in table
    log = (root / "logs" / f"autograde-{FIXTURE.name}.log").read_text()
    assert "grader ready for 00_fixture" in log and "graded alice" in log


def test_rehearsal_of_the_grading_day(tmp_path, capsys):
    problems = rehearse(FIXTURE.name, tmp_path / "course", FIXTURE.solutions, FIXTURE.checks)
    out = capsys.readouterr().out
    assert problems == [], out
    assert "rehearsal passed" in out and "overlay OK" in out
    rows = out[out.index("  learner  expected"):].splitlines()[1:7]
    # ada full marks, ben nothing, cy the first exercise only, dee and eve all but the first,
    # fay (two notebooks) not graded but in the CSV
    assert [line.split()[:4] for line in rows] == [
        ["ada", "3", "3.0", "3.0"], ["ben", "0", "0.0", "0.0"], ["cy", "1", "1.0", "1.0"],
        ["dee", "2", "2.0", "2.0"], ["eve", "2", "2.0", "2.0"], ["fay", "-", "-", "0.0"]]
