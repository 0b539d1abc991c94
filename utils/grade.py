"""Grade a notebook with the hidden checks: ``python -m utils.grade NOTEBOOK [--json]``.

The submission runs in a separate, sandboxed, time- and memory-limited process; trusted
code compares what it returns. Exit status 0 whenever a report was produced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course_tools.grading.runner import chapter_of, grade_notebook
from course_tools.grading.sandbox import SandboxUnavailable
from utils import progress


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.grade", description=__doc__)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--chapter", help="chapter name if the file was renamed")
    parser.add_argument("--checks", type=Path, help="folder of hidden checks (private overlay)")
    parser.add_argument("--released", type=Path,
                        help="folder of the released chapters (default: chapters/)")
    parser.add_argument("--require-sandbox", action="store_true",
                        help="refuse to grade without bubblewrap (instructors)")
    parser.add_argument("--no-record", action="store_true",
                        help="do not keep this report for `python -m utils.progress`")
    args = parser.parse_args(argv)
    if not args.notebook.exists():
        print(f"error: {args.notebook} does not exist", file=sys.stderr)
        return 2
    try:
        chapter = args.chapter or chapter_of(args.notebook)
        report = grade_notebook(args.notebook, chapter, args.checks, args.released,
                                require_isolation=args.require_sandbox)
    except (ValueError, FileNotFoundError, SandboxUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else report.to_text())
    if not args.no_record:
        progress.record(chapter, report.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
