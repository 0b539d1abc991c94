"""An untrained twin of SmolLM2 for probing controls (chapter 04), without a download.

A probe that reads a property from a *trained* model's residual stream proves little until
the same probe fails (or does worse) on a model of the same shape with random weights: a
random network already mixes token identities, and a linear probe can exploit that.

A second 135M-parameter model does not fit next to SmolLM2 in a 1.5 GB notebook, so
:func:`randomly_initialised` re-initialises SmolLM2's own weights *in place* (seeded, the
Hugging Face initialisation: every matrix N(0, 0.02), norm scales 1) and, on leaving the
``with`` block, restores the trained weights exactly from the cached processed checkpoint,
one tensor at a time. Inside the block the model is an untrained model of the same shape,
with the same tokenizer and hooks. Memory stays flat: the new values replace the
memory-mapped pages they overwrite.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["randomly_initialised"]


def _weights_file() -> Any:
    from utils.smollm2 import WEIGHTS_FILE, smollm2_cache_dir

    return smollm2_cache_dir() / WEIGHTS_FILE


@torch.no_grad()
def _randomise(hf_model: Any, seed: int, std: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, param in hf_model.named_parameters():
        if param.ndim >= 2:
            param.normal_(0.0, std, generator=gen)
        elif "norm" in name:
            param.fill_(1.0)
        else:
            param.zero_()


@torch.no_grad()
def _restore(hf_model: Any) -> None:
    """Read every trained tensor from the checkpoint straight into its parameter.

    Plain ``readinto`` instead of a memory map: mapping the 540 MB file would count all of
    it against the process's memory while it is open.
    """
    params = {name.replace("._original_component", ""): param
              for name, param in hf_model.named_parameters()}
    with open(_weights_file(), "rb") as fh:
        header_len = struct.unpack("<Q", fh.read(8))[0]
        header = json.loads(fh.read(header_len))
        data_start = 8 + header_len
        missing = set(params) - set(header)
        if missing:
            raise RuntimeError(f"cannot restore {sorted(missing)[:3]}: not in the checkpoint")
        for name, param in params.items():
            meta = header[name]
            if meta["dtype"] != "F32" or list(meta["shape"]) != list(param.shape):
                raise RuntimeError(f"{name}: checkpoint has {meta['dtype']} {meta['shape']}, "
                                   f"the model {param.dtype} {list(param.shape)}")
            if not param.is_contiguous():
                raise RuntimeError(f"{name} is not contiguous: cannot restore in place")
            begin, end = meta["data_offsets"]
            fh.seek(data_start + begin)
            view = memoryview(param.detach().numpy()).cast("B")
            if fh.readinto(view) != end - begin:
                raise RuntimeError(f"{name}: checkpoint file is truncated")


@contextlib.contextmanager
def randomly_initialised(model: Any, seed: int = 0, std: float | None = None) -> Iterator[Any]:
    """``with randomly_initialised(model, seed) as twin:`` — SmolLM2 with random weights.

    ``model`` must come from :func:`utils.smollm2.load_smollm2`. Every weight matrix becomes
    N(0, ``std``) (default: the model config's ``initializer_range``, 0.02), norm scales 1,
    other vectors 0, deterministically from ``seed``. The trained weights come back when the
    block ends, even on an error. Don't keep references to the twin's weights.
    """
    hf_model = model.original_model
    if std is None:
        std = float(getattr(hf_model.config, "initializer_range", 0.02))
    try:
        _randomise(hf_model, seed, std)
        yield model
    finally:
        _restore(hf_model)
