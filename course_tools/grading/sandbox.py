"""Start the grading worker in a sandbox and talk to it from the trusted side.

On Linux with bubblewrap (``bwrap``), the worker sees an allow-list of the file system,
read-only: the system, the Python installation and virtualenv, the ``utils`` package (without
``utils/reference`` and without the modules a chapter's checks declare as answer keys) and the
model cache. The repository's ``tests/`` and ``solutions/``, the kept truths
(:mod:`course_tools.grading.truth_cache`), the gradebook and other students' work are simply
not there. It has no network, its own PID namespace, may not create user
namespaces, writes only to a size-limited tmpfs, and never runs as root: under a grader
started as root the worker drops to ``nobody`` before it imports anything, so process limits
hold. Without bubblewrap (a learner's laptop) it runs as a plain subprocess in an empty
temporary folder: fine for self-grading, and every report says UNSANDBOXED.

Every call gets a fresh child of the clean worker (see :mod:`course_tools.grading.worker`) and its
own socket and output pipe, made here; replies are matched to their requests.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from course_tools.grading import codec, trusted_calls, truth_cache
from utils import paths

BLOCKED_MODULES = ["utils.reference"]
STARTUP_TIMEOUT = 240.0
REPLY_MARGIN = 20.0  # seconds the worker may take beyond a call's own time limit
OUTPUT_LIMIT = 8 * 1024 * 1024  # bytes of a call's prints read before its pipe is closed
OUTPUT_TAIL = 2000
RESULT_LIMIT = 256 * 1024 * 1024
SANDBOX_UID = 65534  # nobody: graded code never runs as root
SCRATCH_BYTES = 512 * 1024 * 1024


class SandboxUnavailable(RuntimeError):
    """A sandbox was required (instructor grading) but cannot be made on this machine."""


class WorkerDied(RuntimeError):
    """The worker process stopped answering (killed by the submission or by a limit)."""


def _as_root() -> bool:
    return os.getuid() == 0


def _namespace_flags() -> list[str]:
    """How the sandbox gets its namespaces and its user.

    As an ordinary user, bubblewrap makes a user namespace in which the worker is ``nobody``
    and which may not make further user namespaces. As root it mounts with root's rights, with
    no user namespace, and the worker drops to the real ``nobody`` as its first act
    (``COURSE_RUN_AS``): a user namespace would map ``nobody`` back to root, for whom the
    kernel ignores process limits.
    """
    if _as_root():
        return ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
                "--unshare-cgroup-try", "--setenv", "COURSE_RUN_AS", str(SANDBOX_UID)]
    return ["--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid",
            str(SANDBOX_UID), "--disable-userns"]


_BWRAP: dict[str, str | None] = {}


def bubblewrap_path() -> str | None:
    """Path of a ``bwrap`` that can build the sandbox for this user, or ``None``."""
    if "path" not in _BWRAP:
        found = shutil.which("bwrap")
        if found:
            probe = subprocess.run(
                [found, "--ro-bind", "/", "/", *_namespace_flags(), "--die-with-parent",
                 "--proc", "/proc", "--dev", "/dev", "true"], capture_output=True)
            found = found if probe.returncode == 0 else None
        _BWRAP["path"] = found
    return _BWRAP["path"]


def _readable_roots(extra: list[Path]) -> list[Path]:
    """Folders the worker may read: system, Python, site-packages, utils and course_tools
    (the grading machinery the worker runs), model cache."""
    system = ["/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin", "/etc"]
    roots = [Path(p) for p in system] + [Path(sys.base_prefix), Path(sys.prefix)]
    roots += [Path(p) for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
    return roots + [paths.REPO_ROOT / "utils", paths.REPO_ROOT / "course_tools",
                    paths.cache_dir(), *extra]


def _bwrap_command(bwrap: str, extra_ro: list[Path], hidden: list[Path]) -> list[str]:
    """The bubblewrap command line. The writable scratch inside is ``/tmp``, or ``/scratch``
    when the course itself lives under ``/tmp`` (the worker wipes its scratch after every
    call, so nothing read-only may sit inside it); ``$COURSE_SCRATCH`` names it."""
    binds: dict[str, str] = {}
    for root in _readable_roots(extra_ro):
        real = os.path.realpath(root)
        if os.path.exists(real):
            binds.setdefault(str(root), real)
            binds.setdefault(real, real)
    truths = Path(os.path.realpath(truth_cache.truth_dir()))
    if any(truths.is_relative_to(target) for target in binds):  # $COURSE_TRUTH_DIR put it there
        truth_cache.private_folder()  # made now, so that it is hidden below
        hidden = [*hidden, truths]
    under_tmp = any(target == "/tmp" or target.startswith("/tmp/") for target in binds)
    scratch = "/scratch" if under_tmp else "/tmp"
    # --as-pid-1: no bubblewrap process inside the sandbox holds the worker's channel; as
    # init, the worker cannot be killed from inside, and orphans come to it to be reaped.
    cmd = [bwrap, *_namespace_flags(), "--as-pid-1", "--die-with-parent", "--new-session",
           "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(SCRATCH_BYTES),
           "--tmpfs", scratch]
    parents = sorted({str(p) for target in binds for p in Path(target).parents} - {"/"})
    for parent in parents:  # traversable by the sandbox user (bubblewrap makes them 0700)
        cmd += ["--perms", "0755", "--dir", parent]
    for target, real in binds.items():
        cmd += ["--ro-bind", real, target]
    for path in hidden:  # answer keys: an empty, read-only folder or file in their place
        if path.is_dir():
            cmd += ["--tmpfs", str(path), "--remount-ro", str(path)]
        elif path.is_file():
            cmd += ["--ro-bind", "/dev/null", str(path)]
    cmd += ["--chdir", "/", "--setenv", "HOME", scratch, "--setenv", "COURSE_SANDBOXED", "1",
            "--setenv", "COURSE_SCRATCH", scratch, "--setenv", "TMPDIR", scratch,
            "--setenv", "MPLCONFIGDIR", f"{scratch}/.matplotlib"]
    return cmd


def hidden_paths(modules: list[str]) -> list[Path]:
    """The files of ``utils`` modules (and their bytecode) that graded code must not read."""
    hidden = [paths.REPO_ROOT / "utils" / "reference"]
    for module in modules:
        parts = module.split(".")
        if parts[0] != "utils" or len(parts) < 2:
            raise ValueError(f"only utils modules can be hidden, not {module!r}")
        source = paths.REPO_ROOT.joinpath(*parts).with_suffix(".py")
        hidden.append(source)
        hidden += sorted(source.parent.glob(f"__pycache__/{parts[-1]}.*.pyc"))
    return hidden


class _Tail:
    """Drains a pipe in a thread, keeping the last bytes (and closing it past a limit)."""

    def __init__(self, fd: int, keep: int, limit: int | None = None) -> None:
        self.fd, self.keep, self.limit = fd, keep, limit
        self.data: collections.deque[bytes] = collections.deque()
        self.size = 0
        self.total = 0
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        try:
            while True:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.total += len(chunk)
                self.data.append(chunk)
                self.size += len(chunk)
                while self.size - len(self.data[0]) >= self.keep:
                    self.size -= len(self.data.popleft())
                if self.limit is not None and self.total > self.limit:
                    break  # the writer gets EPIPE from now on
        except OSError:
            pass
        finally:
            os.close(self.fd)

    def text(self, wait: float = 0.0) -> str:
        self.thread.join(wait)
        return b"".join(self.data)[-self.keep:].decode("utf-8", "replace")


class _Result:
    """Reads a call's reply from its own socket in a thread; until the reply comes, serves the
    answer's calls to trusted functions (:mod:`course_tools.grading.trusted_calls`) on that
    socket."""

    def __init__(self, sock: socket.socket, helpers: dict | None = None) -> None:
        self.sock = sock
        self.helpers = helpers or {}
        self.message: tuple[dict, bytes] | None = None
        self.error = ""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            stream = self.sock.makefile("rb", buffering=0)
            writer = self.sock.makefile("wb")
            for _ in range(trusted_calls.MAX_CALLS + 1):
                message = codec.read_message(stream, limit=RESULT_LIMIT)
                if message is None or message[0].get("op") != "trusted_call":
                    self.message = message
                    return
                codec.send_message(writer, *trusted_calls.answer(self.helpers, *message))
            self.error = f"more than {trusted_calls.MAX_CALLS} calls to trusted functions"
            self.sock.shutdown(socket.SHUT_RDWR)  # the child's next read ends: it stops
        except Exception as exc:  # noqa: BLE001 - whatever the child wrote is its problem
            self.error = f"{type(exc).__name__}: {exc}"

    def get(self, wait: float) -> tuple[dict, bytes] | None:
        self.thread.join(wait)
        self.sock.close()
        return self.message if not self.thread.is_alive() else None


class Sandbox:
    """The clean worker of one chapter; every call runs in a fresh child of it.

    ``require_isolation=True`` (instructors) refuses to run without bubblewrap.
    ``hidden_modules`` names ``utils`` modules that hold this chapter's answers.
    ``trusted_helpers(function)`` gives the trusted functions an answer defining
    ``function`` may call (see :mod:`course_tools.grading.trusted_calls`).
    ``preload_models`` are loaded by the worker before any call (``"smollm2"`` is then shared
    by every call's own ``load_smollm2()``, instead of loaded per call).
    """

    def __init__(self, setup_source: str, require_isolation: bool = False,
                 extra_readable: list[Path] | None = None,
                 hidden_modules: list[str] | None = None,
                 trusted_helpers: Callable[[str], dict] | None = None,
                 preload_models: list[str] | None = None) -> None:
        self.setup_source = setup_source
        self.trusted_helpers = trusted_helpers or (lambda function: {})
        self.require_isolation = require_isolation
        self.extra_readable = [Path(p) for p in (extra_readable or [])]
        self.hidden_modules = list(hidden_modules or [])
        self.preload_models = list(preload_models or [])
        self.process: subprocess.Popen | None = None
        self.isolated = False
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._control: socket.socket | None = None
        self._stderr: _Tail | None = None
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
        ours, theirs = socket.socketpair()
        err_r, err_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1",
                   COURSE_CACHE_DIR=str(paths.cache_dir()), TQDM_DISABLE="1",
                   PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   PYTHONPATH=str(paths.REPO_ROOT),  # this checkout's utils, however installed
                   COURSE_GRADER_FD=str(theirs.fileno()))
        # -P: the working directory is never on sys.path, whatever a call leaves there.
        # abspath: `../.venv/bin/python` started from course/ names a folder the sandbox lacks.
        worker = [os.path.abspath(sys.executable), "-P", "-m", "course_tools.grading.worker"]
        if bwrap:
            if _as_root():  # the worker runs as nobody: it must be able to read the models
                paths.share_with_sandbox(paths.cache_dir())
            cmd = _bwrap_command(bwrap, self.extra_readable,
                                 hidden_paths(self.hidden_modules)) + worker
            cwd = "/"
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="grading-")
            cmd, cwd = worker, self._tmp.name
            env.update(HOME=self._tmp.name, MPLCONFIGDIR=self._tmp.name + "/.matplotlib",
                       COURSE_SCRATCH=self._tmp.name)
        try:
            self.process = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err_w, pass_fds=(theirs.fileno(),))
        finally:
            theirs.close()
            os.close(err_w)
        self._control = ours
        self._replies = ours.makefile("rb", buffering=0)
        self._requests = ours.makefile("wb")
        self._stderr = _Tail(err_r, 4000)
        self.isolated = bwrap is not None
        self._send({"op": "hello", "setup_source": self.setup_source,
                    "blocked_modules": BLOCKED_MODULES + self.hidden_modules,
                    "preload_models": self.preload_models})
        self._starting = True

    def wait_ready(self) -> None:
        """Wait for a launched worker to report that it is ready; raise if it failed."""
        if not self._starting:
            return
        self._starting = False
        try:
            reply = self._read_reply(STARTUP_TIMEOUT)
        except WorkerDied as exc:
            self.close()
            raise RuntimeError(f"the grading worker could not start: {exc}") from None
        if reply[0].get("op") != "ready":
            message = reply[0].get("message", "no answer")
            self.close()
            raise RuntimeError(f"the grading worker could not start: {message}")

    def close(self) -> None:
        self._starting = False
        if self.process and self.process.poll() is None:
            try:
                self._send({"op": "bye"})
                self.process.wait(timeout=5)
            except Exception:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._control:
            self._control.close()
            self._control = None
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def restart(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()
        self.close()
        self.restarts += 1
        self.start()

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ protocol
    def _send(self, header: dict, blob: bytes = b"", fds: tuple[int, ...] = ()) -> None:
        """A marker byte carrying ``fds``, then the framed message (see the worker)."""
        self._requests.flush()
        socket.send_fds(self._control, [b"M"], list(fds))
        codec.send_message(self._requests, header, blob)

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
            raise WorkerDied(f"no answer within {timeout:.0f} s{self._last_words()}")
        outcome = result[0] if result else None
        if outcome is None or isinstance(outcome, Exception):
            raise WorkerDied(f"{outcome or 'the worker exited'}{self._last_words()}")
        return outcome

    def _last_words(self) -> str:
        """The tail of the worker's own error output, to say why it stopped."""
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        text = self._stderr.text(wait=1.0).strip() if self._stderr else ""
        return f"; its last words: ...{text[-1500:]}" if text else ""

    # ------------------------------------------------------------ calls
    def call(self, source: str, function: str, args: tuple, kwargs: dict, timeout: float,
             memory_mb: int) -> tuple[dict, Any]:
        """Run ``function`` from ``source`` on the arguments; return (reply header, value).

        The header's ``status`` is ``ok``, ``error``, ``timeout``, ``crashed`` or
        ``internal`` (a fault on the trusted side); ``log`` holds the tail of what the
        call printed.
        """
        self.wait_ready()
        if self.process is None or self.process.poll() is not None:
            self.restart()
        tree, blob = codec.encode((tuple(args), dict(kwargs)))
        call_id = uuid.uuid4().hex
        ours, childs = socket.socketpair()
        out_r, out_w = os.pipe()
        output = _Tail(out_r, OUTPUT_TAIL, OUTPUT_LIMIT)
        helpers = self.trusted_helpers(function)
        result = _Result(ours, helpers)
        request = {"op": "call", "id": call_id, "function": function, "args": tree,
                   "timeout": timeout, "memory_mb": memory_mb, "helpers": sorted(helpers)}
        try:
            try:
                self._send(request, blob, fds=(childs.fileno(), out_w))
            finally:  # the worker has its own copies now (or never will)
                childs.close()
                os.close(out_w)
            threading.Thread(target=_send_source, args=(ours, source), daemon=True).start()
            header, _ = self._read_reply(timeout + REPLY_MARGIN)
        except (WorkerDied, OSError, EOFError, codec.EncodingError) as exc:
            result.get(0)
            self.restart()
            return {"status": "crashed", "log": output.text(),
                    "message": f"your code broke the grading process ({exc})"}, None
        if header.get("id") != call_id:  # never trust a reply that is not for this call
            self.restart()
            return {"status": "crashed", "message": "the grading process answered out of turn",
                    "log": output.text()}, None
        child_message = result.get(2.0)
        if child_message is None and result.error:  # what went wrong on its socket says more
            header = {**header, "message": f"the call was stopped: {result.error}"}
        return _outcome(header, child_message, output.text(wait=2.0))


def _send_source(sock: socket.socket, source: str) -> None:
    try:
        with sock.makefile("wb") as stream:
            codec.send_message(stream, {"source": source})
    except OSError:
        pass  # the child died first: its reply says so


def _outcome(worker_header: dict, child_message: tuple[dict, bytes] | None, log: str
             ) -> tuple[dict, Any]:
    """Combine how the worker saw the call end with what the child sent (if anything)."""
    status = worker_header.get("status")
    base = {"seconds": worker_header.get("seconds"), "log": log}
    if status == "internal":
        return {**base, "status": "internal", "message": worker_header.get("message")}, None
    if status == "timeout":
        return {**base, "status": "timeout", "message": worker_header.get("message")}, None
    if child_message is None:
        return {**base, "status": "crashed", "message": worker_header.get("message")}, None
    child, out_blob = child_message
    if child.get("status") == "error":
        return {**base, "status": "error", "message": str(child.get("message", ""))}, None
    if child.get("status") != "ok":
        return {**base, "status": "crashed", "message": "the answer tampered with the grader"}, None
    try:
        value = codec.decode(child.get("result"), out_blob)
    except Exception as exc:  # noqa: BLE001
        return {**base, "status": "error",
                "message": f"the returned value could not be read: {exc}"}, None
    mutated = child.get("mutated")
    mutated = [str(m) for m in mutated] if isinstance(mutated, list) else []
    return {**base, "status": "ok", "mutated": mutated}, value

