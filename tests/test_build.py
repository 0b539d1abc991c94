"""The solutions -> chapters build: stubs, determinism, leak detection, bad input."""

from __future__ import annotations

import shutil

import pytest

from course_tools import build
from course_tools.authoring import NotebookWriter
from tests.course_layout import FIXTURE


def _solution(answer_body: str, test_body: str = "assert True"):
    w = NotebookWriter()
    w.setup("import torch as t")
    w.answer("double", "def double(x):\n    ### BEGIN SOLUTION\n" + answer_body
             + "\n    ### END SOLUTION")
    w.selfcheck("double", test_body, points=1)
    return w.notebook()


def test_solution_region_becomes_indented_stub():
    student = build.student_notebook(_solution("    return 2 * x"), "x")
    answer = student.cells[1].source
    assert answer == "def double(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()"
    assert student.cells[1].metadata["deletable"] is False
    assert student.cells[2].metadata["editable"] is False


def test_hidden_tests_are_removed_and_outputs_cleared():
    nb = _solution("    return 2 * x", "assert double(1) == 2\n### BEGIN HIDDEN TESTS\n"
                   "assert double(21) == 42\n### END HIDDEN TESTS")
    student = build.student_notebook(nb, "x")
    assert student.cells[2].source == "assert double(1) == 2"
    assert all(c.get("outputs", []) == [] for c in student.cells)


@pytest.mark.parametrize("body", ["    return 2 * x\n    ### BEGIN SOLUTION",
                                  "    return 2 * x  ### END SOLUTION"])
def test_broken_markers_are_rejected(body):
    with pytest.raises(build.BuildError):
        build.student_notebook(_solution(body), "x")


def test_outputs_in_solutions_are_rejected():
    nb = _solution("    return 2 * x")
    nb.cells[1].outputs = [{"output_type": "stream", "name": "stdout", "text": "hi"}]
    with pytest.raises(build.BuildError, match="has outputs"):
        build.student_notebook(nb, "x")


def test_exercise_without_test_cell_is_rejected():
    nb = _solution("    return 2 * x")
    nb.cells = nb.cells[:2]
    with pytest.raises(build.BuildError, match="without a test cell"):
        build.student_notebook(nb, "x")


def test_leak_detection_finds_solution_and_check_text(tmp_path):
    nb = _solution("    return 2 * x + 0  # the secret line")
    student = build.student_notebook(nb, "x")
    assert build.find_leaks(nb, student) == []
    student.cells[1].source += "\n    return 2 * x + 0  # the secret line"
    assert any("solution text" in leak for leak in build.find_leaks(nb, student))
    checks = tmp_path / "test_x.py"
    checks.write_text("    expected = reference_double_for_hidden_inputs(seed=1234)\n")
    student.cells[0].source += "\nexpected = reference_double_for_hidden_inputs(seed=1234)"
    assert any("hidden-check text" in leak for leak in build.find_leaks(nb, student, checks))


def test_build_is_deterministic_and_check_detects_drift(tmp_path):
    solutions, chapters = tmp_path / "solutions", tmp_path / "chapters"
    shutil.copytree(FIXTURE.solutions, solutions)
    assert build.build(solutions, chapters, FIXTURE.checks, check_only=False) == []
    first = (chapters / "00_fixture.ipynb").read_bytes()
    assert build.build(solutions, chapters, FIXTURE.checks, check_only=False) == []
    assert (chapters / "00_fixture.ipynb").read_bytes() == first
    assert build.build(solutions, chapters, FIXTURE.checks, check_only=True) == []
    assert first == FIXTURE.student_notebook.read_bytes()
    (chapters / "00_fixture.ipynb").write_text(first.decode().replace("center", "centre"))
    problems = build.build(solutions, chapters, FIXTURE.checks, check_only=True)
    assert any("out of date" in p for p in problems)
    (chapters / "99_orphan.ipynb").write_text(first.decode())
    assert any("has no source" in p for p in
               build.build(solutions, chapters, FIXTURE.checks, check_only=True))


def test_cli_check_exit_codes(tmp_path, capsys):
    args = ["--solutions", str(FIXTURE.solutions), "--chapters", str(FIXTURE.chapters),
            "--checks", str(FIXTURE.checks), "--check"]
    assert build.main(args) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ["--solutions", str(empty), "--chapters", str(tmp_path / "c"), "--check"]
    assert build.main(args) == 1
    assert "no solution notebooks" in capsys.readouterr().err

