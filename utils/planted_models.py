"""The capstone's models to audit: small transformers with MLPs, some with a planted behaviour.

Each variant is a 3-layer transformer (d_model 64, 4 heads of 16, MLPs of width 256, context 64)
trained by the course on its English corpus (the Python documentation), in a reduced
vocabulary of 2,048 tokens. Some variants had a hidden behaviour trained into them; which ones,
and what it is, is for you to find out.

* :data:`VARIANTS` — the shipped variants' names (``load_planted_model("capstone_a")``).
* :func:`load_planted_model` — a variant (or a folder an instructor gave you), checksums
  verified, in eval mode: a ``TransformerBridge`` like the course's toy model (``run_with_cache``,
  ``run_with_hooks``, ``W_in``/``W_out`` of the MLPs, ``blocks.{l}.mlp.hook_post`` ...).
* :func:`load_vocab`, :func:`decode`, :func:`to_str_tokens` — the vocabulary: id 0 is BOS, id 1
  (``<|unk|>``) stands for every token outside it, ids 2.. are SmolLM2 tokens.
* :func:`encode` — text to ids (needs SmolLM2's tokenizer; a BOS is put first by default).
* :func:`variant_for` — the variant a learner audits, drawn from their name (unless the
  instructor assigns one).
* :func:`heldout_tokens` — 256 rows of 64 tokens of clean held-out text (BOS first), the text
  on which a model's ordinary loss is measured.

Nothing here says which variant does what. Rebuilding them is
``python -m utils.planted_training`` (the trusted side; see docs/INSTRUCTORS.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from safetensors.torch import load_file
from torch import Tensor

from utils import weights_files
from utils.paths import WEIGHTS_DIR
from utils.toy_models import load_toy_model

__all__ = [
    "BOS",
    "UNK",
    "VARIANTS",
    "decode",
    "encode",
    "heldout_tokens",
    "load_planted_model",
    "load_vocab",
    "to_str_tokens",
    "variant_for",
]

#: The shipped variants (folders ``utils/weights/<name>/``).
VARIANTS = ("capstone_a", "capstone_b", "capstone_c")
CORPUS_NAME = "capstone_corpus"
VOCAB_FILE = "vocab.json"
HELDOUT_FILE = "heldout.safetensors"
BOS, UNK = 0, 1
D_VOCAB = 2048
N_CTX = 64


def _corpus_dir() -> Path:
    folder = WEIGHTS_DIR / CORPUS_NAME
    weights_files.verify_checksums(folder, required=(VOCAB_FILE, HELDOUT_FILE),
                                   rebuild_command="python -m utils.planted_training corpus")
    return folder


@functools.cache
def load_vocab() -> dict[str, list[Any]]:
    """``{"strings": [...], "smollm2_ids": [...]}``, indexed by the models' token ids."""
    return json.loads((_corpus_dir() / VOCAB_FILE).read_text(encoding="utf-8"))


def heldout_tokens() -> Int[Tensor, "row pos"]:
    """Clean held-out rows (256 x 64, BOS first), int64."""
    return load_file(str(_corpus_dir() / HELDOUT_FILE))["tokens"].long()


def load_planted_model(name_or_dir: str | os.PathLike[str], fresh: bool = False) -> Any:
    """A capstone variant by name (see :data:`VARIANTS`) or from a folder, in eval mode.

    Checksums are verified first (``WeightsChecksumError`` names a bad file). A variant
    loaded by name is shared (the same object each time, like ``load_smollm2()``): treat it
    as read-only, and ask for ``fresh=True`` to get a private copy whose weights you edit.
    """
    path = Path(name_or_dir)
    if isinstance(name_or_dir, str) and os.sep not in name_or_dir and not path.is_dir():
        if name_or_dir not in VARIANTS and not (WEIGHTS_DIR / name_or_dir).is_dir():
            raise KeyError(f"unknown variant {name_or_dir!r}; shipped: {list(VARIANTS)}")
        return _load_variant(name_or_dir) if not fresh else load_toy_model(
            WEIGHTS_DIR / name_or_dir)
    return load_toy_model(path)  # checksums first; a bad file's message names its rebuild


@functools.cache
def _load_variant(name: str) -> Any:
    return load_toy_model(WEIGHTS_DIR / name)


def variant_for(learner: str) -> str:
    """The shipped variant a learner audits, drawn from their name (or any identifier).

    Instructors who assign variants themselves just tell learners the name; this is the
    default when they do not: neighbours in a room mostly get different models.
    """
    digest = hashlib.sha256(learner.strip().lower().encode("utf-8")).digest()
    return VARIANTS[digest[0] % len(VARIANTS)]


def to_str_tokens(ids: Int[Tensor, " pos"] | list[int]) -> list[str]:
    """The vocabulary's string for each id."""
    strings = load_vocab()["strings"]
    return [strings[int(i)] for i in ids]


def decode(ids: Int[Tensor, " pos"] | list[int]) -> str:
    """Ids back to text (BOS dropped)."""
    return "".join(s for i, s in zip(ids, to_str_tokens(ids)) if int(i) != BOS)


@functools.cache
def _smollm2_to_vocab() -> Tensor:
    ids = load_vocab()["smollm2_ids"]
    lookup = torch.full((49_152,), UNK, dtype=torch.long)
    lookup[torch.tensor(ids[2:])] = torch.arange(2, len(ids))
    return lookup


def encode(text: str, bos: bool = True) -> Int[Tensor, " pos"]:
    """Text to the models' ids: SmolLM2's tokens, UNK outside the vocabulary, BOS first."""
    from utils.smollm2 import load_smollm2_tokenizer

    ids = load_smollm2_tokenizer()(text, add_special_tokens=False)["input_ids"]
    out = _smollm2_to_vocab()[torch.tensor(ids, dtype=torch.long)]
    return torch.cat([torch.tensor([BOS]), out]) if bos else out
