"""Which checks folder grades a chapter: a private overlay where it has the chapter, else public.

A private overlay (``--checks DIR`` or ``$COURSE_CHECKS_DIR``) may hold checks for some chapters
only (``test_02_qk_ov_circuits.py``); every other chapter falls back to the public
``tests/hidden`` and :func:`checks_for` says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from utils import paths

CHECKS_ENV = "COURSE_CHECKS_DIR"


@dataclass(frozen=True)
class ChecksChoice:
    folder: Path       # holds test_<chapter>.py
    private: bool      # True: the instructor's overlay; False: the public tests/hidden
    note: str          # one line for the instructor: which folder, and why


def configured_overlay(override: Path | str | None = None) -> Path | None:
    """The overlay asked for (``override``, else ``$COURSE_CHECKS_DIR``), or None."""
    chosen = override or os.environ.get(CHECKS_ENV)
    return Path(chosen).resolve() if chosen else None


def checks_for(chapter: str, override: Path | str | None = None) -> ChecksChoice:
    """The folder whose ``test_<chapter>.py`` grades ``chapter``."""
    public = paths.HIDDEN_CHECKS_DIR.resolve()
    overlay = configured_overlay(override)
    if overlay is None or overlay == public:
        return ChecksChoice(public, False, f"checks: public {public}")
    if not overlay.is_dir():
        raise FileNotFoundError(f"the checks folder {overlay} does not exist")
    if (overlay / f"test_{chapter}.py").is_file():
        return ChecksChoice(overlay, True, f"checks: private overlay {overlay}")
    return ChecksChoice(public, False,
                        f"checks: public {public} (the overlay {overlay} has no "
                        f"test_{chapter}.py)")
