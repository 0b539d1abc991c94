"""Tests of ``utils.reference.qk_ov_circuits`` (the references chapter 02's checks trust).

Each reference is compared with TransformerLens's own computation or a hand-made case, and
the shipped toy model is checked for the facts chapter 02 relies on (found by computation,
never by a fixed head index).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from utils.data import repeated_random_tokens
from utils.head_scores import previous_token_score
from utils.paths import WEIGHTS_DIR
from utils.reference import qk_ov_circuits as ref
from utils.toy_models import attn_only_config, load_toy_model, make_toy_model


@functools.cache
def _random_model():
    model = make_toy_model(attn_only_config(d_vocab=64, n_ctx=32), seed=3)
    model.enable_compatibility_mode()
    return model


@functools.cache
def _shipped():
    if not (WEIGHTS_DIR / "attn_only_2l").is_dir():
        pytest.skip("the shipped toy model attn_only_2l is not built yet")
    model = load_toy_model("attn_only_2l")
    model.enable_compatibility_mode()
    return model


def test_pattern_matches_the_model():
    model = _random_model()
    tokens = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    for layer in range(2):
        got = ref.attention_pattern_from_qk(cache[f"blocks.{layer}.attn.hook_q"],
                                            cache[f"blocks.{layer}.attn.hook_k"])
        torch.testing.assert_close(got, cache["pattern", layer], atol=1e-5, rtol=1e-5)


def test_pattern_grouped_query_heads_follow_repeat_kv():
    q = torch.randn(1, 5, 4, 8)
    k = torch.randn(1, 5, 2, 8)
    got = ref.attention_pattern_from_qk(q, k)
    full = ref.attention_pattern_from_qk(q, k[:, :, [0, 0, 1, 1]])
    torch.testing.assert_close(got, full)


def test_head_pattern_scores_agree_with_head_scores_module():
    pattern = torch.randn(2, 3, 7, 7).masked_fill(torch.ones(7, 7).triu(1).bool(),
                                                  float("-inf")).softmax(-1)
    scores = ref.head_pattern_scores(pattern)
    torch.testing.assert_close(scores["previous"], previous_token_score(pattern))
    total = scores["previous"] + scores["current"] + scores["first"]
    assert (total <= 1 + 1e-5).all()


def test_positional_scores_match_tl_qk():
    model = _random_model()
    with torch.no_grad():
        W_pos = model.W_pos[:10]
        expected = (W_pos @ model.QK[1] @ W_pos.T).AB / math.sqrt(model.cfg.d_head)
        got = ref.positional_qk_scores(W_pos, model.W_Q[1], model.W_K[1])
    lower = ~torch.ones(10, 10, dtype=torch.bool).triu(1)
    torch.testing.assert_close(got[:, lower], expected[:, lower], atol=1e-4, rtol=1e-4)
    assert torch.isneginf(got[:, ~lower]).all()


def test_copying_score_extremes_and_tl_eigenvalues():
    eye = torch.eye(5)
    W_V = eye[None, :, :2].repeat(2, 1, 1)
    W_O = torch.stack([eye[:2], -eye[:2]])
    torch.testing.assert_close(ref.ov_copying_scores(eye, W_V, W_O, eye),
                               torch.tensor([1.0, -1.0]))
    model = _random_model()
    with torch.no_grad():
        eig = (model.W_E @ model.OV[0] @ model.W_U).eigenvalues
        expected = eig.real.sum(-1) / eig.abs().sum(-1)
        got = ref.ov_copying_scores(model.W_E, model.W_V[0], model.W_O[0], model.W_U)
    torch.testing.assert_close(got, expected.float(), atol=1e-3, rtol=1e-3)


def test_composition_scores_match_tl():
    model = _random_model()
    with torch.no_grad():
        got = ref.composition_scores(model.W_Q, model.W_K, model.W_V, model.W_O, 0, 1)
        for mode in "QKV":
            expected = model.all_composition_scores(mode)[0, :, 1, :]
            torch.testing.assert_close(got[mode], expected.float(), atol=1e-4, rtol=1e-4)


def test_head_path_outputs_rebuild_the_attention_output():
    model = _random_model()
    tokens = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        x0 = cache["hook_embed"] + cache["hook_pos_embed"]
        out = ref.head_path_outputs(x0, cache["pattern", 0], cache["blocks.0.ln1.hook_scale"],
                                    model.W_V[0], model.W_O[0])
        torch.testing.assert_close(out.sum(0) + model.b_O[0], cache["blocks.0.hook_attn_out"],
                                   atol=1e-4, rtol=1e-4)


def test_loss_keeping_everything_is_the_model_loss():
    model = _random_model()
    half = 6
    tokens = repeated_random_tokens(2, half, 64, seed=2, bos_token=0)
    with torch.no_grad():
        loss, cache = model.run_with_cache(tokens, return_type="loss", loss_per_token=True)
        resid = cache["blocks.1.hook_resid_post"]
        terms = torch.stack([resid * 0.25, resid * 0.75])
        got = ref.loss_keeping_paths(terms, torch.tensor([True, True]),
                                     cache["ln_final.hook_scale"], model.W_U, tokens, half)
    assert abs(got - loss[:, -(half - 1):].mean().item()) < 1e-4


def test_shipped_model_circuit_facts():
    """What chapter 02 shows on the shipped model, recomputed (no fixed head indices)."""
    model = _shipped()
    half = 30
    tokens = repeated_random_tokens(4, half, model.cfg.d_vocab, seed=0, bos_token=0)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        prev = ref.head_pattern_scores(cache["pattern", 0])["previous"]
        prev_head = int(prev.argmax())
        assert prev[prev_head] > 0.4
        # The previous-token head is visible in the positional QK circuit alone (W_pos divided
        # by the typical LayerNorm scale, softmax, previous-token score), as the chapter shows.
        n = tokens.shape[1]
        typical = cache["blocks.0.ln1.hook_scale"].mean()
        scores = ref.positional_qk_scores(model.W_pos[:n] / typical, model.W_Q[0], model.W_K[0])
        predicted = ref.head_pattern_scores(scores.softmax(-1)[None])["previous"]
        assert int(predicted.argmax()) == prev_head
        # The strongest K-composition runs from the previous-token head into layer 1.
        comp = ref.composition_scores(model.W_Q, model.W_K, model.W_V, model.W_O, 0, 1)
        assert int(comp["K"].max(dim=1).values.argmax()) == prev_head
