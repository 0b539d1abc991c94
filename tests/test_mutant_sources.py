"""Every known mistake in the hidden checks is code that ruff reads, as the grader would run it.

A mutant is the source of a wrong answer cell, kept as a string in its chapter's ``MUTANTS``
(it is sent to the sandbox as text, like a learner's cell). A typo in one (an undefined name,
a variable computed and never used) would make it fail for the wrong reason: the check would
reject an error, not the mistake it names. So each mutant is linted where it runs: after the
chapter's setup cell, with the names the grader offers it (earlier exercises' trusted
versions) defined, with pyflakes' rules and syntax errors (ruff ``F``, ``E9``; an import
repeated from the setup cell, F811, is what a notebook cell does and is allowed).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from course_tools import notebooks
from course_tools.grading.diagnosis import source_of
from course_tools.grading.runner import load_checks_module
from course_tools.grading.trusted_calls import available
from tests.course_layout import all_chapters

LAYOUTS = all_chapters()  # the fixture chapter and every real one


def _composed_cells(layout, folder) -> dict[str, tuple[str, int]]:
    """For each mutant, a file holding what precedes it when graded and then its source:
    file name -> (mutant id, the line where the mutant starts)."""
    module = load_checks_module(layout.name, layout.checks)
    solution = notebooks.read_notebook(layout.solution_notebook)
    setup = notebooks.setup_source(solution)
    exercises = list(notebooks.answer_cells(solution))
    references = getattr(module, "REFERENCES", {})
    files = {}
    for exercise, mutants in getattr(module, "MUTANTS", {}).items():
        offered = available(references, exercises, exercise)
        prelude = setup + "\n\n" + "".join(f"{name} = ...  # offered by the grader\n"
                                           for name in sorted(offered))
        for name, mutant in mutants.items():
            path = folder / f"{layout.name}__{exercise}__{name}.py"
            path.write_text(prelude + "\n" + source_of(mutant) + "\n")
            files[path.name] = (f"{layout.name}: {exercise}: {name}", prelude.count("\n") + 2)
    return files


@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.name for layout in LAYOUTS])
def test_mutants_are_clean_code_where_they_run(layout, tmp_path):
    files = _composed_cells(layout, tmp_path)
    assert files, f"{layout.name} has no mutants"
    linted = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F,E9",
         "--ignore", "F722,F811", "--output-format", "json", "--no-cache", str(tmp_path)],
        capture_output=True, text=True)
    assert linted.returncode in (0, 1), linted.stderr
    problems = []
    for found in json.loads(linted.stdout):
        name = found["filename"].rsplit("/", 1)[-1]
        mutant, first_line = files[name]
        line = found["location"]["row"]
        if line >= first_line:  # what the setup cell does is the chapter's own business
            problems.append(f"{mutant}, line {line - first_line + 1}: {found['code']} "
                            f"{found['message']}")
    assert not problems, "\n".join(problems)
