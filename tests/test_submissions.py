"""Finding learners' submissions: nobody dropped silently, nothing guessed."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from course_tools.grading.sandbox import bubblewrap_path
from course_tools.submissions import find_submissions

CHAPTER = "02_qk_ov_circuits"


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def test_every_layout_and_every_skip_has_a_reason(tmp_path):
    _touch(tmp_path, "ada.ipynb", f"ben/{CHAPTER}.ipynb", f"eve/{CHAPTER}-Copy1.ipynb",
           "gus/Untitled.ipynb", f"hal/{CHAPTER}/{CHAPTER}.ipynb",
           f"ivy/{CHAPTER}.ipynb", "ivy/01_residual_stream.ipynb", "ivy/notes.txt",
           "ivy/.ipynb_checkpoints/x.ipynb", "grades.csv", ".DS_Store",
           f"{CHAPTER}.ipynb", "bad name.ipynb")
    found = find_submissions(tmp_path, CHAPTER)
    assert {k: str(v.relative_to(tmp_path)) for k, v in found.notebooks.items()} == {
        "ada": "ada.ipynb", "ben": f"ben/{CHAPTER}.ipynb", "eve": f"eve/{CHAPTER}-Copy1.ipynb",
        "gus": "gus/Untitled.ipynb", "hal": f"hal/{CHAPTER}/{CHAPTER}.ipynb",
        "ivy": f"ivy/{CHAPTER}.ipynb"}
    assert found.problems == {}
    reasons = {str(s.path.relative_to(tmp_path)): s.reason for s in found.skipped}
    assert reasons["grades.csv"] == "not a notebook"
    assert reasons[".DS_Store"] == "hidden"
    assert reasons["ivy/01_residual_stream.ipynb"] == "another chapter's notebook"
    assert reasons["ivy/notes.txt"] == "not a notebook"
    assert reasons["ivy/.ipynb_checkpoints"] == "hidden"
    assert "named like a chapter" in reasons[f"{CHAPTER}.ipynb"]
    assert "not a valid learner id" in reasons["bad name.ipynb"]
    text = found.report(tmp_path)
    assert "grades.csv" in text and "bad name.ipynb" in text


def test_two_candidates_or_none_is_a_problem_row_not_a_guess(tmp_path):
    _touch(tmp_path, f"fay/{CHAPTER}.ipynb", f"fay/{CHAPTER}-Copy1.ipynb", "joe/readme.md",
           "kim.ipynb", "kim/Untitled.ipynb")
    found = find_submissions(tmp_path, CHAPTER)
    assert found.notebooks == {}
    assert set(found.problems) == {"fay", "joe", "kim"} == set(found.learners)
    assert "2 notebooks in fay/" in found.problems["fay"]
    assert "no notebook" in found.problems["joe"]
    assert "both kim.ipynb and a folder kim/" in found.problems["kim"]
    assert "NOT GRADED fay" in found.report(tmp_path)


@pytest.mark.skipif(bubblewrap_path() is None, reason="needs bubblewrap")
def test_grade_class_grades_a_copy_and_gives_an_ambiguous_folder_an_error_row(tmp_path):
    from course_tools import grade_class, notebooks
    from tests.course_layout import FIXTURE

    chapter = FIXTURE.name
    stub = notebooks.read_notebook(FIXTURE.student_notebook)
    for name in (f"eve/{chapter}-Copy1.ipynb", "fay/a.ipynb", "fay/b.ipynb"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        notebooks.write_notebook(stub, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a submission")
    reports = grade_class.grade_class(tmp_path, chapter, jobs=1, checks=FIXTURE.checks,
                                      released=FIXTURE.chapters, require_sandbox=True)
    assert list(reports) == ["eve", "fay"]
    assert reports["eve"].notebook.endswith("-Copy1.ipynb") and not reports["eve"].errors
    assert reports["fay"].score == 0 and "2 notebooks in fay/" in reports["fay"].errors[0]
    grade_class.write_csv(reports, tmp_path / "class.csv")
    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "class.csv"))}
    assert set(rows) == {"eve", "fay"} and "not graded: 2 notebooks" in rows["fay"]["messages"]
    for message in rows["eve"]["messages"].split(" | "):  # each names its exercise once
        exercise = message.split(":")[0]
        assert message.count(f"{exercise}:") == 1, message
