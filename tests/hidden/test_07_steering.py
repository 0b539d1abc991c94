"""Hidden checks for chapter 07, "Steering".

The exercises are checked on inputs the notebook never uses: seeded random logits and
activations for the tensor functions, short prompts of other words for the model functions,
against ``utils.reference.steering`` computed here. The investigations are checked against the
findings recomputed from SmolLM2 in this (trusted) process, once per machine (``@kept_truth``:
kept on disk until the course's code changes).
"""

import functools

import torch

from course_tools.grading.checks import (
    assert_close,
    expect_tensor,
    points,
    reference_model,
    sandbox_model,
    warm_up_loading,
)
from course_tools.grading.diagnosis import Mistake
from course_tools.grading.truth_cache import kept_truth
from utils import steering_prompts as prompts
from utils.reference import probing as probing_ref
from utils.reference import steering as ref

_model = functools.partial(reference_model, "smollm2")
warm_up = warm_up_loading("smollm2")
# An investigation's answer may load SmolLM2 and compute its finding: the sandbox worker loads
# SmolLM2 once, so each call shares it.
SANDBOX_MODELS = ["smollm2"]
INVESTIGATION_TIMEOUT = 180.0
# Prompts the notebook never uses.
CHECK_PROMPTS = ["The violins in the hall", "A list of the best recipes for", "She said the"]
CHECK_HOOK = "blocks.4.hook_resid_pre"

# Later answers (the investigations) call the chapter's exercises; they get these versions.
REFERENCES = {
    "behaviour_score": ref.behaviour_score,
    "contrastive_vector": ref.contrastive_vector,
    "steered_last_logits": ref.steered_last_logits,
    "next_token_kl": ref.next_token_kl,
    "project_out_direction": ref.project_out_direction,
    "ablated_last_logits": ref.ablated_last_logits,
    "best_steering_layer": lambda: _best_layer(),
    # chapter 4's probe, which best_number_direction trains (Newton steps: bounded by x's size)
    "train_and_test_probe": probing_ref.train_and_test_probe,
}


# ------------------------------------------------------------------------------ truths
# What the investigations ask, computed from SmolLM2 once per machine (plain data only).
@kept_truth
def _layer_shifts() -> dict[int, float]:
    return ref.layer_shifts(_model())


@kept_truth
def _best_layer() -> int:
    shifts = _layer_shifts()
    return max(shifts, key=shifts.get)


@kept_truth
def _dose_grid() -> dict[str, torch.Tensor]:
    return ref.dose_grid(_model())


@kept_truth
def _best_setting() -> tuple[int, float]:
    return ref.best_setting_within_budget(_model())


@kept_truth
def _ablated_share() -> float:
    return ref.ablated_sentiment_share(_model())


@kept_truth
def _direction_comparison() -> dict[str, dict[str, float]]:
    return ref.direction_comparison(_model())


@kept_truth
def _cross_shift() -> float:
    return ref.cross_behaviour_shift(_model())


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@functools.cache
def _check_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    return prompts.tokenize_prompts(_model(), CHECK_PROMPTS)


# ------------------------------------------------------------------------------ section 1
@points(1)
def test_behaviour_score(submission):
    behaviour_score = submission.function("behaviour_score")
    g = _generator(71)
    logits = torch.randn(5, 40, generator=g) * 3
    up, down = torch.tensor([3, 17, 29]), torch.tensor([5, 11])
    got = expect_tensor(behaviour_score(logits, up, down), "behaviour_score", "batch", (5,))
    assert_close(got, ref.behaviour_score(logits, up, down), "behaviour_score", atol=1e-4,
                 what="scores (mean logit of the up words minus mean logit of the down words)",
                 dims="batch", inputs="random logits over 40 tokens, 3 up and 2 down words")


# ------------------------------------------------------------------------------ section 2
@points(2)
def test_contrastive_vector(submission):
    contrastive_vector = submission.function("contrastive_vector")
    model = sandbox_model("smollm2")
    pos_t, pos_l = prompts.tokenize_prompts(_model(), CHECK_PROMPTS[:2])
    neg_t, neg_l = prompts.tokenize_prompts(_model(), CHECK_PROMPTS[2:])
    got = expect_tensor(contrastive_vector(model, pos_t, pos_l, neg_t, neg_l, CHECK_HOOK),
                        "contrastive_vector", "d_model", (576,))
    assert_close(got, ref.contrastive_vector(_model(), pos_t, pos_l, neg_t, neg_l, CHECK_HOOK),
                 "contrastive_vector", atol=1e-3, rtol=1e-4,
                 what="mean activation over the positive prompts minus over the negative ones, "
                 "each read at its own last position", dims="d_model",
                 inputs=f"{CHECK_PROMPTS[:2]} vs {CHECK_PROMPTS[2:]} (right-padded) at {CHECK_HOOK}")


@points(2)
def test_steered_last_logits(submission):
    steered_last_logits = submission.function("steered_last_logits")
    model = sandbox_model("smollm2")
    tokens, last = _check_tokens()
    vector = torch.randn(576, generator=_generator(72)) * 4
    got = expect_tensor(steered_last_logits(model, tokens, last, CHECK_HOOK, vector, 1.5),
                        "steered_last_logits", "batch d_vocab", (3, 49152))
    expected = ref.steered_last_logits(_model(), tokens, last, CHECK_HOOK, vector, 1.5)
    assert_close(got, expected, "steered_last_logits", atol=2e-3, rtol=1e-4,
                 what="logits at each prompt's last position with 1.5 * vector added at "
                 "positions 1 onwards", dims="batch d_vocab",
                 inputs=f"3 right-padded prompts, a random vector of norm ~100 at {CHECK_HOOK}")


# ------------------------------------------------------------------------------ section 3
@points(2)
def test_next_token_kl(submission):
    next_token_kl = submission.function("next_token_kl")
    g = _generator(73)
    clean = torch.randn(2, 3, 30, generator=g) * 2
    steered = clean + torch.randn(2, 3, 30, generator=g)
    got = expect_tensor(next_token_kl(clean, steered), "next_token_kl", "batch pos", (2, 3))
    assert_close(got, ref.next_token_kl(clean, steered), "next_token_kl", atol=1e-4,
                 what="KL(P_clean || P_steered) per position", dims="batch pos",
                 inputs="random logits [2, 3, 30] and a perturbed copy")
    sharp = next_token_kl(clean[:1] * 200, steered[:1] * 200)
    if not torch.isfinite(torch.as_tensor(sharp)).all():
        raise AssertionError("next_token_kl is not finite on logits 200 times larger: compute "
                             "log-probabilities with log_softmax, not log(softmax)")


@points(1)
def test_repetition_rate(submission):
    repetition_rate = submission.function("repetition_rate")
    g = _generator(74)
    tokens = torch.randint(0, 6, (4, 11), generator=g)
    tokens[0, 3:] = torch.arange(8)  # no repeats among the new tokens
    tokens[1, 3:] = tokens[1, 0]  # the prompt's first token, over and over
    got = expect_tensor(repetition_rate(tokens, 3), "repetition_rate", "batch", (4,))
    assert_close(got, ref.repetition_rate(tokens, 3), "repetition_rate", atol=1e-5,
                 what="share of new tokens (after the first) that repeat an earlier new token",
                 dims="batch", inputs="4 rows of 11 tokens from a 6-token vocabulary, prompt of 3")


# ------------------------------------------------------------------------------ section 4
@points(1)
def test_project_out_direction(submission):
    project_out_direction = submission.function("project_out_direction")
    g = _generator(75)
    x = torch.randn(3, 4, 16, generator=g)
    direction = torch.randn(16, generator=g) * 7
    got = expect_tensor(project_out_direction(x, direction), "project_out_direction",
                        "batch pos d_model", (3, 4, 16))
    assert_close(got, ref.project_out_direction(x, direction), "project_out_direction",
                 atol=1e-4, what="x without its component along the direction",
                 dims="batch pos d_model", inputs="random x [3, 4, 16], a direction of norm ~28")


@points(2)
def test_ablated_last_logits(submission):
    ablated_last_logits = submission.function("ablated_last_logits")
    model = sandbox_model("smollm2")
    tokens, last = _check_tokens()
    direction = torch.randn(576, generator=_generator(76)) * 3
    got = expect_tensor(ablated_last_logits(model, tokens, last, direction),
                        "ablated_last_logits", "batch d_vocab", (3, 49152))
    assert_close(got, ref.ablated_last_logits(_model(), tokens, last, direction),
                 "ablated_last_logits", atol=2e-3, rtol=1e-4,
                 what="logits at each prompt's last position with the direction projected out "
                 "of every resid_pre, every resid_mid and the last resid_post",
                 dims="batch d_vocab", inputs="3 right-padded prompts, a random direction")


# ------------------------------------------------------------------------------ investigations
@points(2)
def test_best_steering_layer(submission):
    got = submission.finding("best_steering_layer", timeout=INVESTIGATION_TIMEOUT)
    if got not in ref.SWEEP_LAYERS or isinstance(got, bool):
        raise AssertionError(f"best_steering_layer returned {got!r}: return one of "
                             f"SWEEP_LAYERS {ref.SWEEP_LAYERS}")
    if got != _best_layer():
        shifts = _layer_shifts()
        raise AssertionError(
            f"best_steering_layer returned {got}: at coefficient 1 its vector moves the mean "
            f"held-out sentiment score by {shifts[got]:+.2f}, and another "
            "layer's moves it more. Read the sweep's mean per layer (the mean over the held-out "
            "metric prompts, not the median or one prompt); if you compute it, use each layer's "
            "own vector, read at the last token of the train pairs.")


@points(2)
def test_best_setting_within_budget(submission):
    got = submission.finding("best_setting_within_budget", timeout=INVESTIGATION_TIMEOUT)
    if (not isinstance(got, (tuple, list)) or len(got) != 2 or got[0] not in ref.DOSE_LAYERS
            or float(got[1]) not in ref.COEFFICIENTS):
        raise AssertionError(f"best_setting_within_budget returned {got!r}: return (layer, "
                             f"coefficient) with the layer in {ref.DOSE_LAYERS} and the "
                             f"coefficient in {ref.COEFFICIENTS}")
    if (got[0], float(got[1])) != tuple(_best_setting()):
        sweep = _dose_grid()
        i, j = ref.DOSE_LAYERS.index(got[0]), ref.COEFFICIENTS.index(float(got[1]))
        kl = sweep["kl"][i, j].item()
        why = (f"its neutral-text KL is {kl:.3f}, over the budget of {ref.KL_BUDGET}"
               if kl > ref.KL_BUDGET else
               f"it is within the budget (KL {kl:.3f}) but another setting within the budget "
               f"moves sentiment more than its {sweep['shift'][i, j]:+.2f} (compare every layer of "
               f"DOSE_LAYERS {ref.DOSE_LAYERS}, each with its own vector, at every coefficient)")
        raise AssertionError(f"best_setting_within_budget returned {tuple(got)}: {why}. KL is "
                             "KL(clean || steered), averaged over the neutral text's positions "
                             "1 onwards.")


@points(2)
def test_ablated_sentiment_share(submission):
    got = submission.finding("ablated_sentiment_share", timeout=INVESTIGATION_TIMEOUT)
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise AssertionError(f"ablated_sentiment_share returned {got!r}: return a float")
    if abs(got - _ablated_share()) > 0.05:
        percent = " A fraction: 1 means nothing removed (not 100)." if abs(got) > 5 else ""
        raise AssertionError(
            f"ablated_sentiment_share returned {got:.3f}, not within 0.05 of the measured "
            f"fraction.{percent} It is mean(score with the best layer's vector ablated everywhere) / "
            "mean(clean score) on the held-out sentiment prompts: a ratio of means, with the "
            "direction removed from every resid_pre, resid_mid and the last resid_post.")


@points(2)
def test_best_number_direction(submission):
    got = submission.finding("best_number_direction", timeout=INVESTIGATION_TIMEOUT)
    options = ("contrastive", "probe", "sae_latent")
    if got not in options:
        raise AssertionError(f"best_number_direction returned {got!r}: return one of {options}")
    found = _direction_comparison()
    if got != max(found, key=lambda name: found[name]["shift"]):
        raise AssertionError(
            f"best_number_direction returned {got!r}, whose mean shift of logit(' are') - "
            f"logit(' is') is {found[got]['shift']:+.2f}; another direction's mean is larger "
            "(signed). Scale each unit direction to COMPARE_SCALE times the contrastive "
            "vector's norm and compare the means over the held-out number prompts.")


@points(2)
def test_cross_behaviour_shift(submission):
    got = submission.finding("cross_behaviour_shift", timeout=INVESTIGATION_TIMEOUT)
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        raise AssertionError(f"cross_behaviour_shift returned {got!r}: return a float")
    expected = _cross_shift()
    if abs(got - expected) > 0.1 + 0.1 * abs(expected):
        raise AssertionError(
            f"cross_behaviour_shift returned {got:+.3f}, not within 0.1 + 10% of the measured "
            "change. It is the mean over the held-out number prompts of (steered - clean) "
            "logit(' are') - logit(' is'), steering with the sentiment vector of the best layer "
            "at coefficient 1, positions 1 onwards.")


# ------------------------------------------------------------------------------ mistakes
# cross_behaviour_shift's mistakes build the same sentiment vector and number prompts.
_CROSS_SHIFT_START = '''def cross_behaviour_shift():
    from utils.smollm2 import load_smollm2
    model = load_smollm2()
    layer = best_steering_layer()
    hook = f"blocks.{layer}.hook_resid_pre"
    pos_t, pos_l = prompts.tokenize_prompts(model, prompts.sentiment_pairs("train")[0])
    neg_t, neg_l = prompts.tokenize_prompts(model, prompts.sentiment_pairs("train")[1])
    v = contrastive_vector(model, pos_t, pos_l, neg_t, neg_l, hook)
    tokens, last = prompts.tokenize_prompts(model, prompts.number_metric_prompts("held_out")[0])
'''


MUTANTS = {
    "behaviour_score": {
        "sum_not_mean": Mistake(
            "you summed the logits of each word set: the sets have different sizes, so take the "
            "mean of each set before subtracting",
            '''def behaviour_score(last_logits, up_ids, down_ids):
    return last_logits[:, up_ids].sum(-1) - last_logits[:, down_ids].sum(-1)''', hint=1),
        "log_probs_of_first_word": Mistake(
            "you compared only the first word of each set: average over every word of a set",
            '''def behaviour_score(last_logits, up_ids, down_ids):
    return last_logits[:, up_ids[0]] - last_logits[:, down_ids[0]]''', hint=2),
    },
    "contrastive_vector": {
        "last_column_of_padded_batch": Mistake(
            "you read every prompt at position -1, which is padding for the shorter prompts of a "
            "right-padded batch: read row i at its own last position",
            '''def contrastive_vector(model, positive_tokens, positive_last, negative_tokens,
                       negative_last, hook_name):
    _, a = model.run_with_cache(positive_tokens, names_filter=[hook_name])
    _, b = model.run_with_cache(negative_tokens, names_filter=[hook_name])
    return a[hook_name][:, -1].mean(0) - b[hook_name][:, -1].mean(0)''', hint=2),
        "mean_over_positions": Mistake(
            "you averaged each prompt over all its positions: the vector is read at the last "
            "token of each prompt, where the contrasting word has been read",
            '''def contrastive_vector(model, positive_tokens, positive_last, negative_tokens,
                       negative_last, hook_name):
    _, a = model.run_with_cache(positive_tokens, names_filter=[hook_name])
    _, b = model.run_with_cache(negative_tokens, names_filter=[hook_name])
    return a[hook_name].mean((0, 1)) - b[hook_name].mean((0, 1))''', hint=1),
        "normalised": Mistake(
            "you normalised the vector: return the raw difference of means (its length is the "
            "natural size of the contrast at that layer)",
            '''def contrastive_vector(model, positive_tokens, positive_last, negative_tokens,
                       negative_last, hook_name):
    _, a = model.run_with_cache(positive_tokens, names_filter=[hook_name])
    _, b = model.run_with_cache(negative_tokens, names_filter=[hook_name])
    rows_a, rows_b = t.arange(len(positive_last)), t.arange(len(negative_last))
    v = a[hook_name][rows_a, positive_last].mean(0) - b[hook_name][rows_b, negative_last].mean(0)
    return v / v.norm()''', hint=3),
    },
    "steered_last_logits": {
        "steers_bos_too": Mistake(
            "you added the vector at position 0 (BOS) as well: leave the first position alone",
            '''def steered_last_logits(model, tokens, last, hook_name, vector, coefficient):
    def hook(act, hook):
        return act + coefficient * vector
    logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])
    return logits[t.arange(tokens.shape[0]), last]''', hint=3),
        "last_column": Mistake(
            "you returned the logits at position -1, which is padding for the shorter prompts: "
            "take row i at last[i]",
            '''def steered_last_logits(model, tokens, last, hook_name, vector, coefficient):
    def hook(act, hook):
        act = act.clone()
        act[:, 1:] += coefficient * vector
        return act
    return model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])[:, -1]''', hint=3),
        "unit_vector": Mistake(
            "you normalised the vector: use it as given, scaled by the coefficient only",
            '''def steered_last_logits(model, tokens, last, hook_name, vector, coefficient):
    def hook(act, hook):
        act = act.clone()
        act[:, 1:] += coefficient * vector / vector.norm()
        return act
    logits = model.run_with_hooks(tokens, fwd_hooks=[(hook_name, hook)])
    return logits[t.arange(tokens.shape[0]), last]''', hint=1),
    },
    "next_token_kl": {
        "reversed_kl": Mistake(
            "you computed KL(P_steered || P_clean): the expectation is under the clean "
            "distribution, so weight by the clean probabilities",
            '''def next_token_kl(clean_logits, steered_logits):
    p, q = clean_logits.log_softmax(-1), steered_logits.log_softmax(-1)
    return (q.exp() * (q - p)).sum(-1)''', hint=1),
        "logits_not_log_probs": Mistake(
            "you used raw logits where log-probabilities belong: apply log_softmax to both first",
            '''def next_token_kl(clean_logits, steered_logits):
    p = clean_logits.softmax(-1)
    return (p * (clean_logits - steered_logits)).sum(-1)''', hint=2),
    },
    "repetition_rate": {
        "counts_prompt": Mistake(
            "you counted a new token as a repeat when it appeared in the prompt: only earlier "
            "*generated* tokens count",
            '''def repetition_rate(tokens, n_prompt):
    out = []
    for row in tokens.tolist():
        new = row[n_prompt:]
        hits = sum(1 for i in range(1, len(new)) if new[i] in row[:n_prompt + i])
        out.append(hits / (len(new) - 1) if len(new) > 1 else 0.0)
    return t.tensor(out)''', hint=1),
        "divides_by_all_new": Mistake(
            "you divided by the number of generated tokens: the first one cannot repeat "
            "anything, so divide by that number minus one",
            '''def repetition_rate(tokens, n_prompt):
    out = []
    for row in tokens[:, n_prompt:].tolist():
        hits = sum(1 for i in range(1, len(row)) if row[i] in row[:i])
        out.append(hits / len(row) if len(row) > 1 else 0.0)
    return t.tensor(out)''', hint=2),
    },
    "project_out_direction": {
        "not_normalised": Mistake(
            "you projected onto the direction without normalising it: divide by its norm first, "
            "or the amount removed scales with the direction's length squared",
            '''def project_out_direction(x, direction):
    return x - (x @ direction)[..., None] * direction''', hint=2),
        "keeps_only_projection": Mistake(
            "you returned the projection onto the direction: the answer is what is left after "
            "removing it, x minus the projection",
            '''def project_out_direction(x, direction):
    u = direction / direction.norm()
    return (x @ u)[..., None] * u''', hint=1),
    },
    "ablated_last_logits": {
        "only_resid_pre": Mistake(
            "you projected the direction out of hook_resid_pre only: attention writes it back "
            "before the MLP reads, and the last layer writes it before the unembedding; also "
            "hook every hook_resid_mid and the last hook_resid_post",
            '''def ablated_last_logits(model, tokens, last, direction):
    u = direction / direction.norm()
    def hook(act, hook):
        return act - (act @ u)[..., None] * u
    names = [f"blocks.{L}.hook_resid_pre" for L in range(model.cfg.n_layers)]
    logits = model.run_with_hooks(tokens, fwd_hooks=[(n, hook) for n in names])
    return logits[t.arange(tokens.shape[0]), last]''', hint=2),
        "one_layer_only": Mistake(
            "you removed the direction at one place only: directional ablation removes it from "
            "every layer's stream, so no layer can read or write it",
            '''def ablated_last_logits(model, tokens, last, direction):
    u = direction / direction.norm()
    def hook(act, hook):
        return act - (act @ u)[..., None] * u
    logits = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.hook_resid_pre", hook)])
    return logits[t.arange(tokens.shape[0]), last]''', hint=1),
    },
    "best_steering_layer": {
        "largest_vector": Mistake(
            "your answer is the layer whose vector is longest: the vectors grow with depth, and "
            "a longer vector is not a better steer; the largest mean shift of the sentiment "
            "score decides",
            '''def best_steering_layer():
    from utils.smollm2 import load_smollm2
    model = load_smollm2()
    pos_t, pos_l = prompts.tokenize_prompts(model, prompts.sentiment_pairs("train")[0])
    neg_t, neg_l = prompts.tokenize_prompts(model, prompts.sentiment_pairs("train")[1])
    norms = [contrastive_vector(model, pos_t, pos_l, neg_t, neg_l,
                                f"blocks.{L}.hook_resid_pre").norm() for L in SWEEP_LAYERS]
    return SWEEP_LAYERS[int(t.stack(norms).argmax())]''', hint=1),
        "largest_relative_to_stream": Mistake(
            "your answer is the layer where the vector is longest relative to the stream it is "
            "added to: a push that is large for its layer is not a better steer; the largest "
            "mean shift of the sentiment score decides",
            '''@t.no_grad()
def best_steering_layer():
    from utils.smollm2 import load_smollm2
    model = load_smollm2()
    hooks = [f"blocks.{L}.hook_resid_pre" for L in SWEEP_LAYERS]
    at_last = []
    for texts in prompts.sentiment_pairs("train"):
        tokens, last = prompts.tokenize_prompts(model, texts)
        _, cache = model.run_with_cache(tokens, names_filter=hooks,
                                        stop_at_layer=max(SWEEP_LAYERS) + 1)
        at_last.append([cache[h][t.arange(len(last)), last] for h in hooks])
    relative = [(pos.mean(0) - neg.mean(0)).norm() / pos.norm(dim=-1).median()
                for pos, neg in zip(*at_last)]
    return SWEEP_LAYERS[int(t.stack(relative).argmax())]''', hint=1),
    },
    "best_setting_within_budget": {
        "ignores_budget": Mistake(
            "you took the largest shift over the whole grid: settings whose neutral-text KL is "
            "over the budget are not allowed",
            '''def best_setting_within_budget():
    from utils.smollm2 import load_smollm2
    from utils.tl_compat import run_from_layer
    model = load_smollm2()
    hooks = [f"blocks.{L}.hook_resid_pre" for L in DOSE_LAYERS]
    def streams(tokens):
        _, cache = model.run_with_cache(tokens, names_filter=hooks,
                                        stop_at_layer=max(DOSE_LAYERS) + 1)
        return [cache[h] for h in hooks]
    (pos_t, pos_l), (neg_t, neg_l) = [prompts.tokenize_prompts(model, s)
                                      for s in prompts.sentiment_pairs("train")]
    pos, neg = streams(pos_t), streams(neg_t)
    tokens, last = prompts.tokenize_prompts(model, prompts.sentiment_metric_prompts("held_out"))
    metric = streams(tokens)
    up = prompts.word_ids(model, prompts.POSITIVE_WORDS)
    down = prompts.word_ids(model, prompts.NEGATIVE_WORDS)
    best, best_score = None, -float("inf")
    for i, layer in enumerate(DOSE_LAYERS):
        vector = (pos[i][t.arange(len(pos_l)), pos_l].mean(0)
                  - neg[i][t.arange(len(neg_l)), neg_l].mean(0))
        for c in COEFFICIENTS:
            pushed = metric[i].clone()
            pushed[:, 1:] += c * vector
            score = behaviour_score(run_from_layer(model, pushed, layer, last), up, down).mean()
            if score > best_score:
                best, best_score = (layer, c), score
    return best''', hint=1),
        "least_damage": Mistake(
            "your answer is the setting with the least damage (the smallest KL): among those "
            "within the budget, the one with the largest sentiment shift wins",
            # the grid's smallest KL on SmolLM2 (measured: layer 24 at coefficient 0.5); computing
            # it here cost ~25 s of the suite (corpus_split alone takes 6 s in the sandbox)
            '''def best_setting_within_budget():
    return (DOSE_LAYERS[-1], COEFFICIENTS[0])''', hint=1),
    },
    "ablated_sentiment_share": {
        "one_minus": Mistake(
            "you returned the share removed: the question asks for the share that remains, "
            "ablated mean over clean mean",
            '''def ablated_sentiment_share():
    from utils.smollm2 import load_smollm2
    model = load_smollm2()
    layer = best_steering_layer()
    pos_t, pos_l = prompts.tokenize_prompts(model, prompts.sentiment_pairs("train")[0])
    neg_t, neg_l = prompts.tokenize_prompts(model, prompts.sentiment_pairs("train")[1])
    v = contrastive_vector(model, pos_t, pos_l, neg_t, neg_l, f"blocks.{layer}.hook_resid_pre")
    tokens, last = prompts.tokenize_prompts(model, prompts.sentiment_metric_prompts("held_out"))
    up = prompts.word_ids(model, prompts.POSITIVE_WORDS)
    down = prompts.word_ids(model, prompts.NEGATIVE_WORDS)
    clean = behaviour_score(model(tokens)[t.arange(len(last)), last], up, down)
    ablated = behaviour_score(ablated_last_logits(model, tokens, last, v), up, down)
    return 1 - (ablated.mean() / clean.mean()).item()''', hint=1),
        "subtracted_instead": Mistake(
            "you subtracted the vector instead of ablating the direction: ablation removes each "
            "position's own component along the direction, at every layer",
            '''def ablated_sentiment_share():
    from utils.smollm2 import load_smollm2
    model = load_smollm2()
    layer = best_steering_layer()
    hook = f"blocks.{layer}.hook_resid_pre"
    pos_t, pos_l = prompts.tokenize_prompts(model, prompts.sentiment_pairs("train")[0])
    neg_t, neg_l = prompts.tokenize_prompts(model, prompts.sentiment_pairs("train")[1])
    v = contrastive_vector(model, pos_t, pos_l, neg_t, neg_l, hook)
    tokens, last = prompts.tokenize_prompts(model, prompts.sentiment_metric_prompts("held_out"))
    up = prompts.word_ids(model, prompts.POSITIVE_WORDS)
    down = prompts.word_ids(model, prompts.NEGATIVE_WORDS)
    clean = behaviour_score(model(tokens)[t.arange(len(last)), last], up, down)
    pushed = behaviour_score(steered_last_logits(model, tokens, last, hook, v, -1.0), up, down)
    return (pushed.mean() / clean.mean()).item()''', hint=2),
    },
    "best_number_direction": {
        "contrastive": Mistake(
            "you picked the contrastive vector, the classes' own difference: at the common "
            "length it is not the one with the largest mean shift; read the means of the three "
            "at COMPARE_SCALE times the contrastive norm (signed, the largest value)",
            '''def best_number_direction():
    return "contrastive"''', hint=1),
        "largest_size": Mistake(
            "your answer is the direction that moves the metric furthest in size: the question "
            "asks for the largest signed mean shift (the largest value), and these shifts are "
            "negative",
            '''@t.no_grad()
def best_number_direction():
    from utils.sae import load_pretrained_sae
    from utils.smollm2 import load_smollm2
    from utils.tl_compat import run_from_layer
    model = load_smollm2()
    hook = f"blocks.{COMPARE_LAYER}.hook_resid_post"
    def stream(tokens):
        _, cache = model.run_with_cache(tokens, names_filter=[hook],
                                        stop_at_layer=COMPARE_LAYER + 1)
        return cache[hook]
    (pl_t, pl_l), (sg_t, sg_l) = [prompts.tokenize_prompts(model, s)
                                  for s in prompts.number_pairs("train")]
    plural = stream(pl_t)[t.arange(len(pl_l)), pl_l]
    singular = stream(sg_t)[t.arange(len(sg_l)), sg_l]
    x = t.cat([singular, plural])
    y = t.tensor([0] * len(singular) + [1] * len(plural))
    sae, _ = load_pretrained_sae()
    latents = t.relu((x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"])
    latent = int((latents[y == 1].mean(0) - latents[y == 0].mean(0)).argmax())
    contrastive = plural.mean(0) - singular.mean(0)
    directions = {"contrastive": contrastive,
                  "probe": train_and_test_probe(x, y, t.arange(len(y)) % 4 != 0)["w"],
                  "sae_latent": sae["W_dec"][latent]}
    length = COMPARE_SCALE * contrastive.norm()
    tokens, last = prompts.tokenize_prompts(model, prompts.number_metric_prompts("held_out")[0])
    up = prompts.word_ids(model, prompts.NUMBER_WORDS["up"])
    down = prompts.word_ids(model, prompts.NUMBER_WORDS["down"])
    clean = stream(tokens)
    base = behaviour_score(run_from_layer(model, clean, COMPARE_LAYER + 1, last), up, down)
    shift = {}
    for name, direction in directions.items():
        pushed = clean.clone()
        pushed[:, 1:] += length * direction / direction.norm()
        steered = behaviour_score(run_from_layer(model, pushed, COMPARE_LAYER + 1, last), up, down)
        shift[name] = (steered - base).mean().item()
    return max(shift, key=lambda name: abs(shift[name]))''', hint=1),
    },
    "cross_behaviour_shift": {
        "sentiment_metric": Mistake(
            "you measured the sentiment metric: specificity asks how much the *number* metric "
            "(logit(' are') - logit(' is')) moves under the sentiment steer",
            _CROSS_SHIFT_START + '''    up = prompts.word_ids(model, prompts.POSITIVE_WORDS)
    down = prompts.word_ids(model, prompts.NEGATIVE_WORDS)
    clean = behaviour_score(model(tokens)[t.arange(len(last)), last], up, down)
    steered = behaviour_score(steered_last_logits(model, tokens, last, hook, v, 1.0), up, down)
    return (steered - clean).mean().item()''', hint=1),
        "steered_not_change": Mistake(
            "you returned the steered score itself: the question asks for the change, steered "
            "minus clean",
            _CROSS_SHIFT_START + '''    up = prompts.word_ids(model, prompts.NUMBER_WORDS["up"])
    down = prompts.word_ids(model, prompts.NUMBER_WORDS["down"])
    return behaviour_score(steered_last_logits(model, tokens, last, hook, v, 1.0),
                           up, down).mean().item()''', hint=3),
    },
}
