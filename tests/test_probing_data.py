"""Tests for utils.probing_data (chapter 04's labelled datasets) and utils.probing_models."""

from __future__ import annotations

import collections

import pytest
import torch

from utils.probing_data import (
    NOUN_PAIRS,
    make_arithmetic_truth_dataset,
    make_subject_number_dataset,
    stratified_split,
    tokenize_with_last_positions,
)

SINGULAR = {s for s, _ in NOUN_PAIRS}
PLURAL = {p for _, p in NOUN_PAIRS}


def test_subject_number_labels_are_exact():
    data = make_subject_number_dataset(400, seed=3)
    assert len(data["prompt"]) == 400
    for i, prompt in enumerate(data["prompt"]):
        assert prompt == (f"The {data['subject'][i]} {data['preposition'][i]} the "
                          f"{data['attractor'][i]}")
        words = prompt.split()
        subject, attractor = words[1], words[-1]
        assert data["label"][i] == (1 if subject in PLURAL else 0)
        assert subject in (PLURAL if data["label"][i] else SINGULAR)
        assert attractor in (PLURAL if data["attractor_label"][i] else SINGULAR)
        lemma = data["subject_lemma"][i]
        assert (lemma, subject) in NOUN_PAIRS or (lemma == subject and lemma in SINGULAR)
        assert not attractor.startswith(lemma)  # different nouns


def test_subject_number_is_balanced_seeded_and_shuffled():
    data = make_subject_number_dataset(400, seed=1)
    cells = collections.Counter(zip(data["label"], data["attractor_label"]))
    assert cells == {(0, 0): 100, (0, 1): 100, (1, 0): 100, (1, 1): 100}
    assert make_subject_number_dataset(400, seed=1) == data
    assert make_subject_number_dataset(400, seed=2)["prompt"] != data["prompt"]
    assert data["label"][:20] != sorted(data["label"][:20])  # shuffled
    with pytest.raises(ValueError):
        make_subject_number_dataset(10)


def test_noun_forms_are_distinct():
    assert len(SINGULAR) == len(PLURAL) == len(NOUN_PAIRS)
    assert not SINGULAR & PLURAL


def test_arithmetic_truth_labels_and_balance():
    data = make_arithmetic_truth_dataset(320, seed=0)
    per_answer = collections.Counter(zip(data["c"], data["label"]))
    assert set(per_answer.values()) == {20}  # every answer digit: 20 true, 20 false
    for prompt, label, a, b, c in zip(data["prompt"], data["label"], data["a"], data["b"],
                                      data["c"]):
        assert prompt == f"{a} + {b} = {c}"
        assert label == int(a + b == c)
        assert a + b <= 9 and (label or 1 <= abs(a + b - c) <= 2)
    assert make_arithmetic_truth_dataset(320, seed=0) == data
    with pytest.raises(ValueError):
        make_arithmetic_truth_dataset(100)


def test_stratified_split_holds_out_the_same_fraction_of_each_class():
    y = torch.tensor([0] * 70 + [1] * 30)
    is_train = stratified_split(y, 0.3, seed=4)
    assert int((~is_train & (y == 0)).sum()) == 21 and int((~is_train & (y == 1)).sum()) == 9
    assert torch.equal(is_train, stratified_split(y, 0.3, seed=4))
    assert not torch.equal(is_train, stratified_split(y, 0.3, seed=5))


class _FakeTokenizer:
    pad_token_id = 2


class _FakeModel:
    tokenizer = _FakeTokenizer()

    def to_tokens(self, text):
        return torch.tensor([[1] + [10 + len(w) for w in text.split()]])


def test_tokenize_with_last_positions_pads_right():
    tokens, last = tokenize_with_last_positions(_FakeModel(), ["a bb", "a bb ccc dd", "x"])
    assert tokens.shape == (3, 5)
    assert last.tolist() == [2, 4, 1]
    assert tokens[0].tolist() == [1, 11, 12, 2, 2]
    assert tokens[2].tolist() == [1, 11, 2, 2, 2]


@pytest.fixture(scope="module")
def tokenizer():
    from utils import smollm2

    if smollm2.cache_problem() is not None:
        pytest.skip("SmolLM2 cache not built")
    return smollm2.load_smollm2_tokenizer()


def test_nouns_are_single_tokens_so_length_never_depends_on_the_label(tokenizer):
    for singular, plural in NOUN_PAIRS:
        assert len(tokenizer.tokenize(" " + singular)) == 1, singular
        assert len(tokenizer.tokenize(" " + plural)) == 1, plural
    data = make_subject_number_dataset(200, seed=0)
    lengths = collections.defaultdict(set)
    for prompt, label, prep in zip(data["prompt"], data["label"], data["preposition"]):
        lengths[prep].add((label, len(tokenizer.tokenize(prompt))))
    for prep, seen in lengths.items():
        assert {n for _, n in seen} == {len(prep.split()) + 4}, prep
        assert {label for label, _ in seen} == {0, 1}, prep


@pytest.mark.slow
def test_randomly_initialised_restores_the_trained_weights():
    from utils import smollm2
    from utils.probing_models import randomly_initialised

    if smollm2.cache_problem() is not None:
        pytest.skip("SmolLM2 cache not built")
    model = smollm2.load_smollm2(verbose=False)
    tokens = model.to_tokens("The dogs near the car")
    with torch.no_grad():
        before = model(tokens)
        with randomly_initialised(model, seed=0) as twin:
            random_logits = twin(tokens)
            first = next(twin.original_model.parameters()).detach().clone()
            with pytest.raises(smollm2.SharedModelChanged, match="randomly_initialised"):
                smollm2.load_smollm2(verbose=False)  # nobody else gets the random weights
            with pytest.raises(smollm2.SharedModelChanged, match="already changed"):
                with randomly_initialised(model, seed=1):
                    pass
        after = model(tokens)
        with randomly_initialised(model, seed=0) as twin:
            again = next(twin.original_model.parameters()).detach().clone()
    assert (random_logits - before).abs().max() > 1.0
    assert torch.equal(first, again)  # seeded
    assert torch.equal(before, after)  # restored exactly
    assert smollm2.load_smollm2(verbose=False) is model
