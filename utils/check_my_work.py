"""Grade the notebook you are working in, from a cell: ``grade_my_work()``.

The grader reads the notebook *file* (what you last saved), runs each answer in the sandbox
exactly as an instructor's grading would, and shows a table: each exercise's points, what went
wrong, and a link to the exercise. It also warns when an answer in the saved file is not the
one you last ran (save with Ctrl+S first), and keeps the report for ``show_progress()``.
"""

from __future__ import annotations

import os
import re
import time
from html import escape
from pathlib import Path

from course_tools import edition, notebooks
from utils import progress


class NotebookNotFound(RuntimeError):
    """The kernel cannot tell which notebook file it belongs to."""


def current_notebook() -> Path:
    """The notebook file this kernel runs (Jupyter sets ``JPY_SESSION_NAME``; VS Code sets
    ``__vsc_ipynb_file__``)."""
    candidates = [os.environ.get("JPY_SESSION_NAME", "")]
    try:
        shell = get_ipython()  # noqa: F821 - defined inside IPython only
        candidates.append(shell.user_ns.get("__vsc_ipynb_file__", ""))
    except NameError:
        pass
    for candidate in candidates:
        if candidate and candidate.endswith(".ipynb") and Path(candidate).is_file():
            return Path(candidate)
    raise NotebookNotFound(
        "this kernel does not know its notebook's file: run `grade_my_work(\"path/to/"
        "chapter.ipynb\")`, or in a terminal `python -m utils.grade path/to/chapter.ipynb`")


def unsaved_answers(nb, history: list[str]) -> list[str]:
    """Exercises whose answer in the file differs from the last definition the kernel ran."""
    stale = []
    for name, source in notebooks.answer_cells(nb).items():
        pattern = re.compile(rf"^def\s+{re.escape(name)}\s*\(", re.MULTILINE)
        ran = [cell for cell in history if pattern.search(cell)]
        if ran and ran[-1].strip() != source.strip():
            stale.append(name)
    return stale


def report_html(report, stale: list[str], kinds: dict[str, str] | None = None) -> str:
    """The report as an HTML table, each item linked to its heading in the notebook
    (``kinds`` maps an item to "Investigation" when its heading says so; default "Exercise")."""
    rows = []
    for e in report.exercises:
        kind = (kinds or {}).get(e.id, "Exercise")
        link = f'<a href="#{kind}:-{escape(e.id)}">{escape(e.id)}</a>'
        mark = "✅" if e.passed else "❌"
        message = escape(e.message).replace("\n", "<br>")
        rows.append(f"<tr><td>{mark}</td><td>{link}</td><td>{e.points:g} / {e.max_points:g}"
                    f"</td><td style='text-align:left'>{message}</td></tr>")
    warning = ""
    if stale:
        warning = ("<p><b>Save first (Ctrl+S):</b> the saved file's answer differs from what "
                   f"you last ran for {escape(', '.join(stale))}; this grade is for the file."
                   "</p>")
    errors = "".join(f"<p><b>{escape(err)}</b></p>" for err in report.errors)
    return (f"<p><b>{report.score:g} / {report.max_score:g} points</b> "
            f"<small>({escape(report.sandbox)}, {report.seconds:g} s)</small></p>{warning}"
            f"{errors}<table><tr><th></th><th>exercise</th><th>points</th><th>what the "
            f"grader found</th></tr>{''.join(rows)}</table>")


def grade_my_work(path: str | Path | None = None, show: bool = True, **grading):
    """Grade ``path`` (default: this notebook's saved file) and show the report (``show``), or
    return it (``show=False``).
    ``grading`` goes to :func:`course_tools.grading.runner.grade_notebook` (``checks_folder``,
    ``released_dir``)."""
    from course_tools.grading.runner import chapter_of, grade_notebook

    try:
        notebook = Path(path) if path else current_notebook()
    except NotebookNotFound as exc:
        print(exc)
        return None
    chapter = chapter_of(notebook)
    saved = time.time() - notebook.stat().st_mtime
    print(f"Grading {notebook.name} as saved {saved:.0f} s ago (takes up to a minute)...")
    report = grade_notebook(notebook, chapter, **grading)
    progress.record(chapter, report.to_json())
    try:
        history = list(get_ipython().user_ns.get("In", []))  # noqa: F821
    except NameError:
        history = []
    try:
        nb = notebooks.read_notebook(notebook)
        stale = unsaved_answers(nb, history)
        kinds = {name: item.kind for name, item in edition.outline(nb).items.items()}
    except notebooks.NotebookError:
        stale, kinds = [], {}
    if show:
        try:
            from IPython.display import HTML, display

            display(HTML(report_html(report, stale, kinds)))
        except ImportError:
            print(report.to_text())
        return None
    return report
