"""Grade a whole class: ``python -m course_tools.grade_class FOLDER --chapter CHAPTER [--jobs 2]``.

``FOLDER`` holds one submission per student (layouts: :mod:`course_tools.submissions`); what is
skipped is listed with the reason, and a student whose notebook cannot be chosen gets an error
row. Each of ``--jobs`` worker processes keeps one sandboxed
grader and takes the next student; one student's crash, loop or attack costs only that
student's exercise. Prints a pass/fail table (students x exercises) and writes ``--csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from course_tools.grading.runner import Grader, Report
from course_tools.submissions import find_submissions, problem_report

_grader: Grader | None = None


def _start_worker(chapter: str, checks: Path | None, released: Path | None,
                  require_sandbox: bool) -> None:
    import torch

    torch.set_num_threads(1)  # the jobs share the cores; don't oversubscribe them
    global _grader
    _grader = Grader(chapter, checks, released, require_isolation=require_sandbox)
    _grader.__enter__()


def _grade_one(path: str) -> Report:
    return _grader.grade_notebook(Path(path))


def _grade_in_pool(notebooks: dict[str, Path], chapter: str, jobs: int, options: tuple
                   ) -> tuple[dict[str, Report], dict[str, str]]:
    """Grade ``notebooks`` with ``jobs`` processes: (reports, learner -> why the grader failed)."""
    reports: dict[str, Report] = {}
    failed: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=jobs, initializer=_start_worker,
                             initargs=(chapter, *options)) as pool:
        futures = {s: pool.submit(_grade_one, str(p)) for s, p in notebooks.items()}
        for student, future in futures.items():
            try:
                reports[student] = future.result()
            except BrokenProcessPool as exc:
                failed[student] = f"a grading job died ({exc})"
            except Exception as exc:  # noqa: BLE001 - never lose a learner
                failed[student] = f"the grader failed on this notebook ({exc})"
    return reports, failed


def grade_class(folder: Path, chapter: str, jobs: int = 2, checks: Path | None = None,
                released: Path | None = None, require_sandbox: bool = True
                ) -> dict[str, Report]:
    """Grade every submission in ``folder``; returns student id -> report, one per learner
    found, whatever happens to the grading jobs (a learner the grader failed on gets an error
    row). ``require_sandbox=False`` allows grading without bubblewrap: rows say UNSANDBOXED."""
    found = find_submissions(folder, chapter)
    options = (checks, released, require_sandbox)
    reports, failed = _grade_in_pool(found.notebooks, chapter, jobs, options)
    if failed:  # a job that died takes its pool down with it: retry those learners once
        retried, failed = _grade_in_pool({s: found.notebooks[s] for s in failed}, chapter,
                                         jobs, options)
        reports.update(retried)
    problems = {**found.problems, **failed}
    reports.update({s: problem_report(chapter, checks, str(Path(folder) / s), problem)
                    for s, problem in problems.items()})
    return dict(sorted(reports.items()))


def _unsandboxed(report: Report) -> bool:
    return "UNSANDBOXED" in report.sandbox


def table(reports: dict[str, Report]) -> str:
    if not reports:
        return "no submissions found"
    exercises = [e.id for e in next(iter(reports.values())).exercises]
    width = max(len(s) for s in reports) + 2
    lines = ["student".ljust(width) + " ".join(f"{i + 1:>3}" for i in range(len(exercises)))
             + "  score"]
    for student, report in reports.items():
        marks = " ".join(f"{'ok' if e.passed else '--':>3}" for e in report.exercises)
        lines.append(f"{student.ljust(width)}{marks}  {report.score:g}/{report.max_score:g}"
                     + ("  UNSANDBOXED" if _unsandboxed(report) else "")
                     + ("  ERROR" if report.errors else ""))
    lines.append("")
    lines += [f"{i + 1:>3} = {name}" for i, name in enumerate(exercises)]
    return "\n".join(lines)


def write_csv(reports: dict[str, Report], path: Path) -> None:
    exercises = [e.id for e in next(iter(reports.values())).exercises] if reports else []
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "score", "max_score", *exercises, "sandbox", "messages"])
        for student, r in reports.items():
            messages = " | ".join(e.message if e.message.startswith(f"{e.id}:")
                                  else f"{e.id}: {e.message}" for e in r.exercises if e.message)
            messages = " | ".join([*r.errors, messages] if messages else r.errors)
            writer.writerow([student, r.score, r.max_score, *[e.points for e in r.exercises],
                             "UNSANDBOXED" if _unsandboxed(r) else "sandboxed", messages])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_tools.grade_class", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--chapter", required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--checks", type=Path, help="private overlay of hidden checks")
    parser.add_argument("--released", type=Path, help="folder of released chapters")
    parser.add_argument("--csv", type=Path, help="write per-student scores and messages")
    parser.add_argument("--allow-unsandboxed", action="store_true",
                        help="grade even without bubblewrap (every row then says UNSANDBOXED)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    started = time.monotonic()
    from course_tools.grading.sandbox import bubblewrap_path

    if bubblewrap_path() is None and not args.allow_unsandboxed:
        print("error: grading a class needs the sandbox (bubblewrap): `apt-get install "
              "bubblewrap`, or pass --allow-unsandboxed to grade without it", file=sys.stderr)
        return 2
    reports = grade_class(args.folder, args.chapter, args.jobs, args.checks, args.released,
                          require_sandbox=not args.allow_unsandboxed)
    skipped = find_submissions(args.folder, args.chapter).report(args.folder)
    print(table(reports) + (f"\n\n{skipped}" if skipped else ""))
    print(f"\ngraded {len(reports)} submission(s) in {time.monotonic() - started:.0f} s "
          f"with {args.jobs} job(s)")
    if args.csv:
        write_csv(reports, args.csv)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
