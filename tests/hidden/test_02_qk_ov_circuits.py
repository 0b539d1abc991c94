"""Hidden checks for chapter 02 (attention, QK and OV circuits).

Inputs are computed here, in the trusted process, from the shipped toy model (with its
LayerNorm folded, as in the notebook) on tokens the notebook never shows, or drawn at random
with fixed seeds; the learner's function receives plain tensors. Expected values come from
``utils.reference.qk_ov_circuits``. Which toy head does what is never assumed: where a check
needs a particular head it finds it from the reference scores.
"""

from __future__ import annotations

import functools

import torch

from utils.grading.checks import (
    SubmissionError,
    assert_close,
    assert_number,
    expect_tensor,
    points,
)
from utils.grading.diagnosis import Mistake
from utils.reference import qk_ov_circuits as ref

HALF = 15  # repeated-token half length for the checks (the notebook uses other lengths)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@functools.cache
def _toy() -> dict:
    """Folded toy-model weights and a small cache on unseen repeated tokens (trusted)."""
    from utils.data import repeated_random_tokens
    from utils.toy_models import load_toy_model

    model = load_toy_model("attn_only_2l")
    model.enable_compatibility_mode()
    tokens = repeated_random_tokens(3, HALF, model.cfg.d_vocab, seed=90_210, bos_token=0)
    wanted = ("hook_embed", "hook_pos_embed", "hook_q", "hook_k", "hook_pattern", "hook_scale",
              "hook_resid_post")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(wanted))
        weights = {name: getattr(model, name).detach().clone()
                   for name in ("W_E", "W_pos", "W_Q", "W_K", "W_V", "W_O", "W_U")}
    acts = {name: cache[name].detach().clone() for name in cache.keys()}
    return {"tokens": tokens, "acts": acts, **weights}


def warm_up() -> None:
    """Called by the grader while the worker starts: load the reference model now."""
    _toy()


def _random(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed)) * scale


def _check_dict(got, keys: tuple[str, ...], name: str) -> dict:
    if not isinstance(got, dict):
        raise SubmissionError(f"{name} should return a dict with keys {list(keys)}, "
                              f"got {type(got).__name__}")
    missing = [k for k in keys if k not in got]
    if missing:
        raise SubmissionError(f"{name}: the returned dict is missing {missing} "
                              f"(it has {sorted(map(str, got))})")
    return got


# ------------------------------------------------------------------ exercise 1
@points(2)
def test_attention_pattern_from_qk(submission):
    attention_pattern_from_qk = submission.function("attention_pattern_from_qk")
    toy = _toy()
    # Real queries and keys of the toy model's layer 1 (one query head per KV head).
    q, k = toy["acts"]["blocks.1.attn.hook_q"][:2], toy["acts"]["blocks.1.attn.hook_k"][:2]
    batch, seq, n_heads, _ = q.shape
    got = expect_tensor(attention_pattern_from_qk(q, k), "attention_pattern_from_qk",
                        "batch head_index dest_pos src_pos", (batch, n_heads, seq, seq))
    assert_close(got, ref.attention_pattern_from_qk(q, k), "attention_pattern_from_qk",
                 atol=1e-5, what="pattern probabilities", dims="batch head_index dest_pos src_pos",
                 inputs=f"the toy model's layer-1 queries and keys on {batch} sequences of "
                 f"{HALF} random tokens repeated after BOS ({seq} positions)")
    # Large random queries: the 1/sqrt(d_head) scale and the causal mask both matter here.
    q2, k2 = _random((2, 7, 4, 16), 201, 2.0), _random((2, 7, 4, 16), 202, 2.0)
    got2 = expect_tensor(attention_pattern_from_qk(q2, k2), "attention_pattern_from_qk",
                         "batch head_index dest_pos src_pos", (2, 4, 7, 7))
    assert_close(got2, ref.attention_pattern_from_qk(q2, k2), "attention_pattern_from_qk",
                 atol=1e-5, what="pattern probabilities", dims="batch head_index dest_pos src_pos",
                 inputs="large random q and k: batch 2, 7 positions, 4 heads, d_head 16")
    # Grouped-query attention: 6 query heads share 2 KV heads (as in SmolLM2, 9 share 3).
    q3, k3 = _random((2, 6, 6, 8), 203, 1.5), _random((2, 6, 2, 8), 204, 1.5)
    got3 = expect_tensor(attention_pattern_from_qk(q3, k3), "attention_pattern_from_qk",
                         "batch head_index dest_pos src_pos", (2, 6, 6, 6))
    assert_close(got3, ref.attention_pattern_from_qk(q3, k3), "attention_pattern_from_qk",
                 atol=1e-5, what="pattern probabilities", dims="batch head_index dest_pos src_pos",
                 inputs="random q with 6 query heads and k with 2 KV heads (query heads 0-2 "
                 "read KV head 0, heads 3-5 read KV head 1): batch 2, 6 positions, d_head 8")


# ------------------------------------------------------------------ exercise 2
@points(1)
def test_head_pattern_scores(submission):
    head_pattern_scores = submission.function("head_pattern_scores")
    logits = _random((3, 5, 9, 9), 301, 2.0)
    future = torch.ones(9, 9, dtype=torch.bool).triu(1)
    pattern = logits.masked_fill(future, float("-inf")).softmax(-1)
    got = _check_dict(head_pattern_scores(pattern), ("previous", "current", "first"),
                      "head_pattern_scores")
    expected = ref.head_pattern_scores(pattern)
    for key in ("previous", "current", "first"):
        value = expect_tensor(got[key], f"head_pattern_scores()['{key}']", "head_index", (5,))
        assert_close(value, expected[key], f"head_pattern_scores()['{key}']", atol=1e-5,
                     what="scores", dims="head_index",
                     inputs="random causal patterns: batch 3, 5 heads, 9 positions")


# ------------------------------------------------------------------ exercise 3
@points(2)
def test_positional_qk_scores(submission):
    positional_qk_scores = submission.function("positional_qk_scores")
    W_pos, W_Q, W_K = _random((8, 16), 401), _random((3, 16, 4), 402), _random((3, 16, 4), 403)
    expected = ref.positional_qk_scores(W_pos, W_Q, W_K)
    got = _expect_scores(positional_qk_scores(W_pos, W_Q, W_K), (3, 8, 8))
    _compare_masked(got, expected, "positional_qk_scores",
                    "random W_pos (8 positions), W_Q and W_K (3 heads, d_model 16, d_head 4)")
    toy = _toy()
    layer = 1  # the notebook shows layer 0
    W_pos, W_Q, W_K = toy["W_pos"][:40], toy["W_Q"][layer], toy["W_K"][layer]
    expected = ref.positional_qk_scores(W_pos, W_Q, W_K)
    got = _expect_scores(positional_qk_scores(W_pos, W_Q, W_K), tuple(expected.shape))
    _compare_masked(got, expected, "positional_qk_scores", "the toy model's layer 1, 40 positions")


def _expect_scores(value, shape: tuple) -> torch.Tensor:
    # Not expect_tensor: masked scores are -inf on purpose.
    if not isinstance(value, torch.Tensor):
        raise SubmissionError("positional_qk_scores should return a tensor [head_index, "
                              f"dest_pos, src_pos], got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise SubmissionError("positional_qk_scores: expected shape [head_index, dest_pos, "
                              f"src_pos] = {list(shape)}, got {list(value.shape)}")
    return value


def _compare_masked(got: torch.Tensor, expected: torch.Tensor, name: str, case: str) -> None:
    masked = torch.isneginf(expected)
    if not torch.equal(torch.isneginf(got), masked):
        raise AssertionError(f"{name}: the masked entries are wrong ({case}): set exactly the "
                             "entries with src_pos > dest_pos to -inf, and nothing else")
    if not torch.isfinite(got[~masked]).all():
        raise AssertionError(f"{name}: NaN or infinite values among the unmasked scores")
    assert_close(got[~masked], expected[~masked], name, atol=1e-4, rtol=1e-4,
                 what="unmasked scores (listed row by row: dest_pos, then src_pos <= dest_pos)",
                 inputs=case)


# ------------------------------------------------------------------ exercise 4
@points(2)
def test_ov_copying_scores(submission):
    ov_copying_scores = submission.function("ov_copying_scores")
    toy = _toy()
    for layer in (1, 0):
        args = (toy["W_E"], toy["W_V"][layer], toy["W_O"][layer], toy["W_U"])
        got = expect_tensor(ov_copying_scores(*args), "ov_copying_scores", "head_index",
                            (toy["W_V"].shape[1],))
        assert_close(got, ref.ov_copying_scores(*args), "ov_copying_scores", atol=2e-3,
                     rtol=1e-3, what="copying scores", dims="head_index",
                     inputs=f"the toy model's layer-{layer} weights")
    # Random weights whose embedding and unembedding are unrelated.
    args = (_random((60, 16), 411), _random((3, 16, 4), 412), _random((3, 4, 16), 413),
            _random((16, 60), 414))
    got = expect_tensor(ov_copying_scores(*args), "ov_copying_scores", "head_index", (3,))
    assert_close(got, ref.ov_copying_scores(*args), "ov_copying_scores", atol=2e-3, rtol=1e-3,
                 what="copying scores", dims="head_index",
                 inputs="random weights (3 heads, d_vocab 60, d_model 16, d_head 4) whose "
                 "W_U is unrelated to W_E")


# ------------------------------------------------------------------ exercise 5
@points(2)
def test_composition_scores(submission):
    composition_scores = submission.function("composition_scores")
    toy = _toy()
    args = (toy["W_Q"], toy["W_K"], toy["W_V"], toy["W_O"], 0, 1)
    n = toy["W_Q"].shape[1]
    _compare_composition(composition_scores(*args), ref.composition_scores(*args), (n, n),
                         "the toy model, layer 0 -> layer 1")
    # Three layers with 3 heads each, from layer 0 to layer 2.
    shapes = {"W_Q": (3, 3, 16, 4), "W_K": (3, 3, 16, 4), "W_V": (3, 3, 16, 4),
              "W_O": (3, 3, 4, 16)}
    ws = [_random(shape, 500 + i) for i, shape in enumerate(shapes.values())]
    args = (*ws, 0, 2)
    _compare_composition(composition_scores(*args), ref.composition_scores(*args), (3, 3),
                         "random weights of 3 layers, 3 heads each, d_model 16, layer 0 -> layer 2")


def _compare_composition(got, expected: dict, shape: tuple, case: str) -> None:
    got = _check_dict(got, ("Q", "K", "V"), "composition_scores")
    for mode in ("Q", "K", "V"):
        name = f"composition_scores()['{mode}']"
        value = expect_tensor(got[mode], name, "head_early head_late", shape)
        assert_close(value, expected[mode], name, atol=1e-4, rtol=1e-3,
                     what=f"{mode}-composition scores", dims="head_early head_late",
                     inputs=case)


# ------------------------------------------------------------------ exercise 6
@points(2)
def test_head_path_outputs(submission):
    head_path_outputs = submission.function("head_path_outputs")
    toy = _toy()
    acts = toy["acts"]
    x = acts["hook_embed"] + acts["hook_pos_embed"]
    pattern, scale = acts["blocks.1.attn.hook_pattern"], acts["blocks.1.ln1.hook_scale"]
    args = (x, pattern, scale, toy["W_V"][1], toy["W_O"][1])
    n_heads, (batch, seq, d_model) = toy["W_V"].shape[1], x.shape
    got = expect_tensor(head_path_outputs(*args), "head_path_outputs",
                        "head_index batch pos d_model", (n_heads, batch, seq, d_model))
    assert_close(got, ref.head_path_outputs(*args), "head_path_outputs", atol=1e-4, rtol=1e-3,
                 what="outputs", dims="head_index batch pos d_model",
                 inputs=f"the toy model's layer-1 heads reading the embeddings of {batch} "
                 f"sequences of {seq} tokens, with their cached patterns and scales")
    # Random inputs whose LayerNorm scale varies a lot from position to position.
    x2 = _random((2, 6, 16), 601)
    logits = _random((2, 3, 6, 6), 602)
    pattern2 = logits.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1),
                                  float("-inf")).softmax(-1)
    scale2 = 0.5 + torch.rand(2, 6, 1, generator=_gen(603)) * 3
    args2 = (x2, pattern2, scale2, _random((3, 16, 4), 604), _random((3, 4, 16), 605))
    got2 = expect_tensor(head_path_outputs(*args2), "head_path_outputs",
                         "head_index batch pos d_model", (3, 2, 6, 16))
    assert_close(got2, ref.head_path_outputs(*args2), "head_path_outputs", atol=1e-4,
                 rtol=1e-3, what="outputs", dims="head_index batch pos d_model",
                 inputs="random x, patterns and weights (3 heads, batch 2, 6 positions, "
                 "d_model 16), LayerNorm scales from 0.5 to 3.5")


# ------------------------------------------------------------------ exercise 7
@points(2)
def test_loss_keeping_paths(submission):
    loss_keeping_paths = submission.function("loss_keeping_paths")
    half, batch, d_model, d_vocab = 8, 3, 16, 40
    seq = 2 * half + 1
    terms = _random((5, batch, seq, d_model), 701, 3.0)
    scale = 0.5 + torch.rand(batch, seq, 1, generator=_gen(702)) * 2
    W_U = _random((d_model, d_vocab), 703)
    tokens = torch.randint(0, d_vocab, (batch, seq), generator=_gen(704))
    for keep in ([True, False, True, True, False], [False, True, False, False, True],
                 [True] * 5):
        mask = torch.tensor(keep)
        got = loss_keeping_paths(terms, mask, scale, W_U, tokens, half)
        expected = ref.loss_keeping_paths(terms, mask, scale, W_U, tokens, half)
        assert_number(got, expected, "loss_keeping_paths", atol=1e-4, rtol=1e-4,
                      what=f"mean second-half loss with keep={keep}")


MUTANTS = {
    "attention_pattern_from_qk": {
        "no_scale": Mistake(
            "you left out the 1/sqrt(d_head) scale: divide the query-key dot products by the "
            "square root of d_head before the softmax, or the patterns come out too sharp",
            '''def attention_pattern_from_qk(q, k):
    n_heads, n_kv = q.shape[2], k.shape[2]
    k = k.repeat_interleave(n_heads // n_kv, dim=2)
    scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k")
    seq = q.shape[1]
    future = t.triu(t.ones(seq, seq, dtype=t.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)'''),
        "masks_diagonal": Mistake(
            "you also masked the diagonal: a token may attend to itself, so mask only the "
            "sources after the destination (src_pos > dest_pos)",
            '''def attention_pattern_from_qk(q, k):
    n_heads, n_kv = q.shape[2], k.shape[2]
    k = k.repeat_interleave(n_heads // n_kv, dim=2)
    scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / math.sqrt(q.shape[-1])
    seq = q.shape[1]
    future = t.triu(t.ones(seq, seq, dtype=t.bool), diagonal=0)
    future[0, 0] = False
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)''', hint=1),
        "gqa_repeat_not_interleave": Mistake(
            "you tiled the KV heads ([kv0, kv1, kv0, kv1, ...]) instead of repeating each one in "
            "place: with grouped-query attention query head h reads KV head h // (n_heads // "
            "n_kv_heads)",
            '''def attention_pattern_from_qk(q, k):
    n_heads, n_kv = q.shape[2], k.shape[2]
    k = k.repeat(1, 1, n_heads // n_kv, 1)
    scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / math.sqrt(q.shape[-1])
    seq = q.shape[1]
    future = t.triu(t.ones(seq, seq, dtype=t.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)''', hint=2),
        "softmax_over_dest": Mistake(
            "you took the softmax over destinations: each destination's row of probabilities, "
            "over the source positions (the last axis), must sum to 1",
            '''def attention_pattern_from_qk(q, k):
    n_heads, n_kv = q.shape[2], k.shape[2]
    k = k.repeat_interleave(n_heads // n_kv, dim=2)
    scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / math.sqrt(q.shape[-1])
    seq = q.shape[1]
    future = t.triu(t.ones(seq, seq, dtype=t.bool), diagonal=1)
    return scores.masked_fill(future, -1e9).softmax(dim=-2)''', hint=1),
        "scale_by_d_head": Mistake(
            "you divided the scores by d_head: the scale is 1/sqrt(d_head)",
            '''def attention_pattern_from_qk(q, k):
    n_heads, n_kv = q.shape[2], k.shape[2]
    k = k.repeat_interleave(n_heads // n_kv, dim=2)
    scores = einops.einsum(q, k, "b q h d, b k h d -> b h q k") / q.shape[-1]
    seq = q.shape[1]
    future = t.triu(t.ones(seq, seq, dtype=t.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)'''),
    },
    "head_pattern_scores": {
        "includes_dest_0": Mistake(
            "you averaged over every destination, including position 0, which can attend only to "
            "itself: leave destination 0 out of the current and first-token scores",
            '''def head_pattern_scores(pattern):
    prev = pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))
    cur = pattern.diagonal(dim1=-2, dim2=-1).mean(dim=(0, -1))
    first = pattern[..., 0].mean(dim=(0, -1))
    return {"previous": prev, "current": cur, "first": first}''', hint=2),
        "previous_is_next": Mistake(
            "you read the diagonal above the main one (attention to dest + 1, always 0 under the "
            "causal mask) for the previous-token score: attention to dest - 1 lies just below "
            "it, at offset -1",
            '''def head_pattern_scores(pattern):
    rows = pattern[..., 1:, :]
    prev = pattern.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(0, -1))
    cur = rows.diagonal(offset=1, dim1=-2, dim2=-1).mean(dim=(0, -1))
    first = rows[..., 0].mean(dim=(0, -1))
    return {"previous": prev, "current": cur, "first": first}''', hint=1),
        "first_row_not_column": Mistake(
            "you averaged a row of the pattern (what destination 1 attends to) for the "
            "first-token score: attention to position 0 is the first column, source 0, of every "
            "destination row",
            '''def head_pattern_scores(pattern):
    prev = pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))
    cur = pattern[..., 1:, 1:].diagonal(dim1=-2, dim2=-1).mean(dim=(0, -1))
    first = pattern[..., 1, :].mean(dim=(0, -1))
    return {"previous": prev, "current": cur, "first": first}''', hint=2),
    },
    "positional_qk_scores": {
        "no_scale": Mistake(
            "you left out the 1/sqrt(d_head) scale: the positional scores are divided by it, as "
            "real attention scores are",
            '''def positional_qk_scores(W_pos, W_Q, W_K):
    scores = (W_pos @ FactoredMatrix(W_Q, W_K.transpose(-1, -2)) @ W_pos.T).AB
    n = W_pos.shape[0]
    future = t.triu(t.ones(n, n, dtype=t.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf"))'''),
        "query_key_swapped": Mistake(
            "you put W_K on the query side: W_Q reads the destination (rows) and W_K the source "
            "(columns); swapped, you get the transposed scores",
            '''def positional_qk_scores(W_pos, W_Q, W_K):
    scores = (W_pos @ FactoredMatrix(W_K, W_Q.transpose(-1, -2)) @ W_pos.T).AB
    scores = scores / math.sqrt(W_Q.shape[-1])
    n = W_pos.shape[0]
    future = t.triu(t.ones(n, n, dtype=t.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf"))''', hint=2),
        "masks_diagonal": Mistake(
            "you also masked the diagonal: a position may attend to itself, so set to -inf only "
            "the entries with src_pos > dest_pos",
            '''def positional_qk_scores(W_pos, W_Q, W_K):
    scores = (W_pos @ FactoredMatrix(W_Q, W_K.transpose(-1, -2)) @ W_pos.T).AB
    scores = scores / math.sqrt(W_Q.shape[-1])
    n = W_pos.shape[0]
    future = t.triu(t.ones(n, n, dtype=t.bool), diagonal=0)
    return scores.masked_fill(future, float("-inf"))'''),
    },
    "ov_copying_scores": {
        "eigenvalues_of_W_OV": Mistake(
            "you took the eigenvalues of W_V W_O alone: the copying score is about tokens, so "
            "use the full OV circuit W_E W_V W_O W_U",
            '''def ov_copying_scores(W_E, W_V, W_O, W_U):
    eig = FactoredMatrix(W_V, W_O).eigenvalues
    return eig.real.sum(-1) / eig.abs().sum(-1)''', hint=2),
        "embedding_transposed_as_unembedding": Mistake(
            "you used the transposed embedding as the unembedding: the full OV circuit ends in "
            "the model's own W_U, which need not equal W_E.T",
            '''def ov_copying_scores(W_E, W_V, W_O, W_U):
    eig = FactoredMatrix(W_E @ W_V, W_O @ W_E.T).eigenvalues
    return eig.real.sum(-1) / eig.abs().sum(-1)''', hint=1),
        "abs_of_real_parts": Mistake(
            "you summed the absolute values of the real parts: negative eigenvalues "
            "(anti-copying) must count against the score, so sum the real parts as they are",
            '''def ov_copying_scores(W_E, W_V, W_O, W_U):
    eig = FactoredMatrix(W_E @ W_V, W_O @ W_U).eigenvalues
    return eig.real.abs().sum(-1) / eig.abs().sum(-1)'''),
    },
    "composition_scores": {
        "k_composition_wrong_side": Mistake(
            "your K-composition scores repeat the Q-composition ones: for K-composition the late "
            "head's matrix is the transposed QK, QK.T",
            '''def composition_scores(W_Q, W_K, W_V, W_O, early, late):
    ov_early = FactoredMatrix(W_V[early], W_O[early])[:, None]
    qk = FactoredMatrix(W_Q[late], W_K[late].transpose(-1, -2))[None]
    ov_late = FactoredMatrix(W_V[late], W_O[late])[None]
    def score(left, right):
        return (left @ right).norm() / (left.norm() * right.norm())
    return {"Q": score(ov_early, qk), "K": score(ov_early, qk),
            "V": score(ov_early, ov_late)}''', hint=2),
        "transposed_ov": Mistake(
            "you transposed the early head's OV matrix: it is W_V @ W_O as it stands, the write "
            "that the late head's matrix then reads",
            '''def composition_scores(W_Q, W_K, W_V, W_O, early, late):
    ov_early = FactoredMatrix(W_V[early], W_O[early]).T[:, None]
    qk = FactoredMatrix(W_Q[late], W_K[late].transpose(-1, -2))[None]
    ov_late = FactoredMatrix(W_V[late], W_O[late])[None]
    def score(left, right):
        return (left @ right).norm() / (left.norm() * right.norm())
    return {"Q": score(ov_early, qk), "K": score(ov_early, qk.T),
            "V": score(ov_early, ov_late)}''', hint=1),
        "v_composition_reversed": Mistake(
            "you multiplied the late OV before the early one for V-composition: the early head's "
            "OV comes first (on the left), then the late head's OV",
            '''def composition_scores(W_Q, W_K, W_V, W_O, early, late):
    ov_early = FactoredMatrix(W_V[early], W_O[early])[:, None]
    qk = FactoredMatrix(W_Q[late], W_K[late].transpose(-1, -2))[None]
    ov_late = FactoredMatrix(W_V[late], W_O[late])[None]
    def score(left, right):
        return (left @ right).norm() / (left.norm() * right.norm())
    return {"Q": score(ov_early, qk), "K": score(ov_early, qk.T),
            "V": score(ov_late, ov_early)}'''),
        "not_normalised": Mistake(
            "you returned the bare Frobenius norm of the product: divide by the product of the "
            "two matrices' norms, so the scores are comparable between heads",
            '''def composition_scores(W_Q, W_K, W_V, W_O, early, late):
    ov_early = FactoredMatrix(W_V[early], W_O[early])[:, None]
    qk = FactoredMatrix(W_Q[late], W_K[late].transpose(-1, -2))[None]
    ov_late = FactoredMatrix(W_V[late], W_O[late])[None]
    return {"Q": (ov_early @ qk).norm(), "K": (ov_early @ qk.T).norm(),
            "V": (ov_early @ ov_late).norm()}'''),
    },
    "head_path_outputs": {
        "no_layernorm_scale": Mistake(
            "you left out the LayerNorm scale: the values are made from x divided by the scale "
            "at each source position",
            '''def head_path_outputs(x, pattern, scale, W_V, W_O):
    v = einops.einsum(x, W_V, "b s m, h m d -> b s h d")
    z = einops.einsum(pattern, v, "b h q s, b s h d -> b q h d")
    return einops.einsum(z, W_O, "b q h d, h d m -> h b q m")''', hint=2),
        "scale_at_destination": Mistake(
            "you divided by the LayerNorm scale at the destination: each source position's value "
            "is made from x[s] / scale[s], so divide before mixing positions",
            '''def head_path_outputs(x, pattern, scale, W_V, W_O):
    v = einops.einsum(x, W_V, "b s m, h m d -> b s h d")
    z = einops.einsum(pattern, v, "b h q s, b s h d -> b q h d")
    return einops.einsum(z, W_O, "b q h d, h d m -> h b q m") / scale''', hint=2),
        "pattern_transposed": Mistake(
            "you read the pattern with its position axes swapped: pattern[b, h, dest, src] is "
            "how much dest attends to src, so sum over its last axis",
            '''def head_path_outputs(x, pattern, scale, W_V, W_O):
    v = einops.einsum(x / scale, W_V, "b s m, h m d -> b s h d")
    z = einops.einsum(pattern, v, "b h s q, b s h d -> b q h d")
    return einops.einsum(z, W_O, "b q h d, h d m -> h b q m")''', hint=3),
    },
    "loss_keeping_paths": {
        "no_shift": Mistake(
            "you scored each prediction against the token at its own position: the prediction "
            "made at position p is for the token at p + 1",
            '''def loss_keeping_paths(terms, keep, final_scale, W_U, tokens, half_len):
    resid = terms[keep].sum(0) / final_scale
    logprobs = (resid @ W_U).log_softmax(-1)
    seq = tokens.shape[1]
    pos = t.arange(seq - half_len, seq - 1)
    correct = logprobs[:, pos].gather(-1, tokens[:, pos, None])
    return -correct.mean().item()''', hint=2),
        "all_positions": Mistake(
            "you averaged the loss over the whole sequence: only the second-half predictions, "
            "made at positions seq - half_len to seq - 2, count",
            '''def loss_keeping_paths(terms, keep, final_scale, W_U, tokens, half_len):
    resid = terms[keep].sum(0) / final_scale
    logprobs = (resid @ W_U).log_softmax(-1)
    correct = logprobs[:, :-1].gather(-1, tokens[:, 1:, None])
    return -correct.mean().item()''', hint=2),
        "ignores_keep": Mistake(
            "you summed every component, ignoring keep: rebuild the residual stream from the "
            "kept components only (index the component axis with the mask)",
            '''def loss_keeping_paths(terms, keep, final_scale, W_U, tokens, half_len):
    resid = terms.sum(0) / final_scale
    logprobs = (resid @ W_U).log_softmax(-1)
    seq = tokens.shape[1]
    pos = t.arange(seq - half_len, seq - 1)
    correct = logprobs[:, pos].gather(-1, tokens[:, pos + 1, None])
    return -correct.mean().item()''', hint=2),
        "no_final_scale": Mistake(
            "you left out the final LayerNorm scale: divide the rebuilt residual stream by "
            "final_scale before unembedding",
            '''def loss_keeping_paths(terms, keep, final_scale, W_U, tokens, half_len):
    resid = terms[keep].sum(0)
    logprobs = (resid @ W_U).log_softmax(-1)
    seq = tokens.shape[1]
    pos = t.arange(seq - half_len, seq - 1)
    correct = logprobs[:, pos].gather(-1, tokens[:, pos + 1, None])
    return -correct.mean().item()''', hint=1),
    },
}
