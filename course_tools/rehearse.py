"""A dress rehearsal of the instructor's grading day, on generated submissions.

    python -m course_tools.rehearse 01_residual_stream [--course-dir DIR] [--checks DIR]
                                                [--feedback auto|brief|full]

builds a throwaway nbgrader course (or uses ``--course-dir``), releases the chapter, writes
six learners' submissions whose right scores are known in advance, and runs the whole cycle of
:mod:`course_tools.nbgrader_course`: collect, autograde (sandboxed hidden checks), feedback, CSV
export. It then checks what an instructor would check by hand, and exits non-zero if any of it
is off:

* nobody dropped: every learner is in the score table and the CSV, the oddly named one graded,
  the one with two notebooks reported, not guessed;
* the right scores: gradebook and CSV agree with the known ones;
* nothing destroyed: a plain ``nbgrader autograde`` whose grader cannot start stops before
  touching any graded notebook or score;
* nothing leaked: no feedback page shows hidden-check text, nor (with brief feedback, the
  default with a private overlay) a value the full messages held;
* feedback readable offline: maths without a CDN, the learner's own output kept, the hint for
  a helper defined in another cell;
* with ``--checks``: the overlay itself passes ``course_tools.check_overlay``.

The learners: ``ada`` answers as the solution does and printed something in her notebook;
``ben`` hands in the released notebook untouched; ``cy`` solves the first half and hands in a
known wrong answer (a mutant) for the rest; ``dee`` kills the grading process in the first
exercise (``os._exit``); ``eve`` saved ``eve/<chapter>-Copy1.ipynb`` and uses a helper from her
own extra cell in the first exercise; ``fay`` left two notebooks in her folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nbformat.v4 import new_code_cell, new_output

from course_tools import build, check_overlay, feedback, nbgrader_course, notebooks
from course_tools.grading.diagnosis import source_of
from course_tools.grading.overlay import checks_for
from course_tools.grading.runner import checks_in, load_checks_module
from utils import paths

CRASH_ANSWER = "import os\n\ndef {name}(*args, **kwargs):\n    os._exit(3)\n"
HELPER_ANSWER = "def {name}(*args, **kwargs):\n    return eves_helper(*args, **kwargs)\n"
OWN_OUTPUT = "ada's own output, kept in her feedback"


@dataclass
class Learner:
    name: str
    answers: dict[str, str]  # exercise -> answer cell source (missing: left as released)
    expected: float | None   # None: must not be graded (and must be reported)
    files: list[str] = field(default_factory=list)  # where in the inbox (default <name>.ipynb)
    extra_cell: str = ""     # a code cell of the learner's own, before the first exercise
    output: str = ""         # printed under the first answer cell


def generated_learners(chapter: str, solutions: Path, checks: Path | None) -> list[Learner]:
    """The six learners of the module docstring, with the score each one must get."""
    module = load_checks_module(chapter, checks)
    exercises = [(c.exercise, c.points) for c in checks_in(module)]
    solved = notebooks.answer_cells(notebooks.read_notebook(solutions / f"{chapter}.ipynb"))
    total = sum(p for _, p in exercises)
    half = len(exercises) // 2 or 1
    cy = {name: solved[name] if i < half
          else source_of(next(iter(module.MUTANTS[name].values())))
          for i, (name, _) in enumerate(exercises)}
    first, first_points = exercises[0]
    return [
        Learner("ada", dict(solved), total, output=OWN_OUTPUT),
        Learner("ben", {}, 0.0),
        Learner("cy", cy, sum(p for _, p in exercises[:half])),
        Learner("dee", {**solved, first: CRASH_ANSWER.format(name=first)}, total - first_points),
        Learner("eve", {**solved, first: HELPER_ANSWER.format(name=first)}, total - first_points,
                files=[f"eve/{chapter}-Copy1.ipynb"],
                extra_cell=f"eves_helper = None  # her own helper for {first}"),
        Learner("fay", dict(solved), None, files=["fay/first try.ipynb", "fay/Untitled.ipynb"]),
    ]


def submission_with(released: Path, answers: dict[str, str], extra_cell: str = "",
                    output: str = ""):
    """The released notebook with some answer cells replaced, as a learner would submit it."""
    nb = notebooks.read_notebook(released)
    first_answer = None
    for index, cell in enumerate(nb.cells):
        grade_id = notebooks.nbgrader_meta(cell).get("grade_id")
        if notebooks.is_answer_cell(cell):
            first_answer = index if first_answer is None else first_answer
            if grade_id in answers:
                cell.source = answers[grade_id]
    if output and first_answer is not None:
        nb.cells[first_answer].outputs = [new_output("stream", name="stdout", text=output)]
    if extra_cell and first_answer is not None:
        nb.cells.insert(first_answer, new_code_cell(extra_cell))
    return nb


def _visible_text(html: str) -> str:
    """The page without its scripts and styles (MathJax's code is full of numbers)."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S | re.I)


def withheld_values(message: str) -> list[str]:
    """Values a brief message leaves out that are distinctive enough to look for."""
    return [v for v in feedback.NUMBER.findall(message) if len(v.strip("+-")) >= 4]


def check_nothing_destroyed(root: Path, chapter: str) -> list[str]:
    """Plain ``nbgrader autograde --force`` whose grader cannot start must change nothing."""
    from nbgrader.api import Gradebook

    def state():
        files = {str(p.relative_to(root)): p.read_bytes() for p in
                 sorted((root / "autograded").rglob("*")) if p.is_file()}
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}", nbgrader_course.COURSE_ID) as gb:
            scores = {s.id: [(x.assignment.name, x.score) for x in s.submissions]
                      for s in gb.students}
        return files, scores

    before = state()
    done = subprocess.run(
        [nbgrader_course.PYTHON, "-m", "nbgrader", "autograde", chapter, "--force",
         f"--ExternalGrade.checks_dir={root / 'no-such-checks'}"],
        cwd=root, capture_output=True, text=True)
    problems = []
    if done.returncode == 0:
        problems.append("nbgrader autograde with a grader that cannot start exited 0")
    if "no graded work was touched" not in done.stderr:
        problems.append("nbgrader autograde did not say why it stopped: "
                        + (done.stderr.strip().splitlines() or ["(no output)"])[-1])
    if state() != before:
        problems.append("nbgrader autograde with a grader that cannot start changed graded "
                        "notebooks or scores")
    return problems


def rehearse(chapter: str, root: Path, solutions: Path = paths.SOLUTIONS_DIR,
             checks: Path | None = None, require_sandbox: bool = True,
             feedback_detail: str = "auto") -> list[str]:
    """Run the cycle in course folder ``root``; print what happened; return the problems."""
    problems = []
    nbgrader_course.init_course(root, require_sandbox=require_sandbox,
                                checks_dir=str(checks or ""), feedback_detail=feedback_detail)
    released = nbgrader_course.release(root, chapter, solutions)
    if checks:
        problems += check_overlay.check_overlay(checks, [chapter], solutions, released.parent)
    learners = generated_learners(chapter, solutions, checks)
    inbox = root / "rehearsal-inbox"
    for learner in learners:
        for name in learner.files or [f"{learner.name}.ipynb"]:
            (inbox / name).parent.mkdir(parents=True, exist_ok=True)
            notebooks.write_notebook(submission_with(released, learner.answers,
                                                     learner.extra_cell, learner.output),
                                     inbox / name)
    found = nbgrader_course.collect_folder(root, chapter, inbox)
    print(f"collect: {len(found.notebooks)} notebook(s)\n{found.report(inbox)}")
    done = nbgrader_course.autograde(root, chapter, check=False)
    notes = nbgrader_course._nbgrader_notes(done.stdout + done.stderr)
    table = nbgrader_course.score_table(root, chapter)
    print("autograde:\n" + "\n".join(f"  {n}" for n in notes) + "\n" + table)
    if done.returncode != 0:
        problems.append(f"nbgrader autograde failed (log: {done.log})")
    problems += check_nothing_destroyed(root, chapter)
    nbgrader_course.feedback(root, chapter)
    csv_path = nbgrader_course.export(root, root / "grades.csv")

    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", nbgrader_course.COURSE_ID) as gb:
        for lr in learners:
            try:
                scores[lr.name] = gb.find_submission(chapter, lr.name).score
            except MissingEntry:
                scores[lr.name] = None
    with open(csv_path) as f:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)
                    if row["assignment"] == chapter}
    choice = checks_for(chapter, checks)
    brief = feedback_detail == "brief" or (feedback_detail == "auto" and choice.private)
    secret = build.hidden_lines(notebooks.read_notebook(solutions / f"{chapter}.ipynb"),
                                choice.folder / f"test_{chapter}.py")
    released_text = released.read_text()
    print(f"rehearsal of {chapter} in {root} ({choice.note}; "
          f"{'brief' if brief else 'full'} feedback)")
    print(f"  {'learner':<8} {'expected':>8} {'gradebook':>9} {'csv':>6}  feedback")
    for learner in learners:
        problems += _check_learner(root, chapter, learner, scores[learner.name],
                                   exported.get(learner.name), table, secret, brief,
                                   released_text, found.problems)
    print("rehearsal passed" if not problems else "rehearsal FAILED:\n  " + "\n  ".join(problems))
    return problems


def _check_learner(root: Path, chapter: str, learner: Learner, score: float | None,
                   exported: float | None, table: str, secret: list[str], brief: bool,
                   released_text: str, not_collected: dict[str, str]) -> list[str]:
    """Print the learner's row; return what is wrong with their scores and feedback."""
    problems = []
    name = learner.name
    if not re.search(rf"^{re.escape(name)}\s", table, re.M):
        problems.append(f"{name}: missing from the autograde score table")
    if exported is None:
        problems.append(f"{name}: missing from the CSV")
    if learner.expected is None:
        print(f"  {name:<8} {'-':>8} {'-':>9} {exported if exported is not None else '-':>6}"
              f"  not graded: {not_collected.get(name, '?')[:50]}")
        if name not in not_collected:
            problems.append(f"{name}: handed in two notebooks, yet one was graded")
        return problems
    page = root / "feedback" / name / chapter / f"{chapter}.html"
    html = page.read_text() if page.is_file() else ""
    text = _visible_text(html)
    shown = sorted(line for line in secret if line in html)
    report_file = root / nbgrader_course.REPORTS / chapter / f"{name}.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {"exercises": []}
    leaked = sorted({v for e in report["exercises"] for v in withheld_values(e["message"])
                     if v in text and v not in released_text}) if brief else []
    findings = []
    if not html:
        findings.append("missing")
    if shown:
        findings.append(f"SHOWS {len(shown)} hidden line(s), e.g. {shown[0][:60]!r}")
    if leaked:
        findings.append(f"SHOWS withheld values {leaked[:3]}")
    if html and "cdnjs" in html:
        findings.append("loads MathJax from a CDN")
    if name == "ada" and html and OWN_OUTPUT not in text:
        findings.append("lost the learner's own output")
    if name == "eve" and html and "graded on its own" not in text:
        findings.append("no hint for the helper defined in another cell")
    status = "; ".join(findings) or "ok"
    print(f"  {name:<8} {learner.expected:>8g} {score if score is not None else '-':>9} "
          f"{exported if exported is not None else '-':>6}  {status}")
    if score is None or abs(score - learner.expected) > 1e-9:
        problems.append(f"{name}: gradebook score {score}, expected {learner.expected:g}")
    if exported != score:
        problems.append(f"{name}: CSV score {exported} differs from the gradebook")
    if status != "ok":
        problems.append(f"{name}: feedback page {status}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_tools.rehearse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapter", help="e.g. 01_residual_stream")
    parser.add_argument("--course-dir", type=Path,
                        help="course folder to use (default: a temporary one, removed after)")
    parser.add_argument("--checks", type=Path, help="private overlay of hidden checks")
    parser.add_argument("--allow-unsandboxed", action="store_true",
                        help="grade without bubblewrap (self-study machines only)")
    parser.add_argument("--feedback", choices=["auto", "brief", "full"], default="auto",
                        help="as `nbgrader_course init --feedback`")
    args = parser.parse_args(argv)
    options = dict(checks=args.checks, require_sandbox=not args.allow_unsandboxed,
                   feedback_detail=args.feedback)
    try:
        if args.course_dir:
            problems = rehearse(args.chapter, args.course_dir.resolve(), **options)
        else:
            with tempfile.TemporaryDirectory(prefix="rehearsal-") as tmp:
                problems = rehearse(args.chapter, Path(tmp), **options)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
