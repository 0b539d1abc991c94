"""The grading worker: runs *inside* the sandbox and executes submitted code, one call at a time.

Started by :mod:`course_tools.grading.sandbox` as ``python -P -m course_tools.grading.worker``.
The worker is a *zygote*: it imports torch and the course, runs the released chapter's setup
cell and builds trusted values (models, caches) - and never receives a byte of any submission.
Each call of a submitted function runs in a child forked from that clean state:

* the answer's source reaches the child, and its result leaves it, over a socket that the
  trusted grader made for that call alone and handed to the child through the worker, which
  never reads it; the child's output goes to a pipe that only the grader reads;
* the worker is not dumpable, so no child can open ``/proc/<worker>/fd``, read or write its
  memory, or trace it; nested user namespaces are disabled by the sandbox;
* the child gets a fresh scratch folder as its cwd and ``$TMPDIR``; after the call every
  process the call left is killed and the scratch space is wiped, so nothing written by one
  call (one student) is seen by the next;
* each child has its own memory, CPU, file-size and process limits and a wall-clock deadline.

Each child also reports what the call did to its inputs: a tensor argument changed in place,
an activation cache whose entries were edited, replaced or removed, a model whose weights were
changed, which was left with hooks attached, or switched to training mode. In a notebook each
of those would silently break every later cell, so the check counts them as failures.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

CHILD_FILE_LIMIT = 8 * 1024 * 1024
MAX_PROCESSES = 256
WIPE_SECONDS = 20.0
PR_SET_DUMPABLE = 4


class _BlockedImporter:
    """Meta-path finder that refuses modules a submission must not use while graded."""

    def __init__(self, prefixes: list[str]) -> None:
        self.prefixes = prefixes

    def find_spec(self, name, path=None, target=None):
        for prefix in self.prefixes:
            if name == prefix or name.startswith(prefix + "."):
                raise ImportError(f"{name} is not available while your work is graded")
        return None


class Zygote:
    """Serves the trusted grader: set-up once, then one forked child per call."""

    def __init__(self, control: socket.socket, sandboxed: bool, scratch: Path) -> None:
        self.control = control
        self.reader = control.makefile("rb", buffering=0)
        self.writer = control.makefile("wb")
        self.sandboxed = sandboxed
        self.scratch = scratch
        self.base_namespace: dict[str, Any] = {"__name__": "__main__"}
        self.recipes: dict[str, Any] = {}
        self.built: dict[str, tuple[Any, tuple[str, dict]]] = {}  # value, how it was made
        self.blocked: list[str] = []
        self.ready = False
        self.calls = 0

    # ----------------------------------------------------------------- protocol
    def receive(self) -> tuple[dict, bytes, list[int]] | None:
        """One request: a marker byte carrying 0-2 file descriptors, then a framed message."""
        from course_tools.grading import codec

        marker, fds, _, _ = socket.recv_fds(self.control, 1, 2)
        if not marker:
            return None
        message = codec.read_message(self.reader)
        if message is None:
            return None
        return message[0], message[1], fds

    def reply(self, header: dict, blob: bytes = b"") -> None:
        from course_tools.grading import codec

        codec.send_message(self.writer, header, blob)

    def serve(self) -> None:
        while True:
            request = self.receive()
            if request is None:
                return
            header, blob, fds = request
            op = header.get("op")
            if op == "hello" and not self.ready:
                try:
                    self.hello(header)
                    self.ready = True
                    self.reply({"op": "ready", "pid": os.getpid()})
                except BaseException as exc:  # noqa: BLE001
                    self.reply({"op": "failed", "message": _format_exception(exc)})
                    return
            elif op == "call" and self.ready and len(fds) == 2:
                self.call(header, blob, *fds)
            elif op == "bye":
                return
            else:  # set-up is accepted once, calls only after it: anything else is not ours
                for fd in fds:
                    os.close(fd)
                self.reply({"op": "refused", "id": header.get("id"),
                            "message": f"request {op!r} refused"})

    # ----------------------------------------------------------------- set-up
    def hello(self, header: dict) -> None:
        self.blocked = list(header.get("blocked_modules", []))
        for name in list(sys.modules):
            if any(name == p or name.startswith(p + ".") for p in self.blocked):
                del sys.modules[name]
        sys.meta_path.insert(0, _BlockedImporter(self.blocked))
        setup = header.get("setup_source", "")
        exec(compile(setup, "<setup cell>", "exec"), self.base_namespace)
        for name in header.get("preload_models", []):  # forked calls share them
            self.resolve("course_tools.grading.recipes:model", {"name": str(name)})

    def resolve(self, recipe: str, kwargs: dict) -> Any:
        """Build (once, in the clean worker) the value a trusted recipe describes."""
        key = recipe + json.dumps(_describe(kwargs), sort_keys=True)
        if key not in self.recipes:
            from course_tools.grading.codec import is_recipe_name

            module_name, func_name = recipe.split(":")
            if not is_recipe_name(recipe) or any(
                module_name.startswith(p) for p in self.blocked
            ):
                raise ValueError(f"recipe {recipe!r} is not allowed")
            func = getattr(importlib.import_module(module_name), func_name)
            self.recipes[key] = func(**kwargs)
            self.built[key] = (self.recipes[key], (recipe, kwargs))
        return self.recipes[key]

    # ----------------------------------------------------------------- calls
    def call(self, header: dict, blob: bytes, channel_fd: int, output_fd: int) -> None:
        """Fork a child for one call; wait for it; clean up after it; say how it ended."""
        from course_tools.grading import codec

        self.calls += 1
        try:
            args, kwargs = codec.decode(header["args"], blob, self.resolve)
        except Exception as exc:  # trusted side failed: report as internal error
            os.close(channel_fd)
            os.close(output_fd)
            self.reply({"id": header["id"], "status": "internal", "message": repr(exc)})
            return
        workdir = self.scratch / f"call-{self.calls}"
        started = time.monotonic()
        # Everything the worker holds moves to the collector's permanent generation: a child's
        # collections then never walk (and so never copy on write) the zygote's objects, which
        # cost a SmolLM2 call up to a second more (measured: 1.5-1.9 s against 1.0-1.3 s).
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # ---- child: untrusted from the exec of the answer on
            try:
                _run_child(self, header, args, kwargs, channel_fd, output_fd, workdir)
            finally:
                os._exit(70)
        os.close(channel_fd)
        os.close(output_fd)
        del args, kwargs
        status, timed_out = _wait(pid, float(header["timeout"]))
        self.clean_up(pid)
        reply = {"id": header["id"], "seconds": round(time.monotonic() - started, 3)}
        if timed_out:
            reply.update(status="timeout", message=f"did not finish within {header['timeout']} s")
        else:
            reply.update(status="exited", message=_describe_exit(status))
        self.reply(reply)

    def clean_up(self, pid: int) -> None:
        """Kill every process the call left, then wipe the scratch space."""
        _kill_group(pid)
        if self.sandboxed:  # own pid namespace: everything but init and us is the call's
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    break
            except ChildProcessError:
                break
        deadline = time.monotonic() + WIPE_SECONDS
        for entry in list(self.scratch.iterdir()):
            if time.monotonic() > deadline:
                sys.exit("the scratch space could not be wiped in time")
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if any(self.scratch.iterdir()):
            sys.exit("the scratch space could not be wiped")


def _run_child(zygote: Zygote, header: dict, args, kwargs, channel_fd: int, output_fd: int,
               workdir: Path) -> None:
    """The forked child: read the answer over its own channel, run it, send the result back."""
    import tempfile

    from course_tools.grading import codec

    os.setpgid(0, 0)
    os.close(zygote.control.detach())  # the worker's channel: not the child's to use
    sys.stdout.flush()
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    workdir.mkdir(mode=0o700)
    os.chdir(workdir)
    os.environ.update(TMPDIR=str(workdir), HOME=str(workdir))
    tempfile.tempdir = None
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    import torch

    # The worker never starts a thread pool (OMP_NUM_THREADS=1), so an answer may ask for more
    # threads safely; one is the default because the grader's jobs share the cores.
    torch.set_num_threads(1)
    _set_limits(header)
    channel = socket.socket(fileno=channel_fd)
    out = channel.makefile("wb")
    inp = channel.makefile("rb", buffering=0)
    request = codec.read_message(inp)
    source = request[0].get("source", "") if request else ""

    def finish(status: str, message: str = "", result: Any = None, mutated=()):
        tree, blob = None, b""
        if status == "ok":
            try:
                tree, blob = codec.encode(result)
            except Exception as exc:  # unencodable return value
                status, message = "error", str(exc)
        codec.send_message(out, {"status": status, "message": message, "result": tree,
                                 "mutated": list(mutated)}, blob)
        out.close()
        os._exit(0)

    namespace = dict(zygote.base_namespace)
    built = {id(value): recipe for value, recipe in zygote.built.values()}
    for helper in header.get("helpers", []):
        namespace[helper] = _TrustedFunction(helper, out, inp, built)
    name = header["function"]
    del zygote
    try:
        code = compile(source, f"<your answer cell for {name}>", "exec")
        exec(code, namespace)
    except BaseException as exc:  # noqa: BLE001 - anything the submission raises
        finish("error", "running your answer cell failed: " + _format_exception(exc))
    func = namespace.get(name)
    if not callable(func):
        finish("error", f"your answer cell does not define a function named `{name}`")
    named = _named_arguments(func, args, kwargs)
    watched = [watch for path, value in named for watch in _watchers(value, path)]
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001
        finish("error", _format_exception(exc))
    mutated = [change for watch in watched for change in watch.changes()]
    sys.stdout.flush()
    finish("ok", result=result, mutated=mutated)


class _TrustedFunction:
    """Stands in for another exercise's function: the course's own version runs on the
    trusted side (see :mod:`course_tools.grading.trusted_calls`); only values cross."""

    def __init__(self, name: str, out, inp, built: dict[int, tuple[str, dict]]) -> None:
        self.__name__ = self.__qualname__ = name
        self._out, self._inp, self._built = out, inp, built

    def __repr__(self) -> str:
        return f"<{self.__name__}: the course's version, while your work is graded>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        from course_tools.grading import codec

        if any(isinstance(v, torch.Tensor) and v.requires_grad
               for v in (*args, *kwargs.values())):
            raise TypeError(f"while you are graded, {self.__name__} is the course's version, "
                            "which returns values without gradients: where you differentiate "
                            "through it, compute it inside this answer instead")
        tree, blob = codec.encode((args, kwargs), by_reference=self._built)
        codec.send_message(self._out, {"op": "trusted_call", "name": self.__name__,
                                       "args": tree}, blob)
        reply = codec.read_message(self._inp)
        if reply is None:
            raise RuntimeError(f"{self.__name__}: the grader did not answer")
        header, blob = reply
        if header.get("status") != "ok":
            raise RuntimeError(str(header.get("message", "")))
        return codec.decode(header.get("result"), blob)


def _wait(pid: int, timeout: float) -> tuple[int | None, bool]:
    """Wait for the child; kill its process group at the deadline. (status, timed_out)."""
    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], max(timeout, 0.0))
    finally:
        os.close(pidfd)
    if not ready:
        _kill_group(pid)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = None
    return status, not ready


def _set_limits(header: dict) -> None:
    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    vm_now = vm_pages * resource.getpagesize()
    extra = int(header.get("memory_mb", 1024)) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm_now + extra, vm_now + extra))
    resource.setrlimit(resource.RLIMIT_FSIZE, (CHILD_FILE_LIMIT, CHILD_FILE_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(header["timeout"] * 2) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    # Ignored for root: the sandbox never runs graded code as root (see sandbox.py).
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCESSES, MAX_PROCESSES))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _describe(value: Any) -> Any:
    """A JSON-able description of recipe arguments, used as a memo key."""
    import hashlib

    import torch

    if isinstance(value, torch.Tensor):
        digest = hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest()[:16]
        return f"tensor:{list(value.shape)}:{value.dtype}:{digest}"
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return f"{type(value).__name__}@{id(value)}"


def _named_arguments(func, args: tuple, kwargs: dict) -> list[tuple[str, Any]]:
    """(how to name it to the learner, value) for each argument of a call."""
    import inspect

    try:
        bound = inspect.signature(func).bind(*args, **kwargs).arguments
        return [(f"argument `{name}`", value) for name, value in bound.items()]
    except (TypeError, ValueError):  # the call itself will fail and say why
        return ([(f"argument {i + 1}", value) for i, value in enumerate(args)]
                + [(f"argument `{name}`", value) for name, value in kwargs.items()])


class _TensorWatch:
    """Notices a tensor argument whose values, shape or dtype changed (compared with a copy, so
    that edits through ``.data``, which do not bump the version counter, are caught too)."""

    def __init__(self, path: str, tensor) -> None:
        self.path, self.tensor, self.before = path, tensor, tensor.detach().clone()

    def changes(self) -> list[str]:
        return [] if _same(self.before, self.tensor) else [self.path]


class _CacheWatch:
    """Notices an ``ActivationCache`` whose tensors were edited in place, replaced or removed.

    Tensor version counters (bumped by every in-place operation) make this free of copies,
    which matters for caches of SmolLM2. New entries are allowed: TransformerLens adds some
    itself (``compute_head_results``).
    """

    def __init__(self, path: str, cache) -> None:
        self.path, self.cache = path, cache
        self.entries = {k: (v, v._version) for k, v in cache.cache_dict.items()}

    def changes(self) -> list[str]:
        now = self.cache.cache_dict
        edited = sorted(k for k, (tensor, version) in self.entries.items()
                        if now.get(k) is not tensor or tensor._version != version)
        if not edited:
            return []
        shown = ", ".join(repr(k) for k in edited[:3]) + (" ..." if len(edited) > 3 else "")
        return [f"{self.path} (the activation cache: {shown})"]


class _ModelWatch:
    """Notices a model whose weights changed, that kept extra hooks, or that left eval mode."""

    def __init__(self, path: str, model) -> None:
        self.path, self.model = path, model
        self.tensors = {name: (t, t._version) for name, t in self._tensors()}
        self.hooks = _count_hooks(model)
        self.training = model.training

    def _tensors(self):
        yield from self.model.named_parameters(remove_duplicate=False)
        yield from self.model.named_buffers(remove_duplicate=False)

    def changes(self) -> list[str]:
        out = []
        now = dict(self._tensors())
        edited = sorted(name for name, (tensor, version) in self.tensors.items()
                        if now.get(name) is not tensor or tensor._version != version)
        if edited:
            out.append(f"{self.path} (the model's weights: {', '.join(edited[:3])}"
                       f"{' ...' if len(edited) > 3 else ''})")
        extra = _count_hooks(self.model) - self.hooks
        if extra > 0:
            out.append(f"{self.path} (the model was left with {extra} hook(s) attached: remove "
                       "them, e.g. with `model.run_with_hooks(...)` or `model.reset_hooks()`)")
        if self.model.training != self.training:
            out.append(f"{self.path} (the model was left in "
                       f"{'training' if self.model.training else 'eval'} mode)")
        return out


def _count_hooks(model) -> int:
    """Hooks on the model's TransformerLens hook points (the bridge adds hooks of its own to
    other modules lazily, on its first forward pass, so those are not counted)."""
    from transformer_lens.hook_points import HookPoint

    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in model.modules() if isinstance(m, HookPoint))


def _watchers(value: Any, path: str) -> list:
    """A watcher for each tensor, activation cache and model among a call's arguments, found
    inside lists, tuples and dicts too; each has ``changes()`` listing what the call altered."""
    import torch

    if isinstance(value, torch.Tensor):
        return [_TensorWatch(path, value)]
    if hasattr(value, "cache_dict") and isinstance(value.cache_dict, dict):
        return [_CacheWatch(path, value)]
    if isinstance(value, torch.nn.Module):
        return [_ModelWatch(path, value)]
    if isinstance(value, (list, tuple)):
        return [w for i, item in enumerate(value) for w in _watchers(item, f"{path}[{i}]")]
    if isinstance(value, dict):
        return [w for key, item in value.items() for w in _watchers(item, f"{path}[{key!r}]")]
    return []


def _same(before, tensor) -> bool:
    import torch

    if before.shape != tensor.shape or before.dtype != tensor.dtype:
        return False
    return bool(torch.equal(before, tensor) or torch.equal(before.isnan(), tensor.isnan())
                and torch.equal(before.nan_to_num(), tensor.detach().nan_to_num()))


def _format_exception(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"your code called sys.exit({exc.code!r}); remove it"
    if isinstance(exc, KeyboardInterrupt):
        return "your code raised KeyboardInterrupt"
    if isinstance(exc, NotImplementedError):
        return "NotImplementedError: this exercise is not implemented yet"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename.startswith("<your answer")]
    where = f" (line {frames[-1].lineno} of your answer cell)" if frames else ""
    text = f"{type(exc).__name__}: {exc}"
    return (text[:1500] + " ...") if len(text) > 1500 else text + where


def _describe_exit(status) -> str:
    if status is None:
        return "the process running your code vanished"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name
        hint = {"SIGKILL": " (killed: out of memory or time?)", "SIGXCPU": " (CPU time limit)",
                "SIGSEGV": " (segmentation fault)"}.get(name, "")
        return f"the process running your code was killed by {name}{hint}"
    code = os.WEXITSTATUS(status)
    return f"your code ended the process (exit status {code}, e.g. os._exit) before returning"


# seccomp: refuse new user namespaces (unshare/clone with CLONE_NEWUSER); clone3 passes its
# flags in memory a filter cannot read, so it gets ENOSYS and libc falls back to clone.
_SYSCALLS = {0xC000003E: (272, 56, 435),  # x86_64: unshare, clone, clone3
             0xC00000B7: (97, 220, 435)}  # aarch64
CLONE_NEWUSER = 0x10000000


def _forbid_user_namespaces() -> None:
    """Install a seccomp filter (inherited by every child) that refuses new user namespaces."""
    import platform
    import struct

    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())
    if arch is None:
        return  # bubblewrap's --disable-userns still covers sandboxes made by ordinary users
    unshare, clone, clone3 = _SYSCALLS[arch]
    allow, enosys, eperm = 0x7FFF0000, 0x00050000 | 38, 0x00050000 | 1
    ld_abs, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    program = [
        (ld_abs, 0, 0, 4),             # 0: A = arch
        (jeq, 0, 8, arch),             # 1: other arch -> allow (10)
        (ld_abs, 0, 0, 0),             # 2: A = syscall number
        (jeq, 3, 0, unshare),          # 3: -> flags (7)
        (jeq, 2, 0, clone),            # 4: -> flags (7)
        (jeq, 0, 4, clone3),           # 5: not clone3 -> allow (10)
        (ret, 0, 0, enosys),           # 6
        (ld_abs, 0, 0, 16),            # 7: A = low word of the first argument (the flags)
        (jset, 0, 1, CLONE_NEWUSER),   # 8: CLONE_NEWUSER -> EPERM (9), else allow (10)
        (ret, 0, 0, eperm),            # 9
        (ret, 0, 0, allow),            # 10
    ]
    filters = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(filters)
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(buffer))
    fprog_buffer = ctypes.create_string_buffer(fprog)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, fprog_buffer, 0, 0) != 0:
        sys.exit(f"the worker could not install its seccomp filter (errno {ctypes.get_errno()})")


def _drop_to(uid: int) -> None:
    """Become ``uid`` for good (a sandbox started by root); every capability goes with it."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        sys.exit(f"the worker could not drop to uid {uid}")


def main() -> None:
    if os.environ.get("COURSE_RUN_AS"):
        _drop_to(int(os.environ.pop("COURSE_RUN_AS")))
    _forbid_user_namespaces()
    control = socket.socket(fileno=int(os.environ.pop("COURSE_GRADER_FD")))
    # Not dumpable: no process of the same user (no graded child) may open /proc/<worker>/fd
    # or /proc/<worker>/mem, or attach to the worker with ptrace.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit("the worker could not make itself undumpable")
    # The worker's own prints must never reach the protocol; its errors go to the grader.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sandboxed = os.environ.get("COURSE_SANDBOXED") == "1"
    scratch = Path(os.environ.get("COURSE_SCRATCH", "/tmp"))
    Zygote(control, sandboxed, scratch).serve()


if __name__ == "__main__":
    main()
