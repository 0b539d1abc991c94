"""Grade a notebook: find its hidden checks, run each against the sandboxed submission.

Trusted code only. The submission's answer cells are read from the notebook as text and
executed in the sandbox (:mod:`course_tools.grading.sandbox`); the checks (from
``tests/hidden/test_<chapter>.py``, or an instructor's private folder) run here and compare
what comes back with independent references.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from course_tools import notebooks
from course_tools.grading import trusted_calls
from course_tools.grading.checks import (
    CallFailed,
    OutOfTime,
    Submission,
    SubmissionError,
    TimeBudget,
)
from course_tools.grading.diagnosis import Mistake, same_value
from course_tools.grading.overlay import checks_for
from course_tools.grading.sandbox import Sandbox
from utils import paths

NOTEBOOK_BUDGET = 240.0  # seconds the learner's code may run, all of a notebook's calls together
MESSAGE_LIMIT = 1500
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message fit for a report: no control characters or escape codes, at most ``limit``
    characters. Applied on the trusted side to everything a submission may have influenced."""
    text = _CONTROL.sub("", str(text).replace("\r\n", "\n").replace("\t", "    "))
    return text if len(text) <= limit else text[:limit] + " ... [cut]"


@dataclass
class ExerciseResult:
    id: str
    points: float
    max_points: float
    passed: bool
    message: str
    seconds: float = 0.0
    out_of_time: bool = False


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
        """The report for a terminal: one line per exercise; a message's further lines are
        indented under it, so nothing a submission prints can pass for a header."""
        lines = [f"{self.notebook}: {self.score:g} / {self.max_score:g} points"
                 f"  ({self.sandbox})"]
        for e in self.exercises:
            mark = "PASS" if e.passed else "FAIL"
            first, *rest = clean_message(e.message).split("\n") if e.message else [""]
            lines.append(f"  {mark}  {e.id:<34} {e.points:g}/{e.max_points:g}"
                         + (f"  - {first}" if first else ""))
            lines += [f"        | {line}" for line in rest]
        lines += [f"  ERROR {clean_message(err)}" for err in self.errors]
        return "\n".join(lines)


@dataclass
class Check:
    exercise: str
    func: Callable
    points: float


def load_checks_module(chapter: str, folder: Path | None = None):
    """Import ``test_<chapter>.py`` (by path, never via sys.path) from ``folder`` or
    ``$COURSE_CHECKS_DIR`` when it has the chapter, else from the public ``tests/hidden``."""
    path = checks_for(chapter, folder).folder / f"test_{chapter}.py"
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
                 released_dir: Path | None = None, require_isolation: bool = False,
                 notebook_budget: float = NOTEBOOK_BUDGET) -> None:
        self.chapter = chapter
        self.module = load_checks_module(chapter, checks_folder)
        self.checks = checks_in(self.module)
        self.notebook_budget = notebook_budget
        setup = released_setup(chapter, released_dir)
        if setup is None:
            raise FileNotFoundError(
                f"the released chapter {chapter}.ipynb was not found in "
                f"{released_dir or paths.CHAPTERS_DIR}; its setup cell is what answers run "
                "after (pass --released DIR)")
        # Modules that compute this chapter's answers are not even on the sandbox's disk.
        # Functions of earlier exercises a later answer may call run on the trusted side.
        references = dict(getattr(self.module, "REFERENCES", {}))
        exercises = [check.exercise for check in self.checks]
        self.sandbox = Sandbox(setup, require_isolation=require_isolation,
                               hidden_modules=list(getattr(self.module, "ANSWER_KEYS", [])),
                               trusted_helpers=lambda function: trusted_calls.available(
                                   references, exercises, function),
                               preload_models=list(getattr(self.module, "SANDBOX_MODELS", [])))
        self.started = False
        self._mistake_outputs: dict[tuple[str, str], tuple[bool, object]] = {}

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

    @contextlib.contextmanager
    def open_submission(self, sources: dict[str, str],
                        budget: TimeBudget | None = None) -> Iterator[Submission]:
        """The learner's answers as hidden checks see them; every call is sandboxed on its own,
        and together they may run for ``budget`` (default: a fresh notebook budget)."""
        yield Submission(self.sandbox, sources, budget or TimeBudget(self.notebook_budget))

    def run_check(self, check: Check, sources: dict[str, str],
                  budget: TimeBudget | None = None) -> ExerciseResult:
        started = time.monotonic()
        out_of_time = False
        try:
            with self.open_submission(sources, budget) as submission:
                check.func(submission)
        except AssertionError as exc:
            message = str(exc) or "the check failed"
            out_of_time = isinstance(exc, OutOfTime)
            if not isinstance(exc, SubmissionError):
                message = f"{check.exercise}: {message}"
            # An answer that raised or timed out has its own message; one that returned the
            # wrong thing (or changed its inputs) may have made a known mistake.
            mistake = None if isinstance(exc, CallFailed) else \
                self.known_mistake(check, submission)
            if mistake is not None:
                found = message.removeprefix(f"{check.exercise}: ")
                message = f"{mistake.message(check.exercise)}. The check found: {found}"
            return ExerciseResult(check.exercise, 0.0, check.points, False,
                                  clean_message(message), time.monotonic() - started,
                                  out_of_time)
        except Exception as exc:  # a fault in the check or the grader, not the learner
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return ExerciseResult(check.exercise, 0.0, check.points, False,
                                  clean_message("internal grader error (tell your instructor): "
                                                + detail), time.monotonic() - started)
        return ExerciseResult(check.exercise, check.points, check.points, True, "",
                              time.monotonic() - started)

    def known_mistake(self, check: Check, submission: Submission) -> Mistake | None:
        """The known mistake that returns exactly what the learner's answer returned on every
        call the check made to it, if exactly one does (mistakes run in the sandbox; each
        mistake's output for given inputs is computed once per grader)."""
        calls = [c for c in submission.calls if c.function == check.exercise]
        mistakes = {name: m for name, m in getattr(self.module, "MUTANTS", {})
                    .get(check.exercise, {}).items() if isinstance(m, Mistake)}
        if not calls or not mistakes or not all(c.ok for c in calls):
            return None
        own = submission.sources.get(check.exercise, "").strip()
        for name, mistake in mistakes.items():  # the same code gave these very outputs
            if mistake.source.strip() == own:
                for call in calls:
                    self._mistake_outputs.setdefault((name, call.key()), (True, call.value))
        matches = []
        for name, mistake in mistakes.items():
            for call in calls:
                if submission.budget.remaining() <= 0:
                    return None
                key = (name, call.key())
                if key not in self._mistake_outputs:
                    header, value = self.sandbox.call(mistake.source, call.function, call.args,
                                                      call.kwargs, call.timeout, call.memory_mb)
                    self._mistake_outputs[key] = (header.get("status") == "ok", value)
                ok, value = self._mistake_outputs[key]
                if not ok or not same_value(call.value, value):
                    break
            else:
                matches.append(mistake)
        return matches[0] if len(matches) == 1 else None

    def grade_sources(self, sources: dict[str, str], label: str) -> Report:
        """Grade answer sources (exercise name -> cell source) within the notebook budget."""
        started = time.monotonic()
        budget = TimeBudget(self.notebook_budget)
        results = [self.run_check(check, sources, budget) for check in self.checks]
        report = Report(label, sum(r.points for r in results),
                        sum(r.max_points for r in results), results, self.sandbox_label,
                        round(time.monotonic() - started, 2))
        late = [r.id for r in results if r.out_of_time]
        if late:
            report.errors.append(
                f"this notebook's grading time ({self.notebook_budget:g} s) ran out; not graded "
                f"in full: {', '.join(late)}. Look for answers that loop or wait.")
        return report

    def grade_notebook(self, path: Path) -> Report:
        """A report for any file: what cannot be read scores zero and says what is wrong."""
        try:
            nb = notebooks.read_notebook(path)
            sources = self.answer_sources(nb)
        except Exception as exc:  # noqa: BLE001 - any malformed JSON a learner can produce
            message = str(exc) if isinstance(exc, notebooks.NotebookError) else (
                f"{path}: the notebook's cells could not be read ({type(exc).__name__}: {exc}); "
                "restore it from your last checkpoint or a fresh copy of the chapter")
            message = clean_message(message)
            results = [ExerciseResult(c.exercise, 0.0, c.points, False, message)
                       for c in self.checks]
            return Report(str(path), 0.0, sum(c.points for c in self.checks), results,
                          self.sandbox_label, errors=[message])
        return self.grade_sources(sources, str(path))

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
