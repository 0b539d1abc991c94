"""Reading and writing course notebooks, and the cell conventions the build and grader share.

A chapter notebook has three kinds of special cells, marked with nbgrader metadata or tags:

* **setup** (tag ``setup``): imports and constants only. The grader runs it, from the
  *released* chapter, before each answer, so it must be cheap and have no side effects.
* **answer** (``nbgrader.solution`` true, ``grade_id`` = the exercise name): defines the
  exercise function, with ``### BEGIN SOLUTION`` / ``### END SOLUTION`` around the answer.
* **test** (``nbgrader.grade`` true, ``grade_id`` = ``test_<exercise>``, ``points``): the
  visible self-check. The real checks live in ``tests/hidden/test_<chapter>.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

NB_VERSION = 4
SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
CHAPTER_NAME = re.compile(r"^\d\d_[a-z0-9_]+$")


class NotebookError(ValueError):
    """A notebook that cannot be read or does not follow the course's conventions."""


@dataclass(frozen=True)
class Exercise:
    """An exercise as found in a notebook."""

    name: str
    source: str
    points: float | None = None


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook, turning every failure into a :class:`NotebookError` that says why."""
    path = Path(path)
    if not path.is_file():
        raise NotebookError(f"{path}: no such notebook")
    try:
        return nbformat.read(str(path), as_version=NB_VERSION)
    except Exception as exc:  # nbformat raises many types for broken JSON
        raise NotebookError(
            f"{path}: not a readable notebook ({type(exc).__name__}: {exc}). "
            "If you edited it outside Jupyter, restore it from your last checkpoint."
        ) from exc


def write_notebook(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write a notebook deterministically (sorted keys, one-space indent, final newline)."""
    text = nbformat.writes(nb, version=NB_VERSION)
    if not text.endswith("\n"):
        text += "\n"
    Path(path).write_text(text, encoding="utf-8")


def nbgrader_meta(cell) -> dict:
    """The cell's nbgrader metadata; ``{}`` when missing or not a mapping (damaged files)."""
    metadata = cell.get("metadata")
    meta = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return dict(meta) if isinstance(meta, dict) else {}


def cell_source(cell) -> str:
    """The cell's source as one string, whatever shape a damaged file gives it."""
    source = cell.get("source", "")
    if isinstance(source, list):
        return "".join(s for s in source if isinstance(s, str))
    return source if isinstance(source, str) else ""


def is_setup_cell(cell) -> bool:
    metadata = cell.get("metadata")
    tags = metadata.get("tags", []) if isinstance(metadata, dict) else []
    return cell.get("cell_type") == "code" and isinstance(tags, list) and "setup" in tags


def is_answer_cell(cell) -> bool:
    meta = nbgrader_meta(cell)
    return (cell.get("cell_type") == "code" and bool(meta.get("solution"))
            and not meta.get("grade"))


def is_test_cell(cell) -> bool:
    meta = nbgrader_meta(cell)
    return (cell.get("cell_type") == "code" and bool(meta.get("grade"))
            and not meta.get("solution"))


def setup_source(nb) -> str:
    """The source of every setup cell, joined in order."""
    return "\n\n".join(c.source for c in nb.cells if is_setup_cell(c))


def answer_cells(nb) -> dict[str, str]:
    """Map exercise name -> answer cell source, found by ``grade_id``.

    If a learner damaged the metadata, fall back to the last code cell that defines a
    function of that name (see :func:`find_function_source`).
    """
    found: dict[str, str] = {}
    for cell in nb.cells:
        if is_answer_cell(cell):
            found[str(nbgrader_meta(cell).get("grade_id", ""))] = cell_source(cell)
    return found


def find_function_source(nb, name: str) -> str | None:
    """Source of the last code cell that defines ``def name(`` (for damaged metadata)."""
    pattern = re.compile(rf"^def\s+{re.escape(name)}\s*\(", re.MULTILINE)
    matches = [cell_source(c) for c in nb.cells
               if c.get("cell_type") == "code" and pattern.search(cell_source(c))]
    return matches[-1] if matches else None


def test_cell_points(nb) -> dict[str, float]:
    """Map exercise name -> points declared on its test cell."""
    points = {}
    for cell in nb.cells:
        if is_test_cell(cell):
            meta = nbgrader_meta(cell)
            grade_id = meta.get("grade_id", "")
            if grade_id.startswith("test_"):
                points[grade_id[len("test_"):]] = float(meta.get("points", 0))
    return points


def chapter_notebooks(folder: Path) -> list[Path]:
    """The chapter notebooks in ``folder`` (``NN_topic.ipynb``), in teaching order."""
    return sorted(p for p in Path(folder).glob("*.ipynb") if CHAPTER_NAME.match(p.stem))
