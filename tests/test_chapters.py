"""The contract every chapter must meet (the fixture chapter and every real one).

* the committed student notebook equals a fresh build, and nothing secret leaks into it;
* every exercise has a hidden check, a test cell with the same points, and >= 2 mutants;
* the solution scores 100%, the stub 0%, and every mutant fails its exercise's check;
* grading the same submission twice gives the same result.

One grading worker per chapter serves all of these (``course_graders`` in ``conftest.py``);
the solution's first report is the one the hidden checks in ``tests/hidden/`` read too.
"""

from __future__ import annotations

import pytest

from course_tools import build, notebooks
from course_tools.grading.diagnosis import Mistake, source_of
from course_tools.grading.runner import checks_in, load_checks_module
from tests.course_layout import all_chapters

CHAPTERS = all_chapters()
each_chapter = pytest.mark.parametrize("layout", CHAPTERS, ids=[c.name for c in CHAPTERS])


@each_chapter
def test_committed_chapter_matches_fresh_build(layout):
    solution = notebooks.read_notebook(layout.solution_notebook)
    expected = build.student_notebook(solution, layout.name)
    committed = notebooks.read_notebook(layout.student_notebook)
    assert committed == expected, f"run `python -m course_tools.build` ({layout.name} is stale)"
    assert build.find_leaks(solution, committed,
                            layout.checks / f"test_{layout.name}.py") == []


@each_chapter
def test_every_exercise_has_check_test_cell_and_mutants(layout):
    module = load_checks_module(layout.name, layout.checks)
    solution = notebooks.read_notebook(layout.solution_notebook)
    answers = set(notebooks.answer_cells(solution))
    cell_points = notebooks.test_cell_points(solution)
    checks = {c.exercise: c for c in checks_in(module)}
    assert answers == set(checks), "every answer cell needs exactly one hidden check"
    for name, check in checks.items():
        assert cell_points.get(name) == check.points, f"{name}: test cell points differ"
    mutants = getattr(module, "MUTANTS", {})
    for name in answers:
        assert len(mutants.get(name, {})) >= 2, f"{name}: needs at least two mutants"


@each_chapter
def test_solution_scores_full_marks(layout, course_graders):
    report = course_graders.report(layout, layout.solution_notebook)
    failures = [f"{e.id}: {e.message}" for e in report.exercises if not e.passed]
    assert not failures, "\n".join(failures)
    assert report.score == report.max_score > 0


@each_chapter
def test_stub_scores_zero(layout, course_graders):
    report = course_graders.report(layout, layout.student_notebook)
    assert report.score == 0, report.to_text()
    assert all("not implemented" in e.message for e in report.exercises), report.to_text()


def _mutant_cases():
    for layout in CHAPTERS:
        module = load_checks_module(layout.name, layout.checks)
        for exercise, mutants in getattr(module, "MUTANTS", {}).items():
            for mutant in mutants:
                yield pytest.param(layout, exercise, mutant,
                                   id=f"{layout.name}-{exercise}-{mutant}")


@pytest.mark.parametrize("layout,exercise,mutant", list(_mutant_cases()))
def test_mutant_is_rejected(course_graders, layout, exercise, mutant):
    grader = course_graders.grader(layout)
    check = next(c for c in grader.checks if c.exercise == exercise)
    known = grader.module.MUTANTS[exercise][mutant]
    result = grader.run_check(check, {exercise: source_of(known)})
    assert not result.passed, f"mutant {mutant!r} of {exercise} passed its hidden check"
    assert "internal grader error" not in result.message, result.message
    if isinstance(known, Mistake):  # the report names the mistake, in the learner's words
        assert known.explanation in result.message, result.message


@each_chapter
def test_solution_graded_again_after_the_mutants_gives_the_same_result(layout, course_graders):
    """The second grading goes through the same worker after the stub and every mutant (as a
    class is graded), so it also shows that they left nothing behind that changes a result."""
    first = course_graders.report(layout, layout.solution_notebook)
    second = course_graders.grader(layout).grade_notebook(layout.solution_notebook)
    assert [(e.id, e.passed, e.points) for e in second.exercises] == \
        [(e.id, e.passed, e.points) for e in first.exercises]
