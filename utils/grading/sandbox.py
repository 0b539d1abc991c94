"""Start the grading worker in a sandbox and talk to it from the trusted side.

On Linux with bubblewrap (``bwrap``), the worker sees an allow-list of the file system,
read-only: the system, the Python installation and virtualenv, the ``utils`` package (without
``utils/reference``) and the model cache. The repository's ``tests/`` and ``solutions/``,
the gradebook and other students' work are simply not there. It has no network, its own PID
namespace, runs as ``nobody`` and writes only to a size-limited tmpfs. Without bubblewrap
(a learner's laptop) it runs as a plain subprocess in an empty temporary folder: fine for
self-grading, and every report says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from utils import paths
from utils.grading import codec

BLOCKED_MODULES = ["utils.reference"]
STARTUP_TIMEOUT = 240.0
REPLY_MARGIN = 20.0  # seconds the worker may take beyond a call's own time limit


class SandboxUnavailable(RuntimeError):
    """A sandbox was required (instructor grading) but cannot be made on this machine."""


class WorkerDied(RuntimeError):
    """The worker process stopped answering (killed by the submission or by a limit)."""


def bubblewrap_path() -> str | None:
    """Path of a working ``bwrap`` binary, or ``None``."""
    found = shutil.which("bwrap")
    if not found:
        return None
    probe = subprocess.run(
        [found, "--ro-bind", "/", "/", "--unshare-all", "--unshare-user", "--uid", "65534",
         "--die-with-parent", "--proc", "/proc", "--dev", "/dev", "true"],
        capture_output=True,
    )
    return found if probe.returncode == 0 else None


def _bwrap_command(bwrap: str, extra_ro: list[Path]) -> list[str]:
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534",
           "--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev",
           "--size", str(512 * 1024 * 1024), "--tmpfs", "/tmp"]
    system = ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc"]
    ro = [Path(p) for p in system] + [Path(sys.base_prefix), Path(sys.prefix)]
    ro += [Path(p) for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
    ro += [Path(paths.REPO_ROOT / "utils")] + extra_ro
    seen: set[str] = set()
    for path in ro:
        real = os.path.realpath(path)
        for p in {str(path), real}:
            if p in seen or not os.path.exists(p):
                continue
            seen.add(p)
            cmd += ["--ro-bind", p, p]
    reference = paths.REPO_ROOT / "utils" / "reference"
    if reference.exists():
        cmd += ["--tmpfs", str(reference), "--remount-ro", str(reference)]
    cmd += ["--chdir", "/tmp", "--setenv", "HOME", "/tmp", "--setenv", "COURSE_SANDBOXED", "1"]
    return cmd


class Sandbox:
    """One worker process that runs submitted code for one notebook.

    ``require_isolation=True`` (instructors) refuses to run without bubblewrap.
    """

    def __init__(self, setup_source: str, require_isolation: bool = False,
                 extra_readable: list[Path] | None = None) -> None:
        self.setup_source = setup_source
        self.require_isolation = require_isolation
        self.extra_readable = [Path(p) for p in (extra_readable or [])]
        self.process: subprocess.Popen | None = None
        self.isolated = False
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.restarts = 0
        self._starting = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker and wait until it has run the setup cell."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the worker without waiting for it (its imports take seconds: the caller may
        do its own work meanwhile, then call :meth:`wait_ready`)."""
        bwrap = bubblewrap_path()
        if bwrap is None and self.require_isolation:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is needed to grade untrusted submissions: "
                "`apt-get install bubblewrap`, or pass --allow-unsandboxed for self-grading")
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
                   COURSE_CACHE_DIR=str(paths.cache_dir()), TQDM_DISABLE="1",
                   PYTHONWARNINGS="ignore")
        env["COURSE_GRADER_FDS"] = f"{req_r},{rep_w}"
        worker = [sys.executable, "-m", "utils.grading.worker"]
        if bwrap:
            cmd = _bwrap_command(bwrap, [paths.cache_dir(), *self.extra_readable]) + worker
            cwd = "/"
            env["MPLCONFIGDIR"] = "/tmp"
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="grading-")
            cmd, cwd = worker, self._tmp.name
            env.update(HOME=self._tmp.name, MPLCONFIGDIR=self._tmp.name,
                       PYTHONPATH=str(paths.REPO_ROOT))
        self.process = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(req_r, rep_w),
        )
        os.close(req_r)
        os.close(rep_w)
        self._requests = os.fdopen(req_w, "wb")
        self._replies = os.fdopen(rep_r, "rb")
        self.isolated = bwrap is not None
        codec.send_message(self._requests, {"op": "hello", "setup_source": self.setup_source,
                                            "blocked_modules": BLOCKED_MODULES})
        self._starting = True

    def wait_ready(self) -> None:
        """Wait for a launched worker to report that it is ready; raise if it failed."""
        if not self._starting:
            return
        self._starting = False
        reply = self._read_reply(STARTUP_TIMEOUT)
        if reply[0].get("op") != "ready":
            message = reply[0].get("message", "no answer")
            self.close()
            raise RuntimeError(f"the grading worker could not start: {message}")

    def close(self) -> None:
        self._starting = False
        if self.process and self.process.poll() is None:
            try:
                codec.send_message(self._requests, {"op": "bye"})
                self.process.wait(timeout=5)
            except Exception:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def restart(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.restarts += 1
        self.start()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ calls
    def call(self, source: str, function: str, args: tuple, kwargs: dict, timeout: float,
             memory_mb: int) -> tuple[dict, Any]:
        """Run ``function`` from ``source`` on the arguments; return (reply header, value)."""
        self.wait_ready()
        if self.process is None or self.process.poll() is not None:
            self.restart()
        tree, blob = codec.encode((tuple(args), dict(kwargs)))
        request = {"op": "call", "id": uuid.uuid4().hex[:12], "source": source,
                   "function": function, "args": tree, "timeout": timeout,
                   "memory_mb": memory_mb}
        try:
            codec.send_message(self._requests, request, blob)
            header, out_blob = self._read_reply(timeout + REPLY_MARGIN)
        except (WorkerDied, BrokenPipeError, EOFError, codec.EncodingError) as exc:
            self.restart()
            return {"status": "crashed", "message": f"your code broke the grading process ({exc})"
                    }, None
        value = None
        if header.get("status") == "ok":
            try:
                value = codec.decode(header.get("result"), out_blob)
            except Exception as exc:
                header = {**header, "status": "error",
                          "message": f"the returned value could not be read: {exc}"}
        return header, value

    def _read_reply(self, timeout: float) -> tuple[dict, bytes]:
        result: list = []

        def read() -> None:
            try:
                result.append(codec.read_message(self._replies))
            except Exception as exc:  # noqa: BLE001
                result.append(exc)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self.process.kill()
            thread.join(10)
            raise WorkerDied(f"no answer within {timeout:.0f} s")
        outcome = result[0] if result else None
        if outcome is None or isinstance(outcome, Exception):
            raise WorkerDied(str(outcome or "the worker exited"))
        return outcome
