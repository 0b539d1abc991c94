"""Where each chapter's pieces live, for the project's own tests (course + fixture)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from course_tools import notebooks
from utils import paths

FIXTURE_DIR = paths.TESTS_DIR / "fixture_chapter"


@dataclass(frozen=True)
class ChapterLayout:
    name: str
    solutions: Path
    chapters: Path
    checks: Path

    @property
    def solution_notebook(self) -> Path:
        return self.solutions / f"{self.name}.ipynb"

    @property
    def student_notebook(self) -> Path:
        return self.chapters / f"{self.name}.ipynb"


FIXTURE = ChapterLayout("00_fixture", FIXTURE_DIR / "solutions", FIXTURE_DIR / "chapters",
                        FIXTURE_DIR / "hidden")


def course_chapters() -> list[ChapterLayout]:
    return [ChapterLayout(p.stem, paths.SOLUTIONS_DIR, paths.CHAPTERS_DIR,
                          paths.HIDDEN_CHECKS_DIR)
            for p in notebooks.chapter_notebooks(paths.SOLUTIONS_DIR)]


def all_chapters() -> list[ChapterLayout]:
    return [FIXTURE, *course_chapters()]


def layout_for_checks_file(path: Path) -> ChapterLayout:
    """The chapter a hidden-checks module (``.../test_<chapter>.py``) belongs to."""
    name = Path(path).stem[len("test_"):]
    for layout in all_chapters():
        if layout.name == name and layout.checks == Path(path).parent:
            return layout
    raise LookupError(f"no chapter for checks file {path}")


@functools.cache
def checks_layout(path: Path) -> ChapterLayout | None:
    """The chapter of a hidden-checks module, or ``None`` for any other file."""
    path = Path(path)
    if not path.name.startswith("test_") or path.parent.name != "hidden":
        return None
    try:
        return layout_for_checks_file(path)
    except LookupError:
        return None
