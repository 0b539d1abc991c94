"""Reference answers for chapter 02 (attention, QK and OV circuits).

Used by the hidden checks (``tests/hidden/test_02_qk_ov_circuits.py``) and by later chapters
that need a trusted version of this chapter's functions. Each function is written
independently of the solution notebook, often with a different but equivalent formulation
(explicit loops or materialised matrices where the notebook uses einsum or
``FactoredMatrix``), so that a mistake shared by both is unlikely.

Conventions (TransformerLens): row vectors, ``x @ W``; ``W_Q``/``W_K``/``W_V`` are
``[head_index, d_model, d_head]``, ``W_O`` is ``[head_index, d_head, d_model]`` for one layer
(or with a leading ``layer`` axis); patterns are ``[batch, head_index, dest_pos, src_pos]``.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = [
    "attention_pattern_from_qk",
    "composition_over_chance",
    "composition_scores",
    "diagonal_argmax_fraction",
    "head_path_outputs",
    "head_pattern_scores",
    "k_composition_circuit",
    "loss_keeping_paths",
    "ov_copying_scores",
    "positional_qk_scores",
]


def attention_pattern_from_qk(
    q: Float[Tensor, "batch pos head_index d_head"],
    k: Float[Tensor, "batch pos n_kv d_head"],
) -> Float[Tensor, "batch head_index dest_pos src_pos"]:
    """Causal softmax attention from queries and keys; ``k`` may have fewer (grouped) heads."""
    q = q.double()
    k = k.double()
    n_heads, n_kv = q.shape[2], k.shape[2]
    group = n_heads // n_kv
    # Query head h reads KV head h // group (contiguous groups, as in HF's repeat_kv).
    k_full = torch.stack([k[:, :, h // group] for h in range(n_heads)], dim=2)
    seq = q.shape[1]
    scores = torch.matmul(q.permute(0, 2, 1, 3), k_full.permute(0, 2, 3, 1))
    scores = scores * (1.0 / math.sqrt(q.shape[-1]))
    dest = torch.arange(seq).view(-1, 1)
    src = torch.arange(seq).view(1, -1)
    scores = scores.masked_fill(src > dest, float("-inf"))
    scores = scores - scores.amax(dim=-1, keepdim=True)
    weights = scores.exp()
    return (weights / weights.sum(dim=-1, keepdim=True)).float()


def head_pattern_scores(
    pattern: Float[Tensor, "batch head_index dest_pos src_pos"],
) -> dict[str, Float[Tensor, " head_index"]]:
    """Mean attention to ``dest - 1``, ``dest`` and position 0, over batch and dest >= 1."""
    pattern = pattern.double()
    seq = pattern.shape[-1]
    prev, cur, first = [], [], []
    for d in range(1, seq):
        prev.append(pattern[:, :, d, d - 1])
        cur.append(pattern[:, :, d, d])
        first.append(pattern[:, :, d, 0])

    def mean(rows: list[Tensor]) -> Tensor:
        return torch.stack(rows, dim=-1).mean(dim=(0, 2)).float()

    return {"previous": mean(prev), "current": mean(cur), "first": mean(first)}


def positional_qk_scores(
    W_pos: Float[Tensor, "n_ctx d_model"],
    W_Q: Float[Tensor, "head_index d_model d_head"],
    W_K: Float[Tensor, "head_index d_model d_head"],
) -> Float[Tensor, "head_index dest_pos src_pos"]:
    """``W_pos W_Q W_K^T W_pos^T / sqrt(d_head)`` per head, with ``src > dest`` set to -inf."""
    W_pos = W_pos.double()
    queries = torch.einsum("pm,hmd->hpd", W_pos, W_Q.double())
    keys = torch.einsum("pm,hmd->hpd", W_pos, W_K.double())
    scores = torch.einsum("hqd,hkd->hqk", queries, keys) / math.sqrt(W_Q.shape[-1])
    n = W_pos.shape[0]
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).float()


def ov_copying_scores(
    W_E: Float[Tensor, "d_vocab d_model"],
    W_V: Float[Tensor, "head_index d_model d_head"],
    W_O: Float[Tensor, "head_index d_head d_model"],
    W_U: Float[Tensor, "d_model d_vocab"],
) -> Float[Tensor, " head_index"]:
    """Sum of real parts over sum of moduli of the eigenvalues of ``W_E W_V W_O W_U``.

    The nonzero eigenvalues of ``W_E W_V W_O W_U`` equal those of the small
    ``d_head x d_head`` matrix ``W_V W_O W_U W_E`` (cyclic permutation), used here.
    """
    W_UE = W_U.double() @ W_E.double()
    out = []
    for h in range(W_V.shape[0]):
        small = W_O[h].double() @ W_UE @ W_V[h].double()
        eig = torch.linalg.eigvals(small)
        out.append(eig.real.sum() / eig.abs().sum())
    return torch.stack(out).float()


def _frob(m: Tensor) -> Tensor:
    return m.pow(2).sum().sqrt()


def composition_scores(
    W_Q: Float[Tensor, "layer head_index d_model d_head"],
    W_K: Float[Tensor, "layer head_index d_model d_head"],
    W_V: Float[Tensor, "layer head_index d_model d_head"],
    W_O: Float[Tensor, "layer head_index d_head d_model"],
    early: int,
    late: int,
) -> dict[str, Float[Tensor, "head_early head_late"]]:
    """Q/K/V composition scores from every head of ``early`` to every head of ``late``.

    Materialises the ``d_model x d_model`` matrices: ``OV = W_V W_O`` (what a head writes,
    acting on row vectors), ``QK = W_Q W_K^T``. The early head's output composes into
    the late head's queries through ``OV_e @ QK_l``, its keys through ``OV_e @ QK_l^T``,
    its values through ``OV_e @ OV_l``; each score is the Frobenius norm of that product over
    the product of the two norms.
    """
    n_e, n_l = W_V.shape[1], W_Q.shape[1]
    out = {m: torch.zeros(n_e, n_l, dtype=torch.float64) for m in "QKV"}
    for i in range(n_e):
        ov_e = W_V[early, i].double() @ W_O[early, i].double()
        for j in range(n_l):
            qk = W_Q[late, j].double() @ W_K[late, j].double().T
            ov = W_V[late, j].double() @ W_O[late, j].double()
            for mode, right in (("Q", qk), ("K", qk.T), ("V", ov)):
                out[mode][i, j] = _frob(ov_e @ right) / (_frob(ov_e) * _frob(right))
    return {m: v.float() for m, v in out.items()}


def composition_over_chance(
    W_Q: Float[Tensor, "layer head_index d_model d_head"],
    W_K: Float[Tensor, "layer head_index d_model d_head"],
    W_V: Float[Tensor, "layer head_index d_model d_head"],
    W_O: Float[Tensor, "layer head_index d_head d_model"],
    early: int,
    late: int,
    seed: int = 0,
) -> dict[str, float]:
    """Per kind ("Q", "K", "V"): the largest composition score over all pairs of heads, divided
    by the mean score of standard-normal weights of the same shapes (drawn in the order
    W_Q, W_K, W_V, W_O from one generator seeded with ``seed``)."""
    real = composition_scores(W_Q, W_K, W_V, W_O, early, late)
    gen = torch.Generator().manual_seed(seed)
    random = [torch.randn(w.shape, generator=gen) for w in (W_Q, W_K, W_V, W_O)]
    chance = composition_scores(*random, early, late)
    return {m: (real[m].max() / chance[m].mean()).item() for m in "QKV"}


def k_composition_circuit(
    W_E: Float[Tensor, "d_vocab d_model"],
    W_Q: Float[Tensor, "d_model d_head"],
    W_K: Float[Tensor, "d_model d_head"],
    W_V_prev: Float[Tensor, "d_model d_head_prev"],
    W_O_prev: Float[Tensor, "d_head_prev d_model"],
) -> Float[Tensor, "d_vocab d_vocab"]:
    """A late head's token-level QK circuit with its keys read through an early head's OV.

    ``out[a, b] = W_E[a] (W_Q W_K^T) (W_V_prev W_O_prev)^T W_E[b]^T / sqrt(d_head)``: the score
    the late head's query for token ``a`` gives the key written by the early head attending to
    token ``b``. Materialises the two ``d_model x d_model`` circuits (the notebook does not).
    """
    qk = W_Q.double() @ W_K.double().T
    ov = W_V_prev.double() @ W_O_prev.double()
    embed = W_E.double()
    return (embed @ qk @ ov.T @ embed.T / math.sqrt(W_Q.shape[-1])).float()


def diagonal_argmax_fraction(circuit: Float[Tensor, "row col"], skip: int = 1) -> float:
    """Fraction of rows ``i >= skip`` whose largest entry among columns ``>= skip`` is column
    ``i`` (with ``skip=1``, a BOS token at index 0 is left out of both axes)."""
    inner = circuit[skip:, skip:]
    hits = sum(int(inner[i].argmax()) == i for i in range(inner.shape[0]))
    return hits / inner.shape[0]


def head_path_outputs(
    x: Float[Tensor, "batch pos d_model"],
    pattern: Float[Tensor, "batch head_index dest_pos src_pos"],
    scale: Float[Tensor, "batch pos 1"],
    W_V: Float[Tensor, "head_index d_model d_head"],
    W_O: Float[Tensor, "head_index d_head d_model"],
) -> Float[Tensor, "head_index batch pos d_model"]:
    """What each head writes when its values read only ``x`` (frozen pattern and LN scale).

    ``out[h, b, d] = sum_s pattern[b, h, d, s] * (x[b, s] / scale[b, s]) @ W_V[h] @ W_O[h]``.
    """
    x = x.double() / scale.double()
    outs = []
    for h in range(W_V.shape[0]):
        written = x @ (W_V[h].double() @ W_O[h].double())  # [batch, src, d_model]
        outs.append(torch.matmul(pattern[:, h].double(), written))
    return torch.stack(outs).float()


def loss_keeping_paths(
    terms: Float[Tensor, "component batch pos d_model"],
    keep: Bool[Tensor, " component"],
    final_scale: Float[Tensor, "batch pos 1"],
    W_U: Float[Tensor, "d_model d_vocab"],
    tokens: Int[Tensor, "batch pos"],
    half_len: int,
) -> float:
    """Mean next-token loss on the second half, from the kept components only.

    Predictions are made from positions ``seq - half_len .. seq - 2`` (targets one later).
    """
    resid = (terms.double() * keep.double().view(-1, 1, 1, 1)).sum(0)
    logits = (resid / final_scale.double()) @ W_U.double()
    seq = tokens.shape[1]
    total, count = 0.0, 0
    for p in range(seq - half_len, seq - 1):
        logp = torch.log_softmax(logits[:, p], dim=-1)
        total += -logp.gather(1, tokens[:, p + 1 : p + 2]).sum().item()
        count += tokens.shape[0]
    return total / count
