"""Prompt sets for chapter 07 (steering), made from templates by the project (no downloads).

Two behaviours SmolLM2-135M-Instruct really has, each with contrastive *pairs* (to build a
steering vector from) and *metric* prompts (to measure the behaviour on), split by word so
that the held-out prompts share no content word with the prompts a vector is built from:

* **sentiment**: pairs "I thought the film was wonderful" / "... was terrible" (one evaluative
  word differs); metric prompts end just before an evaluative word ("Honestly, the hotel
  was"), and the metric is the mean logit of :data:`POSITIVE_WORDS` minus the mean logit of
  :data:`NEGATIVE_WORDS`, words that never occur in the pairs.
* **number** (chapter 4's behaviour): pairs "The dog near the car" / "The dogs near the car"
  (the subject's number differs); metric prompts are the same kind of phrase with held-out
  subjects, and the metric is logit(" are") - logit(" is").

Every function is deterministic. Splits: ``"train"`` builds vectors, ``"held_out"`` measures.
"""

from __future__ import annotations

import random

import torch

from utils.probing_data import NOUN_PAIRS, PREPOSITIONS, VERBS

__all__ = ["NEGATIVE_WORDS", "NUMBER_WORDS", "POSITIVE_WORDS", "number_metric_prompts",
           "number_pairs", "sentiment_metric_prompts", "sentiment_pairs", "tokenize_prompts",
           "word_ids"]

# Words whose logits measure sentiment (a leading space: each is one SmolLM2 token).
POSITIVE_WORDS = [" great", " good", " excellent", " amazing", " fantastic", " lovely"]
NEGATIVE_WORDS = [" bad", " awful", " horrible", " poor", " disappointing", " boring"]
# Number metric: plural verb minus singular verb (VERBS is (" is", " are")).
NUMBER_WORDS = {"up": [VERBS[1]], "down": [VERBS[0]]}

# Pair adjectives: disjoint from the metric words above.
_PAIR_ADJECTIVES = [("wonderful", "terrible"), ("delightful", "dreadful"),
                    ("brilliant", "dismal"), ("beautiful", "ugly"), ("superb", "awful"),
                    ("pleasant", "unpleasant"), ("perfect", "broken"), ("charming", "rude")]
# "awful" is a metric word: keep the metric words out of the pairs.
_PAIR_ADJECTIVES = [(p, n) for p, n in _PAIR_ADJECTIVES
                    if f" {p}" not in POSITIVE_WORDS + NEGATIVE_WORDS
                    and f" {n}" not in POSITIVE_WORDS + NEGATIVE_WORDS]
_SENTIMENT_TEMPLATES = {
    "train": ["I thought the {thing} was {adj}", "Everyone agreed that the {thing} was {adj}",
              "My friend said the {thing} was {adj}"],
    "held_out": ["Honestly, the {thing} was", "I have to say that the {thing} was",
                 "Looking back, the {thing} was", "In my opinion the {thing} was"],
}
_THINGS = {
    "train": ["film", "meal", "book"],  # 63 pairs: enough for a stable mean, cheap to run
    "held_out": ["hotel", "show", "party", "lesson", "garden", "album", "weekend", "museum"],
}


def sentiment_pairs(split: str = "train") -> tuple[list[str], list[str]]:
    """(positive, negative) prompts, paired: entry i of both differs only in its last word."""
    things = _THINGS[split]
    positive, negative = [], []
    for template in _SENTIMENT_TEMPLATES["train"]:
        for thing in things:
            for pos, neg in _PAIR_ADJECTIVES:
                positive.append(template.format(thing=thing, adj=pos))
                negative.append(template.format(thing=thing, adj=neg))
    return positive, negative


def sentiment_metric_prompts(split: str = "held_out") -> list[str]:
    """Prompts that end where an evaluative word would come next (no sentiment of their own)."""
    return [template.format(thing=thing) for template in _SENTIMENT_TEMPLATES["held_out"]
            for thing in _THINGS[split]]


def _noun_split(split: str) -> list[tuple[str, str]]:
    order = list(range(len(NOUN_PAIRS)))
    random.Random(7).shuffle(order)
    cut = len(order) * 3 // 5
    chosen = order[:cut] if split == "train" else order[cut:]
    return [NOUN_PAIRS[i] for i in sorted(chosen)]


def number_pairs(split: str = "train", n: int = 48, seed: int = 0
                 ) -> tuple[list[str], list[str]]:
    """(plural, singular) prompts "The dogs near the car" / "The dog near the car", paired.

    Subjects come from the split's nouns; the attractor noun (after the preposition) is
    singular or plural at random, the same in both prompts of a pair.
    """
    rng = random.Random(seed)
    subjects = _noun_split(split)
    plural, singular = [], []
    for _ in range(n):
        subject = rng.choice(subjects)
        attractor = rng.choice([p for p in NOUN_PAIRS if p != subject])[rng.randrange(2)]
        prep = rng.choice(PREPOSITIONS)
        plural.append(f"The {subject[1]} {prep} the {attractor}")
        singular.append(f"The {subject[0]} {prep} the {attractor}")
    return plural, singular


def number_metric_prompts(split: str = "held_out", n: int = 16, seed: int = 1
                          ) -> tuple[list[str], torch.Tensor]:
    """``n`` prompts (half singular, half plural subjects) and their labels (1 = plural)."""
    plural, singular = number_pairs(split, n // 2, seed)
    return singular + plural, torch.tensor([0] * (n // 2) + [1] * (n // 2))


def word_ids(model, words: list[str]) -> torch.Tensor:
    """Token ids of single-token words (raises if a word is more than one token)."""
    return torch.tensor([model.to_single_token(w) for w in words])


def tokenize_prompts(model, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded tokens [batch, pos] (BOS first) and each prompt's last real position."""
    from utils.probing_data import tokenize_with_last_positions

    return tokenize_with_last_positions(model, prompts)
