"""Generate the student notebooks in ``chapters/`` from the instructor's ``solutions/``.

``python -m course_tools.build`` rewrites ``chapters/``; ``python -m course_tools.build --check``
changes nothing and exits non-zero if a committed chapter differs from a fresh build, a solution
notebook carries outputs, or any solution or hidden-check text reaches a student notebook.

The transformation (deterministic: same input, same bytes):

* ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` becomes ``# YOUR CODE HERE`` /
  ``raise NotImplementedError()`` at the marker's indentation (``YOUR ANSWER HERE`` in
  markdown); ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` is removed.
* outputs and execution counts are cleared; cell ids are kept (they are stable because the
  source notebook's are); metadata is reduced to ``nbgrader`` and ``tags``; answer and
  test cells are protected from deletion, test cells from editing.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

from course_tools import notebooks
from course_tools.notebooks import HIDDEN_BEGIN, HIDDEN_END, SOLUTION_BEGIN, SOLUTION_END
from utils import paths

CODE_STUB = ["# YOUR CODE HERE", "raise NotImplementedError()"]
MARKDOWN_STUB = "YOUR ANSWER HERE"
MARKERS = (SOLUTION_BEGIN, SOLUTION_END, HIDDEN_BEGIN, HIDDEN_END)
KEPT_NBGRADER_KEYS = ("grade", "grade_id", "locked", "points", "schema_version", "solution",
                      "task")


class BuildError(ValueError):
    """A solution notebook that breaks the course's conventions."""


def _split_regions(source: str, where: str) -> tuple[list[str], list[str], list[str]]:
    """Return (student lines, solution-region lines, hidden-region lines) of one cell."""
    student, solution, hidden = [], [], []
    mode = None
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == SOLUTION_BEGIN or stripped == HIDDEN_BEGIN:
            if mode is not None:
                raise BuildError(f"{where}: nested or unclosed marker before {stripped!r}")
            mode = "solution" if stripped == SOLUTION_BEGIN else "hidden"
            if mode == "solution":
                indent = line[: len(line) - len(line.lstrip())]
                student.append(("__STUB__", indent))
            continue
        if stripped in (SOLUTION_END, HIDDEN_END):
            expected = "solution" if stripped == SOLUTION_END else "hidden"
            if mode != expected:
                raise BuildError(f"{where}: {stripped!r} without its BEGIN marker")
            mode = None
            continue
        if any(marker in line for marker in MARKERS):
            raise BuildError(f"{where}: a marker must stand alone on its line: {line!r}")
        {"solution": solution, "hidden": hidden, None: student}[mode].append(line)
    if mode is not None:
        raise BuildError(f"{where}: a {mode} region is never closed")
    return student, solution, hidden


def _student_source(cell, where: str) -> str:
    student, _, _ = _split_regions(cell.source, where)
    lines: list[str] = []
    for item in student:
        if isinstance(item, tuple):
            indent = item[1]
            if cell.cell_type == "markdown":
                lines.append(MARKDOWN_STUB)
            else:
                lines += [indent + stub for stub in CODE_STUB]
        else:
            lines.append(item)
    return "\n".join(lines)


def _clean_metadata(cell) -> dict:
    meta = {}
    grader = notebooks.nbgrader_meta(cell)
    if grader:
        meta["nbgrader"] = {k: grader[k] for k in KEPT_NBGRADER_KEYS if k in grader}
        if grader.get("solution") or grader.get("grade") or grader.get("locked"):
            meta["deletable"] = False
        if grader.get("grade") or grader.get("locked"):
            meta["editable"] = False
    tags = cell.get("metadata", {}).get("tags")
    if tags:
        meta["tags"] = list(tags)
    return meta


def validate_solution(nb, name: str) -> None:
    """Raise :class:`BuildError` unless the solution notebook follows the conventions."""
    seen_ids: set[str] = set()
    grade_ids: set[str] = set()
    answers, tests = [], []
    for index, cell in enumerate(nb.cells):
        where = f"{name} cell {index}"
        if not cell.get("id"):
            raise BuildError(f"{where}: has no cell id (save it with Jupyter >= 7)")
        if cell.id in seen_ids:
            raise BuildError(f"{where}: duplicate cell id {cell.id!r}")
        seen_ids.add(cell.id)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            raise BuildError(f"{where}: has outputs; run `python -m course_tools.build --strip` "
                             "before committing")
        grade_id = notebooks.nbgrader_meta(cell).get("grade_id")
        if grade_id:
            if grade_id in grade_ids:
                raise BuildError(f"{where}: duplicate grade_id {grade_id!r}")
            grade_ids.add(grade_id)
        _split_regions(cell.source, where)
        if notebooks.is_answer_cell(cell):
            if SOLUTION_BEGIN not in cell.source:
                raise BuildError(f"{where}: answer cell {grade_id!r} has no solution region")
            answers.append(grade_id)
        if notebooks.is_test_cell(cell):
            if not grade_id or not grade_id.startswith("test_"):
                raise BuildError(f"{where}: test cell grade_id must be 'test_<exercise>'")
            tests.append(grade_id[len("test_"):])
    missing = sorted(set(answers) - set(tests))
    if missing:
        raise BuildError(f"{name}: exercises without a test cell: {missing}")


def student_notebook(solution_nb, name: str = "notebook") -> nbformat.NotebookNode:
    """The student version of a solution notebook."""
    validate_solution(solution_nb, name)
    out = nbformat.v4.new_notebook()
    kernelspec = solution_nb.metadata.get("kernelspec") or {
        "display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    out.metadata = {"kernelspec": dict(kernelspec), "language_info": {"name": "python"}}
    out.nbformat, out.nbformat_minor = 4, 5
    for index, cell in enumerate(solution_nb.cells):
        new = copy.deepcopy(cell)
        new.source = _student_source(cell, f"{name} cell {index}")
        new.metadata = _clean_metadata(cell)
        for key in list(new):
            if key not in ("id", "cell_type", "source", "metadata", "outputs",
                           "execution_count", "attachments"):
                del new[key]
        if new.cell_type == "code":
            new.outputs = []
            new.execution_count = None
        out.cells.append(new)
    return out


def _secret_lines(solution_nb, checks_file: Path | None) -> tuple[set[str], set[str]]:
    """(solution/hidden-test lines, hidden-check lines) that must not reach students."""
    visible, secret = set(), set()
    for cell in solution_nb.cells:
        student, solution, hidden = _split_regions(cell.source, "leak scan")
        visible |= {x.strip() for x in student if isinstance(x, str)}
        secret |= {x.strip() for x in solution + hidden}
    stub_lines = set(CODE_STUB) | {MARKDOWN_STUB}
    secret = {s for s in secret if s and s not in visible and s not in stub_lines}
    check_lines: set[str] = set()
    if checks_file and checks_file.is_file():
        for line in checks_file.read_text().splitlines():
            s = line.strip()
            if len(s) >= 25 and not s.startswith(("#", "import ", "from ")) and s not in visible:
                check_lines.add(s)
    return secret, check_lines


def hidden_lines(solution_nb, checks_file: Path | None = None) -> set[str]:
    """Lines of the hidden-test regions and hidden checks: what no learner may see, not even in
    the feedback on their own work (where their solution text legitimately appears)."""
    hidden: set[str] = set()
    for cell in solution_nb.cells:
        hidden |= {x.strip() for x in _split_regions(cell.source, "hidden-line scan")[2]}
    return {s for s in hidden if s} | _secret_lines(solution_nb, checks_file)[1]


def find_leaks(solution_nb, student_nb, checks_file: Path | None = None) -> list[str]:
    """Lines of solution, hidden-test or hidden-check text present in the student notebook."""
    secret, check_lines = _secret_lines(solution_nb, checks_file)
    leaks = []
    for index, cell in enumerate(student_nb.cells):
        texts = [cell.source] + [str(o) for o in cell.get("outputs", [])]
        for text in texts:
            for marker in MARKERS:
                if marker in text:
                    leaks.append(f"cell {index}: marker {marker!r}")
            for line in text.splitlines():
                s = line.strip()
                if s in secret:
                    leaks.append(f"cell {index}: solution text {s[:60]!r}")
                elif s in check_lines:
                    leaks.append(f"cell {index}: hidden-check text {s[:60]!r}")
    return leaks


def build(solutions: Path, chapters: Path, checks: Path | None, check_only: bool) -> list[str]:
    """Build (or, with ``check_only``, compare) every chapter; return a list of problems."""
    problems: list[str] = []
    sources = notebooks.chapter_notebooks(solutions)
    if not sources:
        return [f"no solution notebooks (NN_topic.ipynb) in {solutions}"]
    chapters.mkdir(parents=True, exist_ok=True)
    expected_names = set()
    for src in sources:
        expected_names.add(src.name)
        target = chapters / src.name
        try:
            solution_nb = notebooks.read_notebook(src)
            student = student_notebook(solution_nb, src.name)
        except (BuildError, notebooks.NotebookError) as exc:
            problems.append(str(exc))
            continue
        text = nbformat.writes(student, version=4)
        text = text if text.endswith("\n") else text + "\n"
        checks_file = (checks / f"test_{src.stem}.py") if checks else None
        for leak in find_leaks(solution_nb, student, checks_file):
            problems.append(f"{target}: leak: {leak}")
        if check_only:
            current = target.read_text(encoding="utf-8") if target.exists() else None
            if current != text:
                problems.append(f"{target} is out of date: run `python -m course_tools.build`")
            if current is not None:
                committed = notebooks.read_notebook(target)
                for leak in find_leaks(solution_nb, committed, checks_file):
                    problems.append(f"{target} (committed): leak: {leak}")
        else:
            target.write_text(text, encoding="utf-8")
    for stray in notebooks.chapter_notebooks(chapters):
        if stray.name not in expected_names:
            problems.append(f"{stray} has no source in {solutions}")
    return problems


def strip_outputs(folder: Path) -> int:
    """Remove outputs and execution counts from the notebooks in ``folder`` (in place)."""
    changed = 0
    for path in notebooks.chapter_notebooks(folder):
        nb = notebooks.read_notebook(path)
        dirty = False
        for cell in nb.cells:
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count):
                cell.outputs, cell.execution_count = [], None
                dirty = True
            for key in ("execution", "collapsed", "scrolled"):
                if key in cell.metadata:
                    del cell.metadata[key]
                    dirty = True
        if dirty:
            notebooks.write_notebook(nb, path)
            changed += 1
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_tools.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify only; change nothing")
    parser.add_argument("--strip", action="store_true", help="strip outputs from solutions")
    parser.add_argument("--solutions", type=Path, default=paths.SOLUTIONS_DIR)
    parser.add_argument("--chapters", type=Path, default=paths.CHAPTERS_DIR)
    parser.add_argument("--checks", type=Path, default=paths.HIDDEN_CHECKS_DIR)
    args = parser.parse_args(argv)
    if args.strip:
        print(f"stripped outputs from {strip_outputs(args.solutions)} notebook(s)")
    problems = build(args.solutions, args.chapters, args.checks, args.check)
    for problem in problems:
        print(f"build: {problem}", file=sys.stderr)
    if not problems:
        count = len(notebooks.chapter_notebooks(args.solutions))
        verb = "up to date" if args.check else "built"
        print(f"{count} chapter(s) {verb} in {args.chapters}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
