"""Reference implementations for chapter 03 (induction heads), used by its hidden checks.

Written independently of the solution notebook. The grading sandbox cannot import this
module. Where a definition matches :mod:`utils.head_scores` exactly (the induction and
previous-token scores), it is reused from there.

Conventions shared by every function here
-----------------------------------------
* ``loss_per_token[:, p]`` is the loss of predicting token ``p + 1`` from position ``p``.
* A repeated-tokens batch has its ``2 * half_len`` repeated tokens at the *end* of the
  sequence, after an optional prefix (a BOS) of length ``o = seq - 2 * half_len``.
* "First-half loss": predictions of first-half tokens made from first-half positions,
  ``p in [o, o + half_len - 1)``. "Second-half (repeated-half) loss": predictions of
  second-half tokens from second-half positions, ``p in [o + half_len, o + 2 * half_len - 1)``.
  Both leave out the first token of their half, which nothing before it can predict.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from utils.head_scores import induction_score, previous_token_score

__all__ = [
    "ablated_repeated_loss",
    "checkpoint_metrics",
    "composition_scores",
    "half_losses",
    "in_context_learning_score",
    "induction_scores",
    "path_ablated_loss",
    "per_token_loss",
    "phase_change_steps",
    "repeated_half_loss",
    "score_every_head",
]


def per_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of the next token at every position but the last."""
    logits = logits.detach().to(torch.float64)
    batch, pos, vocab = logits.shape
    flat = F.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1), reduction="none"
    )
    return flat.view(batch, pos - 1)


def half_losses(loss_per_token: Float[Tensor, "batch pos_minus_1"], half_len: int
                ) -> tuple[float, float]:
    """(first-half loss, second-half loss) as defined in the module docstring."""
    seq = loss_per_token.shape[1] + 1
    o = seq - 2 * half_len
    lpt = loss_per_token.to(torch.float64)
    first = lpt[:, o : o + half_len - 1].mean().item()
    second = lpt[:, o + half_len : o + 2 * half_len - 1].mean().item()
    return first, second


def in_context_learning_score(loss_per_token: Float[Tensor, "batch pos_minus_1"],
                              half_len: int) -> dict[str, float]:
    """``{"first_half", "second_half", "score"}`` with ``score = first_half - second_half``."""
    first, second = half_losses(loss_per_token, half_len)
    return {"first_half": first, "second_half": second, "score": first - second}


def induction_scores(pattern: Float[Tensor, "batch head_index dest_pos src_pos"],
                     half_len: int) -> Float[Tensor, " head_index"]:
    """Mean attention from each second-half position to the token after its earlier copy."""
    return induction_score(pattern, half_len)


@torch.no_grad()
def score_every_head(model: Any, tokens: Int[Tensor, "batch pos"], half_len: int
                     ) -> dict[str, Float[Tensor, "layer head_index"]]:
    """Previous-token and induction scores of every head, from a cached forward pass."""
    _, cache = model.run_with_cache(
        tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    layers = range(model.cfg.n_layers)
    return {
        "previous_token": torch.stack([previous_token_score(cache["pattern", i]) for i in layers]),
        "induction": torch.stack([induction_score(cache["pattern", i], half_len) for i in layers]),
    }


def repeated_half_loss(logits: Float[Tensor, "batch pos d_vocab"],
                       tokens: Int[Tensor, "batch pos"], half_len: int) -> float:
    """Mean loss of the second-half predictions (see the module docstring)."""
    return half_losses(per_token_loss(logits, tokens), half_len)[1]


@torch.no_grad()
def ablated_repeated_loss(model: Any, tokens: Int[Tensor, "batch pos"], half_len: int,
                          heads: list[tuple[int, int]], method: str = "zero") -> float:
    """Repeated-half loss with the given heads' ``hook_z`` replaced by 0 or by its mean.

    The mean is over batch and positions of the head's ``hook_z`` in a clean forward pass
    on the same tokens (one ``d_head`` vector per head).
    """
    if method not in ("zero", "mean"):
        raise ValueError(method)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    names = [f"blocks.{layer}.attn.hook_z" for layer in by_layer]
    means: dict[int, Tensor] = {}
    if method == "mean":
        _, cache = model.run_with_cache(tokens, names_filter=names)
        for layer in by_layer:
            means[layer] = cache[f"blocks.{layer}.attn.hook_z"].mean(dim=(0, 1))  # head d_head

    def make_hook(layer: int):
        def hook(z, hook):
            z = z.clone()
            for head in by_layer[layer]:
                z[:, :, head] = 0.0 if method == "zero" else means[layer][head]
            return z
        return hook

    logits = model.run_with_hooks(
        tokens, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", make_hook(layer)) for layer in by_layer])
    return repeated_half_loss(logits, tokens, half_len)


def composition_scores(model: Any, kind: str, early_layer: int = 0, late_layer: int = 1
                       ) -> Float[Tensor, "head_early head_late"]:
    """Q/K/V-composition scores between every head of ``early_layer`` and of ``late_layer``.

    ``||A B||_F / (||A||_F ||B||_F)`` with ``A`` the early head's ``W_OV = W_V W_O`` and
    ``B`` the late head's ``W_QK = W_Q W_K^T`` (Q), ``W_QK^T`` (K) or ``W_OV`` (V).
    """
    w_q, w_k, w_v, w_o = (w.detach().to(torch.float64)
                          for w in (model.W_Q, model.W_K, model.W_V, model.W_O))
    ov_early = w_v[early_layer] @ w_o[early_layer]                      # h d d
    qk_late = w_q[late_layer] @ w_k[late_layer].transpose(-1, -2)       # h d d
    ov_late = w_v[late_layer] @ w_o[late_layer]
    second = {"Q": qk_late, "K": qk_late.transpose(-1, -2), "V": ov_late}[kind]
    n_e, n_l = ov_early.shape[0], second.shape[0]
    out = torch.empty(n_e, n_l, dtype=torch.float64)
    for i in range(n_e):
        for j in range(n_l):
            prod = ov_early[i] @ second[j]
            out[i, j] = torch.linalg.matrix_norm(prod) / (
                torch.linalg.matrix_norm(ov_early[i]) * torch.linalg.matrix_norm(second[j]))
    return out


@torch.no_grad()
def path_ablated_loss(model: Any, tokens: Int[Tensor, "batch pos"], half_len: int,
                      sender_head: int, receiver_heads: list[int], path: str) -> float:
    """Repeated-half loss with layer-0 ``sender_head`` removed only from the ``path`` input
    (``"q"``, ``"k"`` or ``"v"``) of the layer-1 ``receiver_heads``.

    The receivers' queries/keys/values come from a run with the sender zero-ablated at
    ``hook_z``; everything else is the clean forward pass.
    """
    name = f"blocks.1.attn.hook_{path}"

    def zero_sender(z, hook):
        z = z.clone()
        z[:, :, sender_head] = 0.0
        return z

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", zero_sender)]):
        _, cache = model.run_with_cache(tokens, names_filter=[name])
    ablated = cache[name]

    def patch(act, hook):
        act = act.clone()
        for head in receiver_heads:
            act[:, :, head] = ablated[:, :, head]
        return act

    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
    return repeated_half_loss(logits, tokens, half_len)


@torch.no_grad()
def checkpoint_metrics(model: Any, tokens: Int[Tensor, "batch pos"], half_len: int
                       ) -> dict[str, float]:
    """What chapter 3 logs while growing the model, on one repeated-tokens batch.

    ``loss_first_half`` / ``loss_second_half`` as in :func:`half_losses`;
    ``prev_token_layer0``: the best previous-token score among layer 0's heads;
    ``induction_layer1``: the best induction score among layer 1's heads.
    """
    logits, cache = model.run_with_cache(
        tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    first, second = half_losses(per_token_loss(logits, tokens), half_len)
    return {
        "loss_first_half": first,
        "loss_second_half": second,
        "prev_token_layer0": previous_token_score(cache["pattern", 0]).max().item(),
        "induction_layer1": induction_score(cache["pattern", 1], half_len).max().item(),
    }


def phase_change_steps(log: list[dict[str, Any]], threshold: float = 0.5
                       ) -> dict[str, int | None]:
    """``largest_drop``: step of the entry right after the largest fall in
    ``heldout_loss_second_half`` between consecutive entries; ``first_crossing``: step of the
    first entry with ``induction_score_layer1 >= threshold`` (``None`` if never)."""
    losses = [entry["heldout_loss_second_half"] for entry in log]
    drops = [losses[i - 1] - losses[i] for i in range(1, len(losses))]
    best = max(range(len(drops)), key=lambda i: drops[i])
    crossing = next((entry["step"] for entry in log
                     if entry["induction_score_layer1"] >= threshold), None)
    return {"largest_drop": int(log[best + 1]["step"]),
            "first_crossing": None if crossing is None else int(crossing)}
