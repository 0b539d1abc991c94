"""Grade a notebook: find its hidden checks, run each against the sandboxed submission.

Trusted code only. The submission's answer cells are read from the notebook as text and
executed in the sandbox (:mod:`utils.grading.sandbox`); the checks (from
``tests/hidden/test_<chapter>.py``, or an instructor's private folder) run here and compare
what comes back with independent references.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from utils import notebooks, paths
from utils.grading.checks import Submission, SubmissionError
from utils.grading.sandbox import Sandbox

CHECKS_ENV = "COURSE_CHECKS_DIR"


@dataclass
class ExerciseResult:
    id: str
    points: float
    max_points: float
    passed: bool
    message: str
    seconds: float = 0.0


@dataclass
class Report:
    notebook: str
    score: float
    max_score: float
    exercises: list[ExerciseResult]
    sandbox: str = ""
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        data = asdict(self)
        data["exercises"] = [
            {k: e[k] for k in ("id", "points", "max_points", "passed", "message")}
            for e in data["exercises"]]
        return json.dumps(data, indent=2)

    def to_text(self) -> str:
        lines = [f"{self.notebook}: {self.score:g} / {self.max_score:g} points"
                 f"  ({self.sandbox})"]
        for e in self.exercises:
            mark = "PASS" if e.passed else "FAIL"
            lines.append(f"  {mark}  {e.id:<34} {e.points:g}/{e.max_points:g}"
                         + (f"  - {e.message}" if e.message else ""))
        lines += [f"  ERROR {err}" for err in self.errors]
        return "\n".join(lines)


@dataclass
class Check:
    exercise: str
    func: Callable
    points: float


def checks_dir(override: Path | None = None) -> Path:
    """Where hidden checks are read from: ``--checks``, ``$COURSE_CHECKS_DIR``, ``tests/hidden``."""
    if override:
        return Path(override)
    if os.environ.get(CHECKS_ENV):
        return Path(os.environ[CHECKS_ENV])
    return paths.HIDDEN_CHECKS_DIR


def load_checks_module(chapter: str, folder: Path | None = None):
    """Import ``test_<chapter>.py`` from the checks folder (by path, never via sys.path)."""
    path = checks_dir(folder) / f"test_{chapter}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no hidden checks for chapter {chapter!r}: {path} is missing")
    name = f"_course_checks_{chapter}_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def checks_in(module) -> list[Check]:
    """The module's ``test_<exercise>`` functions, in the order they are defined."""
    found = []
    for name, func in vars(module).items():
        if name.startswith("test_") and callable(func) and getattr(func, "__module__", "") == \
                module.__name__:
            found.append(Check(name[len("test_"):], func, getattr(func, "points", 1.0)))
    return found


def released_setup(chapter: str, released_dir: Path | None = None) -> str | None:
    path = Path(released_dir or paths.CHAPTERS_DIR) / f"{chapter}.ipynb"
    if path.is_file():
        return notebooks.setup_source(notebooks.read_notebook(path))
    return None


class Grader:
    """Grades any number of submissions of one chapter with one sandbox worker."""

    def __init__(self, chapter: str, checks_folder: Path | None = None,
                 released_dir: Path | None = None, require_isolation: bool = False) -> None:
        self.chapter = chapter
        self.module = load_checks_module(chapter, checks_folder)
        self.checks = checks_in(self.module)
        setup = released_setup(chapter, released_dir)
        if setup is None:
            raise FileNotFoundError(
                f"the released chapter {chapter}.ipynb was not found in "
                f"{released_dir or paths.CHAPTERS_DIR}; its setup cell is what answers run "
                "after (pass --released DIR)")
        self.sandbox = Sandbox(setup, require_isolation=require_isolation)
        self.started = False

    @property
    def sandbox_label(self) -> str:
        if not self.started:
            return "not started"
        if self.sandbox.isolated:
            return "sandboxed: bubblewrap, no network, read-only allow-list"
        return "UNSANDBOXED (bubblewrap not available): fine for self-grading only"

    def __enter__(self) -> Grader:
        # The worker's imports and the trusted side's reference models load at the same time
        # (2 cores): a checks module may define ``warm_up()`` to load what its checks use.
        self.sandbox.launch()
        try:
            warm_up = getattr(self.module, "warm_up", None)
            if callable(warm_up):
                warm_up()
            self.sandbox.wait_ready()
        except BaseException:
            self.sandbox.close()
            raise
        self.started = True
        return self

    def __exit__(self, *exc) -> None:
        self.sandbox.close()

    def run_check(self, check: Check, sources: dict[str, str]) -> ExerciseResult:
        started = time.monotonic()
        submission = Submission(self.sandbox, sources)
        try:
            check.func(submission)
        except AssertionError as exc:
            message = str(exc) or "the check failed"
            if not isinstance(exc, SubmissionError):
                message = f"{check.exercise}: {message}"
            return ExerciseResult(check.exercise, 0.0, check.points, False, message,
                                  time.monotonic() - started)
        except Exception as exc:  # a fault in the check or the grader, not the learner
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return ExerciseResult(check.exercise, 0.0, check.points, False,
                                  f"internal grader error (tell your instructor): {detail}",
                                  time.monotonic() - started)
        return ExerciseResult(check.exercise, check.points, check.points, True, "",
                              time.monotonic() - started)

    def grade_sources(self, sources: dict[str, str], label: str) -> Report:
        """Grade answer sources (exercise name -> cell source)."""
        started = time.monotonic()
        results = [self.run_check(check, sources) for check in self.checks]
        return Report(label, sum(r.points for r in results), sum(r.max_points for r in results),
                      results, self.sandbox_label, round(time.monotonic() - started, 2))

    def grade_notebook(self, path: Path) -> Report:
        try:
            nb = notebooks.read_notebook(path)
        except notebooks.NotebookError as exc:
            results = [ExerciseResult(c.exercise, 0.0, c.points, False, str(exc))
                       for c in self.checks]
            return Report(str(path), 0.0, sum(c.points for c in self.checks), results,
                          self.sandbox_label, errors=[str(exc)])
        return self.grade_sources(self.answer_sources(nb), str(path))

    def answer_sources(self, nb) -> dict[str, str]:
        """Each exercise's answer cell, by ``grade_id`` or, if the metadata was damaged, by
        the last cell that defines the function."""
        sources = notebooks.answer_cells(nb)
        for check in self.checks:
            if check.exercise not in sources:
                found = notebooks.find_function_source(nb, check.exercise)
                if found is not None:
                    sources[check.exercise] = found
        return sources


def chapter_of(path: Path) -> str:
    """``chapters/01_residual_stream.ipynb`` -> ``01_residual_stream`` (also for copies)."""
    stem = Path(path).stem
    for candidate in (stem, stem.split(".")[0]):
        if notebooks.CHAPTER_NAME.match(candidate):
            return candidate
    raise ValueError(
        f"cannot tell which chapter {path} is: keep the chapter's file name "
        "(e.g. 01_residual_stream.ipynb) or pass --chapter")


def grade_notebook(path: Path, chapter: str | None = None, checks_folder: Path | None = None,
                   released_dir: Path | None = None, require_isolation: bool = False) -> Report:
    """Grade one notebook end to end (starts and stops its own sandbox)."""
    chapter = chapter or chapter_of(path)
    with Grader(chapter, checks_folder, released_dir, require_isolation) as grader:
        return grader.grade_notebook(path)
