"""Helpers for writing solution notebooks with the right nbgrader metadata.

Chapter authors may edit ``solutions/*.ipynb`` in Jupyter, or (for a first draft) build one
from Python with these helpers and :func:`course_tools.notebooks.write_notebook`. Cell ids are
derived from the cell's role and position, so regenerating gives the same ids.
"""

from __future__ import annotations

import nbformat


def _cell(kind: str, source: str, cell_id: str, **metadata):
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    cell = make(source.strip("\n"))
    cell.id = cell_id
    cell.metadata = metadata
    return cell


class NotebookWriter:
    """Collects cells in order and gives each a stable, readable id."""

    def __init__(self) -> None:
        self.cells: list = []

    def _id(self, role: str) -> str:
        return f"{role}-{len(self.cells):03d}"

    def markdown(self, text: str) -> None:
        self.cells.append(_cell("markdown", text, self._id("md")))

    def code(self, source: str, tags: list[str] | None = None) -> None:
        meta = {"tags": tags} if tags else {}
        self.cells.append(_cell("code", source, self._id("code"), **meta))

    def setup(self, source: str) -> None:
        """The setup cell: imports and constants only (the grader runs it)."""
        self.cells.append(_cell("code", source, self._id("setup"), tags=["setup"]))

    def answer(self, name: str, source: str) -> None:
        """The answer cell defining ``name`` (with BEGIN/END SOLUTION markers)."""
        meta = {"nbgrader": {"grade": False, "grade_id": name, "locked": False,
                             "schema_version": 3, "solution": True, "task": False}}
        self.cells.append(_cell("code", source, f"answer-{name}", **meta))

    def selfcheck(self, name: str, source: str, points: float) -> None:
        """The visible self-check cell for exercise ``name`` (graded test cell)."""
        meta = {"nbgrader": {"grade": True, "grade_id": f"test_{name}", "locked": True,
                             "points": points, "schema_version": 3, "solution": False,
                             "task": False}}
        self.cells.append(_cell("code", source, f"test-{name}", **meta))

    def notebook(self) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)",
                                      "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}}
        nb.nbformat_minor = 5
        nb.cells = self.cells
        return nb
