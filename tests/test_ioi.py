"""Tests for utils.ioi: single-token names, aligned layout, corruptions, seeding."""

from __future__ import annotations

import pytest
import torch

from utils import ioi


@pytest.fixture(scope="module")
def tokenizer():
    from utils.smollm2 import load_smollm2_tokenizer

    return load_smollm2_tokenizer()


def test_single_token_names_filters_multi_token_names(tokenizer):
    names = ioi.single_token_names(tokenizer)
    assert "Mary" in names and "John" in names
    assert "Xavier" not in names and "Priya" not in names  # split by SmolLM2's tokenizer
    for name in names:
        assert len(tokenizer(" " + name, add_special_tokens=False)["input_ids"]) == 1
    assert len(names) >= 30


def test_name_token_id_needs_leading_space(tokenizer):
    mary = ioi.name_token_id(tokenizer, "Mary")
    assert tokenizer.decode([mary]) == " Mary"
    with pytest.raises(ValueError):
        ioi.name_token_id(tokenizer, "Xavier")


@pytest.mark.parametrize("corruption", ioi.CORRUPTIONS)
def test_layout_and_corruption(tokenizer, corruption):
    data = ioi.make_ioi_dataset(tokenizer, n_prompts=12, seed=3, corruption=corruption)
    n = len(data)
    assert n == 12 and data.clean_tokens.shape == data.corrupted_tokens.shape == (n, ioi.SEQ_LEN)
    assert (data.clean_tokens[:, 0] == tokenizer.bos_token_id).all()
    # Only S2 differs between clean and corrupted.
    differs = (data.clean_tokens != data.corrupted_tokens)
    assert differs[:, ioi.POSITIONS["S2"]].all()
    differs[:, ioi.POSITIONS["S2"]] = False
    assert not differs.any()
    rows = torch.arange(n)
    assert torch.equal(data.clean_tokens[rows, data.positions["IO"]], data.answer_tokens[:, 0])
    assert torch.equal(data.clean_tokens[rows, data.positions["S1"]], data.answer_tokens[:, 1])
    assert torch.equal(data.clean_tokens[rows, data.positions["S2"]], data.answer_tokens[:, 1])
    s2 = data.corrupted_tokens[:, ioi.POSITIONS["S2"]]
    if corruption == "flip":
        assert torch.equal(s2, data.answer_tokens[:, 0])
    else:
        assert not (s2 == data.answer_tokens[:, 0]).any()
        assert not (s2 == data.answer_tokens[:, 1]).any()
    # Half ABBA, half BABA.
    assert sum(data.io_first) == n // 2
    assert (data.positions["END"] == ioi.SEQ_LEN - 1).all()


def test_seeded(tokenizer):
    a = ioi.make_ioi_dataset(tokenizer, n_prompts=6, seed=1)
    b = ioi.make_ioi_dataset(tokenizer, n_prompts=6, seed=1)
    c = ioi.make_ioi_dataset(tokenizer, n_prompts=6, seed=2)
    assert a.prompts == b.prompts and torch.equal(a.clean_tokens, b.clean_tokens)
    assert a.prompts != c.prompts


def test_names_argument_and_errors(tokenizer):
    data = ioi.make_ioi_dataset(tokenizer, n_prompts=4, seed=0,
                                names=["Mary", "John", "Tom", "Xavier"])
    assert set(data.io_names + data.s_names + data.corrupt_names) <= {"Mary", "John", "Tom"}
    with pytest.raises(ValueError):
        ioi.make_ioi_dataset(tokenizer, n_prompts=2, names=["Mary", "Xavier", "Priya"])
    with pytest.raises(ValueError):
        ioi.make_ioi_dataset(tokenizer, n_prompts=2, corruption="shuffle")


def test_accepts_a_model_like_object(tokenizer):
    class Holder:
        pass

    holder = Holder()
    holder.tokenizer = tokenizer
    a = ioi.make_ioi_dataset(holder, n_prompts=2, seed=5)
    b = ioi.make_ioi_dataset(tokenizer, n_prompts=2, seed=5)
    assert torch.equal(a.clean_tokens, b.clean_tokens)


def test_toy_circuits_have_the_three_signatures():
    """Serial, AND and OR, as chapter 5 teaches them: read off denoising and noising."""
    from utils.reference.activation_patching import toy_circuit_kinds, toy_patching_scores

    assert sorted(toy_circuit_kinds().values()) == ["AND", "OR", "serial"]
    clean, corrupted = torch.tensor([1.0, 0.9]), torch.tensor([0.0, 0.1])
    for circuit, kind in toy_circuit_kinds().items():
        denoise, noise = toy_patching_scores(circuit, clean, corrupted)
        if kind == "serial":  # the downstream component alone restores everything
            assert torch.allclose(denoise, torch.ones(2), atol=1e-5)
            assert torch.allclose(noise, torch.ones(2), atol=1e-5)
        elif kind == "AND":
            assert (denoise < 0.2).all() and (noise > 0.8).all()
        else:
            assert (denoise > 0.8).all() and (noise < 0.2).all()


def test_toy_circuit_override_recomputes_downstream():
    x = torch.tensor([1.0, 0.0])
    for circuit in ioi.TOY_CIRCUITS:
        plain = ioi.run_toy_circuit(circuit, x)
        same = ioi.run_toy_circuit(circuit, x, {"A": plain["A"]})
        assert torch.equal(plain["out"], same["out"])
    with pytest.raises(ValueError):
        ioi.run_toy_circuit("S", x)
