"""Hidden checks for chapter 02 (attention, QK and OV circuits).

Inputs are computed here, in the trusted process, from the shipped toy model (with its
LayerNorm folded, as in the notebook) on tokens the notebook never shows, or drawn at random
with fixed seeds; the learner's function receives plain tensors. Expected values come from
``utils.reference.qk_ov_circuits``. Which toy head does what is never assumed: where a check
needs a particular head it finds it from the reference scores, and the investigations
(``previous_token_head``, ``strongest_induction_head``, ``composition_that_stands_out``,
``k_circuit_diagonal_fraction``) are graded against findings computed here from the model, never
against a number typed into this file.
"""

from __future__ import annotations

import functools

import torch

from course_tools.grading.checks import (
    SubmissionError,
    assert_close,
    assert_number,
    expect_tensor,
    points,
)
from course_tools.grading.diagnosis import Mistake
from utils.reference import qk_ov_circuits as ref

HALF = 15  # repeated-token half length for the checks (the notebook uses other lengths)
FINDINGS_HALF, FINDINGS_BATCH = 30, 16  # fresh sequences the investigations are graded on
DIAGONAL_TOLERANCE = 0.01  # k_circuit_diagonal_fraction's docstring promises this


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
        # The investigations' sequences: only the patterns are needed (folding leaves them be).
        fresh = repeated_random_tokens(FINDINGS_BATCH, FINDINGS_HALF, model.cfg.d_vocab,
                                       seed=4_242, bos_token=0)
        _, fresh_cache = model.run_with_cache(
            fresh, names_filter=lambda n: n.endswith("hook_pattern"))
        patterns = [fresh_cache["pattern", layer].clone() for layer in range(model.cfg.n_layers)]
    acts = {name: cache[name].detach().clone() for name in cache.keys()}
    return {"tokens": tokens, "acts": acts, "findings_patterns": patterns, **weights}


@functools.cache
def _findings() -> dict:
    """What the investigations ask, measured here on fresh sequences (trusted process)."""
    from utils.head_scores import induction_score

    toy = _toy()
    pattern_0, pattern_1 = toy["findings_patterns"]
    previous = ref.head_pattern_scores(pattern_0)["previous"]
    induction = induction_score(pattern_1, FINDINGS_HALF)
    prev_order = previous.argsort(descending=True).tolist()
    ind_order = induction.argsort(descending=True).tolist()
    prev, ind = prev_order[0], ind_order[0]
    circuit = ref.k_composition_circuit(toy["W_E"], toy["W_Q"][1, ind], toy["W_K"][1, ind],
                                        toy["W_V"][0, prev], toy["W_O"][0, prev])
    ratios = ref.composition_over_chance(toy["W_Q"], toy["W_K"], toy["W_V"], toy["W_O"], 0, 1)
    return {"previous": previous, "induction": induction, "prev_order": prev_order,
            "ind_order": ind_order, "diagonal": ref.diagonal_argmax_fraction(circuit),
            "over_chance": ratios,
            "sequences": f"{FINDINGS_BATCH} fresh sequences of {FINDINGS_HALF} random tokens "
                         "repeated after BOS"}


def warm_up() -> None:
    """Called by the grader while the worker starts: load the reference model now."""
    _findings()


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


# ------------------------------------------------------------------ investigations
def _expect_head(value, name: str, n_heads: int, layer: int) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if not isinstance(value, int) or isinstance(value, bool):
        raise SubmissionError(f"{name} should return a head index (a Python int), "
                              f"got {type(value).__name__}")
    if not 0 <= value < n_heads:
        raise SubmissionError(f"{name}: layer {layer} has heads 0 .. {n_heads - 1}, got {value}")
    return value


@points(1)
def test_previous_token_head(submission):
    found = _findings()
    n_heads = len(found["previous"])
    head = _expect_head(submission.function("previous_token_head")(), "previous_token_head",
                        n_heads, 0)
    if head != found["prev_order"][0]:
        raise AssertionError(
            f"on {found['sequences']}, L0H{head} pays "
            f"{found['previous'][head]:.2f} of its attention to the previous token on average; "
            f"another layer-0 head pays {found['previous'].max():.2f}. Compare the four layer-0 "
            "heads on the previous-token score (not the current- or first-token score).")


@points(1)
def test_strongest_induction_head(submission):
    found = _findings()
    n_heads = len(found["induction"])
    head = _expect_head(submission.function("strongest_induction_head")(),
                        "strongest_induction_head", n_heads, 1)
    if head != found["ind_order"][0]:
        raise AssertionError(
            f"on {found['sequences']}, L1H{head}'s induction score "
            f"is {found['induction'][head]:.2f}, and another layer-1 head scores "
            f"{found['induction'].max():.2f}. The question is about the induction score of the "
            "layer-1 heads (attention to the token after the earlier copy), and the margins are "
            "small: read the numbers, not the bars.")


@points(1)
def test_composition_that_stands_out(submission):
    found = _findings()["over_chance"]
    got = submission.function("composition_that_stands_out")()
    if got not in ("Q", "K", "V"):
        raise SubmissionError('composition_that_stands_out should return "Q", "K" or "V", '
                              f"got {got!r}")
    best = max(found, key=found.get)
    if got != best:
        raise AssertionError(
            f"the strongest {got}-composition from layer 0 into "
            f"layer 1 is {found[got]:.2f} times the random baseline, and another kind reaches "
            f"{found[best]:.2f} times. Compare each kind's largest score with the random "
            "baseline of the same kind (check your composition_scores first: the K-composition "
            "uses the transposed QK circuit, and the early head's OV circuit is not transposed).")


@points(1)
def test_k_circuit_diagonal_fraction(submission):
    found = _findings()
    got = submission.function("k_circuit_diagonal_fraction")()
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        raise SubmissionError("k_circuit_diagonal_fraction should return a number (a fraction "
                              f"in [0, 1]), got {type(got).__name__}")
    if not 0.0 <= got <= 1.0:
        raise SubmissionError(f"k_circuit_diagonal_fraction: a fraction lies in [0, 1], got {got}")
    if abs(got - found["diagonal"]) > DIAGONAL_TOLERANCE:
        raise AssertionError(
            f"you answered {got:.3f}, which is more than "
            f"{DIAGONAL_TOLERANCE} away from the fraction the grader measures on the folded toy "
            "model. It is about one matrix: the strongest induction head's query (token "
            "embeddings through its W_Q) against keys made by the previous-token head's OV "
            "circuit and then the induction head's W_K, with BOS left out of both axes; count "
            "the rows whose largest entry is in the row's own column.")


# ------------------------------------------------------------------ k_composition_circuit
@points(2)
def test_k_composition_circuit(submission):
    k_composition_circuit = submission.function("k_composition_circuit")
    toy, found = _toy(), _findings()
    prev, ind = found["prev_order"][0], found["ind_order"][0]
    args = (toy["W_E"], toy["W_Q"][1, ind], toy["W_K"][1, ind], toy["W_V"][0, prev],
            toy["W_O"][0, prev])
    expected = ref.k_composition_circuit(*args)
    got = expect_tensor(k_composition_circuit(*args), "k_composition_circuit",
                        "query_token prev_token", tuple(expected.shape))
    assert_close(got, expected, "k_composition_circuit", atol=1e-3, rtol=1e-3,
                 what="scores", dims="query_token prev_token",
                 inputs="the folded toy model's previous-token head (early) and strongest "
                 "induction head (late)")
    # Random weights: a late head with d_head 4, an early head with d_head 6 (so the scale
    # 1 / sqrt(d_head) is 1/2 and differs from the early head's), no symmetry between rows and
    # columns.
    args = (_random((20, 12), 801), _random((12, 4), 802), _random((12, 4), 803),
            _random((12, 6), 804), _random((6, 12), 805))
    expected = ref.k_composition_circuit(*args)
    got = expect_tensor(k_composition_circuit(*args), "k_composition_circuit",
                        "query_token prev_token", (20, 20))
    assert_close(got, expected, "k_composition_circuit", atol=1e-4, rtol=1e-3,
                 what="scores", dims="query_token prev_token",
                 inputs="random weights: d_vocab 20, d_model 12, late head d_head 4, early head "
                 "d_head 6")


# Shared openings of the investigations' mutants: they run in the sandbox, so they load the
# toy model and measure from it, and stay wrong after a retrain.
_HEAD_SCORES = '''
def _layer_scores(layer, kind):
    from utils.data import repeated_random_tokens
    from utils.head_scores import induction_score
    from utils.toy_models import load_toy_model
    model = load_toy_model("attn_only_2l")
    tokens = repeated_random_tokens(8, 30, model.cfg.d_vocab, seed=5, bos_token=0)
    with t.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("pattern"))
    pattern = cache["pattern", layer]
    if kind == "induction":
        return induction_score(pattern, 30)
    offset = {"previous": -1, "current": 0}[kind]
    return pattern[:, :, 1:, :].diagonal(offset=offset + 1, dim1=-2, dim2=-1).mean(dim=(0, -1))
'''

_COMPOSITION_RATIOS = '''
def _ratios():
    from utils.toy_models import load_toy_model
    model = load_toy_model("attn_only_2l")
    model.enable_compatibility_mode()

    def scores(W_Q, W_K, W_V, W_O):
        ov_early = {early}
        qk_late = FactoredMatrix(W_Q[1], W_K[1].transpose(-1, -2))[None]
        ov_late = FactoredMatrix(W_V[1], W_O[1])[None]
        return {{mode: (ov_early @ late).norm() / (ov_early.norm() * late.norm())
                for mode, late in (("Q", qk_late), ("K", {k_late}), ("V", ov_late))}}

    with t.no_grad():
        weights = [model.W_Q, model.W_K, model.W_V, model.W_O]
        real = scores(*weights)
        gen = t.Generator().manual_seed(0)
        chance = scores(*[t.randn(w.shape, generator=gen) for w in weights])
    return {{mode: (real[mode].max() / chance[mode].mean()).item() for mode in "QKV"}}
'''

_DIAGONAL = '''
def order(layer, kind):
    return _layer_scores(layer, kind).argsort(descending=True).tolist()


def k_circuit_diagonal_fraction():
    from utils.toy_models import load_toy_model
    model = load_toy_model("attn_only_2l")
    model.enable_compatibility_mode()
    early, late = {early}, order(1, "induction")[0]
    with t.no_grad():
        W_E, W_Q, W_K = model.W_E, model.W_Q[1, late], model.W_K[1, late]
        if early is None:
            circuit = (W_E @ W_Q) @ (W_E @ W_K).T
        elif early == "query side":
            prev = order(0, "previous")[0]
            ov = model.W_V[0, prev] @ model.W_O[0, prev]
            circuit = (W_E @ ov @ W_Q) @ (W_E @ W_K).T
        else:
            ov = model.W_V[0, early] @ model.W_O[0, early]
            circuit = (W_E @ W_Q) @ (W_E @ ov @ W_K).T
    inner = circuit[1:, 1:]
    return (inner.argmax(dim=-1) == t.arange(inner.shape[0])).float().mean().item()
'''


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
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)''', hint=1),
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
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)''', hint=3),
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
    return scores.masked_fill(future, float("-inf"))''', hint=1),
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
    return scores.masked_fill(future, float("-inf"))''', hint=3),
    },
    "ov_copying_scores": {
        "eigenvalues_of_W_OV": Mistake(
            "you took the eigenvalues of W_V W_O alone: the copying score is about tokens, so "
            "use the full OV circuit W_E W_V W_O W_U",
            '''def ov_copying_scores(W_E, W_V, W_O, W_U):
    eig = FactoredMatrix(W_V, W_O).eigenvalues
    return eig.real.sum(-1) / eig.abs().sum(-1)''', hint=1),
        "embedding_transposed_as_unembedding": Mistake(
            "you used the transposed embedding as the unembedding: the full OV circuit ends in "
            "the model's own W_U, which need not equal W_E.T",
            '''def ov_copying_scores(W_E, W_V, W_O, W_U):
    eig = FactoredMatrix(W_E @ W_V, W_O @ W_E.T).eigenvalues
    return eig.real.sum(-1) / eig.abs().sum(-1)''', hint=2),
        "abs_of_real_parts": Mistake(
            "you summed the absolute values of the real parts: negative eigenvalues "
            "(anti-copying) must count against the score, so sum the real parts as they are",
            '''def ov_copying_scores(W_E, W_V, W_O, W_U):
    eig = FactoredMatrix(W_E @ W_V, W_O @ W_U).eigenvalues
    return eig.real.abs().sum(-1) / eig.abs().sum(-1)''', hint=3),
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
            "V": score(ov_late, ov_early)}''', hint=1),
        "not_normalised": Mistake(
            "you returned the bare Frobenius norm of the product: divide by the product of the "
            "two matrices' norms, so the scores are comparable between heads",
            '''def composition_scores(W_Q, W_K, W_V, W_O, early, late):
    ov_early = FactoredMatrix(W_V[early], W_O[early])[:, None]
    qk = FactoredMatrix(W_Q[late], W_K[late].transpose(-1, -2))[None]
    ov_late = FactoredMatrix(W_V[late], W_O[late])[None]
    return {"Q": (ov_early @ qk).norm(), "K": (ov_early @ qk.T).norm(),
            "V": (ov_early @ ov_late).norm()}''', hint=1),
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
    "previous_token_head": {
        "runner_up": Mistake(
            "you named the layer-0 head with the second-highest previous-token score: it attends "
            "to the previous token too, but less than another head does",
            _HEAD_SCORES + '''
def previous_token_head():
    return int(_layer_scores(0, "previous").argsort(descending=True)[1])''', hint=1),
        "current_token_head": Mistake(
            "you named the head that attends most to the destination itself (the current-token "
            "score): the question is about attention to the position just before it",
            _HEAD_SCORES + '''
def previous_token_head():
    return int(_layer_scores(0, "current").argmax())''', hint=2),
    },
    "strongest_induction_head": {
        "runner_up": Mistake(
            "you named a layer-1 head whose induction score is high but not the highest: all "
            "four are induction heads, and the question asks for the strongest",
            _HEAD_SCORES + '''
def strongest_induction_head():
    return int(_layer_scores(1, "induction").argsort(descending=True)[1])''', hint=1),
        "previous_token_head_index": Mistake(
            "you answered with the previous-token head's index: the question is about the "
            "layer-1 heads and their induction scores",
            _HEAD_SCORES + '''
def strongest_induction_head():
    return int(_layer_scores(0, "previous").argmax())''', hint=2),
    },
    "composition_that_stands_out": {
        "k_as_q": Mistake(
            "you reported V: V-composition is above chance, but another kind is further above. "
            "If your K-composition scores equal your Q-composition ones, your composition_scores "
            "used the late head's QK circuit untransposed for K: fix it, then compare again",
            _COMPOSITION_RATIOS.format(early="FactoredMatrix(W_V[0], W_O[0])[:, None]",
                                       k_late="qk_late") + '''
def composition_that_stands_out():
    ratios = _ratios()
    return max(ratios, key=ratios.get)''', hint=1),
        "transposed_early_ov": Mistake(
            "you reported Q, which is at or below chance in the chapter's scores. If your "
            "composition_scores transposes the early head's OV circuit (W_O^T W_V^T instead of "
            "W_V W_O), Q seems to stand out: fix it, then compare again",
            _COMPOSITION_RATIOS.format(early="FactoredMatrix(W_V[0], W_O[0]).T[:, None]",
                                       k_late="qk_late.T") + '''
def composition_that_stands_out():
    ratios = _ratios()
    return max(ratios, key=ratios.get)''', hint=1),
    },
    "k_composition_circuit": {
        "no_scale": Mistake(
            "you left out attention's scale: the scores are in the units the softmax sees, so "
            "divide by the square root of the late head's d_head",
            '''def k_composition_circuit(W_E, W_Q, W_K, W_V_prev, W_O_prev):
    return (W_E @ W_Q) @ (W_E @ W_V_prev @ W_O_prev @ W_K).T''', hint=2),
        "early_head_scale": Mistake(
            "you scaled by the early head's d_head: the score is the late head's, so divide by "
            "the square root of W_Q.shape[-1]",
            '''def k_composition_circuit(W_E, W_Q, W_K, W_V_prev, W_O_prev):
    scores = (W_E @ W_Q) @ (W_E @ W_V_prev @ W_O_prev @ W_K).T
    return scores / math.sqrt(W_V_prev.shape[-1])''', hint=2),
        "rows_and_columns_swapped": Mistake(
            "your matrix is transposed: rows are the destination's token (the query side, "
            "W_E W_Q) and columns the source's previous token (the key side)",
            '''def k_composition_circuit(W_E, W_Q, W_K, W_V_prev, W_O_prev):
    scores = (W_E @ W_V_prev @ W_O_prev @ W_K) @ (W_E @ W_Q).T
    return scores / math.sqrt(W_Q.shape[-1])''', hint=1),
        "ov_on_query_side": Mistake(
            "you put the early head's OV circuit on the query side: that is a Q-composition "
            "circuit; here the early head writes into the source position, which the late head "
            "reads through W_K",
            '''def k_composition_circuit(W_E, W_Q, W_K, W_V_prev, W_O_prev):
    scores = (W_E @ W_V_prev @ W_O_prev @ W_Q) @ (W_E @ W_K).T
    return scores / math.sqrt(W_Q.shape[-1])''', hint=3),
        "early_head_left_out": Mistake(
            "you left out the early head: the keys are made from what the early head writes "
            "(each embedding through W_V_prev W_O_prev), then read through W_K",
            '''def k_composition_circuit(W_E, W_Q, W_K, W_V_prev, W_O_prev):
    return (W_E @ W_Q) @ (W_E @ W_K).T / math.sqrt(W_Q.shape[-1])''', hint=1),
    },
    "k_circuit_diagonal_fraction": {
        "second_previous_token_head": Mistake(
            "you used the layer-0 head with the second-highest previous-token score: the "
            "question is about the previous-token head, the highest",
            _HEAD_SCORES + _DIAGONAL.format(early="order(0, 'previous')[1]") , hint=1),
        "own_token_circuit": Mistake(
            "you measured the induction head's own token QK circuit (W_E W_Q W_K^T W_E^T): the "
            "keys must be read through the previous-token head's OV circuit first",
            _HEAD_SCORES + _DIAGONAL.format(early=None), hint=1),
        "ov_on_query_side": Mistake(
            "you put the previous-token head's OV circuit on the query side: it writes into "
            "the source position, which the induction head reads through W_K",
            _HEAD_SCORES + _DIAGONAL.format(early="'query side'"), hint=3),
    },
}
