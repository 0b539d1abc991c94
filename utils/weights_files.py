"""Folders of saved weights: sha256 digests, ``SHA256SUMS`` lists, and atomic writes.

Every weights folder the course writes (a shipped toy model or SAE in ``utils/weights/``, the
processed SmolLM2 cache) goes through here:

* :func:`file_sha256`, :func:`write_checksums`, :func:`read_checksums` and
  :func:`verify_checksums` handle ``SHA256SUMS`` in ``sha256sum -c`` format; any problem is a
  :class:`WeightsChecksumError` naming the file and how to restore it.
* :func:`atomic_folder` builds a folder next to its destination and renames it into place,
  so an interrupted run never leaves a half-written folder, and makes it readable by every
  user (the grading sandbox runs as ``nobody``).
* :func:`package_version` and :func:`environment` record what wrote a folder;
  :func:`write_json` writes its JSON files (config, logs) in one stable format.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from utils.paths import REPO_ROOT, share_with_sandbox

__all__ = [
    "CHECKSUM_FILE",
    "WeightsChecksumError",
    "atomic_folder",
    "display_path",
    "environment",
    "file_sha256",
    "package_version",
    "read_checksums",
    "verify_checksums",
    "write_checksums",
    "write_json",
]

CHECKSUM_FILE = "SHA256SUMS"


class WeightsChecksumError(RuntimeError):
    """A weights folder lacks a file, or a file does not match its ``SHA256SUMS`` entry."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_checksums(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> None:
    """Write ``folder/SHA256SUMS`` for ``names`` (default: every other file, sorted)."""
    folder = Path(folder)
    if names is None:
        names = sorted(p.name for p in folder.iterdir()
                       if p.is_file() and p.name != CHECKSUM_FILE)
    lines = [f"{file_sha256(folder / name)}  {name}\n" for name in names]
    (folder / CHECKSUM_FILE).write_text("".join(lines), encoding="utf-8")


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when inside it (for messages)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _restore_hint(path: Path, rebuild_command: str | None) -> str:
    hint = f"Restore it with `git checkout -- {display_path(path)}`"
    if rebuild_command:
        hint += f" (run from the repository root), or rebuild it with `{rebuild_command}`"
    return hint + "."


def read_checksums(folder: str | os.PathLike[str], rebuild_command: str | None = None
                   ) -> dict[str, str]:
    """``{file name: sha256}`` from ``folder/SHA256SUMS`` (``*name``, binary mode, accepted)."""
    folder = Path(folder)
    sums = folder / CHECKSUM_FILE
    if not sums.is_file():
        raise WeightsChecksumError(
            f"{display_path(sums)} is missing, so the files in {display_path(folder)} cannot "
            f"be verified. {_restore_hint(sums, rebuild_command)}")
    expected: dict[str, str] = {}
    for lineno, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition(" ")
        name = name.strip().removeprefix("*")
        if not sep or len(digest) != 64 or not name:
            raise WeightsChecksumError(
                f"{display_path(sums)} line {lineno} is malformed: {line!r}. "
                f"{_restore_hint(sums, rebuild_command)}")
        expected[name] = digest.lower()
    return expected


def verify_checksums(folder: str | os.PathLike[str], required: Iterable[str] = (),
                     rebuild_command: str | None = None) -> None:
    """Check every file listed in ``folder/SHA256SUMS``; raise :class:`WeightsChecksumError`.

    Each name in ``required`` must be listed; files present but not listed are ignored.
    ``rebuild_command`` (e.g. ``python -m utils.sae --retrain``) goes into the messages.
    """
    folder = Path(folder)
    expected = read_checksums(folder, rebuild_command)
    for name in required:
        if name not in expected:
            raise WeightsChecksumError(
                f"{display_path(folder / CHECKSUM_FILE)} has no entry for {name}. "
                f"{_restore_hint(folder / CHECKSUM_FILE, rebuild_command)}")
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise WeightsChecksumError(
                f"{display_path(path)} is missing (listed in {CHECKSUM_FILE}). "
                f"{_restore_hint(path, rebuild_command)}")
        actual = file_sha256(path)
        if actual != digest:
            raise WeightsChecksumError(
                f"{display_path(path)} does not match its checksum in {CHECKSUM_FILE} (expected "
                f"sha256 {digest[:12]}…, got {actual[:12]}…): the file is corrupted or was "
                f"changed. {_restore_hint(path, rebuild_command)}")


@contextlib.contextmanager
def atomic_folder(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_folder(dest) as tmp:`` write into ``tmp``; on success it becomes ``dest``.

    ``tmp`` is a new folder next to ``dest`` (same file system, so the rename is atomic). When
    the block ends normally the folder is made world-readable, an existing ``dest`` is moved
    aside and removed (open memory maps of its files stay valid) and ``tmp`` takes its place.
    If the block raises, ``tmp`` is removed and ``dest`` is left as it was.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
    try:
        yield tmp
        share_with_sandbox(tmp)  # mkdtemp and safetensors make owner-only files
        old = None
        if destination.exists():
            old = destination.with_name(
                f".{destination.name}.old-{os.getpid()}-{time.time_ns()}")
            destination.rename(old)
        tmp.rename(destination)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def package_version(name: str) -> str:
    """The installed version of distribution ``name``, or ``"unknown"``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def environment() -> dict[str, str]:
    """What a training run's log records about the software and machine that made it."""
    import torch

    return {"torch": torch.__version__, "transformer_lens": package_version("transformer-lens"),
            "python": platform.python_version(), "machine": platform.machine()}


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """``obj`` as indented JSON with sorted keys and a final newline (stable diffs)."""
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
