"""Where the course's files live: the repository, its folders, and the model cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = REPO_ROOT / "solutions"
CHAPTERS_DIR = REPO_ROOT / "chapters"
TESTS_DIR = REPO_ROOT / "tests"
HIDDEN_CHECKS_DIR = TESTS_DIR / "hidden"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def cache_dir() -> Path:
    """The course's cache folder (dequantised SmolLM2 weights and the like).

    ``$COURSE_CACHE_DIR`` wins; otherwise ``$XDG_CACHE_HOME/mech-interp-course`` or
    ``~/.cache/mech-interp-course``. Created on first use.
    """
    env = os.environ.get("COURSE_CACHE_DIR")
    if env:
        path = Path(env).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        path = base / "mech-interp-course"
    path.mkdir(parents=True, exist_ok=True)
    return path


def share_with_sandbox(folder: Path) -> None:
    """Make ``folder`` readable by every user (the grading sandbox runs as ``nobody``).

    Files written with ``mkdtemp`` or by safetensors are owner-only; the course's caches and
    weights hold nothing private.
    """
    for path in [Path(folder), *Path(folder).rglob("*")]:
        mode = path.stat().st_mode
        wanted = mode | (0o555 if path.is_dir() else 0o444)
        if mode != wanted and not path.is_symlink():
            path.chmod(wanted)
