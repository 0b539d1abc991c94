"""Where a learner stands across the course: ``python -m utils.progress``.

Every time a learner grades a chapter (``python -m utils.grade`` or the "Check your work" cell
at the end of each chapter), the report is kept in the course's cache folder, one file per
chapter. This module prints (or, in a notebook, shows) every chapter's last grade per exercise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from course_tools import notebooks
from utils import paths


def progress_dir() -> Path:
    folder = paths.cache_dir() / "progress"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def record(chapter: str, report_json: str) -> Path:
    """Keep a chapter's latest report (as written by ``Report.to_json``)."""
    data = json.loads(report_json)
    data["chapter"] = chapter
    data["graded_at"] = time.strftime("%Y-%m-%d %H:%M")
    target = progress_dir() / f"{chapter}.json"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(target)
    return target


def latest() -> dict[str, dict | None]:
    """Chapter -> its last kept report (``None`` if never graded), for every course chapter."""
    out: dict[str, dict | None] = {}
    for notebook in notebooks.chapter_notebooks(paths.CHAPTERS_DIR):
        path = progress_dir() / f"{notebook.stem}.json"
        try:
            out[notebook.stem] = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            out[notebook.stem] = None
    return out


def table() -> str:
    """One line per chapter: score, when graded, and a mark per exercise (ok / --)."""
    lines = []
    done = total = 0.0
    for chapter, report in latest().items():
        if report is None:
            lines.append(f"{chapter:<28} not graded yet")
            continue
        marks = " ".join("ok" if e["passed"] else "--" for e in report["exercises"])
        lines.append(f"{chapter:<28} {report['score']:>4g}/{report['max_score']:<4g} "
                     f"{report.get('graded_at', ''):<16}  {marks}")
        done += report["score"]
        total += report["max_score"]
    lines.append(f"{'course so far':<28} {done:>4g}/{total:<4g}")
    return "\n".join(lines)


def show_progress() -> None:
    """In a notebook: the course table as HTML, a row per chapter, failing exercises named."""
    from html import escape

    from IPython.display import HTML, display

    rows = []
    for chapter, report in latest().items():
        if report is None:
            rows.append(f"<tr><td>{escape(chapter)}</td><td colspan=3>not graded yet</td></tr>")
            continue
        failing = ", ".join(escape(e["id"]) for e in report["exercises"] if not e["passed"])
        rows.append(f"<tr><td>{escape(chapter)}</td><td>{report['score']:g} / "
                    f"{report['max_score']:g}</td><td>{escape(report.get('graded_at', ''))}"
                    f"</td><td>{failing or 'all passed'}</td></tr>")
    display(HTML("<table><tr><th>chapter</th><th>score</th><th>graded</th><th>still to do"
                 "</th></tr>" + "".join(rows) + "</table>"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.progress", description=__doc__)
    parser.parse_args(argv)
    print(table())
    print(f"\n(reports kept in {progress_dir()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
