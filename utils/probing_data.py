"""Labelled, seeded datasets for chapter 04 (probing), made from templates.

Every example is a dict entry in parallel lists, so the labels are exact by construction
(no model, no annotation):

* :func:`make_subject_number_dataset` — "The dog near the cars" (the model continues with
  " is"/" are"). ``label`` is the grammatical number of the *subject* (0 singular, 1 plural);
  an *attractor* noun of independent number sits between subject and verb, so a probe that
  only reads the last token's own number scores 50%. All nouns are single SmolLM2 tokens in
  both forms, so a prompt's length never depends on its label (no label leak through
  position).
* :func:`make_arithmetic_truth_dataset` — "2 + 3 = 5" (true) or "2 + 3 = 6" (false), with
  every answer digit equally often true and false (so the last token alone says nothing).

:func:`tokenize_with_last_positions` turns prompts into a right-padded batch plus the index
of each prompt's last real token (read activations there, never at position -1 of a padded
batch).
"""

from __future__ import annotations

import random
from typing import Any

import torch

# Singular/plural pairs: each form is one SmolLM2 token when preceded by a space.
NOUN_PAIRS: list[tuple[str, str]] = [
    ("dog", "dogs"), ("cat", "cats"), ("car", "cars"), ("boy", "boys"), ("girl", "girls"),
    ("key", "keys"), ("book", "books"), ("tree", "trees"), ("house", "houses"),
    ("bird", "birds"), ("student", "students"), ("teacher", "teachers"),
    ("friend", "friends"), ("doctor", "doctors"), ("table", "tables"),
    ("window", "windows"), ("door", "doors"), ("apple", "apples"), ("song", "songs"),
    ("river", "rivers"), ("bottle", "bottles"), ("cup", "cups"), ("chair", "chairs"),
    ("box", "boxes"), ("road", "roads"), ("horse", "horses"), ("farmer", "farmers"),
    ("painting", "paintings"), ("flower", "flowers"), ("letter", "letters"),
    ("picture", "pictures"), ("lamp", "lamps"), ("desk", "desks"), ("phone", "phones"),
    ("computer", "computers"), ("ship", "ships"), ("train", "trains"), ("king", "kings"),
    ("queen", "queens"), ("child", "children"), ("woman", "women"), ("man", "men"),
    ("player", "players"), ("worker", "workers"), ("singer", "singers"),
    ("writer", "writers"), ("officer", "officers"), ("baby", "babies"), ("kid", "kids"),
    ("toy", "toys"),
]
PREPOSITIONS: list[str] = ["near", "behind", "beside", "next to", "with", "under", "above",
                           "of", "for", "by"]
VERBS: tuple[str, str] = (" is", " are")  # what a singular / plural subject takes

__all__ = ["NOUN_PAIRS", "PREPOSITIONS", "VERBS", "make_arithmetic_truth_dataset",
           "make_subject_number_dataset", "stratified_rows", "stratified_split",
           "tokenize_with_last_positions"]


def make_subject_number_dataset(n: int, seed: int = 0) -> dict[str, list[Any]]:
    """``n`` prompts "The {subject} {preposition} the {attractor}", balanced and shuffled.

    Returns parallel lists: ``prompt``; ``label`` (subject number, 0 singular / 1 plural);
    ``attractor_label`` (attractor number); ``subject`` (the subject as written, e.g.
    "dogs": the *word type* for control tasks); ``subject_lemma`` ("dog"); ``attractor``;
    ``preposition``. ``n`` must be a multiple of 4: each (subject number, attractor number)
    cell gets exactly ``n // 4`` prompts. Subject and attractor are different nouns.
    Deterministic given ``seed``.
    """
    if n <= 0 or n % 4:
        raise ValueError(f"n must be a positive multiple of 4, got {n}")
    rng = random.Random(seed)
    rows = []
    for label in (0, 1):
        for attractor_label in (0, 1):
            for _ in range(n // 4):
                i, j = rng.sample(range(len(NOUN_PAIRS)), 2)
                prep = rng.choice(PREPOSITIONS)
                rows.append((label, attractor_label, i, j, prep))
    rng.shuffle(rows)
    out: dict[str, list[Any]] = {k: [] for k in ("prompt", "label", "attractor_label", "subject",
                                                 "subject_lemma", "attractor", "preposition")}
    for label, attractor_label, i, j, prep in rows:
        subject = NOUN_PAIRS[i][label]
        attractor = NOUN_PAIRS[j][attractor_label]
        out["prompt"].append(f"The {subject} {prep} the {attractor}")
        out["label"].append(label)
        out["attractor_label"].append(attractor_label)
        out["subject"].append(subject)
        out["subject_lemma"].append(NOUN_PAIRS[i][0])
        out["attractor"].append(attractor)
        out["preposition"].append(prep)
    return out


def make_arithmetic_truth_dataset(n: int, seed: int = 0) -> dict[str, list[Any]]:
    """``n`` statements "a + b = c" with single digits, half true and half false.

    ``label`` is 1 when a + b == c. False statements are off by 1 or 2. For every answer
    digit c (2..9) there are as many true as false statements, so the final token alone
    carries no information about the label. Returns parallel lists ``prompt``, ``label``,
    ``a``, ``b``, ``c``, ``answer`` (c as a string: the word type at the probed position).
    ``n`` must be a multiple of 16 (8 answer digits x 2 labels). Statements may repeat
    (there are only 52 distinct true ones): split train/test by ``prompt`` if that matters.
    """
    if n <= 0 or n % 16:
        raise ValueError(f"n must be a positive multiple of 16, got {n}")
    rng = random.Random(seed)
    rows = []
    for c in range(2, 10):
        true_pairs = [(a, c - a) for a in range(c + 1)]
        false_pairs = [(a, b) for a in range(10) for b in range(10)
                       if a + b <= 9 and 1 <= abs(a + b - c) <= 2]
        for _ in range(n // 16):
            rows.append((*rng.choice(true_pairs), c, 1))
            rows.append((*rng.choice(false_pairs), c, 0))
    rng.shuffle(rows)
    out: dict[str, list[Any]] = {k: [] for k in ("prompt", "label", "a", "b", "c", "answer")}
    for a, b, c, label in rows:
        out["prompt"].append(f"{a} + {b} = {c}")
        out["label"].append(label)
        out["a"].append(a)
        out["b"].append(b)
        out["c"].append(c)
        out["answer"].append(str(c))
    return out


def tokenize_with_last_positions(model: Any, prompts: list[str]
                                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded tokens ``[batch, pos]`` (BOS prepended) and each prompt's last position.

    ``last_pos[i]`` indexes the final real token of prompt ``i``; positions after it are
    padding. Causal attention means padding on the right never changes earlier positions.
    """
    rows = [model.to_tokens(p)[0] for p in prompts]
    length = max(len(r) for r in rows)
    pad_id = model.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else int(pad_id)
    tokens = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = r
    last_pos = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
    return tokens, last_pos


def stratified_split(y: torch.Tensor, test_fraction: float, seed: int) -> torch.Tensor:
    """Boolean ``is_train`` mask that holds out ``round(test_fraction * n_c)`` rows of each
    class ``c`` (chosen with ``torch.Generator().manual_seed(seed)``, classes in sorted order).

    Chapter 04's notebook and its hidden checks both split with this, so a finding the
    notebook reports on its test rows is recomputed on the same rows."""
    gen = torch.Generator().manual_seed(seed)
    is_train = torch.ones(len(y), dtype=torch.bool)
    for cls in y.unique():
        idx = (y == cls).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        is_train[idx[: round(test_fraction * len(idx))]] = False
    return is_train


def stratified_rows(y: torch.Tensor, mask: torch.Tensor, n_per_class: int, seed: int
                    ) -> torch.Tensor:
    """Indices of ``n_per_class`` rows of each class (0, then 1) among the rows where ``mask``
    is True, drawn with ``torch.Generator().manual_seed(seed)``."""
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for cls in (0, 1):
        idx = (mask & (y == cls)).nonzero().squeeze(1)
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:n_per_class]])
    return torch.cat(picks)
