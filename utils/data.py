"""Seeded synthetic token data for the course's toy models.

Every generator takes an explicit ``seed`` and draws from its own ``torch.Generator``: none of
them reads or advances the global RNG (``torch.manual_seed`` elsewhere has no effect on them,
and calling them does not change what ``torch.rand`` returns next). Same arguments, same
tensor, on every machine (CPU generator).

Token conventions
-----------------
* ``bos_token`` (optional) is prepended at position 0 and is never drawn as a content token:
  content tokens are uniform over the other ``d_vocab - 1`` ids.
* The shipped ``attn_only_2l`` model was trained with ``bos_token=0`` on every row
  (see ``utils/weights/attn_only_2l/training_log.json``), so evaluate it with
  ``repeated_random_tokens(..., bos_token=0)``.
"""

from __future__ import annotations

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = [
    "random_tokens",
    "repeated_random_tokens",
    "tiled_block_tokens",
    "training_mixture",
]


def _generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def _content_tokens(
    shape: tuple[int, ...], d_vocab: int, bos_token: int | None, gen: torch.Generator
) -> Int[Tensor, "..."]:
    """Uniform tokens in ``[0, d_vocab)``, skipping ``bos_token`` if it is given."""
    if bos_token is None:
        return torch.randint(0, d_vocab, shape, generator=gen, dtype=torch.long)
    if not 0 <= bos_token < d_vocab:
        raise ValueError(f"bos_token {bos_token} is outside the vocabulary [0, {d_vocab})")
    if d_vocab < 2:
        raise ValueError("need d_vocab >= 2 to have content tokens besides BOS")
    toks = torch.randint(0, d_vocab - 1, shape, generator=gen, dtype=torch.long)
    return toks + (toks >= bos_token).long()


def _with_bos(toks: Int[Tensor, "batch pos"], bos_token: int | None) -> Int[Tensor, "batch pos"]:
    if bos_token is None:
        return toks
    bos = torch.full((toks.shape[0], 1), bos_token, dtype=torch.long)
    return torch.cat([bos, toks], dim=1)


def random_tokens(
    batch: int, seq_len: int, d_vocab: int, seed: int, bos_token: int | None = None
) -> Int[Tensor, "batch pos"]:
    """Uniform random tokens, shape ``[batch, seq_len]`` (``seq_len + 1`` with a BOS)."""
    gen = _generator(seed)
    return _with_bos(_content_tokens((batch, seq_len), d_vocab, bos_token, gen), bos_token)


def repeated_random_tokens(
    batch: int, half_len: int, d_vocab: int, seed: int, bos_token: int | None = None
) -> Int[Tensor, "batch pos"]:
    """A random sequence of ``half_len`` tokens followed by the same sequence again.

    Shape ``[batch, 2 * half_len]``, or ``[batch, 2 * half_len + 1]`` when ``bos_token`` is
    given (BOS at position 0). So ``toks[:, -half_len:] == toks[:, -2 * half_len : -half_len]``
    always, and the second half always occupies the last ``half_len`` positions — which is
    what :func:`utils.head_scores.induction_score` assumes.
    """
    if half_len < 1:
        raise ValueError(f"half_len must be >= 1, got {half_len}")
    gen = _generator(seed)
    first = _content_tokens((batch, half_len), d_vocab, bos_token, gen)
    return _with_bos(torch.cat([first, first], dim=1), bos_token)


def _tiled(
    batch: int,
    content_len: int,
    d_vocab: int,
    gen: torch.Generator,
    min_period: int,
    max_period: int,
    bos_token: int | None,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    if not 1 <= min_period <= max_period:
        raise ValueError(f"need 1 <= min_period <= max_period, got {min_period}, {max_period}")
    periods = torch.randint(min_period, max_period + 1, (batch,), generator=gen)
    blocks = _content_tokens((batch, max_period), d_vocab, bos_token, gen)
    idx = torch.arange(content_len)[None, :] % periods[:, None]
    return torch.gather(blocks, 1, idx), periods


def tiled_block_tokens(
    batch: int,
    seq_len: int,
    d_vocab: int,
    seed: int,
    min_period: int = 4,
    max_period: int = 64,
    bos_token: int | None = None,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Each row is a random block of a random length (its period) tiled to ``seq_len`` tokens.

    The period of each row is uniform in ``[min_period, max_period]``. Returns
    ``(tokens, periods)``; tokens have a BOS prefix (length ``seq_len + 1``) when
    ``bos_token`` is given.
    """
    toks, periods = _tiled(
        batch, seq_len, d_vocab, _generator(seed), min_period, max_period, bos_token
    )
    return _with_bos(toks, bos_token), periods


def training_mixture(
    batch: int,
    seq_len: int,
    d_vocab: int,
    seed: int,
    repeat_fraction: float = 0.5,
    min_period: int = 4,
    max_period: int = 64,
    bos_token: int | None = None,
) -> Int[Tensor, "batch pos"]:
    """The toy models' training batches: random rows mixed with tiled-block rows.

    ``round(batch * repeat_fraction)`` rows (chosen at random) are a random block tiled with a
    random period uniform in ``[min_period, max_period]`` (see :func:`tiled_block_tokens`);
    the rest are uniform random tokens, which carry no structure and keep the model from
    assuming that everything repeats. Total length is ``seq_len`` *including* the BOS if one
    is given, so a model with ``n_ctx = seq_len`` takes the batch as it is.
    """
    if not 0.0 <= repeat_fraction <= 1.0:
        raise ValueError(f"repeat_fraction must be in [0, 1], got {repeat_fraction}")
    content_len = seq_len - (0 if bos_token is None else 1)
    gen = _generator(seed)
    rand = _content_tokens((batch, content_len), d_vocab, bos_token, gen)
    tiled, _ = _tiled(batch, content_len, d_vocab, gen, min_period, max_period, bos_token)
    n_rep = round(batch * repeat_fraction)
    is_rep = torch.zeros(batch, dtype=torch.bool)
    is_rep[torch.randperm(batch, generator=gen)[:n_rep]] = True
    toks = torch.where(is_rep[:, None], tiled, rand)
    return _with_bos(toks, bos_token)
