"""Reference head scores computed from attention patterns.

These are the definitions the course (and its hidden checks) use. Both take a pattern
``Float[Tensor, "batch head_index dest_pos src_pos"]`` (what ``cache["pattern", layer]`` holds;
a single-prompt ``[head_index, dest_pos, src_pos]`` pattern is accepted too) and return one
score per head, ``Float[Tensor, "head_index"]``, averaged over the batch and the destination
positions. A score is a mean attention probability, so it lies in ``[0, 1]``.

Previous-token score
    Mean attention from each destination ``dest >= 1`` to ``src = dest - 1``. Destination 0
    has no previous token and is left out. With a BOS at position 0, destination 1 attending
    to the BOS *is* attending to its previous token and counts.

Induction score
    For a sequence whose last ``2 * half_len`` positions are a random block repeated twice
    (``utils.data.repeated_random_tokens``, with or without a BOS prefix), the mean attention
    from each destination in the **second half** — the last ``half_len`` positions — to
    ``src = dest - half_len + 1``, the position just after the previous occurrence of the
    destination's token. Only second-half destinations count: first-half tokens have no
    previous occurrence, and any prefix (a BOS) before the repeated part is ignored because
    the second half is located from the end of the sequence.

A perfect head scores 1. A uniform causal pattern gives each source ``1 / (dest + 1)``, so it
scores close to 0 on long sequences (previous-token score about 0.035 over 128 positions).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["induction_score", "previous_token_score"]


def _as_4d(pattern: Tensor) -> Tensor:
    if pattern.dim() == 3:
        pattern = pattern.unsqueeze(0)
    if pattern.dim() != 4:
        raise ValueError(
            "expected an attention pattern [batch, head_index, dest_pos, src_pos] "
            f"(or [head_index, dest_pos, src_pos]), got shape {tuple(pattern.shape)}"
        )
    if pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError(
            f"expected a square self-attention pattern, got dest {pattern.shape[-2]} "
            f"x src {pattern.shape[-1]}"
        )
    return pattern


def previous_token_score(
    pattern: Float[Tensor, "batch head_index dest_pos src_pos"],
) -> Float[Tensor, " head_index"]:
    """Mean attention to ``dest - 1`` over destinations ``dest >= 1`` (and the batch)."""
    pattern = _as_4d(pattern)
    seq = pattern.shape[-1]
    if seq < 2:
        raise ValueError("need at least 2 positions for a previous-token score")
    # diagonal(offset=-1) picks pattern[..., d, d - 1] for d = 1 .. seq-1.
    stripe = pattern.diagonal(offset=-1, dim1=-2, dim2=-1)  # [batch, head, seq - 1]
    return stripe.float().mean(dim=(0, 2))


def induction_score(
    pattern: Float[Tensor, "batch head_index dest_pos src_pos"],
    half_len: int,
) -> Float[Tensor, " head_index"]:
    """Mean attention from each second-half destination to ``dest - half_len + 1``.

    The second half is the last ``half_len`` positions, so a BOS (or any prefix) before the
    ``2 * half_len`` repeated tokens is handled automatically.
    """
    pattern = _as_4d(pattern)
    seq = pattern.shape[-1]
    if half_len < 1 or 2 * half_len > seq:
        raise ValueError(
            f"half_len={half_len} does not fit a repeated sequence into {seq} positions"
        )
    dest = torch.arange(seq - half_len, seq, device=pattern.device)
    src = dest - half_len + 1
    stripe = pattern[:, :, dest, src]  # [batch, head, half_len]
    return stripe.float().mean(dim=(0, 2))
