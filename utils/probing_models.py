"""An untrained twin of SmolLM2 for probing controls (chapter 04), without a download.

A probe that reads a property from a *trained* model's residual stream proves little until
the same probe fails (or does worse) on a model of the same shape with random weights: a
random network already mixes token identities, and a linear probe can exploit that.

A second 135M-parameter model does not fit next to SmolLM2 in a 1.5 GB notebook, so
:func:`randomly_initialised` re-initialises SmolLM2's own weights *in place* (seeded, the
Hugging Face initialisation: every matrix N(0, 0.02), norm scales 1) and, on leaving the
``with`` block, restores the trained weights exactly from the cached processed checkpoint,
pointing each parameter back at the memory-mapped file. Inside the block the model is an
untrained model of the same shape, with the same tokenizer and hooks; ``load_smollm2()``
refuses to hand the model out until the block ends. Memory: the random
values cost private pages for every weight (about 110 MB more than the trained model, whose
embedding rows are only read where a token needs them); they are freed when the block ends.
"""

from __future__ import annotations

import contextlib
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
    """Point every parameter back at the trained tensor in the memory-mapped checkpoint.

    The random values live in private (anonymous) pages; swapping each parameter's data for
    the file-backed tensor frees them, and the trained pages come back from the page cache
    as the next forward pass touches them (only the embedding rows it reads, for ``W_E``).
    Copying the values back instead would keep every page private: +110 MB for good.
    The ``Parameter`` objects stay the same, so every module and hook that holds one sees the
    trained weights again.
    """
    from safetensors.torch import load_file

    params = {name.replace("._original_component", ""): param
              for name, param in hf_model.named_parameters()}
    trained = load_file(str(_weights_file()))
    missing = set(params) - set(trained)
    if missing:
        raise RuntimeError(f"cannot restore {sorted(missing)[:3]}: not in the checkpoint")
    for name, param in params.items():
        value = trained[name]
        if value.dtype != param.dtype or value.shape != param.shape:
            raise RuntimeError(f"{name}: checkpoint has {value.dtype} {list(value.shape)}, "
                               f"the model {param.dtype} {list(param.shape)}")
        param.data = value


@contextlib.contextmanager
def randomly_initialised(model: Any, seed: int = 0, std: float | None = None) -> Iterator[Any]:
    """``with randomly_initialised(model, seed) as twin:`` — SmolLM2 with random weights.

    ``model`` must come from :func:`utils.smollm2.load_smollm2`. Every weight matrix becomes
    N(0, ``std``) (default: the model config's ``initializer_range``, 0.02), norm scales 1,
    other vectors 0, deterministically from ``seed``. The trained weights come back when the
    block ends, even on an error. Don't keep references to the twin's weights.

    The change is in place: ``twin`` *is* ``model``, so anything holding the shared model
    sees the random weights until the block ends. Meanwhile ``load_smollm2()`` raises
    :class:`utils.smollm2.SharedModelChanged` instead of handing the model out, and a nested
    ``randomly_initialised`` on the same model is refused.
    """
    from utils.smollm2 import changed_for_now

    hf_model = model.original_model
    if std is None:
        std = float(getattr(hf_model.config, "initializer_range", 0.02))
    with changed_for_now(model, f"randomly_initialised(model, seed={seed})"):
        try:
            _randomise(hf_model, seed, std)
            yield model
        finally:
            _restore(hf_model)
