"""Reference implementations for chapter 03 (induction heads), used by its hidden checks.

Written independently of the solution notebook. The grading sandbox cannot import this
module. Where a definition matches :mod:`utils.head_scores` exactly (the induction and
previous-token scores), it is reused from there.

Conventions shared by every function here
-----------------------------------------
* ``loss_per_token[:, p]`` is the loss of predicting token ``p + 1`` from position ``p``.
* A repeated-tokens batch has its ``2 * half_len`` repeated tokens at the *end* of the
  sequence, after an optional prefix (a BOS) of length ``o = seq - 2 * half_len``.
* Olsson et al.'s in-context learning score works on rows that each hold one document: the
  loss *at token index i* is the loss of predicting token ``i`` of the row (BOS = index 0),
  ``loss_per_token[:, i - 1]``.
* "First-half loss": predictions of first-half tokens made from first-half positions,
  ``p in [o, o + half_len - 1)``. "Second-half (repeated-half) loss": predictions of
  second-half tokens from second-half positions, ``p in [o + half_len, o + 2 * half_len - 1)``.
  Both leave out the first token of their half, which nothing before it can predict.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils.head_scores import induction_score, previous_token_score
from utils.reference.residual_stream import per_token_loss

__all__ = [
    "ablated_logits",
    "attention_to_targets",
    "half_losses",
    "in_context_learning_scores",
    "induction_scores",
    "induction_targets",
    "path_ablated_logits",
    "per_token_loss",
    "phase_change_steps",
    "repetition_gain",
    "score_every_head",
    "stripe_targets",
]


def half_losses(loss_per_token: Float[Tensor, "batch pos_minus_1"], half_len: int
                ) -> tuple[float, float]:
    """(first-half loss, second-half loss) as defined in the module docstring."""
    seq = loss_per_token.shape[1] + 1
    o = seq - 2 * half_len
    lpt = loss_per_token.to(torch.float64)
    first = lpt[:, o : o + half_len - 1].mean().item()
    second = lpt[:, o + half_len : o + 2 * half_len - 1].mean().item()
    return first, second


def repetition_gain(loss_per_token: Float[Tensor, "batch pos_minus_1"], half_len: int
                    ) -> dict[str, float]:
    """``{"first_half", "second_half", "gain"}`` with ``gain = first_half - second_half``."""
    first, second = half_losses(loss_per_token, half_len)
    return {"first_half": first, "second_half": second, "gain": first - second}


def induction_scores(pattern: Float[Tensor, "batch head_index dest_pos src_pos"],
                     half_len: int) -> Float[Tensor, " head_index"]:
    """Mean attention from each second-half position to the token after its earlier copy."""
    return induction_score(pattern, half_len)


def stripe_targets(batch: int, seq: int, offset: int, first_dest: int
                   ) -> Int[Tensor, "batch pos"]:
    """Targets ``dest - offset`` for ``dest >= first_dest``, ``-1`` elsewhere."""
    dest = torch.arange(seq)
    row = torch.where(dest >= first_dest, dest - offset, torch.full_like(dest, -1))
    return row.expand(batch, seq).clone()


@torch.no_grad()
def attention_to_targets(model: Any, tokens: Int[Tensor, "batch pos"],
                         targets: Int[Tensor, "batch pos"]) -> Float[Tensor, "layer head_index"]:
    """Mean attention paid from each destination to its target, pooled over every (row,
    destination) pair whose target is ``>= 0``; one number per head of every layer."""
    _, cache = model.run_with_cache(
        tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    valid = targets >= 0
    b_idx, d_idx = valid.nonzero(as_tuple=True)
    s_idx = targets[b_idx, d_idx]
    out = []
    for layer in range(model.cfg.n_layers):
        pattern = cache["pattern", layer].to(torch.float64)   # batch head dest src
        picked = pattern[b_idx, :, d_idx, s_idx]              # pair head
        out.append(picked.mean(dim=0))
    return torch.stack(out).float()


def score_every_head(model: Any, tokens: Int[Tensor, "batch pos"], half_len: int
                     ) -> dict[str, Float[Tensor, "layer head_index"]]:
    """Previous-token and induction scores of every head (utils.head_scores definitions)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("attn.hook_pattern"))
    layers = range(model.cfg.n_layers)
    return {
        "previous_token": torch.stack([previous_token_score(cache["pattern", i]) for i in layers]),
        "induction": torch.stack([induction_score(cache["pattern", i], half_len) for i in layers]),
    }


def induction_targets(tokens: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Position after the most recent earlier occurrence of each token, ``-1`` if none."""
    batch, seq = tokens.shape
    out = torch.full((batch, seq), -1, dtype=torch.long)
    for b in range(batch):
        last_seen: dict[int, int] = {}
        for d, token in enumerate(tokens[b].tolist()):
            if token in last_seen:
                out[b, d] = last_seen[token] + 1
            last_seen[token] = d
    return out


def _ablating_hooks(model: Any, tokens: Tensor, heads: list[tuple[int, int]], method: str):
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

    return [(f"blocks.{layer}.attn.hook_z", make_hook(layer)) for layer in by_layer]


@torch.no_grad()
def ablated_logits(model: Any, tokens: Int[Tensor, "batch pos"], heads: list[tuple[int, int]],
                   method: str = "zero") -> Float[Tensor, "batch pos d_vocab"]:
    """Logits with the given heads' ``hook_z`` replaced by 0 or by its mean over batch and
    positions in a clean forward pass on the same tokens (one ``d_head`` vector per head)."""
    return model.run_with_hooks(tokens, fwd_hooks=_ablating_hooks(model, tokens, heads, method))


@torch.no_grad()
def path_ablated_logits(model: Any, tokens: Int[Tensor, "batch pos"], sender_head: int,
                        receiver_heads: list[int], path: str) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits with layer-0 ``sender_head`` removed only from the ``path`` input (``"q"``,
    ``"k"`` or ``"v"``) of the layer-1 ``receiver_heads``.

    The receivers' queries/keys/values come from a run with the sender zero-ablated at
    ``hook_z``; everything else is the clean forward pass.
    """
    name = f"blocks.1.attn.hook_{path}"
    ablated = {}

    def keep(act, hook):
        ablated["act"] = act.clone()

    model.run_with_hooks(tokens, return_type=None,
                         fwd_hooks=_ablating_hooks(model, tokens, [(0, sender_head)], "zero")
                         + [(name, keep)])

    def patch(act, hook):
        act = act.clone()
        for head in receiver_heads:
            act[:, :, head] = ablated["act"][:, :, head]
        return act

    return model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])


def in_context_learning_scores(loss_per_token: Float[Tensor, "batch pos_minus_1"], early: int,
                               late: int, window: int = 1) -> Float[Tensor, " batch"]:
    """Per row: mean loss at token indices ``late - window + 1 .. late`` minus the same
    ending at ``early`` (Olsson et al. 2022: late 500, early 50, window 1)."""
    lpt = loss_per_token.to(torch.float64)

    def at(index: int) -> Tensor:
        # loss at token index i is loss_per_token[:, i - 1]
        return lpt[:, index - window : index].mean(dim=1)

    return (at(late) - at(early)).float()


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
