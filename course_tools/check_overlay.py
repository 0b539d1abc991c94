"""Prove a private overlay of hidden checks works before grading with it.

    python -m course_tools.check_overlay DIR [CHAPTER ...] [--solutions DIR] [--released DIR]

For every chapter the overlay covers (``DIR/test_<chapter>.py``; or only the chapters named),
with the overlay's checks: the solution notebook scores full marks, the released stub scores
zero, every answer cell has a check worth its test cell's points, and every mutant in the
overlay's ``MUTANTS`` fails its exercise's check. Chapters the overlay does not cover are
graded with the public checks, and the command says which. Exits non-zero on any problem.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course_tools import notebooks
from course_tools.grading.diagnosis import source_of
from course_tools.grading.overlay import checks_for
from course_tools.grading.runner import Grader
from utils import paths


def check_chapter(chapter: str, overlay: Path, solutions: Path, released: Path) -> list[str]:
    """Problems with the overlay's checks for one chapter (empty: all good)."""
    problems = []
    solution = notebooks.read_notebook(solutions / f"{chapter}.ipynb")
    with Grader(chapter, overlay, released) as grader:
        answers = set(notebooks.answer_cells(solution))
        checks = {c.exercise: c for c in grader.checks}
        if answers != set(checks):
            problems.append(f"answer cells without a check: {sorted(answers - set(checks))}; "
                            f"checks without an answer cell: {sorted(set(checks) - answers)}")
        cell_points = notebooks.test_cell_points(solution)
        problems += [f"{name}: the check is worth {c.points:g}, its test cell "
                     f"{cell_points.get(name)}" for name, c in checks.items()
                     if cell_points.get(name) != c.points]
        full = grader.grade_notebook(solutions / f"{chapter}.ipynb")
        problems += [f"the solution fails {e.id}: {e.message}" for e in full.exercises
                     if not e.passed]
        stub = grader.grade_notebook(released / f"{chapter}.ipynb")
        problems += [f"the untouched stub passes {e.id}" for e in stub.exercises if e.passed]
        mutants = getattr(grader.module, "MUTANTS", {})
        for exercise, check in checks.items():
            if len(mutants.get(exercise, {})) < 2:
                problems.append(f"{exercise}: fewer than two mutants")
            for name, mutant in mutants.get(exercise, {}).items():
                result = grader.run_check(check, {exercise: source_of(mutant)})
                if result.passed:
                    problems.append(f"mutant {name!r} of {exercise} passes its check")
                elif "internal grader error" in result.message:
                    problems.append(f"mutant {name!r} of {exercise}: {result.message}")
        print(f"  {chapter}: solution {full.score:g}/{full.max_score:g}, stub "
              f"{stub.score:g}, {sum(len(m) for m in mutants.values())} mutants")
    return problems


def check_overlay(overlay: Path, chapters: list[str] | None = None,
                  solutions: Path = paths.SOLUTIONS_DIR,
                  released: Path = paths.CHAPTERS_DIR) -> list[str]:
    """Check every chapter the overlay covers; print what it found; return the problems."""
    overlay = Path(overlay).resolve()
    all_chapters = [p.stem for p in notebooks.chapter_notebooks(solutions)]
    covered = sorted(p.stem[len("test_"):] for p in overlay.glob("test_*.py"))
    chosen = chapters or [c for c in all_chapters if c in covered]
    problems = [f"{c}: the overlay has no test_{c}.py" for c in chosen if c not in covered]
    if not chosen:
        problems.append(f"{overlay} holds no test_<chapter>.py for a chapter in {solutions}")
    print(f"checking the overlay {overlay}")
    for chapter in chosen:
        if chapter not in covered:
            continue
        try:
            problems += [f"{chapter}: {p}" for p in
                         check_chapter(chapter, overlay, solutions, released)]
        except Exception as exc:  # a broken checks module is a finding, not a crash
            problems.append(f"{chapter}: {type(exc).__name__}: {exc}")
    for chapter in all_chapters:
        if chapter not in covered:
            print(f"  {chapter}: not in the overlay; graded with the "
                  f"{checks_for(chapter, overlay).note.removeprefix('checks: ')}")
    print("overlay OK" if not problems else "overlay FAILED:\n  " + "\n  ".join(problems))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_tools.check_overlay", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overlay", type=Path, help="folder of test_<chapter>.py files")
    parser.add_argument("chapters", nargs="*", help="only these chapters")
    parser.add_argument("--solutions", type=Path, default=paths.SOLUTIONS_DIR)
    parser.add_argument("--released", type=Path, default=paths.CHAPTERS_DIR)
    args = parser.parse_args(argv)
    if not args.overlay.is_dir():
        print(f"error: {args.overlay} is not a folder", file=sys.stderr)
        return 2
    return 1 if check_overlay(args.overlay, args.chapters, args.solutions, args.released) else 0


if __name__ == "__main__":
    sys.exit(main())
