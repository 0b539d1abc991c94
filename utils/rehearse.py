"""A dress rehearsal of the instructor's grading day, on generated submissions.

    python -m utils.rehearse 01_residual_stream [--course-dir DIR] [--checks DIR]

builds a throwaway nbgrader course (or uses ``--course-dir``), releases the chapter, writes
four learners' submissions whose right scores are known in advance, and runs the whole cycle
of :mod:`utils.nbgrader_course`: collect, autograde (sandboxed hidden checks), feedback, CSV
export. It then checks what an instructor would check by hand: every gradebook score and
every CSV row is the expected one, and no feedback page shows hidden-check text. It prints a
table and exits non-zero if anything is off, so run it on the grading machine before the day.

The learners: ``ada`` answers everything as the solution does (full marks); ``ben`` hands in
the released notebook untouched (0); ``cy`` solves the first half of the exercises and
submits a known wrong answer (a mutant from the hidden checks) for the rest; ``dee`` solves
everything but kills the grading process in the first exercise (``os._exit``), which must
cost that exercise only.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from utils import build, nbgrader_course, notebooks, paths
from utils.grading.runner import checks_dir, checks_in, load_checks_module

CRASH_ANSWER = "import os\n\ndef {name}(*args, **kwargs):\n    os._exit(3)\n"


@dataclass
class Learner:
    name: str
    answers: dict[str, str]  # exercise -> answer cell source (missing: left as released)
    expected: float


def generated_learners(chapter: str, solutions: Path, checks: Path | None) -> list[Learner]:
    """The four learners of the module docstring, with the score each one must get."""
    module = load_checks_module(chapter, checks)
    exercises = [(c.exercise, c.points) for c in checks_in(module)]
    solved = notebooks.answer_cells(notebooks.read_notebook(solutions / f"{chapter}.ipynb"))
    total = sum(p for _, p in exercises)
    half = len(exercises) // 2 or 1
    cy = {name: solved[name] if i < half else next(iter(module.MUTANTS[name].values()))
          for i, (name, _) in enumerate(exercises)}
    first, first_points = exercises[0]
    dee = {**solved, first: CRASH_ANSWER.format(name=first)}
    return [Learner("ada", dict(solved), total), Learner("ben", {}, 0.0),
            Learner("cy", cy, sum(p for _, p in exercises[:half])),
            Learner("dee", dee, total - first_points)]


def submission_with(released: Path, answers: dict[str, str]):
    """The released notebook with some answer cells replaced, as a learner would submit it."""
    nb = notebooks.read_notebook(released)
    for cell in nb.cells:
        grade_id = notebooks.nbgrader_meta(cell).get("grade_id")
        if notebooks.is_answer_cell(cell) and grade_id in answers:
            cell.source = answers[grade_id]
    return nb


def rehearse(chapter: str, root: Path, solutions: Path = paths.SOLUTIONS_DIR,
             checks: Path | None = None, require_sandbox: bool = True) -> list[str]:
    """Run the cycle in course folder ``root``; print a table; return the problems found."""
    nbgrader_course.init_course(root, require_sandbox=require_sandbox,
                                checks_dir=str(checks or ""))
    released = nbgrader_course.release(root, chapter, solutions)
    learners = generated_learners(chapter, solutions, checks)
    inbox = root / "rehearsal-inbox"
    inbox.mkdir(exist_ok=True)
    for learner in learners:
        notebooks.write_notebook(submission_with(released, learner.answers),
                                 inbox / f"{learner.name}.ipynb")
    nbgrader_course.collect_folder(root, chapter, inbox)
    nbgrader_course.autograde(root, chapter)
    nbgrader_course.feedback(root, chapter)
    csv_path = nbgrader_course.export(root, root / "grades.csv")

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        scores = {lr.name: gradebook.find_submission(chapter, lr.name).score for lr in learners}
    with open(csv_path) as f:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)
                    if row["assignment"] == chapter}
    secret = build.hidden_lines(notebooks.read_notebook(solutions / f"{chapter}.ipynb"),
                                checks_dir(checks) / f"test_{chapter}.py")
    problems = []
    print(f"rehearsal of {chapter} in {root}")
    print(f"  {'learner':<8} {'expected':>8} {'gradebook':>9} {'csv':>6}  feedback")
    for learner in learners:
        page = root / "feedback" / learner.name / chapter / f"{chapter}.html"
        html = page.read_text() if page.is_file() else ""
        shown = sorted(line for line in secret if line in html)
        status = "missing" if not html else (f"SHOWS {len(shown)} hidden line(s)" if shown
                                             else "ok")
        print(f"  {learner.name:<8} {learner.expected:>8g} {scores[learner.name]:>9g} "
              f"{exported.get(learner.name, float('nan')):>6g}  {status}")
        if abs(scores[learner.name] - learner.expected) > 1e-9:
            problems.append(f"{learner.name}: gradebook score {scores[learner.name]:g}, "
                            f"expected {learner.expected:g}")
        if exported.get(learner.name) != scores[learner.name]:
            problems.append(f"{learner.name}: CSV score {exported.get(learner.name)} differs "
                            "from the gradebook")
        if status != "ok":
            problems.append(f"{learner.name}: feedback page {status}"
                            + (f", e.g. {shown[0][:60]!r}" if shown else ""))
    print("rehearsal passed" if not problems else "rehearsal FAILED:\n  " + "\n  ".join(problems))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.rehearse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapter", help="e.g. 01_residual_stream")
    parser.add_argument("--course-dir", type=Path,
                        help="course folder to use (default: a temporary one, removed after)")
    parser.add_argument("--checks", type=Path, help="private overlay of hidden checks")
    parser.add_argument("--allow-unsandboxed", action="store_true",
                        help="grade without bubblewrap (self-study machines only)")
    args = parser.parse_args(argv)
    try:
        if args.course_dir:
            problems = rehearse(args.chapter, args.course_dir.resolve(), checks=args.checks,
                                require_sandbox=not args.allow_unsandboxed)
        else:
            with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
                problems = rehearse(args.chapter, Path(tmp), checks=args.checks,
                                    require_sandbox=not args.allow_unsandboxed)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
