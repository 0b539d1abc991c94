"""Hidden checks for chapter 03 (induction heads).

Every check compares the learner's function, run in the sandbox, with the independent
reference in ``utils.reference.induction_heads`` on inputs the notebook never shows (other
seeds, other lengths, other prefixes). Model checks use the shipped toy model
``attn_only_2l``; the heads they ablate are found by computing scores, never hard-coded.
"""

from __future__ import annotations

import functools
import re

import torch

from utils.data import repeated_random_tokens
from utils.grading.checks import (
    SubmissionError,
    assert_close,
    assert_number,
    expect_tensor,
    points,
    reference_model,
    sandbox_model,
    warm_up_loading,
)
from utils.grading.diagnosis import Mistake
from utils.reference import induction_heads as ref

TOY = "attn_only_2l"
# Modules that compute this chapter's answers: the grader leaves them off the sandbox's disk.
ANSWER_KEYS = ["utils.head_scores", "utils.training"]
_CALLS_REFERENCE = re.compile(
    r"\butils\s*\.\s*head_scores\b|from\s+utils\s+import\s+[^\n]*\bhead_scores\b")


# ------------------------------------------------------------------------- trusted inputs
_toy = functools.partial(reference_model, TOY)
warm_up = warm_up_loading(TOY)


@functools.cache
def _toy_bos() -> int:
    from utils.toy_models import read_toy_model_info

    return int(read_toy_model_info(TOY)["metadata"]["bos_token"])


@functools.cache
def _tokens(batch: int, half_len: int, seed: int) -> torch.Tensor:
    return repeated_random_tokens(batch, half_len, _toy().cfg.d_vocab, seed, bos_token=_toy_bos())


@functools.cache
def _circuit() -> tuple[int, int, int]:
    """(previous-token head of layer 0, best and second-best induction heads of layer 1)."""
    scores = ref.score_every_head(_toy(), _tokens(8, 30, 90_001), 30)
    prev = int(scores["previous_token"][0].argmax())
    ind = scores["induction"][1].argsort(descending=True)
    return prev, int(ind[0]), int(ind[1])


_CALLS_TRAINING_METRICS = re.compile(
    r"\butils\s*\.\s*training\b|from\s+utils\s+import\s+[^\n]*\btraining\b"
    r"|\bevaluate_heads\b|\bcheck_heads\b")
# An answer that calls these is caught from its source, before any call: the check's message
# is the mistake's explanation itself (the mutants below say the same).
_CALLS_REFERENCE_MISTAKE = (
    "you called the course's reference scores (utils.head_scores), which the grader does not "
    "let answers use: compute the scores yourself; an answer that calls them earns no marks")
_CALLS_TRAINING_MISTAKE = (
    "you called the training module's own evaluation (utils.training), which the grader does "
    "not let answers use: compute the losses and scores yourself; an answer that calls it "
    "earns no marks")


def _no_reference_calls(submission, name: str) -> None:
    if _CALLS_REFERENCE.search(submission.sources.get(name, "")):
        raise SubmissionError(f"{name}: {_CALLS_REFERENCE_MISTAKE}")


def _causal_patterns(batch: int, heads: int, seq: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, heads, seq, seq, generator=g) * 2
    future = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def _as_step(value, name: str, key: str):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise SubmissionError(f'{name}: "{key}" should be a training step (an int) or None, '
                          f"got {value!r}")


# ------------------------------------------------------------------------- checks
@points(1)
def test_per_token_loss(submission):
    per_token_loss = submission.function("per_token_loss")
    g = torch.Generator().manual_seed(3_001)
    logits = torch.randn(3, 9, 13, generator=g) * 2
    tokens = torch.randint(0, 13, (3, 9), generator=g)
    got = expect_tensor(per_token_loss(logits, tokens), "per_token_loss", "batch pos-1", (3, 8))
    assert_close(got, ref.per_token_loss(logits, tokens), "per_token_loss",
                 what="losses (entry [b, p] is the loss of predicting tokens[b, p + 1])",
                 dims="batch pos", inputs="random logits for 3 sequences of 9 tokens, a "
                 "13-token vocabulary")


@points(1)
def test_in_context_learning_score(submission):
    icl = submission.function("in_context_learning_score")
    g = torch.Generator().manual_seed(3_002)
    # (half_len, prefix length): with a BOS, with a longer prefix, and with none at all.
    for half_len, prefix in [(7, 1), (5, 3), (6, 0)]:
        lpt = torch.rand(2, prefix + 2 * half_len - 1, generator=g) * 5
        got = icl(lpt, half_len)
        if not isinstance(got, dict) or set(got) != {"first_half", "second_half", "score"}:
            raise SubmissionError('in_context_learning_score should return a dict with keys '
                                  f'"first_half", "second_half", "score"; got {got!r}')
        expected = ref.in_context_learning_score(lpt, half_len)
        for key in ("first_half", "second_half", "score"):
            assert_number(got[key], expected[key], "in_context_learning_score",
                          what=f'"{key}" (half_len={half_len}, prefix of {prefix} positions)')


@points(2)
def test_induction_scores(submission):
    _no_reference_calls(submission, "induction_scores")
    induction_scores = submission.function("induction_scores")
    for batch, heads, half_len, prefix, seed in [(2, 3, 6, 1, 3_003), (1, 2, 5, 0, 3_004),
                                                 (2, 2, 4, 3, 3_005)]:
        seq = prefix + 2 * half_len
        pattern = _causal_patterns(batch, heads, seq, seed)
        got = expect_tensor(induction_scores(pattern, half_len), "induction_scores",
                            "head_index", (heads,))
        assert_close(got, ref.induction_scores(pattern, half_len), "induction_scores",
                     what="scores", dims="head_index",
                     inputs=f"random causal patterns of {batch} sequence(s), {heads} heads, "
                     f"{prefix} position(s) before a block of 2 x {half_len} "
                     f"(half_len={half_len})")


@points(2)
def test_score_every_head(submission):
    _no_reference_calls(submission, "score_every_head")
    score_every_head = submission.function("score_every_head")
    tokens = _tokens(3, 13, 3_006)
    got = score_every_head(sandbox_model(TOY), tokens, 13)
    if not isinstance(got, dict) or set(got) != {"previous_token", "induction"}:
        raise SubmissionError('score_every_head should return a dict with keys "previous_token" '
                              f'and "induction"; got {type(got).__name__}'
                              + (f" with keys {sorted(got)}" if isinstance(got, dict) else ""))
    expected = ref.score_every_head(_toy(), tokens, 13)
    shape = tuple(expected["induction"].shape)
    for key in ("previous_token", "induction"):
        value = expect_tensor(got[key], f'score_every_head()["{key}"]', "layer head_index", shape)
        assert_close(value, expected[key], f'score_every_head()["{key}"]', atol=1e-4,
                     what=f"{key.replace('_', '-')} scores", dims="layer head_index",
                     inputs="the toy model on 3 sequences of 13 random tokens repeated after "
                     "BOS (half_len=13)")


@points(2)
def test_ablated_repeated_loss(submission):
    ablated = submission.function("ablated_repeated_loss")
    prev, ind, ind2 = _circuit()
    other = next(h for h in range(_toy().cfg.n_heads) if h != prev)
    tokens = _tokens(4, 15, 3_007)
    for heads, method in [([(0, prev), (1, ind)], "zero"), ([(1, ind)], "mean"),
                          ([(0, other), (0, prev), (1, ind2)], "mean"), ([], "zero")]:
        got = ablated(sandbox_model(TOY), tokens, 15, heads, method)
        expected = ref.ablated_repeated_loss(_toy(), tokens, 15, heads, method)
        assert_number(got, expected, "ablated_repeated_loss", atol=2e-4,
                      what=f"second-half loss with heads {heads} {method}-ablated")


@points(2)
def test_composition_scores(submission):
    composition_scores = submission.function("composition_scores")
    n = _toy().cfg.n_heads
    for kind in ("K", "Q", "V"):
        got = expect_tensor(composition_scores(sandbox_model(TOY), kind),
                            f'composition_scores(model, "{kind}")', "head_early head_late", (n, n))
        assert_close(got, ref.composition_scores(_toy(), kind), f'composition_scores("{kind}")',
                     atol=1e-4, rtol=1e-3, what=f"{kind}-composition scores",
                     dims="head_early head_late",
                     inputs="the toy model's weights, layer 0 -> layer 1")


@points(2)
def test_path_ablated_loss(submission):
    path_ablated_loss = submission.function("path_ablated_loss")
    prev, ind, ind2 = _circuit()
    other = next(h for h in range(_toy().cfg.n_heads) if h != prev)
    tokens = _tokens(4, 15, 3_008)
    for sender, receivers, path in [(prev, [ind], "k"), (prev, [ind], "v"),
                                    (prev, [ind, ind2], "q"), (other, [ind2], "k")]:
        got = path_ablated_loss(sandbox_model(TOY), tokens, 15, sender, receivers, path)
        expected = ref.path_ablated_loss(_toy(), tokens, 15, sender, receivers, path)
        assert_number(got, expected, "path_ablated_loss", atol=2e-4,
                      what=f'second-half loss (sender L0H{sender}, receivers '
                           f'{[f"L1H{h}" for h in receivers]}, path "{path}")')


def _log(steps, losses, scores):
    return [{"step": s, "train_loss": None if i == 0 else 7.0 - i * 0.1, "lr": 1e-3,
             "heldout_loss_first_half": 6.2, "heldout_loss_second_half": loss,
             "prev_token_score_layer0": 0.5, "induction_score_layer1": score}
            for i, (s, loss, score) in enumerate(zip(steps, losses, scores))]


@points(1)
def test_phase_change_steps(submission):
    phase_change_steps = submission.function("phase_change_steps")
    cases = [
        (_log([0, 25, 50, 100, 150, 200, 300],
              [6.2, 6.1, 6.15, 5.9, 2.5, 0.9, 0.5],
              [0.01, 0.02, 0.05, 0.4, 0.7, 0.8, 0.85]), 0.4),
        (_log([0, 40, 80, 120, 160, 240],
              [6.0, 5.0, 4.95, 4.9, 4.0, 3.9],
              [0.1, 0.2, 0.25, 0.3, 0.35, 0.38]), 0.39),
        (_log([10, 20, 30, 60, 90],
              [5.0, 4.8, 4.7, 1.0, 0.9],
              [0.0, 0.9, 0.95, 0.97, 0.98]), 0.5),
    ]
    for log, threshold in cases:
        got = phase_change_steps(log, threshold)
        if not isinstance(got, dict) or set(got) != {"largest_drop", "first_crossing"}:
            raise SubmissionError('phase_change_steps should return a dict with keys '
                                  f'"largest_drop" and "first_crossing"; got {got!r}')
        expected = ref.phase_change_steps(log, threshold)
        steps = [e["step"] for e in log]
        for key in ("largest_drop", "first_crossing"):
            value = _as_step(got[key], "phase_change_steps", key)
            if value != expected[key]:
                raise SubmissionError(
                    f'phase_change_steps: "{key}" should be {expected[key]!r}, got {value!r} '
                    f"(log steps {steps}, threshold {threshold}; report the entries' "
                    '"step" values, not list positions)')


@points(2)
def test_checkpoint_metrics(submission):
    _no_reference_calls(submission, "checkpoint_metrics")
    if _CALLS_TRAINING_METRICS.search(submission.sources.get("checkpoint_metrics", "")):
        raise SubmissionError(f"checkpoint_metrics: {_CALLS_TRAINING_MISTAKE}")
    checkpoint_metrics = submission.function("checkpoint_metrics")
    keys = {"loss_first_half", "loss_second_half", "prev_token_layer0", "induction_layer1"}
    for batch, half_len, seed in [(3, 13, 3_009), (2, 17, 3_010)]:
        tokens = _tokens(batch, half_len, seed)
        got = checkpoint_metrics(sandbox_model(TOY), tokens, half_len)
        if not isinstance(got, dict) or set(got) != keys:
            raise SubmissionError(
                f"checkpoint_metrics should return a dict with keys {sorted(keys)}; got "
                + (f"keys {sorted(got)}" if isinstance(got, dict) else type(got).__name__))
        expected = ref.checkpoint_metrics(_toy(), tokens, half_len)
        for key in sorted(keys):
            assert_number(got[key], expected[key], "checkpoint_metrics", atol=1e-4,
                          what=f'"{key}" ({batch} sequences, half_len={half_len}, with a BOS)')


# ------------------------------------------------------------------------- mutants
_CHECKPOINT_TEMPLATE = '''import torch as t
def checkpoint_metrics(model, tokens, half_len):
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    o = tokens.shape[1] - 2 * half_len
    first = loss[:, o : o + half_len - 1].mean().item()
    second = loss[:, {second}].mean().item()
    seq = tokens.shape[1]
    dest = t.arange(seq - half_len, seq)
    p0, p1 = cache["pattern", 0], cache["pattern", 1]
    prev = {prev}
    ind = p1[:, :, dest, dest - {offset}].mean((0, 2))
    return {{"loss_first_half": first, "loss_second_half": second,
            "prev_token_layer0": prev.max().item(), "induction_layer1": ind.{reduce}().item()}}'''


def _checkpoint_mutant(second="o + half_len : o + 2 * half_len - 1",
                       prev="p0.diagonal(-1, -2, -1).mean((0, 2))", offset="half_len + 1",
                       reduce="max") -> str:
    return _CHECKPOINT_TEMPLATE.format(second=second, prev=prev, offset=offset, reduce=reduce)


MUTANTS = {
    "per_token_loss": {
        "no_shift": Mistake(
            "you scored the logits at each position against the token at that same position: "
            "position p predicts the next token, so pair logits 0..pos-2 with tokens 1..pos-1",
            '''def per_token_loss(logits, tokens):
    log_probs = logits.log_softmax(-1)
    return -log_probs.gather(-1, tokens[..., None])[..., 0][:, :-1]''', hint=1),
        "shift_wrong_way": Mistake(
            "you shifted the targets the wrong way: the logits at position p predict the token "
            "at p + 1, so drop the last position's logits and the first token",
            '''def per_token_loss(logits, tokens):
    log_probs = logits[:, 1:].log_softmax(-1)
    return -log_probs.gather(-1, tokens[:, :-1, None])[..., 0]''', hint=1),
        "probabilities_not_log": Mistake(
            "you returned minus the probability: the loss is minus the log-probability of the "
            "next token (use log_softmax)",
            '''def per_token_loss(logits, tokens):
    probs = logits[:, :-1].softmax(-1)
    return -probs.gather(-1, tokens[:, 1:, None])[..., 0]''', hint=2),
        "raw_logits": Mistake(
            "you used the target's raw logit: the loss is minus its log-probability, so "
            "normalise the logits over the vocabulary with log_softmax first",
            '''def per_token_loss(logits, tokens):
    return -logits[:, :-1].gather(-1, tokens[:, 1:, None])[..., 0]''', hint=2),
    },
    "in_context_learning_score": {
        "includes_boundary": Mistake(
            "your first half also counts the prediction of the second half's first token: each "
            "half leaves out the prediction of its own first token, so the first half ends at "
            "loss position o + half_len - 2",
            '''def in_context_learning_score(loss_per_token, half_len):
    o = loss_per_token.shape[1] + 1 - 2 * half_len
    first = loss_per_token[:, o : o + half_len].mean().item()
    second = loss_per_token[:, o + half_len :].mean().item()
    return {"first_half": first, "second_half": second, "score": first - second}''', hint=1),
        "ignores_prefix": Mistake(
            "you assumed the repeated tokens start at position 0: they are the last 2 * half_len "
            "positions, after a prefix (such as BOS) of o = seq - 2 * half_len positions",
            '''def in_context_learning_score(loss_per_token, half_len):
    first = loss_per_token[:, : half_len - 1].mean().item()
    second = loss_per_token[:, half_len : 2 * half_len - 1].mean().item()
    return {"first_half": first, "second_half": second, "score": first - second}''', hint=1),
        "score_reversed": Mistake(
            "your score has the wrong sign: it is first_half - second_half, positive when the "
            "model does better on the repeat",
            '''def in_context_learning_score(loss_per_token, half_len):
    o = loss_per_token.shape[1] + 1 - 2 * half_len
    first = loss_per_token[:, o : o + half_len - 1].mean().item()
    second = loss_per_token[:, o + half_len : o + 2 * half_len - 1].mean().item()
    return {"first_half": first, "second_half": second, "score": second - first}'''),
    },
    "induction_scores": {
        "offset_half_len": Mistake(
            "you measured attention to dest - half_len, the earlier copy of the destination's "
            "own token: an induction head attends to the token after it, dest - half_len + 1",
            '''import torch as t
def induction_scores(pattern, half_len):
    seq = pattern.shape[-1]
    dest = t.arange(seq - half_len, seq)
    return pattern[:, :, dest, dest - half_len].mean(dim=(0, 2))''', hint=1),
        "assumes_no_prefix": Mistake(
            "you assumed the repeated block starts at position 0: locate the second half from "
            "the end (the last half_len positions), so that a BOS or any other prefix is allowed "
            "for",
            '''import torch as t
def induction_scores(pattern, half_len):
    dest = t.arange(half_len, 2 * half_len)
    return pattern[:, :, dest, dest - half_len + 1].mean(dim=(0, 2))''', hint=1),
        "whole_stripe": Mistake(
            "you averaged the whole diagonal stripe, first-half destinations included: keep only "
            "its last half_len entries, the destinations in the second half",
            '''def induction_scores(pattern, half_len):
    stripe = pattern.diagonal(offset=-(half_len - 1), dim1=-2, dim2=-1)
    return stripe.mean(dim=(0, 2))''', hint=2),
        "calls_reference": Mistake(
            _CALLS_REFERENCE_MISTAKE,
            '''from utils.head_scores import induction_score
def induction_scores(pattern, half_len):
    return induction_score(pattern, half_len)'''),
    },
    "score_every_head": {
        "averages_over_bos_position": Mistake(
            "you divided the previous-token stripe by the sequence length: position 0 has no "
            "previous token, so average over the seq - 1 destinations 1 .. seq-1 (the mean of "
            "the diagonal at offset -1)",
            '''import torch as t
def score_every_head(model, tokens, half_len):
    prev = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    ind = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    seq = tokens.shape[1]
    dest = t.arange(seq - half_len, seq)
    def hook(pattern, hook):
        prev[hook.layer()] = pattern.diagonal(-1, -2, -1).sum(-1).mean(0) / seq
        ind[hook.layer()] = pattern[:, :, dest, dest - half_len + 1].mean((0, 2))
    model.run_with_hooks(tokens, return_type=None,
                         fwd_hooks=[(lambda n: n.endswith("hook_pattern"), hook)])
    return {"previous_token": prev, "induction": ind}''', hint=2),
        "stripe_at_wrong_offset": Mistake(
            "your induction score measures attention to dest - half_len, the earlier copy of the "
            "destination's own token: an induction head attends to the token after it, dest - "
            "half_len + 1",
            '''import torch as t
def score_every_head(model, tokens, half_len):
    prev = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    ind = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    seq = tokens.shape[1]
    dest = t.arange(seq - half_len, seq)
    def hook(pattern, hook):
        prev[hook.layer()] = pattern.diagonal(-1, -2, -1).mean((0, 2))
        ind[hook.layer()] = pattern[:, :, dest, dest - half_len].mean((0, 2))
    model.run_with_hooks(tokens, return_type=None,
                         fwd_hooks=[(lambda n: n.endswith("hook_pattern"), hook)])
    return {"previous_token": prev, "induction": ind}'''),
        "keys_swapped": Mistake(
            'you returned the two scores under each other\'s keys: "previous_token" is the stripe '
            'at offset -1, "induction" the stripe at dest - half_len + 1',
            '''import torch as t
def score_every_head(model, tokens, half_len):
    prev = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    ind = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    seq = tokens.shape[1]
    dest = t.arange(seq - half_len, seq)
    def hook(pattern, hook):
        prev[hook.layer()] = pattern.diagonal(-1, -2, -1).mean((0, 2))
        ind[hook.layer()] = pattern[:, :, dest, dest - half_len + 1].mean((0, 2))
    model.run_with_hooks(tokens, return_type=None,
                         fwd_hooks=[(lambda n: n.endswith("hook_pattern"), hook)])
    return {"previous_token": ind, "induction": prev}'''),
        "calls_reference": Mistake(
            _CALLS_REFERENCE_MISTAKE,
            '''import torch as t
from utils import head_scores
def score_every_head(model, tokens, half_len):
    _, cache = model.run_with_cache(tokens)
    layers = range(model.cfg.n_layers)
    return {
        "previous_token": t.stack([head_scores.previous_token_score(cache["pattern", l])
                                   for l in layers]),
        "induction": t.stack([head_scores.induction_score(cache["pattern", l], half_len)
                              for l in layers]),
    }'''),
    },
    "ablated_repeated_loss": {
        "mean_over_batch_only": Mistake(
            "you mean-ablated with the mean over the batch only, which still varies with "
            "position: the mean is over batch and positions, one d_head vector per head",
            '''def ablated_repeated_loss(model, tokens, half_len, heads, method="zero"):
    names = sorted({f"blocks.{l}.attn.hook_z" for l, _ in heads})
    _, cache = model.run_with_cache(tokens, names_filter=names)
    def ablate(z, hook):
        z = z.clone()
        for l, h in heads:
            if l == hook.layer():
                z[:, :, h] = 0.0 if method == "zero" else cache[hook.name].mean(0)[:, h]
        return z
    logits = model.run_with_hooks(tokens, fwd_hooks=[(n, ablate) for n in names])
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    o = tokens.shape[1] - 2 * half_len
    return loss[:, o + half_len : o + 2 * half_len - 1].mean().item()''', hint=2),
        "mean_over_positions_only": Mistake(
            "you mean-ablated with each sequence's own mean over positions, which still carries "
            "information about that sequence: the mean is over batch and positions, one d_head "
            "vector per head",
            '''def ablated_repeated_loss(model, tokens, half_len, heads, method="zero"):
    names = sorted({f"blocks.{l}.attn.hook_z" for l, _ in heads})
    _, cache = model.run_with_cache(tokens, names_filter=names)
    def ablate(z, hook):
        z = z.clone()
        for l, h in heads:
            if l == hook.layer():
                z[:, :, h] = 0.0 if method == "zero" else cache[hook.name].mean(1, keepdim=True)[:, :, h]
        return z
    logits = model.run_with_hooks(tokens, fwd_hooks=[(n, ablate) for n in names])
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    o = tokens.shape[1] - 2 * half_len
    return loss[:, o + half_len : o + 2 * half_len - 1].mean().item()''', hint=2),
        "ablates_hook_q": Mistake(
            "you ablated the heads' queries (hook_q): a head's output is removed at "
            "blocks.L.attn.hook_z, the attention-weighted values just before W_O",
            '''def ablated_repeated_loss(model, tokens, half_len, heads, method="zero"):
    names = sorted({f"blocks.{l}.attn.hook_q" for l, _ in heads})
    _, cache = model.run_with_cache(tokens, names_filter=names)
    def ablate(q, hook):
        q = q.clone()
        for l, h in heads:
            if l == hook.layer():
                q[:, :, h] = 0.0 if method == "zero" else cache[hook.name].mean((0, 1))[h]
        return q
    logits = model.run_with_hooks(tokens, fwd_hooks=[(n, ablate) for n in names])
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    o = tokens.shape[1] - 2 * half_len
    return loss[:, o + half_len : o + 2 * half_len - 1].mean().item()''', hint=1),
        "whole_sequence_loss": Mistake(
            "you returned the loss over the whole sequence: return the second-half loss, the "
            "mean over the predictions made inside the second half, as in "
            "in_context_learning_score",
            '''def ablated_repeated_loss(model, tokens, half_len, heads, method="zero"):
    names = sorted({f"blocks.{l}.attn.hook_z" for l, _ in heads})
    _, cache = model.run_with_cache(tokens, names_filter=names)
    def ablate(z, hook):
        z = z.clone()
        for l, h in heads:
            if l == hook.layer():
                z[:, :, h] = 0.0 if method == "zero" else cache[hook.name].mean((0, 1))[h]
        return z
    logits = model.run_with_hooks(tokens, fwd_hooks=[(n, ablate) for n in names])
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    return loss.mean().item()''', hint=2),
    },
    "composition_scores": {
        "k_without_transpose": Mistake(
            "your K-composition scores equal the Q-composition ones: for K-composition the late "
            "head's matrix is the transpose of W_Q W_K^T",
            '''def composition_scores(model, kind, early_layer=0, late_layer=1):
    A = model.W_V[early_layer] @ model.W_O[early_layer]
    if kind == "V":
        B = model.W_V[late_layer] @ model.W_O[late_layer]
    else:
        B = model.W_Q[late_layer] @ model.W_K[late_layer].transpose(-1, -2)
    prod = A[:, None] @ B[None, :]
    return prod.norm(dim=(-2, -1)) / (A.norm(dim=(-2, -1))[:, None] * B.norm(dim=(-2, -1))[None])'''),
        "unnormalised": Mistake(
            "you returned the bare Frobenius norm of the product: divide by the norms of the two "
            "matrices, ||A B|| / (||A|| ||B||)",
            '''def composition_scores(model, kind, early_layer=0, late_layer=1):
    A = model.W_V[early_layer] @ model.W_O[early_layer]
    if kind == "V":
        B = model.W_V[late_layer] @ model.W_O[late_layer]
    else:
        B = model.W_Q[late_layer] @ model.W_K[late_layer].transpose(-1, -2)
        if kind == "K":
            B = B.transpose(-1, -2)
    return (A[:, None] @ B[None, :]).norm(dim=(-2, -1))''', hint=2),
        "transposed_ov": Mistake(
            "you transposed the early head's W_V W_O: it multiplies the late head's matrix as it "
            "stands, A = W_V W_O on the left",
            '''def composition_scores(model, kind, early_layer=0, late_layer=1):
    A = (model.W_V[early_layer] @ model.W_O[early_layer]).transpose(-1, -2)
    if kind == "V":
        B = model.W_V[late_layer] @ model.W_O[late_layer]
    else:
        B = model.W_Q[late_layer] @ model.W_K[late_layer].transpose(-1, -2)
        if kind == "K":
            B = B.transpose(-1, -2)
    prod = A[:, None] @ B[None, :]
    return prod.norm(dim=(-2, -1)) / (A.norm(dim=(-2, -1))[:, None] * B.norm(dim=(-2, -1))[None])''', hint=1),
    },
    "path_ablated_loss": {
        "patches_all_heads": Mistake(
            "you replaced the whole layer's activation, every head's slice: patch only the "
            "receiver heads' slice of hook_{path} and leave the other heads clean",
            '''def path_ablated_loss(model, tokens, half_len, sender_head, receiver_heads, path):
    name = f"blocks.1.attn.hook_{path}"
    def zero(z, hook):
        z = z.clone()
        z[:, :, sender_head] = 0.0
        return z
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", zero)]):
        _, cache = model.run_with_cache(tokens, names_filter=[name])
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, lambda act, hook: cache[name])])
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    o = tokens.shape[1] - 2 * half_len
    return loss[:, o + half_len : o + 2 * half_len - 1].mean().item()''', hint=2),
        "patches_hook_z": Mistake(
            "you patched the receivers' hook_z, their whole output: to cut one path, patch only "
            "the input named by path, blocks.1.attn.hook_q, hook_k or hook_v",
            '''def path_ablated_loss(model, tokens, half_len, sender_head, receiver_heads, path):
    name = "blocks.1.attn.hook_z"
    def zero(z, hook):
        z = z.clone()
        z[:, :, sender_head] = 0.0
        return z
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", zero)]):
        _, cache = model.run_with_cache(tokens, names_filter=[name])
    def patch(act, hook):
        act = act.clone()
        act[:, :, receiver_heads] = cache[name][:, :, receiver_heads]
        return act
    logits = model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    o = tokens.shape[1] - 2 * half_len
    return loss[:, o + half_len : o + 2 * half_len - 1].mean().item()''', hint=2),
        "ablates_sender_everywhere": Mistake(
            "you ablated the sender for the whole model: remove its output only from the chosen "
            "input of the receiver heads (cache that input from an ablated run, then patch it "
            "into a clean run)",
            '''def path_ablated_loss(model, tokens, half_len, sender_head, receiver_heads, path):
    def zero(z, hook):
        z = z.clone()
        z[:, :, sender_head] = 0.0
        return z
    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero)])
    loss = -logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    o = tokens.shape[1] - 2 * half_len
    return loss[:, o + half_len : o + 2 * half_len - 1].mean().item()''', hint=1),
    },
    "checkpoint_metrics": {
        "induction_stripe_at_half_len": Mistake(
            "your induction score measures attention to dest - half_len, the earlier copy of the "
            "destination's own token: an induction head attends to the token after it, dest - "
            "half_len + 1",
            _checkpoint_mutant(offset="half_len")),
        "mean_over_heads_not_best": Mistake(
            "you averaged the induction scores over layer 1's heads: keep the best head's score "
            "(the max), since a training run cares whether some head has formed",
            _checkpoint_mutant(reduce="mean"), hint=2),
        "second_half_includes_its_first_token": Mistake(
            "your second-half loss includes the prediction of the second half's first token, "
            "which nothing can predict: start at loss position o + half_len, as in "
            "in_context_learning_score",
            _checkpoint_mutant(
                second="o + half_len - 1 : o + 2 * half_len - 1"), hint=1),
        "prev_token_counts_position_0": Mistake(
            "you divided the previous-token stripe by the sequence length: position 0 has no "
            "previous token, so average over the seq - 1 destinations 1 .. seq-1",
            _checkpoint_mutant(
                prev="p0.diagonal(-1, -2, -1).sum(-1).mean(0) / p0.shape[-1]"), hint=2),
        "calls_training_evaluation": Mistake(
            _CALLS_TRAINING_MISTAKE,
            '''from utils.training import evaluate_heads
def checkpoint_metrics(model, tokens, half_len):
    out = evaluate_heads(model, tokens, half_len)
    return {"loss_first_half": out["heldout_loss_first_half"],
            "loss_second_half": out["heldout_loss_second_half"],
            "prev_token_layer0": out["prev_token_score_layer0"],
            "induction_layer1": out["induction_score_layer1"]}'''),
    },
    "phase_change_steps": {
        "returns_indices": Mistake(
            'you returned list positions: report the entries\' "step" values',
            '''def phase_change_steps(log, threshold=0.5):
    losses = [e["heldout_loss_second_half"] for e in log]
    drops = [losses[i - 1] - losses[i] for i in range(1, len(losses))]
    drop = drops.index(max(drops)) + 1
    crossing = next((i for i, e in enumerate(log) if e["induction_score_layer1"] >= threshold), None)
    return {"largest_drop": drop, "first_crossing": crossing}'''),
        "step_before_drop": Mistake(
            "you reported the step before the largest fall: drop i is the fall from entry i to "
            "entry i + 1, so report the step of entry i + 1",
            '''def phase_change_steps(log, threshold=0.5):
    losses = [e["heldout_loss_second_half"] for e in log]
    drops = [losses[i - 1] - losses[i] for i in range(1, len(losses))]
    i = drops.index(max(drops))
    crossing = next((e["step"] for e in log if e["induction_score_layer1"] >= threshold), None)
    return {"largest_drop": log[i]["step"], "first_crossing": crossing}''', hint=1),
        "strict_threshold": Mistake(
            "you required a score strictly above the threshold: the first crossing is the first "
            "entry whose score is at least the threshold (>=)",
            '''def phase_change_steps(log, threshold=0.5):
    losses = [e["heldout_loss_second_half"] for e in log]
    drops = [losses[i - 1] - losses[i] for i in range(1, len(losses))]
    i = drops.index(max(drops))
    crossing = next((e["step"] for e in log if e["induction_score_layer1"] > threshold), None)
    return {"largest_drop": log[i + 1]["step"], "first_crossing": crossing}'''),
        "no_crossing_gives_last_step": Mistake(
            "you returned the last step when no entry reaches the threshold: return None then",
            '''def phase_change_steps(log, threshold=0.5):
    losses = [e["heldout_loss_second_half"] for e in log]
    drops = [losses[i - 1] - losses[i] for i in range(1, len(losses))]
    i = drops.index(max(drops))
    crossing = next((e["step"] for e in log if e["induction_score_layer1"] >= threshold),
                    log[-1]["step"])
    return {"largest_drop": log[i + 1]["step"], "first_crossing": crossing}'''),
    },
}
