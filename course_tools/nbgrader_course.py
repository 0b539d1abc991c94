"""The instructor's workflow on nbgrader, with grading done outside the student's kernel.

nbgrader stays the instructor's tool (release, collect, gradebook, feedback, CSV export), with
one change: its autograde step does not execute the submission in a kernel (where ``__eq__``
overrides, monkeypatching and stderr warnings decide the score). :class:`ExternalGrade`
replaces nbgrader's ``Execute`` preprocessor: it grades the notebook with the course's
sandboxed hidden checks (:mod:`course_tools.grading`) and writes each result into the matching test
cell's output, which nbgrader's ``SaveAutoGrades`` turns into gradebook scores. Hidden-test
regions are removed from the test cells, so the feedback HTML never shows them; with a private
overlay, messages leave out the checks' inputs and expected values (:mod:`course_tools.feedback`).
:class:`PreflightExporter` starts the grader before nbgrader touches any learner's files, so a
grader that cannot start stops the run instead of costing graded work.

``python -m course_tools.nbgrader_course`` drives a course folder::

    init                      create the course folder and its nbgrader_config.py
    release  CHAPTER          nbgrader generate_assignment (source = solutions/)
    collect  CHAPTER FOLDER   copy each learner's notebook in (layouts:
                              course_tools.submissions); list what was skipped and why
    autograde CHAPTER         grade every submission (sandboxed), scores into the gradebook;
                              print nbgrader's warnings and a score table
    feedback CHAPTER          feedback HTML per student (no hidden tests in it)
    export   [--to grades.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nbconvert.exporters import NotebookExporter
from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbformat.v4 import new_markdown_cell, new_output
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    DeduplicateIds,
    LimitOutput,
    NbGraderPreprocessor,
    OverwriteCells,
    OverwriteKernelspec,
    SaveAutoGrades,
)
from traitlets import Bool, Enum, Unicode

from course_tools import feedback as learner_feedback
from course_tools import notebooks
from course_tools.build import HIDDEN_BEGIN, HIDDEN_END
from course_tools.grading.overlay import checks_for
from course_tools.submissions import find_submissions
from utils import paths

if TYPE_CHECKING:  # the grader pulls in torch: imported only when a notebook is graded, so
    # every other nbgrader command (release, collect, feedback...) starts seconds sooner
    from course_tools.grading.runner import ExerciseResult, Grader, Report

COURSE_ENV = "COURSE_NBGRADER_DIR"
COURSE_ID = "mech-interp-course"
REPORTS = "grading_reports"  # course/grading_reports/<chapter>/<learner>.json: full messages
PYTHON = os.path.abspath(sys.executable)  # normalised: a path through ../ may not exist in
# the sandbox, whose worker is started with the same interpreter path


def _put_environment_on_path() -> None:
    """nbgrader runs the ``alembic`` executable by name: make this environment's copy findable
    even when Python was started by path (``.venv/bin/python``) without activating the venv."""
    bin_dir = str(Path(PYTHON).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


_put_environment_on_path()
_GRADERS: dict[tuple[str, str, bool], Grader] = {}
# Safe to keep from a learner's own run (no script can hide in them): shown in the feedback.
KEPT_MIME_TYPES = ("text/plain", "image/png", "image/jpeg", "image/gif", "text/latex")


class GraderUnavailable(SystemExit):
    """The grader cannot start. nbgrader handles any ``Exception`` from a preprocessor per
    learner by deleting that learner's graded copy and going on; ``SystemExit`` is not caught,
    so the whole run stops before anything more is touched."""


def _strip_hidden(source: str) -> str:
    lines, hidden = [], False
    for line in source.splitlines():
        if line.strip() == HIDDEN_BEGIN:
            hidden = True
        elif line.strip() == HIDDEN_END:
            hidden = False
        elif not hidden:
            lines.append(line)
    return "\n".join(lines)


def _grader_for(chapter: str, checks_dir: str, require_sandbox: bool,
                release: Path | None) -> Grader:
    """One sandbox worker per chapter per nbgrader process; raises GraderUnavailable."""
    key = (chapter, checks_dir, require_sandbox)
    if key not in _GRADERS:
        try:
            checks = checks_for(chapter, checks_dir or None)
            from course_tools.grading.runner import Grader

            grader = Grader(chapter, checks.folder, release, require_isolation=require_sandbox)
            grader.__enter__()
        except Exception as exc:
            raise GraderUnavailable(
                f"error: the grader cannot start for {chapter}, so nothing was graded and no "
                f"graded work was touched: {type(exc).__name__}: {exc}") from exc
        grader.checks_note = checks.note
        grader.private_checks = checks.private
        _GRADERS[key] = grader
    return _GRADERS[key]


class ExternalGrade(NbGraderPreprocessor):
    """Grade the notebook with the sandboxed hidden checks instead of executing it."""

    require_sandbox = Bool(True, help="refuse to grade without bubblewrap").tag(config=True)
    checks_dir = Unicode("", help="folder of hidden checks (default tests/hidden, or "
                                  "$COURSE_CHECKS_DIR for a private overlay)").tag(config=True)
    course_root = Unicode("", help="the course folder; answers run after the setup cell of "
                                   "release/<chapter>/<chapter>.ipynb").tag(config=True)
    feedback_detail = Enum(
        ["auto", "brief", "full"], "auto",
        help="brief: messages without the checks' inputs or expected values; full: as the "
             "checks wrote them; auto: brief with a private overlay, else full").tag(config=True)

    def grader(self, chapter: str) -> Grader:
        release = Path(self.course_root) / "release" / chapter if self.course_root else None
        return _grader_for(chapter, self.checks_dir, self.require_sandbox, release)

    def brief_messages(self, grader: Grader) -> bool:
        return self.feedback_detail == "brief" or (
            self.feedback_detail == "auto" and getattr(grader, "private_checks", False))

    def preprocess(self, nb, resources):
        chapter = resources["nbgrader"]["notebook"]
        learner = resources["nbgrader"].get("student", "")
        grader = self.grader(chapter)
        report = grader.grade_sources(grader.answer_sources(nb), chapter)
        results = {r.id: r for r in report.exercises}
        brief = self.brief_messages(grader)
        others = [c.source for c in nb.cells if c.cell_type == "code"
                  and not notebooks.is_test_cell(c)]
        for cell in nb.cells:
            if cell.cell_type == "code" and notebooks.is_test_cell(cell):
                cell.source = _strip_hidden(cell.source)
                grade_id = notebooks.nbgrader_meta(cell).get("grade_id", "")
                result = results.get(grade_id[len("test_"):])
                cell.outputs = [_output_for(result, grade_id, brief, others)]
        nb.cells.insert(0, new_markdown_cell(_grading_note(report, brief)))
        self._save_report(report, chapter, learner, getattr(grader, "checks_note", ""))
        self.log.info("graded %s %s: %g/%g (%s)", learner, chapter, report.score,
                      report.max_score, report.sandbox)
        return nb, resources

    def _save_report(self, report: Report, chapter: str, learner: str, checks_note: str):
        """The full report (messages as the checks wrote them) for the instructor only."""
        if not (self.course_root and learner):
            return
        folder = Path(self.course_root) / REPORTS / chapter
        folder.mkdir(parents=True, exist_ok=True)
        data = json.loads(report.to_json())
        data["checks"] = checks_note
        (folder / f"{learner}.json").write_text(json.dumps(data, indent=2))


def _grading_note(report: Report, brief: bool) -> str:
    lines = ["**How this notebook was graded.** Each answer cell ran on its own, after the "
             "chapter's setup cell, and the course's hidden checks compared what it returned "
             "with references."]
    if brief:
        lines.append("Messages say what was wrong without the checks' inputs or expected "
                     f"values (shown as {learner_feedback.WITHHELD}).")
    if "UNSANDBOXED" in report.sandbox:
        lines.append(f"**{report.sandbox}**.")
    return " ".join(lines)


def _output_for(result: ExerciseResult | None, grade_id: str, brief: bool = False,
                other_cells: list[str] = ()):
    if result is None:
        return new_output("error", ename="NoHiddenCheck",
                          evalue=f"no hidden check exists for {grade_id}", traceback=[])
    if result.passed:
        return new_output("stream", name="stdout",
                          text=f"Hidden checks passed ({result.points:g} "
                               f"point{'' if result.points == 1 else 's'}).\n")
    message = learner_feedback.brief(result.message) if brief else result.message
    message = learner_feedback.explain(message, list(other_cells))
    return new_output("error", ename="HiddenCheckFailed", evalue=message,
                      traceback=[f"Hidden checks failed: {message}"])


class KeepLearnerOutputs(NbGraderPreprocessor):
    """Instead of nbgrader's ClearOutput: keep the learner's own outputs (text, images) so
    feedback shows their plots and prints; test cells start empty (the grader fills them)."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        if notebooks.is_test_cell(cell):
            cell.outputs, cell.execution_count = [], None
            return cell, resources
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") in ("stream", "error"):
                kept.append(output)
            elif output.get("output_type") in ("display_data", "execute_result"):
                data = {k: v for k, v in output.get("data", {}).items() if k in KEPT_MIME_TYPES}
                if data:
                    output["data"] = data
                    output["metadata"] = {}
                    kept.append(output)
        cell.outputs = kept
        return cell, resources


class PreflightExporter(NotebookExporter):
    """nbgrader's autograde exporter, made once before any learner is processed: it starts
    the grader for every chapter about to be graded, so a grader that cannot start stops the
    run before nbgrader removes or rewrites anything."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        assignments = getattr(self.parent, "assignments", {}) or {}
        chapters = sorted({Path(nb).stem for nbs in assignments.values() for nb in nbs})
        external = ExternalGrade(parent=self)
        for chapter in chapters:
            grader = external.grader(chapter)
            self.log.info("grader ready for %s (%s; %s)", chapter, grader.sandbox_label,
                          getattr(grader, "checks_note", ""))


def autograde_preprocessors() -> list:
    """nbgrader's autograde pipeline with the kernel execution replaced by ExternalGrade."""
    return [ExternalGrade, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
            AssignLatePenalties, CheckCellMetadata]


def sanitize_preprocessors() -> list:
    """nbgrader's sanitising step, keeping the learner's own (safe) outputs."""
    return [KeepLearnerOutputs, DeduplicateIds, OverwriteKernelspec, OverwriteCells,
            CheckCellMetadata]


# ------------------------------------------------------------------ course folder & commands
CONFIG_TEMPLATE = '''"""nbgrader configuration, generated by `course_tools.nbgrader_course init`."""
from course_tools.feedback import OfflineFeedbackExporter
from course_tools.nbgrader_course import (PreflightExporter, autograde_preprocessors,
                                   sanitize_preprocessors)

c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.db_url = {db_url!r}
c.Exchange.root = {exchange!r}
# autograde: start the sandboxed grader before touching anything, keep learners' outputs,
# grade outside the kernel
c.Autograde.exporter_class = PreflightExporter
c.Autograde.sanitize_preprocessors = sanitize_preprocessors()
c.Autograde.autograde_preprocessors = autograde_preprocessors()
c.ExternalGrade.require_sandbox = {require_sandbox!r}
c.ExternalGrade.checks_dir = {checks_dir!r}
c.ExternalGrade.course_root = {root!r}
c.ExternalGrade.feedback_detail = {feedback_detail!r}
# feedback pages render maths without the network and wrap long messages
c.GenerateFeedback.exporter_class = OfflineFeedbackExporter
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
'''


def course_dir(override: str | None = None) -> Path:
    return Path(override or os.environ.get(COURSE_ENV) or paths.REPO_ROOT / "course").resolve()


def init_course(root: Path, exchange: Path | None = None, require_sandbox: bool = True,
                checks_dir: str = "", feedback_detail: str = "auto") -> Path:
    """Create (or refresh) a course folder: config, ``source/<chapter>/`` from solutions/."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    exchange = Path(exchange or root / "exchange").resolve()
    exchange.mkdir(parents=True, exist_ok=True)
    config = CONFIG_TEMPLATE.format(
        root=str(root), course_id=COURSE_ID, db_url=f"sqlite:///{root / 'gradebook.db'}",
        exchange=str(exchange), require_sandbox=require_sandbox,
        checks_dir=str(Path(checks_dir).resolve()) if checks_dir else "",
        feedback_detail=feedback_detail)
    (root / "nbgrader_config.py").write_text(config)
    for solution in notebooks.chapter_notebooks(paths.SOLUTIONS_DIR):
        target = root / "source" / solution.stem
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(solution, target / solution.name)
    return root


def nbgrader(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run an nbgrader command in the course folder; raise with its output if it fails."""
    command = [PYTHON, "-m", "nbgrader", *args]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed:\n{done.stdout}\n{done.stderr}")
    return done


def add_chapter_source(root: Path, chapter: str, solutions: Path) -> None:
    source = solutions / f"{chapter}.ipynb"
    if not source.is_file():
        raise FileNotFoundError(f"no solution notebook {source}")
    target = root / "source" / chapter
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target / source.name)


def release(root: Path, chapter: str, solutions: Path = paths.SOLUTIONS_DIR) -> Path:
    """Generate the student version with nbgrader (and record its cells in the gradebook)."""
    add_chapter_source(root, chapter, solutions)
    nbgrader(root, "db", "assignment", "add", chapter)
    nbgrader(root, "generate_assignment", chapter, "--force")
    return root / "release" / chapter / f"{chapter}.ipynb"


def add_learners(root: Path, learners: list[str]) -> None:
    """Record learners in the gradebook (so nbgrader's CSV lists them, graded or not)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        for learner in learners:
            gradebook.update_or_create_student(learner)


def collect_folder(root: Path, chapter: str, folder: Path):
    """Copy each learner's notebook from ``folder`` (layouts: :mod:`course_tools.submissions`) to
    ``submitted/<learner>/<chapter>/``; return what was found, skipped and not collectable."""
    found = find_submissions(folder, chapter)
    for learner, notebook in found.notebooks.items():
        target = root / "submitted" / learner / chapter
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, target / f"{chapter}.ipynb")
    add_learners(root, found.learners)
    record = root / REPORTS / chapter / "collected.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"problems": found.problems,
                                  "skipped": [[str(s.path), s.reason] for s in found.skipped]},
                                 indent=2))
    return found


def release_to_exchange(root: Path, chapter: str) -> None:
    """Put a released chapter in the exchange, where learners ``nbgrader fetch_assignment`` it."""
    exchange = Path(nbgrader_exchange_root(root))
    exchange.mkdir(parents=True, exist_ok=True)
    exchange.chmod(0o1777)  # nbgrader's exchange: world-writable with the sticky bit
    nbgrader(root, "release_assignment", chapter, "--force")


def collect_from_exchange(root: Path, chapter: str) -> None:
    """Collect what learners ``nbgrader submit``-ted (latest submission per learner)."""
    nbgrader(root, "collect", chapter, "--update")


def nbgrader_exchange_root(root: Path) -> str:
    text = (root / "nbgrader_config.py").read_text()
    match = re.search(r"c\.Exchange\.root = '([^']*)'", text)
    if not match:
        raise RuntimeError(f"no Exchange.root in {root / 'nbgrader_config.py'}")
    return match.group(1)


def _nbgrader_notes(output: str) -> list[str]:
    """nbgrader's warnings and errors, and the grader's one line per learner. The warning
    nbgrader gives for every test cell whose hidden tests the release removed is counted."""
    keep = re.compile(r"\| (WARNING|ERROR|CRITICAL)\]|\] graded |grader ready for |^error: ")
    restored = re.compile(r"Attribute 'checksum' for cell (\S+) has changed")
    notes, cells = [], 0
    for line in output.splitlines():
        if restored.search(line):
            cells += 1
        elif keep.search(line):
            notes.append(line.rstrip())
    if cells:
        notes.append(f"(nbgrader restored {cells} locked test cell(s) to the source version, "
                     "hidden tests included: expected, the release leaves them out; a test cell "
                     "a learner edited is restored the same way)")
    return notes


def score_table(root: Path, chapter: str) -> str:
    """One row per learner in the gradebook: score, each exercise, how it was graded."""
    from nbgrader.api import Gradebook, MissingEntry

    folder = root / REPORTS / chapter
    collected = folder / "collected.json"
    problems = json.loads(collected.read_text())["problems"] if collected.is_file() else {}
    reports = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
               if p.name != "collected.json"}
    exercises = next((r["exercises"] for r in reports.values()), [])
    names = [e["id"] for e in exercises]
    rows = []
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", COURSE_ID) as gradebook:
        learners = sorted(s.id for s in gradebook.students)
        width = max([len(s) for s in learners] + [7]) + 2
        rows.append("learner".ljust(width) + "".join(f"{i + 1:>4}" for i in range(len(names)))
                    + "   score  graded")
        for learner in learners:
            try:
                score = gradebook.find_submission(chapter, learner)
                points = f"{score.score:g}/{score.max_score:g}"
            except MissingEntry:
                rows.append(learner.ljust(width) + "NOT GRADED: "
                            + problems.get(learner, "no submission collected"))
                continue
            report = reports.get(learner)
            if report is None:
                rows.append(f"{learner.ljust(width)}{points}  no grading report (see the log)")
                continue
            marks = {e["id"]: "ok" if e["passed"] else "--" for e in report["exercises"]}
            rows.append(learner.ljust(width) + "".join(f"{marks.get(n, '?'):>4}" for n in names)
                        + f"  {points:>6}  {report['sandbox']}")
    rows += [""] + [f"{i + 1:>4} = {name}" for i, name in enumerate(names)]
    checks = {r.get("checks", "") for r in reports.values()} - {""}
    rows += sorted(checks)
    return "\n".join(rows)


def autograde(root: Path, chapter: str, check: bool = True) -> subprocess.CompletedProcess:
    """``nbgrader autograde CHAPTER --force``; its full output goes to ``logs/``. With
    ``check``, raise RuntimeError (with nbgrader's warnings and errors) if it failed."""
    reports = root / REPORTS / chapter
    for old in reports.glob("*.json"):
        if old.name != "collected.json":
            old.unlink()
    done = nbgrader(root, "autograde", chapter, "--force", check=False)
    log = root / "logs" / f"autograde-{chapter}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(done.stdout + done.stderr)
    done.log = log
    if check and done.returncode != 0:
        raise RuntimeError(f"`nbgrader autograde {chapter}` failed (full log: {log}):\n"
                           + "\n".join(_nbgrader_notes(done.stdout + done.stderr)))
    return done


def feedback(root: Path, chapter: str) -> None:
    nbgrader(root, "generate_feedback", chapter, "--force")


def export(root: Path, to: Path) -> Path:
    nbgrader(root, "export", "--to", str(to))
    return to


def _print_autograde(root: Path, chapter: str) -> int:
    done = autograde(root, chapter, check=False)
    notes = _nbgrader_notes(done.stdout + done.stderr)
    print(f"nbgrader autograde {chapter} (full log: {done.log}):")
    print("\n".join(f"  {line}" for line in notes) or "  (no warnings)")
    print()
    print(score_table(root, chapter))
    if done.returncode != 0:
        print(f"\nerror: nbgrader autograde failed (exit status {done.returncode}); see above",
              file=sys.stderr)
        return 1
    print(f"\nscores are in {root / 'gradebook.db'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_tools.nbgrader_course", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--course-dir", help=f"default ${COURSE_ENV} or ./course")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init")
    init.add_argument("--exchange", type=Path)
    init.add_argument("--checks", default="", help="private overlay of hidden checks")
    init.add_argument("--allow-unsandboxed", action="store_true",
                      help="grade without bubblewrap (self-study only; reports say UNSANDBOXED)")
    init.add_argument("--feedback", choices=["auto", "brief", "full"], default="auto",
                      help="brief: messages without the checks' inputs and expected values; "
                           "auto (default): brief when --checks is a private overlay")
    for name in ("release", "autograde", "feedback"):
        sub.add_parser(name).add_argument("chapter")
    collect = sub.add_parser("collect")
    collect.add_argument("chapter")
    collect.add_argument("folder", type=Path)
    exp = sub.add_parser("export")
    exp.add_argument("--to", type=Path, default=Path("grades.csv"))
    args = parser.parse_args(argv)
    root = course_dir(args.course_dir)
    try:
        if args.command == "init":
            init_course(root, args.exchange, not args.allow_unsandboxed, args.checks,
                        args.feedback)
            print(f"course folder ready: {root}")
        elif args.command == "release":
            print(f"released: {release(root, args.chapter)}")
        elif args.command == "collect":
            if not args.folder.is_dir():
                raise FileNotFoundError(f"{args.folder} is not a folder")
            found = collect_folder(root, args.chapter, args.folder)
            print(f"collected {len(found.notebooks)} submission(s): "
                  + ", ".join(f"{s} ({p.relative_to(args.folder)})"
                              for s, p in found.notebooks.items()))
            if found.skipped or found.problems:
                print(found.report(args.folder))
            return 1 if found.problems else 0
        elif args.command == "autograde":
            return _print_autograde(root, args.chapter)
        elif args.command == "feedback":
            feedback(root, args.chapter)
            print(f"feedback in {root / 'feedback'}")
        elif args.command == "export":
            print(f"grades exported to {export(root, args.to.resolve())}")
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
