"""Pickle-free encoding of values crossing the sandbox boundary.

Whatever a submission returns is *data* to the trusted side: JSON for structure, safetensors
for tensors. Nothing here can execute code while decoding, so a hostile return value can
only ever be a wrong answer. Also the length-prefixed framing used on the sandbox's pipes.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_HEADER = struct.Struct("<IQ")  # json length, blob length


class EncodingError(ValueError):
    """A value of a type that cannot cross the sandbox boundary."""


#: Where trusted recipes may come from: the learner-facing package, or the grader's recipes.
RECIPE_MODULES = ("utils.", "course_tools.grading.recipes:")


def is_recipe_name(recipe: str) -> bool:
    """Whether ``recipe`` names a function of a module recipes may come from."""
    return ":" in recipe and recipe.startswith(RECIPE_MODULES)


class SandboxValue:
    """A value built *inside* the sandbox by a trusted recipe, e.g. a loaded model.

    ``recipe`` is ``"utils.module:function"`` or ``"course_tools.grading.recipes:function"``
    (:data:`RECIPE_MODULES`); keyword arguments are encoded like any other
    value (and may themselves be ``SandboxValue``s). The worker builds each distinct recipe
    once and hands every call its own copy-on-write view of it.
    """

    def __init__(self, recipe: str, **kwargs: Any) -> None:
        if not is_recipe_name(recipe):
            raise ValueError("recipe must be 'utils.<module>:<function>' or "
                             f"'course_tools.grading.recipes:<function>', got {recipe!r}")
        self.recipe = recipe
        self.kwargs = kwargs

    def __repr__(self) -> str:
        return f"SandboxValue({self.recipe!r}, {self.kwargs!r})"


def encode(value: Any, by_reference: dict[int, tuple[str, dict]] | None = None
           ) -> tuple[dict | list | str | int | float | bool | None, bytes]:
    """Encode ``value`` into a JSON-able tree plus one safetensors blob. Objects listed in
    ``by_reference`` (``id`` -> the recipe and arguments that built them) cross as that
    recipe, like a :class:`SandboxValue`."""
    tensors: dict[str, torch.Tensor] = {}
    by_reference = by_reference or {}

    def enc(v: Any) -> Any:
        if id(v) in by_reference:
            recipe, kwargs = by_reference[id(v)]
            return {"__sandbox__": recipe, "kwargs": enc(kwargs)}
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return v if abs(v) < 2**53 else {"__bigint__": str(v)}
        if isinstance(v, float):
            return v if math.isfinite(v) else {"__float__": repr(v)}
        if isinstance(v, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = v.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(v, np.ndarray):
            key = f"t{len(tensors)}"
            tensors[key] = torch.from_numpy(np.ascontiguousarray(v)).clone()
            return {"__ndarray__": key}
        if isinstance(v, np.generic):
            return enc(v.item())
        if isinstance(v, SandboxValue):
            return {"__sandbox__": v.recipe, "kwargs": enc(v.kwargs)}
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x) for x in v]}
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in v):
                return {k: enc(x) for k, x in v.items()}
            return {"__dict__": [[enc(k), enc(x)] for k, x in v.items()]}
        raise EncodingError(
            f"a value of type {type(v).__module__}.{type(v).__qualname__} cannot be graded; "
            "return tensors, numbers, strings, or lists/tuples/dicts of them"
        )

    tree = enc(value)
    blob = st_save(tensors) if tensors else b""
    return tree, blob


def decode(tree: Any, blob: bytes, resolve_sandbox=None) -> Any:
    """Inverse of :func:`encode`. ``resolve_sandbox(recipe, kwargs)`` builds SandboxValues."""
    tensors = st_load(blob) if blob else {}

    def dec(v: Any) -> Any:
        if isinstance(v, list):
            return [dec(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "__tensor__" in v:
            return tensors[v["__tensor__"]]
        if "__ndarray__" in v:
            return tensors[v["__ndarray__"]].numpy()
        if "__tuple__" in v:
            return tuple(dec(x) for x in v["__tuple__"])
        if "__dict__" in v:
            return {_hashable(dec(k)): dec(x) for k, x in v["__dict__"]}
        if "__float__" in v:
            return float(v["__float__"])
        if "__bigint__" in v:
            return int(v["__bigint__"])
        if "__sandbox__" in v:
            if resolve_sandbox is None:
                raise EncodingError("a sandbox recipe cannot be decoded on the trusted side")
            return resolve_sandbox(v["__sandbox__"], dec(v["kwargs"]))
        return {k: dec(x) for k, x in v.items()}

    return dec(tree)


def _hashable(key: Any) -> Any:
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    if isinstance(key, torch.Tensor):
        return key.item() if key.numel() == 1 else tuple(key.tolist())
    return key


def send_message(stream: BinaryIO, header: dict, blob: bytes = b"") -> None:
    """Write one framed message: a JSON header and a binary blob."""
    data = json.dumps(header).encode()
    stream.write(_HEADER.pack(len(data), len(blob)))
    stream.write(data)
    if blob:
        stream.write(blob)
    stream.flush()


def read_message(stream: BinaryIO, limit: int = MAX_MESSAGE_BYTES) -> tuple[dict, bytes] | None:
    """Read one framed message of at most ``limit`` bytes; ``None`` on a clean end of stream."""
    head = _read_exact(stream, _HEADER.size)
    if head is None:
        return None
    n_json, n_blob = _HEADER.unpack(head)
    if n_json + n_blob > limit:
        raise EncodingError("message larger than the grader accepts")
    data = _read_exact(stream, n_json)
    blob = _read_exact(stream, n_blob) if n_blob else b""
    if data is None or blob is None:
        raise EOFError("stream ended inside a message")
    header = json.loads(data)
    if not isinstance(header, dict):
        raise EncodingError("a message header must be a JSON object")
    return header, blob


def _read_exact(stream: BinaryIO, n: int) -> bytes | None:
    chunks, remaining = [], n
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            if remaining == n:
                return None
            raise EOFError("stream ended inside a message")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
