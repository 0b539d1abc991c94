"""The prompt sets of chapter 07 (utils.steering_prompts): paired, split, and leak-free."""

from utils import steering_prompts as prompts
from utils.probing_data import NOUN_PAIRS


def test_sentiment_pairs_differ_in_their_last_word_only():
    positive, negative = prompts.sentiment_pairs("train")
    assert len(positive) == len(negative) > 50
    for p, n in zip(positive, negative):
        assert p.split()[:-1] == n.split()[:-1] and p.split()[-1] != n.split()[-1]


def test_metric_words_never_occur_in_the_pairs():
    words = {w.strip() for w in prompts.POSITIVE_WORDS + prompts.NEGATIVE_WORDS}
    positive, negative = prompts.sentiment_pairs("train")
    assert not words & {w for text in positive + negative for w in text.split()}


def test_held_out_sentiment_prompts_share_no_thing_with_the_train_pairs():
    train_words = {w for text in sum(prompts.sentiment_pairs("train"), []) for w in text.split()}
    things = {text.split()[-2] for text in prompts.sentiment_metric_prompts("held_out")}
    assert things and not things & train_words


def test_number_pairs_differ_in_the_subject_number_and_splits_share_no_subject():
    plural, singular = prompts.number_pairs("train")
    singular_of = dict((p, s) for s, p in NOUN_PAIRS)
    for p, s in zip(plural, singular):
        assert singular_of[p.split()[1]] == s.split()[1] and p.split()[2:] == s.split()[2:]
    held_out, labels = prompts.number_metric_prompts("held_out")
    assert labels.sum() == len(labels) // 2
    train_subjects = {text.split()[1] for text in plural + singular}
    assert not train_subjects & {text.split()[1] for text in held_out}


def test_prompt_sets_are_deterministic():
    assert prompts.number_pairs("train") == prompts.number_pairs("train")
    assert prompts.sentiment_metric_prompts() == prompts.sentiment_metric_prompts()
