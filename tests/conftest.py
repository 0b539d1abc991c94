"""What the whole suite shares, so that one run does each expensive thing once.

* **One grading worker per chapter.** :class:`CourseGraders` starts a chapter's
  :class:`~course_tools.grading.runner.Grader` the first time a test needs it and keeps it until a
  test of another chapter asks for one; :func:`pytest_collection_modifyitems` runs each
  chapter's grading tests together (its hidden checks, then ``tests/test_chapters.py``), so
  each worker starts once per run.
* **Each notebook graded once.** The hidden checks collected from ``tests/hidden/`` (one test
  per exercise) and ``tests/test_chapters.py`` read the same report. The checks grade the
  solution notebook by default, or ``--submission NOTEBOOK``; ``--direct-checks`` calls each
  check inside its own test instead (a traceback rather than the report's message).
* **Each solution notebook executed once** (:meth:`CourseRun.executed_solution`).
* **One way to mark a slow test**: ``@pytest.mark.slow`` (it executes a notebook or trains a
  model). ``make quicktest`` leaves those out; at the end of a run the time per tier and per
  file is printed.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import pytest

from course_tools import notebooks
from course_tools.execute import RunResult, run_notebook
from course_tools.grading.runner import Grader, Report
from tests.course_layout import FIXTURE, ChapterLayout, checks_layout

NOTEBOOK_TIMEOUT_S = 900  # per cell


def pytest_addoption(parser):
    parser.addoption("--submission", type=Path, default=None,
                     help="grade this notebook with the hidden checks instead of the solution")
    parser.addoption("--direct-checks", action="store_true",
                     help="run each hidden check inside its own test (tracebacks) instead of "
                          "reading its result from the notebook's shared report")


class CourseGraders:
    """Started graders (at most ``keep_open`` at a time) and the report of each graded
    notebook, for the whole run."""

    def __init__(self, keep_open: int = 1) -> None:
        self.keep_open = keep_open
        self._open: dict[str, Grader] = {}  # least recently used first
        self._reports: dict[tuple[str, Path], Report] = {}
        self.starts: dict[str, int] = defaultdict(int)

    def grader(self, layout: ChapterLayout) -> Grader:
        """The chapter's started grader (starting it, and closing the oldest, if needed)."""
        if layout.name in self._open:
            self._open[layout.name] = self._open.pop(layout.name)
            return self._open[layout.name]
        while len(self._open) >= self.keep_open:
            self._open.pop(next(iter(self._open))).__exit__(None, None, None)
        grader = Grader(layout.name, layout.checks, layout.chapters)
        grader.__enter__()
        self._open[layout.name] = grader
        self.starts[layout.name] += 1
        return grader

    def report(self, layout: ChapterLayout, notebook: Path) -> Report:
        """``notebook`` graded by the chapter's grader, once per run."""
        key = (layout.name, Path(notebook).resolve())
        if key not in self._reports:
            self._reports[key] = self.grader(layout).grade_notebook(notebook)
        return self._reports[key]

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].__exit__(None, None, None)


class CourseRun:
    """Per-run state: the graders and each executed solution notebook."""

    def __init__(self, executed_dir: Path) -> None:
        self.graders = CourseGraders()
        self.executed_dir = executed_dir
        self._executed: dict[str, RunResult] = {}

    def executed_solution(self, layout: ChapterLayout) -> tuple[RunResult, Path]:
        """The solution notebook run top to bottom in a fresh kernel, once per run: its
        result and the executed copy (with outputs) for any test that reads them."""
        saved = self.executed_dir / layout.solution_notebook.name
        if layout.name not in self._executed:
            self.executed_dir.mkdir(parents=True, exist_ok=True)
            self._executed[layout.name] = run_notebook(
                layout.solution_notebook, timeout=NOTEBOOK_TIMEOUT_S, save_to=saved)
        return self._executed[layout.name], saved


RUN_KEY = pytest.StashKey[CourseRun]()


@pytest.fixture(scope="session")
def course_run(request, tmp_path_factory) -> CourseRun:
    run = request.config.stash.get(RUN_KEY, None)
    if run is None:
        run = CourseRun(tmp_path_factory.mktemp("executed"))
        request.config.stash[RUN_KEY] = run
    return run


@pytest.fixture(scope="session")
def course_graders(course_run) -> CourseGraders:
    return course_run.graders


def _submission_notebook(config, layout: ChapterLayout) -> Path:
    return config.getoption("--submission") or layout.solution_notebook


@pytest.fixture
def submission(request, course_graders):
    """The graded notebook's answers, for a hidden check run with ``--direct-checks``
    (otherwise the check's result comes from the shared report and nothing is opened)."""
    if not request.config.getoption("--direct-checks"):
        yield None
        return
    layout = checks_layout(Path(request.node.path))
    grader = course_graders.grader(layout)
    nb = notebooks.read_notebook(_submission_notebook(request.config, layout))
    with grader.open_submission(grader.answer_sources(nb)) as opened:
        yield opened


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A hidden check's test reads its exercise's result from the notebook's shared report."""
    layout = checks_layout(Path(pyfuncitem.path))
    if layout is None or pyfuncitem.config.getoption("--direct-checks"):
        return None
    graders: CourseGraders = pyfuncitem.funcargs["course_graders"]
    report = graders.report(layout, _submission_notebook(pyfuncitem.config, layout))
    exercise = pyfuncitem.originalname[len("test_"):]
    result = next((e for e in report.exercises if e.id == exercise), None)
    if result is None:
        pytest.fail(f"{exercise}: not in the report of {report.notebook}", pytrace=False)
    if not result.passed:
        pytest.fail(f"{exercise}: {result.message}", pytrace=False)
    return True


def _grading_chapter(item) -> str | None:
    """The chapter whose grader a test uses, if it uses one."""
    layout = checks_layout(Path(item.path))
    if layout is None and "course_graders" in getattr(item, "fixturenames", ()):
        params = getattr(getattr(item, "callspec", None), "params", {})
        layout = next((v for v in params.values() if isinstance(v, ChapterLayout)), None)
    return layout.name if layout else None


def _work_unit(item) -> str:
    """What must run in one process when the suite is spread over workers (``-n 2``): a
    chapter's grading tests (one worker per chapter), each executed notebook on its own, and
    otherwise a test module (its module fixtures are made once)."""
    chapter = _grading_chapter(item)
    if chapter is not None:
        return f"grading-{chapter}"
    if "course_run" in getattr(item, "fixturenames", ()):
        return item.nodeid
    return Path(item.path).name


def pytest_itemcollected(item):
    """Group the test's work unit; mark grading of a course chapter slow (it runs the
    chapter's setup cell and every answer cell in the sandbox, with SmolLM2 and the toy
    models, and some checks train models): the fixture chapter's grading stays quick."""
    item.add_marker(pytest.mark.xdist_group(_work_unit(item)))
    chapter = _grading_chapter(item)
    if chapter is not None and chapter != FIXTURE.name:
        item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Order the work: slow tests first (the longest units start first when spread over
    workers), then each chapter's grading tests together (its worker starts once), then the
    rest, each part in collection order."""
    slow, grading, rest = [], {}, []
    for item in items:
        chapter = _grading_chapter(item)
        if chapter is not None:
            grading.setdefault(chapter, []).append(item)
        elif item.get_closest_marker("slow"):
            slow.append(item)
        else:
            rest.append(item)
    items[:] = slow + [item for block in grading.values() for item in block] + rest


# ----------------------------------------------------------------- time per tier, per file
_SECONDS_BY_TEST: dict[str, float] = defaultdict(float)
_SLOW_TESTS: set[str] = set()
_GRADER_STARTS: dict[str, int] = defaultdict(int)  # this process's, and its workers'
_STARTED = pytest.StashKey[float]()


def pytest_runtest_logreport(report):
    _SECONDS_BY_TEST[report.nodeid] += report.duration
    if "slow" in report.keywords:
        _SLOW_TESTS.add(report.nodeid)


def pytest_sessionstart(session):
    session.config.stash[_STARTED] = time.monotonic()


def pytest_terminal_summary(terminalreporter, config):
    """Time per tier (slow or quick) and the files that took longest."""
    if not _SECONDS_BY_TEST:
        return
    tiers: dict[str, list[float]] = defaultdict(list)
    files: dict[str, float] = defaultdict(float)
    for nodeid, seconds in _SECONDS_BY_TEST.items():
        tiers["slow" if nodeid in _SLOW_TESTS else "quick"].append(seconds)
        files[nodeid.split("::")[0]] += seconds
    write = terminalreporter.write_line
    terminalreporter.section("time per tier (setup + call + teardown)")
    for tier in ("quick", "slow"):
        if tier in tiers:
            write(f"{tier:>6}: {len(tiers[tier]):4d} tests {sum(tiers[tier]):8.1f} s")
    wall = time.monotonic() - config.stash.get(_STARTED, time.monotonic())
    write(f"{'wall':>6}: {wall:19.1f} s (collection included)")
    for path, seconds in sorted(files.items(), key=lambda kv: -kv[1])[:12]:
        write(f"{seconds:14.1f} s  {path}")
    if _GRADER_STARTS:
        starts = ", ".join(f"{k} {v}" for k, v in sorted(_GRADER_STARTS.items()))
        write(f"grading workers started per chapter: {starts}")


def pytest_sessionfinish(session):
    run = session.config.stash.get(RUN_KEY, None)
    if run is None:
        return
    run.graders.close()
    for chapter, count in run.graders.starts.items():
        _GRADER_STARTS[chapter] += count
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: tell the controller
        session.config.workeroutput["grader_starts"] = dict(run.graders.starts)


def pytest_testnodedown(node, error):
    """(pytest-xdist) Add up the grading workers each test worker started."""
    for chapter, count in getattr(node, "workeroutput", {}).get("grader_starts", {}).items():
        _GRADER_STARTS[chapter] += count
