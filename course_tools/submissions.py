"""Find each learner's submission of a chapter in a folder, and say what was left out and why.

Accepted layouts (``learner`` = letters, digits, ``.``, ``_``, ``-``)::

    FOLDER/<learner>.ipynb
    FOLDER/<learner>/<any one notebook>.ipynb   (02_qk_ov_circuits-Copy1.ipynb, Untitled.ipynb)
    FOLDER/<learner>/<chapter>/<any one notebook>.ipynb   (nbgrader's own layout)

A learner's folder may also hold other chapters' notebooks (``01_residual_stream.ipynb`` when
grading chapter 02): they are skipped. Two or more candidate notebooks in one folder are never
guessed between: that learner gets a problem (an error row in every table) instead.
Used by ``course_tools.nbgrader_course collect`` and ``course_tools.grade_class``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

LEARNER_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")
CHAPTER_PREFIX = re.compile(r"^(\d\d)_")


@dataclass
class Skipped:
    path: Path
    reason: str


@dataclass
class Submissions:
    notebooks: dict[str, Path] = field(default_factory=dict)  # learner -> notebook to grade
    problems: dict[str, str] = field(default_factory=dict)    # learner -> why none can be
    skipped: list[Skipped] = field(default_factory=list)      # not a submission, and why

    @property
    def learners(self) -> list[str]:
        """Every learner found, graded or not."""
        return sorted(set(self.notebooks) | set(self.problems))

    def report(self, folder: Path) -> str:
        """What was skipped (grouped by reason) and which learners have a problem."""
        lines = []
        by_reason: dict[str, list[str]] = defaultdict(list)
        for item in self.skipped:
            by_reason[item.reason].append(_relative(item.path, folder))
        for reason, names in by_reason.items():
            lines.append(f"skipped ({reason}): {', '.join(names)}")
        for learner, problem in sorted(self.problems.items()):
            lines.append(f"NOT GRADED {learner}: {problem}")
        return "\n".join(lines)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder)) + ("/" if path.is_dir() else "")
    except ValueError:
        return str(path)


def _other_chapter(stem: str, chapter: str) -> bool:
    """``01_residual_stream-Copy1`` belongs to another chapter than ``02_qk_ov_circuits``."""
    found, ours = CHAPTER_PREFIX.match(stem), CHAPTER_PREFIX.match(chapter)
    return bool(found and ours and found.group(1) != ours.group(1))


def _notebook_in(folder: Path, chapter: str, found: Submissions) -> Path | str:
    """The one candidate notebook in a learner's folder, or why there is none."""
    candidates = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            found.skipped.append(Skipped(entry, "hidden"))
        elif entry.is_dir() and entry.name == chapter:
            continue  # looked at below, if the folder itself holds no candidate
        elif entry.is_dir():
            found.skipped.append(Skipped(entry, "a folder inside a learner's folder"))
        elif entry.suffix != ".ipynb":
            found.skipped.append(Skipped(entry, "not a notebook"))
        elif _other_chapter(entry.stem, chapter):
            found.skipped.append(Skipped(entry, "another chapter's notebook"))
        else:
            candidates.append(entry)
    nested = folder / chapter
    if not candidates and nested.is_dir():
        return _notebook_in(nested, chapter, found)
    if nested.is_dir() and candidates:
        found.skipped.append(Skipped(nested, "a folder inside a learner's folder"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return f"no notebook for {chapter} in {folder.name}/"
    names = ", ".join(c.name for c in candidates)
    return (f"{len(candidates)} notebooks in {folder.name}/ ({names}): which one to grade is "
            "not guessed; leave only the one to grade and run again")


def find_submissions(folder: Path, chapter: str) -> Submissions:
    """Every learner's notebook for ``chapter`` in ``folder``, their problems, what was skipped."""
    folder = Path(folder)
    found = Submissions()
    for entry in sorted(folder.iterdir()):
        name = entry.stem if entry.is_file() else entry.name
        if entry.name.startswith("."):
            found.skipped.append(Skipped(entry, "hidden"))
        elif entry.is_file() and entry.suffix != ".ipynb":
            found.skipped.append(Skipped(entry, "not a notebook"))
        elif CHAPTER_PREFIX.match(name):
            found.skipped.append(Skipped(
                entry, "named like a chapter, not a learner: use <learner>.ipynb or "
                       "<learner>/<notebook>.ipynb"))
        elif not LEARNER_ID.match(name):
            found.skipped.append(Skipped(
                entry, "not a valid learner id (letters, digits, '.', '_', '-'): rename it"))
        elif name in found.notebooks or name in found.problems:
            found.notebooks.pop(name, None)
            found.problems[name] = (f"both {name}.ipynb and a folder {name}/ were handed in: "
                                    "keep one and run again")
        elif entry.is_file():
            found.notebooks[name] = entry
        else:
            notebook = _notebook_in(entry, chapter, found)
            if isinstance(notebook, Path):
                found.notebooks[name] = notebook
            else:
                found.problems[name] = notebook
    return found


def problem_report(chapter: str, checks_folder: Path | None, where: str, problem: str):
    """A zero-score report for a learner whose work could not be graded, naming the problem."""
    from course_tools.grading.runner import ExerciseResult, Report, checks_in, load_checks_module

    checks = checks_in(load_checks_module(chapter, checks_folder))
    results = [ExerciseResult(c.exercise, 0.0, c.points, False, f"not graded: {problem}")
               for c in checks]
    return Report(where, 0.0, sum(c.points for c in checks), results, "not graded",
                  errors=[problem])
