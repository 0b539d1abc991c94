"""What chapter 01 says about the shipped toy model (section 6, "what a head reads"), recomputed.

The chapter's narrative rests on facts a retrain of ``attn_only_2l`` could change: the layer-0
heads' queries and keys read position while their values read the token, and the induction
head's keys come mostly from the previous-token head. They are recomputed here with
``utils.reference.residual_stream.key_read_shares``, on the chapter's own input, and every head
is found by computation (never a fixed index).
"""

from __future__ import annotations

import functools

import einops
import pytest
import torch

from utils.data import repeated_random_tokens
from utils.head_scores import induction_score, previous_token_score
from utils.paths import WEIGHTS_DIR
from utils.reference.residual_stream import key_read_shares
from utils.toy_models import load_toy_model

HALF = 40  # the chapter's repeated-token input: batch 16, half length 40, seed 1


def _residual_parts(model, cache, layer: int) -> tuple[torch.Tensor, list[str]]:
    """The parts that sum to ``blocks.{layer}.hook_resid_pre`` (as in the chapter)."""
    parts = [cache["hook_embed"], cache["hook_pos_embed"]]
    names = ["token", "position"]
    for earlier in range(layer):
        per_head = einops.einsum(cache["z", earlier], model.W_O[earlier],
                                 "b p h d, h d m -> h b p m")
        parts += list(per_head) + [model.b_O[earlier].expand_as(parts[0])]
        names += [f"head {earlier}.{h}" for h in range(model.cfg.n_heads)] + [f"b_O {earlier}"]
    return torch.stack(parts), names


@functools.cache
def _facts() -> dict:
    if not (WEIGHTS_DIR / "attn_only_2l").is_dir():
        pytest.skip("the shipped toy model attn_only_2l is not built yet")
    model = load_toy_model("attn_only_2l")
    tokens = repeated_random_tokens(batch=16, half_len=HALF, d_vocab=model.cfg.d_vocab, seed=1,
                                    bos_token=0)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
        state = model.state_dict()
        prev = torch.stack([previous_token_score(cache["pattern", L])
                            for L in range(model.cfg.n_layers)])
        ind = torch.stack([induction_score(cache["pattern", L], half_len=HALF)
                           for L in range(model.cfg.n_layers)])
        shares, names = {}, {}
        for L in range(model.cfg.n_layers):
            parts, names[L] = _residual_parts(model, cache, L)
            gamma = state[f"blocks.{L}.ln1.weight"]
            scale = cache[f"blocks.{L}.ln1.hook_scale"]
            for h in range(model.cfg.n_heads):
                for kind, W in (("Q", model.W_Q), ("K", model.W_K), ("V", model.W_V)):
                    shares[L, h, kind] = key_read_shares(parts, scale, gamma[:, None] * W[L, h])
        # The exact split the exercise relies on: per-part key contributions rebuild the keys.
        parts1, _ = _residual_parts(model, cache, 1)
        scale1 = cache["blocks.1.ln1.hook_scale"]
        W_K = state["blocks.1.ln1.weight"][:, None] * model.W_K[1]  # [head, d_model, d_head]
        k_parts = einops.einsum((parts1 - parts1.mean(-1, keepdim=True)) / scale1, W_K,
                                "c b p m, h m d -> c b p h d")
        constant = einops.einsum(state["blocks.1.ln1.bias"], model.W_K[1],
                                 "m, h m d -> h d") + model.b_K[1]
        rebuild_error = (k_parts.sum(0) + constant - cache["k", 1]).abs().max().item()
    return {"model": model, "prev": prev, "ind": ind, "shares": shares, "names": names,
            "rebuild_error": rebuild_error}


def test_key_contributions_rebuild_the_keys():
    assert _facts()["rebuild_error"] < 1e-4


def test_layer0_queries_keys_read_position_values_read_tokens():
    facts = _facts()
    names, shares = facts["names"][0], facts["shares"]
    token, position = names.index("token"), names.index("position")
    for h in range(facts["model"].cfg.n_heads):
        assert shares[0, h, "Q"][position] > 0.6, h
        assert shares[0, h, "K"][position] > 0.6, h
        assert shares[0, h, "V"][token] > 0.5, h


def test_induction_keys_read_the_previous_token_heads():
    facts = _facts()
    prev_head = int(facts["prev"][0].argmax())
    second_prev = int(facts["prev"][0].argsort(descending=True)[1])
    ind_head = int(facts["ind"][1].argmax())
    assert facts["prev"][0, prev_head] > 0.4 and facts["ind"][1, ind_head] > 0.6
    names, shares = facts["names"][1], facts["shares"]
    k = shares[1, ind_head, "K"]
    order = k.argsort(descending=True).tolist()
    assert names[order[0]] == f"head 0.{prev_head}" and k[order[0]] > 0.4
    assert names[order[1]] == f"head 0.{second_prev}"
    assert k[names.index("token")] < 0.1
    for kind in "QV":  # queries and values read the current token most
        assert names[int(shares[1, ind_head, kind].argmax())] == "token", kind
    for name in names:  # biases are constant over samples: (almost) no share
        if name.startswith("b_O"):
            assert abs(k[names.index(name)]) < 0.02


def test_shares_sum_to_one():
    for value in _facts()["shares"].values():
        assert abs(value.sum().item() - 1) < 1e-3
