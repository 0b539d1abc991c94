"""The instructor's workflow on nbgrader, with grading done outside the student's kernel.

nbgrader stays the instructor's tool (release, collect, gradebook, feedback, CSV export), with
one change: its autograde step does not execute the submission in a kernel (where ``__eq__``
overrides, monkeypatching and stderr warnings decide the score). :class:`ExternalGrade`
replaces nbgrader's ``Execute`` preprocessor: it grades the notebook with the course's
sandboxed hidden checks (:mod:`utils.grading`) and writes each result into the matching test
cell's output, which nbgrader's ``SaveAutoGrades`` turns into gradebook scores. Hidden-test
regions are removed from the test cells, so the feedback HTML never shows them.

``python -m utils.nbgrader_course`` drives a course folder::

    init                      create the course folder and its nbgrader_config.py
    release  CHAPTER          nbgrader generate_assignment (source = solutions/)
    collect  CHAPTER FOLDER   copy FOLDER/<student>.ipynb or FOLDER/<student>/CHAPTER.ipynb in
    autograde CHAPTER         grade every submission (sandboxed), scores into the gradebook
    feedback CHAPTER          feedback HTML per student (no hidden tests in it)
    export   [--to grades.csv]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbformat.v4 import new_output
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    LimitOutput,
    NbGraderPreprocessor,
    SaveAutoGrades,
)
from traitlets import Bool, Unicode

from utils import notebooks, paths
from utils.build import HIDDEN_BEGIN, HIDDEN_END
from utils.grading.runner import ExerciseResult, Grader

COURSE_ENV = "COURSE_NBGRADER_DIR"


def _put_environment_on_path() -> None:
    """nbgrader runs the ``alembic`` executable by name: make this environment's copy findable
    even when Python was started by path (``.venv/bin/python``) without activating the venv."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


_put_environment_on_path()
STUDENT_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")
_GRADERS: dict[tuple[str, str, bool], Grader] = {}


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
    """One sandbox worker per chapter per nbgrader process (every call runs in a new child)."""
    key = (chapter, checks_dir, require_sandbox)
    if key not in _GRADERS:
        grader = Grader(chapter, Path(checks_dir) if checks_dir else None, release,
                        require_isolation=require_sandbox)
        grader.__enter__()
        _GRADERS[key] = grader
    return _GRADERS[key]


class ExternalGrade(NbGraderPreprocessor):
    """Grade the notebook with the sandboxed hidden checks instead of executing it."""

    require_sandbox = Bool(True, help="refuse to grade without bubblewrap").tag(config=True)
    checks_dir = Unicode("", help="folder of hidden checks (default tests/hidden, or "
                                  "$COURSE_CHECKS_DIR for a private overlay)").tag(config=True)
    course_root = Unicode("", help="the course folder; answers run after the setup cell of "
                                   "release/<chapter>/<chapter>.ipynb").tag(config=True)

    def preprocess(self, nb, resources):
        chapter = resources["nbgrader"]["notebook"]
        release = Path(self.course_root) / "release" / chapter if self.course_root else None
        grader = _grader_for(chapter, self.checks_dir, self.require_sandbox, release)
        results = {r.id: r for r in
                   grader.grade_sources(grader.answer_sources(nb), chapter).exercises}
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            cell.outputs = []
            if notebooks.is_test_cell(cell):
                cell.source = _strip_hidden(cell.source)
                grade_id = notebooks.nbgrader_meta(cell).get("grade_id", "")
                result = results.get(grade_id[len("test_"):])
                cell.outputs = [_output_for(result, grade_id)]
        self.log.info("graded %s: %s", chapter,
                      ", ".join(f"{k}={'pass' if r.passed else 'fail'}"
                                for k, r in results.items()))
        return nb, resources


def _output_for(result: ExerciseResult | None, grade_id: str):
    if result is None:
        return new_output("error", ename="NoHiddenCheck",
                          evalue=f"no hidden check exists for {grade_id}", traceback=[])
    if result.passed:
        return new_output("stream", name="stdout",
                          text=f"Hidden checks passed ({result.points:g} "
                               f"point{'' if result.points == 1 else 's'}).\n")
    return new_output("error", ename="HiddenCheckFailed", evalue=result.message,
                      traceback=[f"Hidden checks failed: {result.message}"])


def autograde_preprocessors() -> list:
    """nbgrader's autograde pipeline with the kernel execution replaced by ExternalGrade."""
    return [ExternalGrade, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
            AssignLatePenalties, CheckCellMetadata]


# ------------------------------------------------------------------ course folder & commands
CONFIG_TEMPLATE = '''"""nbgrader configuration, generated by `utils.nbgrader_course init`."""
from utils.nbgrader_course import autograde_preprocessors

c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "mech-interp-course"
c.CourseDirectory.db_url = {db_url!r}
c.Exchange.root = {exchange!r}
c.Autograde.autograde_preprocessors = autograde_preprocessors()
c.ExternalGrade.require_sandbox = {require_sandbox!r}
c.ExternalGrade.checks_dir = {checks_dir!r}
c.ExternalGrade.course_root = {root!r}
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
'''


def course_dir(override: str | None = None) -> Path:
    return Path(override or os.environ.get(COURSE_ENV) or paths.REPO_ROOT / "course").resolve()


def init_course(root: Path, exchange: Path | None = None, require_sandbox: bool = True,
                checks_dir: str = "") -> Path:
    """Create (or refresh) a course folder: config, ``source/<chapter>/`` from solutions/."""
    root.mkdir(parents=True, exist_ok=True)
    exchange = exchange or root / "exchange"
    exchange.mkdir(parents=True, exist_ok=True)
    config = CONFIG_TEMPLATE.format(
        root=str(root), db_url=f"sqlite:///{root / 'gradebook.db'}", exchange=str(exchange),
        require_sandbox=require_sandbox, checks_dir=checks_dir)
    (root / "nbgrader_config.py").write_text(config)
    for solution in notebooks.chapter_notebooks(paths.SOLUTIONS_DIR):
        target = root / "source" / solution.stem
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(solution, target / solution.name)
    return root


def nbgrader(root: Path, *args: str) -> subprocess.CompletedProcess:
    """Run an nbgrader command in the course folder; raise with its output if it fails."""
    command = [sys.executable, "-m", "nbgrader", *args]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
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


def collect_folder(root: Path, chapter: str, folder: Path) -> list[str]:
    """Copy submissions from ``folder`` (``<student>.ipynb`` or ``<student>/<chapter>.ipynb``)."""
    students = []
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix == ".ipynb":
            student, notebook = entry.stem, entry
        elif entry.is_dir() and (entry / f"{chapter}.ipynb").is_file():
            student, notebook = entry.name, entry / f"{chapter}.ipynb"
        else:
            continue
        if not STUDENT_ID.match(student):
            raise ValueError(f"student id {student!r} must be letters, digits, '.', '_' or '-'")
        target = root / "submitted" / student / chapter
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(notebook, target / f"{chapter}.ipynb")
        nbgrader(root, "db", "student", "add", student)
        students.append(student)
    return students


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


def autograde(root: Path, chapter: str) -> None:
    nbgrader(root, "autograde", chapter, "--force")


def feedback(root: Path, chapter: str) -> None:
    nbgrader(root, "generate_feedback", chapter, "--force")


def export(root: Path, to: Path) -> Path:
    nbgrader(root, "export", "--to", str(to))
    return to


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.nbgrader_course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--course-dir", help=f"default ${COURSE_ENV} or ./course")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init")
    init.add_argument("--exchange", type=Path)
    init.add_argument("--checks", default="", help="private overlay of hidden checks")
    init.add_argument("--allow-unsandboxed", action="store_true")
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
            init_course(root, args.exchange, not args.allow_unsandboxed, args.checks)
            print(f"course folder ready: {root}")
        elif args.command == "release":
            print(f"released: {release(root, args.chapter)}")
        elif args.command == "collect":
            students = collect_folder(root, args.chapter, args.folder)
            print(f"collected {len(students)} submission(s): {', '.join(students)}")
        elif args.command == "autograde":
            autograde(root, args.chapter)
            print(f"autograded {args.chapter}; scores are in {root / 'gradebook.db'}")
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
