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


def test_shipped_model_ov_and_composition_facts():
    """Chapter 02, sections 4-5: which heads copy, and how strong the composition is."""
    model = _shipped()
    half = 30
    tokens = repeated_random_tokens(4, half, model.cfg.d_vocab, seed=0, bos_token=0)
    n_heads = model.cfg.n_heads
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        prev = ref.head_pattern_scores(cache["pattern", 0])["previous"]
        order = prev.argsort(descending=True).tolist()
        prev_head, second_prev, others = order[0], order[1], order[2:]
        # Layer 1 copies by both measures; layer 0 leans positive but never copies top-1.
        for layer in range(model.cfg.n_layers):
            copying = ref.ov_copying_scores(model.W_E, model.W_V[layer], model.W_O[layer],
                                            model.W_U)
            full = (model.W_E @ model.OV[layer] @ model.W_U).AB[:, 1:, 1:]  # skip BOS
            top1 = (full.argmax(-1) == torch.arange(full.shape[-1])).float().mean(-1)
            if layer == 1:
                assert (copying > 0.9).all() and (top1 > 0.8).all(), (copying, top1)
            else:
                assert (copying > 0).all() and (copying < 0.7).all() and (top1 < 0.1).all()
        comp = ref.composition_scores(model.W_Q, model.W_K, model.W_V, model.W_O, 0, 1)
        gen = torch.Generator().manual_seed(0)
        rand = [torch.randn(w.shape, generator=gen)
                for w in (model.W_Q, model.W_K, model.W_V, model.W_O)]
        baseline = {m: s.mean().item() for m, s in ref.composition_scores(*rand, 0, 1).items()}
        # The largest K-composition score the singular values allow (aligned directions).
        s_ov = torch.linalg.svdvals(model.W_V[0] @ model.W_O[0])[:, None]  # [h0, 1, d_model]
        s_qk = torch.linalg.svdvals(model.W_Q[1] @ model.W_K[1].transpose(-1, -2))[None]
        best = ((s_ov * s_qk).pow(2).sum(-1).sqrt()
                / (s_ov.norm(dim=-1) * s_qk.norm(dim=-1)))
    assert (comp["K"][prev_head] > 0.6 * best[prev_head]).all()
    assert (comp["K"][prev_head] > 1.5 * baseline["K"]).all()
    assert (comp["K"][second_prev] > 1.3 * baseline["K"]).all()
    assert (comp["K"][others] < 1.1 * baseline["K"]).all()
    assert (comp["Q"] < 1.1 * baseline["Q"]).all()
    assert comp["K"].shape == (n_heads, n_heads)


def test_shipped_model_path_expansion_facts():
    """Chapter 02, section 6: the losses of the path expansion and which virtual heads matter."""
    model = _shipped()
    half, n_heads = 40, model.cfg.n_heads
    tokens = repeated_random_tokens(8, half, model.cfg.d_vocab, seed=1, bos_token=0)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        x0 = cache["hook_embed"] + cache["hook_pos_embed"]
        scale0, scale1 = cache["blocks.0.ln1.hook_scale"], cache["blocks.1.ln1.hook_scale"]
        layer0 = ref.head_path_outputs(x0, cache["pattern", 0], scale0, model.W_V[0],
                                       model.W_O[0])
        layer1 = ref.head_path_outputs(x0, cache["pattern", 1], scale1, model.W_V[1],
                                       model.W_O[1])
        virtual = torch.stack([ref.head_path_outputs(layer0[h], cache["pattern", 1], scale1,
                                                     model.W_V[1], model.W_O[1])
                               for h in range(n_heads)])  # [head0, head1, batch, pos, d_model]
        final = cache["blocks.1.hook_resid_post"]
        remainder = final - x0 - layer0.sum(0) - layer1.sum(0) - virtual.sum((0, 1))
        terms = torch.cat([x0[None], layer0, layer1, virtual.flatten(0, 1), remainder[None]])
        kinds = (["direct"] + ["layer0"] * n_heads + ["layer1"] * n_heads
                 + ["virtual"] * n_heads**2 + ["biases"])
        first_head = [None] * (1 + 2 * n_heads) + [a for a in range(n_heads)
                                                   for _ in range(n_heads)] + [None]
        final_scale = cache["ln_final.hook_scale"]

        def loss(keep: list[bool]) -> float:
            return ref.loss_keeping_paths(terms, torch.tensor(keep), final_scale, model.W_U,
                                          tokens, half)

        def keeping(*groups: str) -> float:
            return loss([k == "biases" or k in groups for k in kinds])

        direct = keeping("direct")
        with_layer0 = keeping("direct", "layer0")
        with_layer1 = keeping("direct", "layer0", "layer1")
        everything = keeping("direct", "layer0", "layer1", "virtual")
        without_first = torch.tensor([loss([h != a for h in first_head]) - everything
                                      for a in range(n_heads)])
        pattern0 = ref.head_pattern_scores(cache["pattern", 0])
        comp_v = ref.composition_scores(model.W_Q, model.W_K, model.W_V, model.W_O, 0, 1)["V"]
    chance = math.log(model.cfg.d_vocab - 1)
    assert abs(direct - chance) < 0.5
    assert with_layer0 > direct - 0.3
    assert with_layer1 < 0.3 * chance
    assert everything < 0.5 * with_layer1
    top = set(without_first.topk(2).indices.tolist())
    assert top == set(comp_v.mean(dim=1).topk(2).indices.tolist())
    assert top == set(pattern0["current"].topk(2).indices.tolist())
    prev_head = int(pattern0["previous"].argmax())
    assert abs(without_first[prev_head]) < 0.03 and without_first[list(top)].min() > 0.05


def test_k_composition_circuit_matches_factored_matrices():
    """The reference against TransformerLens's own QK and OV circuits (FactoredMatrix)."""
    model = _random_model()
    with torch.no_grad():
        got = ref.k_composition_circuit(model.W_E, model.W_Q[1, 2], model.W_K[1, 2],
                                        model.W_V[0, 1], model.W_O[0, 1])
        keys = model.W_E @ model.OV[0, 1] @ model.W_K[1, 2]  # FactoredMatrix @ tensor
        expected = (model.W_E @ model.W_Q[1, 2]) @ keys.AB.T / math.sqrt(model.cfg.d_head)
    assert got.shape == (64, 64)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-3)


def test_k_composition_circuit_of_a_shift_is_below_the_diagonal():
    shift = torch.roll(torch.eye(4), shifts=1, dims=1)  # the early head writes e_(i+1) at e_i
    got = ref.k_composition_circuit(torch.eye(4), torch.eye(4), torch.eye(4), torch.eye(4), shift)
    # Token a's query matches the key of a source whose previous token is b = a - 1 (mod 4).
    torch.testing.assert_close(got, 0.5 * torch.roll(torch.eye(4), shifts=1, dims=0))


def test_diagonal_argmax_fraction_leaves_out_the_first_row_and_column():
    circuit = torch.eye(5) * 3 - 1
    circuit[2] = torch.tensor([9.0, 0.0, 1.0, 5.0, 0.0])  # peaks at column 3 (column 0 skipped)
    circuit[4] = torch.tensor([9.0, 0.0, 0.0, 0.0, 2.0])  # peaks on the diagonal once BOS is out
    assert ref.diagonal_argmax_fraction(circuit) == 0.75
    assert ref.diagonal_argmax_fraction(circuit, skip=0) == 0.6


def test_composition_over_chance_divides_by_the_random_mean():
    model = _random_model()
    with torch.no_grad():
        weights = (model.W_Q, model.W_K, model.W_V, model.W_O)
        ratios = ref.composition_over_chance(*weights, 0, 1, seed=5)
        real = ref.composition_scores(*weights, 0, 1)
        gen = torch.Generator().manual_seed(5)
        chance = ref.composition_scores(*[torch.randn(w.shape, generator=gen) for w in weights],
                                        0, 1)
    for mode in "QKV":
        assert ratios[mode] == pytest.approx((real[mode].max() / chance[mode].mean()).item())


def test_shipped_model_token_level_k_composition_facts():
    """Chapter 02, section 5: read token by token, K-composition through the previous-token
    head puts (nearly) every row's peak on the diagonal; without it, none."""
    model = _shipped()
    half = 30
    tokens = repeated_random_tokens(4, half, model.cfg.d_vocab, seed=0, bos_token=0)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        order = ref.head_pattern_scores(cache["pattern", 0])["previous"].argsort(descending=True)
        prev_head, second_prev = int(order[0]), int(order[1])
        ratios = ref.composition_over_chance(model.W_Q, model.W_K, model.W_V, model.W_O, 0, 1)
        fractions = {}
        for early in range(model.cfg.n_heads):
            for late in range(model.cfg.n_heads):
                circuit = ref.k_composition_circuit(model.W_E, model.W_Q[1, late],
                                                    model.W_K[1, late], model.W_V[0, early],
                                                    model.W_O[0, early])
                fractions[early, late] = ref.diagonal_argmax_fraction(circuit)
        own = [ref.diagonal_argmax_fraction(model.W_E @ model.W_Q[1, h] @ model.W_K[1, h].T
                                            @ model.W_E.T) for h in range(model.cfg.n_heads)]
    assert max(ratios, key=ratios.get) == "K"
    assert min(fractions[prev_head, late] for late in range(model.cfg.n_heads)) >= 0.9
    assert min(fractions[second_prev, late] for late in range(model.cfg.n_heads)) >= 0.8
    others = [h for h in range(model.cfg.n_heads) if h not in (prev_head, second_prev)]
    assert max(fractions[h, late] for h in others for late in range(model.cfg.n_heads)) <= 0.3
    assert max(own) <= 0.05
