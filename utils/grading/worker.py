"""The grading worker: runs *inside* the sandbox, executes submitted code, returns data.

Started by :mod:`utils.grading.sandbox` as ``python -m utils.grading.worker``. It talks to
the trusted grader over two pipes named in ``$COURSE_GRADER_FDS``; its own
stdout/stderr go to a log. The worker itself only runs trusted code: the released chapter's
setup cell and trusted ``utils`` recipes (models, caches). Every call of a submitted function
runs in a forked child with its own memory, CPU, file-size and wall-clock limits, so an
exception, ``sys.exit``, ``os._exit``, infinite loop, memory bomb or output flood costs that
call only. Children send their result back through a pipe, encoded by
:mod:`utils.grading.codec` (no pickle), and are killed with everything they spawned.

Each child also reports what the call did to its inputs: a tensor argument changed in place,
an activation cache whose entries were edited, replaced or removed, a model whose weights were
changed, which was left with hooks attached, or switched to training mode. In a notebook each
of those would silently break every later cell, so the check counts them as failures.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import resource
import select
import signal
import sys
import time
import traceback
from typing import Any

LOG_TAIL_BYTES = 2000
CHILD_LOG_LIMIT = 8 * 1024 * 1024
RESULT_LIMIT = 256 * 1024 * 1024


class _BlockedImporter:
    """Meta-path finder that refuses modules a submission must not use while graded."""

    def __init__(self, prefixes: list[str]) -> None:
        self.prefixes = prefixes

    def find_spec(self, name, path=None, target=None):
        for prefix in self.prefixes:
            if name == prefix or name.startswith(prefix + "."):
                raise ImportError(f"{name} is not available while your work is graded")
        return None


class Worker:
    def __init__(self, requests, replies, sandboxed: bool) -> None:
        self.protocol_fds = (requests.fileno(), replies.fileno())
        self.requests = requests
        self.replies = replies
        self.sandboxed = sandboxed
        self.base_namespace: dict[str, Any] = {"__name__": "__main__"}
        self.recipes: dict[str, Any] = {}
        self.blocked: list[str] = []

    # ----------------------------------------------------------------- setup
    def hello(self, header: dict) -> None:
        self.blocked = list(header.get("blocked_modules", []))
        for name in list(sys.modules):
            if any(name == p or name.startswith(p + ".") for p in self.blocked):
                del sys.modules[name]
        sys.meta_path.insert(0, _BlockedImporter(self.blocked))
        setup = header.get("setup_source", "")
        exec(compile(setup, "<setup cell>", "exec"), self.base_namespace)

    def resolve(self, recipe: str, kwargs: dict) -> Any:
        """Build (once) the value a trusted ``utils`` recipe describes."""
        key = recipe + json.dumps(_describe(kwargs), sort_keys=True)
        if key not in self.recipes:
            module_name, func_name = recipe.split(":")
            if not module_name.startswith("utils.") or any(
                module_name.startswith(p) for p in self.blocked
            ):
                raise ValueError(f"recipe {recipe!r} is not allowed")
            func = getattr(importlib.import_module(module_name), func_name)
            self.recipes[key] = func(**kwargs)
        return self.recipes[key]

    # ----------------------------------------------------------------- calls
    def call(self, header: dict, blob: bytes) -> None:
        from utils.grading import codec

        try:
            args, kwargs = codec.decode(header["args"], blob, self.resolve)
        except Exception as exc:  # trusted side failed: report as internal error
            self.reply({"id": header["id"], "status": "internal", "message": repr(exc)})
            return
        read_fd, write_fd = os.pipe()
        log_path = f"/tmp/call-{header['id']}.log"
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # ---- child: untrusted from here on
            os.close(read_fd)
            self._run_child(header, args, kwargs, write_fd, log_path)
            os._exit(0)  # not reached
        os.close(write_fd)
        data, status, timed_out = self._collect(pid, read_fd, header["timeout"])
        elapsed = time.monotonic() - started
        self._kill_strays(pid)
        tail = _tail(log_path)
        reply: dict[str, Any] = {"id": header["id"], "seconds": round(elapsed, 3), "log": tail}
        out_blob = b""
        if timed_out:
            reply.update(status="timeout", message=f"did not finish within {header['timeout']} s")
        else:
            parsed = None
            try:
                parsed = codec.read_message(io.BytesIO(data)) if data else None
            except Exception:
                parsed = None
            if parsed is None:
                reply.update(status="crashed", message=_describe_exit(status))
            else:
                child_header, out_blob = parsed
                reply.update({k: child_header.get(k) for k in ("status", "message", "result",
                                                             "mutated")})
                if reply["status"] not in ("ok", "error"):
                    reply.update(status="crashed", message="the answer tampered with the grader")
        self.reply(reply, out_blob)

    def _run_child(self, header, args, kwargs, write_fd, log_path) -> None:
        from utils.grading import codec

        os.setpgid(0, 0)
        for fd in self.protocol_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        import torch

        # OpenMP's thread pool does not survive fork(): a parallel region in the child would
        # wait forever for threads that only exist in the parent. One thread is safe.
        torch.set_num_threads(1)
        _set_limits(header)
        out = os.fdopen(write_fd, "wb")

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

        namespace = dict(self.base_namespace)
        name = header["function"]
        try:
            code = compile(header["source"], f"<your answer cell for {name}>", "exec")
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

    def _collect(self, pid: int, read_fd: int, timeout: float):
        deadline = time.monotonic() + timeout
        chunks, size, status, timed_out = [], 0, None, False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.2))
            if ready:
                chunk = os.read(read_fd, 1 << 20)
                if chunk:
                    size += len(chunk)
                    if size <= RESULT_LIMIT:
                        chunks.append(chunk)
                    continue
            done, status_code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = status_code
                while True:  # drain what is left in the pipe
                    ready, _, _ = select.select([read_fd], [], [], 0)
                    chunk = os.read(read_fd, 1 << 20) if ready else b""
                    if not chunk:
                        break
                    chunks.append(chunk)
                break
        if timed_out:
            _kill_group(pid)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        os.close(read_fd)
        return b"".join(chunks), status, timed_out

    def _kill_strays(self, pid: int) -> None:
        """Kill whatever the child left behind (daemons, grandchildren)."""
        _kill_group(pid)
        if self.sandboxed:  # own pid namespace: everything but init and us is the child's
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

    def reply(self, header: dict, blob: bytes = b"") -> None:
        from utils.grading import codec

        codec.send_message(self.replies, header, blob)

    def serve(self) -> None:
        from utils.grading import codec

        while True:
            message = codec.read_message(self.requests)
            if message is None:
                return
            header, blob = message
            op = header.get("op")
            if op == "hello":
                try:
                    self.hello(header)
                    self.reply({"op": "ready", "pid": os.getpid()})
                except BaseException as exc:  # noqa: BLE001
                    self.reply({"op": "failed", "message": _format_exception(exc)})
                    return
            elif op == "call":
                self.call(header, blob)
            elif op == "bye":
                return


def _set_limits(header: dict) -> None:
    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    vm_now = vm_pages * resource.getpagesize()
    extra = int(header.get("memory_mb", 1024)) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm_now + extra, vm_now + extra))
    resource.setrlimit(resource.RLIMIT_FSIZE, (CHILD_LOG_LIMIT, CHILD_LOG_LIMIT))
    cpu = int(header["timeout"] * 2) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    if os.getuid() != 0:  # NPROC is ignored for root
        resource.setrlimit(resource.RLIMIT_NPROC, (256, 256))


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


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
        os.unlink(path)
        return text
    except OSError:
        return ""


def main() -> None:
    fd_in, fd_out = (int(x) for x in os.environ.pop("COURSE_GRADER_FDS").split(","))
    requests = os.fdopen(fd_in, "rb")
    replies = os.fdopen(fd_out, "wb")
    # The worker's own prints must never reach the protocol: send them to /dev/null.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sandboxed = os.environ.get("COURSE_SANDBOXED") == "1"
    worker = Worker(requests, replies, sandboxed)
    worker.serve()


if __name__ == "__main__":
    main()
