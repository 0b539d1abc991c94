"""Grading from inside a notebook, and the course-wide progress table."""

from __future__ import annotations

import pytest

from course_tools import notebooks
from course_tools.grading.sandbox import bubblewrap_path
from tests.course_layout import FIXTURE, course_chapters
from utils import check_my_work, progress

GOOD_CENTER = "def center_rows(x):\n    return x - x.mean(dim=-1, keepdim=True)\n"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.skipif(bubblewrap_path() is None, reason="needs bubblewrap")
def test_grade_my_work_grades_the_saved_notebook(tmp_path, cache, monkeypatch):
    nb = notebooks.read_notebook(FIXTURE.student_notebook)
    for cell in nb.cells:
        if notebooks.nbgrader_meta(cell).get("grade_id") == "center_rows":
            cell.source = GOOD_CENTER
    path = tmp_path / f"{FIXTURE.name}.ipynb"
    notebooks.write_notebook(nb, path)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))
    report = check_my_work.grade_my_work(show=False, checks_folder=FIXTURE.checks,
                                         released_dir=FIXTURE.chapters)
    assert report.score == 1.0
    html = check_my_work.report_html(report, ["mask_future"])
    assert '<a href="#Exercise:-center_rows">' in html and "Save first" in html
    assert "not implemented" in html
    assert (cache / "progress" / f"{FIXTURE.name}.json").is_file()


def test_without_a_notebook_it_says_how_to_grade(monkeypatch, capsys):
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert check_my_work.grade_my_work() is None
    assert "python -m utils.grade" in capsys.readouterr().out


def test_unsaved_answers_are_spotted():
    nb = notebooks.read_notebook(FIXTURE.solution_notebook)
    saved = notebooks.answer_cells(nb)["center_rows"]
    assert check_my_work.unsaved_answers(nb, [saved]) == []
    edited = saved.replace("return", "return 2 *")
    assert check_my_work.unsaved_answers(nb, [saved, edited]) == ["center_rows"]


def test_progress_table_shows_every_chapter(cache):
    first = course_chapters()[0].name
    progress.record(first, '{"score": 3, "max_score": 17, "exercises": ['
                           '{"id": "a", "passed": true}, {"id": "b", "passed": false}]}')
    text = progress.table()
    assert f"{first}" in text and "3/17" in text and "ok --" in text
    assert text.count("not graded yet") == len(course_chapters()) - 1
