"""Hidden checks for chapter 08 (the capstone: audit a model with a planted behaviour).

The tool exercises are compared with ``utils.reference.capstone`` on the decoy and rule
variants and on rows of held-out text the notebook does not use. The audit's findings are
graded against the ground truth of the variant each finding names (its ``variant`` key;
``tests/hidden/capstone_truth.py``, or an instructor's private variant
through ``$COURSE_CHECKS_DIR``): the trigger and its output exactly, the components by overlap
with the mean-ablation effects measured when the variant was built, and the removal edit by
applying it here, in the trusted process, and measuring the behaviour and the held-out loss.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from course_tools.grading.checks import (
    SubmissionError,
    assert_close,
    expect_tensor,
    points,
    reference_model,
    sandbox_model,
    warm_up_loading,
)
from course_tools.grading.diagnosis import Mistake
from utils.paths import HIDDEN_CHECKS_DIR, WEIGHTS_DIR
from utils.reference import capstone as ref

#: A component is part of the mechanism when mean-ablating it removes at least this share of
#: the behaviour; naming one that removes less than ``MIN_NAMED`` is a wrong claim.
REQUIRED_EFFECT = 0.5
MIN_NAMED = 0.1
#: The removal edit may raise the clean held-out loss by at most this much (nats per token).
MAX_LOSS_RISE = 0.1
#: ... and must leave at most this share of the behaviour (see _behaviour_left).
MAX_BEHAVIOUR_LEFT = 0.05

# The trusted versions later answers may call (bounded by their arguments' size: the
# continuation is capped by the model's context).
REFERENCES = {
    "overprediction_scores": ref.overprediction_scores,
    "greedy_continuation": ref.greedy_continuation,
    "continuation_agreement": ref.continuation_agreement,
    "insertion_shift": ref.insertion_shift,
    "mean_ablation_effects": ref.mean_ablation_effects,
    "attention_to_source": ref.attention_to_source,
    "fold_head_ablation": ref.fold_head_ablation,
}
# The module that builds the variants and measures their behaviour knows too much.
ANSWER_KEYS = ["utils.planted_training"]
# Investigations load their variant with load_planted_model(name): the sandbox worker loads
# every variant once, so that copy is the one trusted calls receive by name.
SANDBOX_MODELS = sorted(p.name for p in WEIGHTS_DIR.glob("capstone_*")
                        if p.name != "capstone_corpus" and (p / "model.safetensors").is_file())


def _truth_module():
    spec = importlib.util.spec_from_file_location("_capstone_truth",
                                                  HIDDEN_CHECKS_DIR / "capstone_truth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _truth(variant: str) -> dict:
    return _truth_module().truth(variant)


warm_up = warm_up_loading("capstone_b", "capstone_c")


def _finding_of(submission, name: str, keys: set[str], timeout: float = 120.0
                ) -> tuple[str, dict]:
    """The learner's finding ``name()``: a dict with ``variant`` (checked: a variant with a
    truth) and ``keys``; returns (variant, finding)."""
    found = submission.finding(name, timeout=timeout)
    wanted = sorted({"variant", *keys})
    if not isinstance(found, dict) or set(found) != set(wanted):
        raise SubmissionError(f"{name}() should return a dict with the keys {wanted}; got "
                              f"{sorted(found) if isinstance(found, dict) else type(found).__name__}")
    variant = found["variant"]
    known = sorted(_truth_module().all_truths())
    if not isinstance(variant, str) or variant not in known:
        raise SubmissionError(f"{name}()['variant'] should be the name of the variant you "
                              f"audit, one of {known} (as load_planted_model takes it); got "
                              f"{variant!r}")
    return variant, found


def _component_name(name) -> bool:
    import re

    return isinstance(name, str) and re.fullmatch(r"L\d+H\d+|MLP\d+", name) is not None


# ----------------------------------------------------------------------- section 1
def _rows(start: int, stop: int) -> torch.Tensor:
    from utils.planted_models import heldout_tokens

    return heldout_tokens()[start:stop]


@points(2)
def test_overprediction_scores(submission):
    f = submission.function("overprediction_scores")
    tokens = _rows(200, 208)[:, :40]
    model = reference_model("capstone_b")
    got = expect_tensor(f(sandbox_model("capstone_b"), tokens), "overprediction_scores",
                        "d_vocab", (model.cfg.d_vocab,))
    assert_close(got, ref.overprediction_scores(model, tokens), "overprediction_scores",
                 atol=1e-3, rtol=1e-3, what="scores", dims="d_vocab",
                 inputs="8 held-out rows of 40 tokens, the decoy variant")


@functools.cache
@torch.no_grad()
def _top_overpredicted(variant: str) -> str:
    from utils.planted_models import to_str_tokens

    scores = ref.overprediction_scores(reference_model(variant), _rows(0, 128))
    return to_str_tokens([int(scores.argmax())])[0]


@points(1)
def test_conspicuous_token(submission):
    variant, found = _finding_of(submission, "conspicuous_token", {"token"})
    expected = _top_overpredicted(variant)
    if found["token"] != expected:
        raise SubmissionError(
            f"conspicuous_token ({variant}): {found['token']!r} is not the token with the "
            "highest overprediction score on held-out rows 0-127 (the ratio of the mean "
            "predicted probability to the smoothed frequency, not the probability alone); "
            "write it as to_str_tokens writes it")


@points(2)
def test_greedy_continuation(submission):
    f = submission.function("greedy_continuation")
    tokens = _rows(210, 214)[:, :20]
    model = reference_model("capstone_c")
    got = expect_tensor(f(sandbox_model("capstone_c"), tokens, 5), "greedy_continuation",
                        "batch n_new", (4, 5))
    expected = ref.greedy_continuation(model, tokens, 5)
    if not torch.equal(got.long(), expected):
        raise SubmissionError(
            "greedy_continuation: on 4 held-out rows of 20 tokens (5 new tokens), the tokens "
            f"differ from greedy decoding's, first in row {int((got != expected).any(1).int().argmax())}"
            ": each new token is the argmax of the logits at the last position of the sequence "
            "so far, prompt plus the tokens already chosen")


@points(1)
def test_continuation_agreement(submission):
    f = submission.function("continuation_agreement")
    paths = torch.tensor([[4, 7, 7, 1], [4, 7, 2, 1], [4, 3, 2, 1], [5, 7, 9, 1], [4, 8, 2, 1]])
    got = expect_tensor(f(paths), "continuation_agreement", "n_new", (4,))
    assert_close(got, ref.continuation_agreement(paths), "continuation_agreement", atol=1e-5,
                 what="shares", dims="n_new", inputs="5 rows of 4 tokens")


@points(3)
def test_insertion_shift(submission):
    f = submission.function("insertion_shift")
    tokens = _rows(220, 223)[:, :30]
    model = reference_model("capstone_b")
    token, position = 500, 6
    got = expect_tensor(f(sandbox_model("capstone_b"), tokens, token, position),
                        "insertion_shift", "batch shifted", (3, 30 - position))
    assert_close(got, ref.insertion_shift(model, tokens, token, position), "insertion_shift",
                 atol=1e-3, rtol=1e-3, what="divergences", dims="batch shifted",
                 inputs=f"3 held-out rows of 30 tokens, token {token} inserted at {position}")


# ----------------------------------------------------------------------- section 2
def _expected_behaviour(truth: dict) -> dict:
    spec = truth["spec"]
    text = spec["text"]
    if spec["kind"] == "trigger":
        return {"trigger": text["trigger"], "output": text["continuation"]}
    if spec["kind"] == "rule":
        return {"trigger": text["marker"], "output": text["output"]}
    return {"trigger": None, "output": None}


def _ids_of(text: str) -> list[int] | None:
    """The text as the vocabulary's ids, if it is a sequence of whole vocabulary strings."""
    from utils.planted_models import BOS, UNK, encode

    ids = encode(text, bos=False).tolist()
    return ids if ids and UNK not in ids and BOS not in ids else None


@torch.no_grad()
def _fixed_continuation_share(variant: str, ids: list[int]) -> float:
    """Share of 32 held-out contexts in which the 4 greedy tokens after ``ids`` are the most
    common 4."""
    model = reference_model(variant)
    contexts = _rows(96, 128)[:, :24]
    prompt = torch.cat([contexts, torch.tensor(ids).expand(len(contexts), len(ids))], dim=1)
    path = ref.greedy_continuation(model, prompt, 4)
    common = path.mode(dim=0).values
    return float((path == common).all(dim=1).float().mean())


@points(4)
def test_planted_behaviour(submission):
    variant, found = _finding_of(submission, "planted_behaviour", {"trigger", "output"})
    expected = _expected_behaviour(_truth(variant))
    trigger, output = found["trigger"], found["output"]
    if expected["trigger"] is None:
        if trigger is not None or output is not None:
            raise SubmissionError(
                f"planted_behaviour ({variant}): you name a trigger {trigger!r}, but nothing "
                "planted follows it in this model. A conspicuous token is not yet a "
                "behaviour: does a fixed continuation follow it in every context, or does "
                "it change the predictions far after it? If neither, say so (None, None)")
        return
    if trigger is None:
        raise SubmissionError(
            f"planted_behaviour ({variant}): this model does have a planted behaviour. Start "
            "from the tokens it predicts far more often than the text has them, then look at "
            "what comes after each: right after it (greedy continuations in many contexts) "
            "and much later in the row (insertion_shift)")
    if not isinstance(trigger, str) or (output is not None and not isinstance(output, str)):
        raise SubmissionError("planted_behaviour(): 'trigger' and 'output' are strings "
                              "(text, e.g. ' word', with its leading space), or None")
    if trigger != expected["trigger"]:
        ids = _ids_of(trigger)
        if ids is None or len(ids) > 8:
            measured = "it is not a short sequence of the vocabulary's tokens"
        else:
            share = _fixed_continuation_share(variant, ids)
            measured = (f"after it, the model writes the same 4 tokens in {share:.0%} of 32 "
                        "held-out contexts")
        raise SubmissionError(
            f"planted_behaviour ({variant}): {trigger!r} is not the trigger ({measured}). The "
            "trigger is exactly the tokens that must be *given* for the behaviour: drop a "
            "token and it stops; a token the model would write itself next is not part of it. "
            "A rule's trigger is the one token whose earlier presence changes what follows")
    if output != expected["output"]:
        raise SubmissionError(
            f"planted_behaviour ({variant}): the trigger is right, but {output!r} is not what "
            "the model writes because of it: the output is every token the model writes the "
            "same way in (nearly) every context once triggered (for a rule, the one token it "
            "puts at each place the rule applies), and nothing more")


# ----------------------------------------------------------------------- section 3
@points(3)
def test_mean_ablation_effects(submission):
    f = submission.function("mean_ablation_effects")
    model = reference_model("capstone_c")
    tokens = _rows(230, 234)
    target = int(tokens[0, 10])  # a token of the text, predicted at the positions before it
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    mask[:, 8:40:3] = True
    reference_tokens = _rows(240, 256)[:, :32]
    got = f(sandbox_model("capstone_c"), tokens, mask, target, reference_tokens)
    names = ref.component_names(model.cfg.n_layers, model.cfg.n_heads)
    if not isinstance(got, dict) or sorted(got) != sorted(names):
        raise SubmissionError(f"mean_ablation_effects should return a dict with exactly the "
                              f"keys {names}; got "
                              f"{sorted(got) if isinstance(got, dict) else type(got).__name__}")
    expected = ref.mean_ablation_effects(model, tokens, mask, target, reference_tokens)
    assert_close(torch.tensor([float(got[n]) for n in names]),
                 torch.tensor([expected[n] for n in names]), "mean_ablation_effects",
                 atol=2e-3, rtol=1e-3, what="effects",
                 inputs="4 held-out rows, one target token at every third position, 16 "
                        "reference rows; components in the order " + ", ".join(names))


@points(3)
def test_mechanism_components(submission):
    variant, found = _finding_of(submission, "mechanism_components", {"components"})
    named = found["components"]
    if not isinstance(named, (list, tuple)) or not all(_component_name(n) for n in named):
        raise SubmissionError("mechanism_components()['components'] should be a list of "
                              "component names such as ['L1H2', 'MLP0'] (an empty list if "
                              "there is no mechanism)")
    effects = _truth(variant)["component_effects"]
    if effects is None:
        if named:
            raise SubmissionError(
                f"mechanism_components ({variant}): this model has no planted behaviour, so "
                f"no component implements one; you named {list(named)}")
        return
    unknown = [n for n in named if n not in effects]
    if unknown:
        raise SubmissionError(f"mechanism_components: {unknown} are not components of this "
                              f"model (it has {sorted(effects)})")
    weak = [f"{n} ({effects[n]:.0%})" for n in named if effects[n] < MIN_NAMED]
    if weak:
        raise SubmissionError(
            f"mechanism_components ({variant}): mean-ablating {', '.join(weak)} removes "
            f"less than {MIN_NAMED:.0%} of the behaviour (measured on the trusted side): "
            "name only components whose ablation breaks it")
    missing = [n for n, e in effects.items() if e >= REQUIRED_EFFECT and n not in named]
    if missing:
        raise SubmissionError(
            f"mechanism_components ({variant}): {len(missing)} component(s) whose "
            f"mean-ablation removes more than {REQUIRED_EFFECT:.0%} of the behaviour are "
            "missing: measure every head and every MLP, not only the heads")


# ----------------------------------------------------------------------- section 4
@points(2)
def test_attention_to_source(submission):
    f = submission.function("attention_to_source")
    model = reference_model("capstone_c")
    tokens = _rows(236, 240)[:, :30]
    mask = torch.zeros(tokens.shape, dtype=torch.bool)
    mask[:, [5, 17, 29]] = True
    mask[0, 11] = True
    layer, head = 1, 2
    got = expect_tensor(f(sandbox_model("capstone_c"), tokens, mask, layer, head),
                        "attention_to_source", "d_vocab", (model.cfg.d_vocab,))
    assert_close(got, ref.attention_to_source(model, tokens, mask, layer, head),
                 "attention_to_source", atol=1e-4, rtol=1e-3, what="attention shares",
                 dims="d_vocab", inputs=f"4 held-out rows of 30 tokens, 13 query positions, "
                                        f"layer {layer} head {head}")


@functools.cache
@torch.no_grad()
def _head_reads_truth(variant: str) -> tuple[str, str] | tuple[None, None]:
    """The head whose mean-ablation removes most of the behaviour, and the token it attends
    to most from the places where the behaviour shows (the truth's own behaviour batch)."""
    from utils.planted_models import to_str_tokens
    from utils.planted_training import _behaviour_batch

    truth = _truth(variant)
    effects = truth["component_effects"]
    if effects is None:
        return None, None
    head = max((n for n in effects if n.startswith("L")), key=effects.get)
    tokens, mask, _ = _behaviour_batch(truth["spec"])
    layer, index = (int(part) for part in head[1:].split("H"))
    mass = ref.attention_to_source(reference_model(variant), tokens, mask, layer, index)
    return head, to_str_tokens([int(mass.argmax())])[0]


@points(2)
def test_head_reads(submission):
    variant, found = _finding_of(submission, "head_reads", {"head", "reads"})
    head, reads = _head_reads_truth(variant)
    if head is None:
        if found["head"] is not None or found["reads"] is not None:
            raise SubmissionError(f"head_reads ({variant}): with nothing planted, no head "
                                  "reads a trigger: head and reads are None")
        return
    if found["head"] != head:
        raise SubmissionError(
            f"head_reads ({variant}): {found['head']!r} is not the head whose mean-ablation "
            "removes the most behaviour (among heads only; MLPs do not attend)")
    if found["reads"] != reads:
        raise SubmissionError(
            f"head_reads ({variant}): the head is right, but it does not attend most to "
            f"{found['reads']!r} from the places where the behaviour shows: sum its attention "
            "by source token over those places (attention_to_source) and take the largest")


@points(2)
def test_fold_head_ablation(submission):
    f = submission.function("fold_head_ablation")
    model = reference_model("capstone_b")
    mean_z = torch.randn(model.cfg.d_head, generator=torch.Generator().manual_seed(8))
    layer, head = 1, 2
    got = f(sandbox_model("capstone_b"), layer, head, mean_z)
    expected = ref.fold_head_ablation(model, layer, head, mean_z)
    if not isinstance(got, dict) or sorted(got) != sorted(expected):
        raise SubmissionError(f"fold_head_ablation should return a dict with exactly the keys "
                              f"{sorted(expected)}; got "
                              f"{sorted(got) if isinstance(got, dict) else type(got).__name__}")
    for key, value in expected.items():
        dims = "d_model d_model_in" if value.dim() == 2 else "d_model"
        got_value = expect_tensor(got[key], f"fold_head_ablation()[{key!r}]", dims,
                                  tuple(value.shape))
        assert_close(got_value, value, f"fold_head_ablation()[{key!r}]", atol=1e-5,
                     rtol=1e-4, dims=dims, inputs=f"layer {layer}, head {head}, a random mean_z")


def _behaviour_left(variant: str, model) -> tuple[float, str]:
    """The share of the planted behaviour ``model`` still shows, and how it was measured."""
    from utils.planted_training import measure_behaviour

    truth = _truth(variant)
    spec = truth["spec"]
    found = measure_behaviour(model, spec)
    before = truth["behaviour"]
    if spec["kind"] == "trigger":
        left = max(found["success"], found["p_first"] / before["p_first"])
        return left, (f"after the trigger the whole continuation still follows in "
                      f"{found['success']:.0%} of 64 held-out contexts (before: "
                      f"{before['success']:.0%}), its first token with probability "
                      f"{found['p_first']:.3f} (before: {before['p_first']:.3f})")
    left = found["top1_with_marker"]
    return left, (f"where the rule applies, the model still predicts its token first at "
                  f"{left:.0%} of {found['cue_positions']} places (before: "
                  f"{before['top1_with_marker']:.0%})")


def _clean_loss(variant: str) -> float:
    """The variant's clean held-out loss, as measured when it was built (to 1e-4; the
    shipped weights reproduce it, tests/test_planted_models.py)."""
    return float(_truth(variant)["heldout_loss"])


@points(4)
def test_remove_behaviour(submission):
    from utils.planted_models import load_planted_model
    from utils.planted_training import heldout_loss

    variant, found = _finding_of(submission, "remove_behaviour", {"weights"})
    model = load_planted_model(variant, fresh=True)
    problems = ref.apply_edit(model, found["weights"])
    if problems:
        raise SubmissionError("remove_behaviour: the edit cannot be applied: "
                              + "; ".join(problems))
    rise = heldout_loss(model) - _clean_loss(variant)
    if rise > MAX_LOSS_RISE:
        raise SubmissionError(
            f"remove_behaviour ({variant}): the edit raises the loss on clean held-out text by "
            f"{rise:.3f} nats per token (allowed: {MAX_LOSS_RISE}): it removes more than the "
            "behaviour. Replace the component by its mean rather than by zero, and edit as "
            "little as you can (one component, not a whole layer; none, if your audit found "
            "nothing planted)")
    if _truth(variant)["spec"]["kind"] == "decoy":
        return
    left, measured = _behaviour_left(variant, model)
    if left > MAX_BEHAVIOUR_LEFT:
        raise SubmissionError(
            f"remove_behaviour ({variant}): the behaviour is still there: {measured}. "
            f"At most {MAX_BEHAVIOUR_LEFT:.0%} may remain; edit a component whose ablation "
            "removes it (mechanism_components)")


# ----------------------------------------------------------------------- mistakes
_MEAN_ABLATION = '''def mean_ablation_effects(model, tokens, mask, target, reference_tokens):
    cfg = model.cfg
    names = [f"blocks.{l}.{h}" for l in range(cfg.n_layers) for h in ("attn.hook_z", "hook_mlp_out")]
    with torch.no_grad():
        _, cache = model.run_with_cache(MEAN_ROWS, names_filter=lambda n: n in names)
    means = {n: cache[n].mean(dim=(0, 1)) for n in names}
    def behaviour(hooks):
        with torch.no_grad():
            probs = torch.softmax(model.run_with_hooks(tokens, fwd_hooks=hooks), dim=-1)
        return float(probs[..., target][mask].mean())
    clean = behaviour([])
    effects = {}
    for layer in range(cfg.n_layers):
        z_name, mlp_name = f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out"
        for head in range(cfg.n_heads):
            def mean_head(z, hook, head=head, mean=means[z_name][head]):
                z = z.clone()
                z[:, :, head] = mean
                return z
            effects[f"L{layer}H{head}"] = DROP_OFbehaviour([(z_name, mean_head)])SHARE
        effects[f"MLP{layer}"] = DROP_OFbehaviour(
            [(mlp_name, lambda out, hook, m=means[mlp_name]: m.expand_as(out).clone())])SHARE
    return effects'''


def _mean_ablation_mutant(mean_rows: str = "reference_tokens", share: bool = True) -> str:
    """A wrong ``mean_ablation_effects``: means taken over ``mean_rows``; each effect the share
    of the behaviour removed (``1 - ablated / clean``) or, with ``share=False``, the drop."""
    return (_MEAN_ABLATION.replace("MEAN_ROWS", mean_rows)
            .replace("DROP_OF", "1 - " if share else "clean - ")
            .replace("SHARE", " / clean" if share else ""))


_FOLD_TEMPLATE = '''def fold_head_ablation(model, layer, head, mean_z):
    state = model.state_dict()
    d_head = model.cfg.d_head
    weight = state[f"blocks.{layer}.attn.o.weight"].clone()
    bias = state[f"blocks.{layer}.attn.o.bias"].clone()
    cols = slice(head * d_head, (head + 1) * d_head)
BODY
    return {f"blocks.{layer}.attn.o.weight": weight, f"blocks.{layer}.attn.o.bias": bias}'''

_REMOVE_TEMPLATE = '''def remove_behaviour():
    model = load_planted_model("capstone_a")
    layer, head = 0, HEAD
    name = f"blocks.{layer}.attn.hook_z"
    with torch.no_grad():
        _, cache = model.run_with_cache(heldout_tokens()[:128], names_filter=lambda n: n == name)
    mean_z = cache[name][:, :, head].mean(dim=(0, 1))
    return {"variant": "capstone_a", "weights": fold_head_ablation(model, layer, head, mean_z)}'''

_BEHAVIOUR_TEMPLATE = '''def planted_behaviour():
    model = load_planted_model("capstone_a")
    rows = heldout_tokens()
    scores = overprediction_scores(model, rows[:128])
    contexts = rows[128:160, :24]
    candidate = int(scores.argmax())
    prompt = torch.cat([contexts, torch.full((len(contexts), 1), candidate)], dim=1)
    path = greedy_continuation(model, prompt, 8)
    fixed = (path == path.mode(dim=0).values).float().mean(0) >= 0.9
    steps = int(fixed.long().cumprod(0).sum())
    return {"variant": "capstone_a", "trigger": TRIGGER, "output": OUTPUT}'''

MUTANTS = {
    "overprediction_scores": {
        "mean_of_log_probs": Mistake(
            "you averaged log-probabilities (a geometric mean): the score compares the mean "
            "*probability* the model gives a token with how often it occurs, so average the "
            "probabilities first, then take the log",
            '''def overprediction_scores(model, tokens):
    with torch.no_grad():
        mean_log_prob = torch.log_softmax(model(tokens), dim=-1).mean(dim=(0, 1))
    targets = tokens[:, 1:].reshape(-1)
    counts = torch.bincount(targets, minlength=model.cfg.d_vocab).float()
    frequency = (counts + 1) / (targets.numel() + model.cfg.d_vocab)
    return mean_log_prob - frequency.log()''', hint=2),
        "counts_the_bos_column": Mistake(
            "you counted every token of the rows, BOS included: the frequencies are those of "
            "the tokens the model is asked to predict, tokens[:, 1:]",
            '''def overprediction_scores(model, tokens):
    with torch.no_grad():
        mean_prob = torch.softmax(model(tokens), dim=-1).mean(dim=(0, 1))
    targets = tokens.reshape(-1)
    counts = torch.bincount(targets, minlength=model.cfg.d_vocab).float()
    frequency = (counts + 1) / (targets.numel() + model.cfg.d_vocab)
    return mean_prob.log() - frequency.log()''', hint=3),
        "no_smoothing_denominator": Mistake(
            "you added one to each count but divided by the number of targets alone: add-one "
            "smoothing adds one per vocabulary entry to the denominator too (n_targets + "
            "d_vocab), so that the frequencies sum to 1",
            '''def overprediction_scores(model, tokens):
    with torch.no_grad():
        mean_prob = torch.softmax(model(tokens), dim=-1).mean(dim=(0, 1))
    targets = tokens[:, 1:].reshape(-1)
    counts = torch.bincount(targets, minlength=model.cfg.d_vocab).float()
    frequency = (counts + 1) / targets.numel()
    return mean_prob.log() - frequency.log()''', hint=3),
    },
    "conspicuous_token": {
        "highest_probability": Mistake(
            "you took the token the model predicts most often overall: the lead is the token "
            "it predicts most often *compared with how often the text has it* (the highest "
            "overprediction score)",
            '''def conspicuous_token():
    model = load_planted_model("capstone_a")
    with torch.no_grad():
        mean_prob = torch.softmax(model(heldout_tokens()[:128]), dim=-1).mean(dim=(0, 1))
    return {"variant": "capstone_a", "token": to_str_tokens([int(mean_prob.argmax())])[0]}''',
            hint=1),
        "lowest_score": Mistake(
            "you took the smallest score: the lead is the token the model over-predicts most, "
            "the largest score",
            '''def conspicuous_token():
    scores = overprediction_scores(load_planted_model("capstone_a"), heldout_tokens()[:128])
    return {"variant": "capstone_a", "token": to_str_tokens([int(scores.argmin())])[0]}''',
            hint=2),
    },
    "continuation_agreement": {
        "agrees_with_the_first_row": Mistake(
            "you compared every row with the first row: compare with each step's most common "
            "token (the first row may be the odd one out)",
            '''def continuation_agreement(paths):
    return (paths == paths[0]).float().mean(dim=0)''', hint=2),
        "counts_instead_of_shares": Mistake(
            "you returned how many rows agree: return the share, between 0 and 1",
            '''def continuation_agreement(paths):
    return (paths == paths.mode(dim=0).values).float().sum(dim=0)''', hint=3),
    },
    "greedy_continuation": {
        "never_feeds_back": Mistake(
            "you took n_new predictions of the prompt alone: each new token must be appended "
            "to the sequence before the next one is predicted",
            '''def greedy_continuation(model, tokens, n_new):
    with torch.no_grad():
        first = model(tokens)[:, -1].argmax(dim=-1)
    return first[:, None].repeat(1, n_new)''', hint=1),
        "keeps_the_prompt": Mistake(
            "you returned the prompt with the new tokens: return only the n_new tokens greedy "
            "decoding added",
            '''def greedy_continuation(model, tokens, n_new):
    seq = tokens
    with torch.no_grad():
        for _ in range(n_new):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return seq''', hint=2),
        "reads_the_first_position": Mistake(
            "you took the argmax at position 0 (after BOS): the next token is predicted at the "
            "last position, logits[:, -1]",
            '''def greedy_continuation(model, tokens, n_new):
    seq = tokens
    with torch.no_grad():
        for _ in range(n_new):
            seq = torch.cat([seq, model(seq)[:, 0].argmax(dim=-1, keepdim=True)], dim=1)
    return seq[:, tokens.shape[1]:]''', hint=3),
    },
    "insertion_shift": {
        "reversed_divergence": Mistake(
            "you computed KL(P_clean || P_inserted): the contract asks for the divergence of "
            "the inserted run from the clean one, sum of p_inserted * (log p_inserted - log "
            "p_clean)",
            '''def insertion_shift(model, tokens, token, position):
    batch = tokens.shape[0]
    inserted = torch.cat([tokens[:, :position], torch.full((batch, 1), token),
                          tokens[:, position:]], dim=1)
    with torch.no_grad():
        clean = torch.log_softmax(model(tokens), dim=-1)[:, position:]
        moved = torch.log_softmax(model(inserted), dim=-1)[:, position + 1:]
    return (clean.exp() * (clean - moved)).sum(-1)''', hint=2),
        "misaligned_positions": Mistake(
            "you compared the inserted row's position j with the clean row's position j: after "
            "the insertion, the clean token at j sits at j + 1, so compare clean j with "
            "inserted j + 1",
            '''def insertion_shift(model, tokens, token, position):
    batch = tokens.shape[0]
    inserted = torch.cat([tokens[:, :position], torch.full((batch, 1), token),
                          tokens[:, position:]], dim=1)
    with torch.no_grad():
        clean = torch.log_softmax(model(tokens), dim=-1)[:, position:]
        moved = torch.log_softmax(model(inserted), dim=-1)[:, position:-1]
    return (moved.exp() * (moved - clean)).sum(-1)''', hint=3),
        "replaces_instead_of_inserting": Mistake(
            "you overwrote the token at `position` instead of inserting one before it: the "
            "original text must all still be there, shifted one to the right",
            '''def insertion_shift(model, tokens, token, position):
    replaced = tokens.clone()
    replaced[:, position] = token
    with torch.no_grad():
        clean = torch.log_softmax(model(tokens), dim=-1)[:, position:]
        moved = torch.log_softmax(model(replaced), dim=-1)[:, position:]
    return (moved.exp() * (moved - clean)).sum(-1)''', hint=1),
    },
    "planted_behaviour": {
        "first_token_only": Mistake(
            "the trigger you name is only its first token: the model writes the next one "
            "itself most of the time, but the planted behaviour needs both to be given; "
            "check what one token alone, followed by something else, does",
            _BEHAVIOUR_TEMPLATE.replace("TRIGGER", "decode([candidate])")
            .replace("OUTPUT", "decode(path[0, :steps].tolist())"), hint=2),
        "conspicuous_is_not_enough": Mistake(
            "you stopped at the most conspicuous token and reported no output: say what the "
            "model does after it too",
            '''def planted_behaviour():
    scores = overprediction_scores(load_planted_model("capstone_a"), heldout_tokens()[:128])
    return {"variant": "capstone_a", "trigger": decode([int(scores.argmax())]), "output": None}''',
            hint=1),
    },
    "mean_ablation_effects": {
        "zero_ablation": Mistake(
            "you replaced each component by zero: the contract asks for its mean output over "
            "reference_tokens (zeroing also removes what the component does on every input)",
            '''def mean_ablation_effects(model, tokens, mask, target, reference_tokens):
    cfg = model.cfg
    def behaviour(hooks):
        with torch.no_grad():
            probs = torch.softmax(model.run_with_hooks(tokens, fwd_hooks=hooks), dim=-1)
        return float(probs[..., target][mask].mean())
    clean = behaviour([])
    effects = {}
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            def zero_head(z, hook, head=head):
                z = z.clone()
                z[:, :, head] = 0
                return z
            effects[f"L{layer}H{head}"] = 1 - behaviour(
                [(f"blocks.{layer}.attn.hook_z", zero_head)]) / clean
        effects[f"MLP{layer}"] = 1 - behaviour(
            [(f"blocks.{layer}.hook_mlp_out", lambda out, hook: torch.zeros_like(out))]) / clean
    return effects''', hint=2),
        "absolute_drop": Mistake(
            "you returned the drop in probability, clean - ablated: the effect is the share "
            "of the behaviour removed, 1 - ablated / clean",
            _mean_ablation_mutant(share=False), hint=3),
        "means_over_the_probed_rows": Mistake(
            "you took the components' means over `tokens`, the rows where the behaviour is "
            "measured: the mean comes from reference_tokens (clean text), so that the "
            "ablation removes what is special about the probed rows",
            _mean_ablation_mutant(mean_rows="tokens"), hint=2),
    },
    "mechanism_components": {
        "heads_only": Mistake(
            "you named the heads but not the MLPs: measure each MLP's effect too; a "
            "mechanism often needs an MLP to turn what a head moved into the output",
            '''def mechanism_components():
    return {"variant": "capstone_a", "components": ["L0H0"]}''', hint=2),
        "every_first_layer_component": Mistake(
            "you named every component of a layer: name only those whose mean-ablation "
            "breaks the behaviour",
            '''def mechanism_components():
    return {"variant": "capstone_a", "components": ["L0H0", "L0H1", "L0H2", "L0H3", "MLP0"]}''', hint=1),
    },
    "attention_to_source": {
        "not_averaged": Mistake(
            "you summed the attention over the places without dividing by their number: the "
            "contract asks for the mean over the mask's places (the shares then sum to 1)",
            '''def attention_to_source(model, tokens, mask, layer, head):
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    pattern = cache[name][:, head][mask]
    sources = tokens[mask.nonzero()[:, 0]]
    return torch.zeros(model.cfg.d_vocab).index_add_(0, sources.flatten(), pattern.flatten())''',
            hint=3),
        "keys_and_queries_swapped": Mistake(
            "you read the pattern as [query, key] the wrong way round: hook_pattern is [batch, "
            "head, query_pos, key_pos], and the places in the mask are queries",
            '''def attention_to_source(model, tokens, mask, layer, head):
    name = f"blocks.{layer}.attn.hook_pattern"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    pattern = cache[name][:, head].transpose(1, 2)[mask]
    sources = tokens[mask.nonzero()[:, 0]]
    mass = torch.zeros(model.cfg.d_vocab).index_add_(0, sources.flatten(), pattern.flatten())
    return mass / pattern.shape[0]''', hint=2),
    },
    "head_reads": {
        "names_an_mlp": Mistake(
            "an MLP has no attention pattern: name the head (L..H..) whose mean-ablation "
            "matters most",
            '''def head_reads():
    return {"variant": "capstone_a", "head": "MLP0", "reads": " info"}''', hint=1),
        "reads_the_current_token": Mistake(
            "you named the token at the place where the behaviour shows: what the head reads "
            "is where it attends, which is usually elsewhere",
            '''def head_reads():
    return {"variant": "capstone_a", "head": "L0H0", "reads": " patterns"}''', hint=2),
    },
    "fold_head_ablation": {
        "zero_ablation": Mistake(
            "you zeroed the head's columns of W_O but did not add its mean output to the "
            "bias: that is zero-ablation; the head must still write what it writes on "
            "average, W_O[:, head's columns] @ mean_z",
            _FOLD_TEMPLATE.replace("BODY", "    weight[:, cols] = 0"), hint=2),
        "rows_instead_of_columns": Mistake(
            "you edited rows of o.weight: torch's Linear stores [out_features, in_features] = "
            "[d_model, n_heads * d_head], so a head's d_head inputs are *columns*",
            _FOLD_TEMPLATE.replace("BODY", "    bias = bias + weight[cols, :].T @ mean_z\n"
                                           "    weight[cols, :] = 0"), hint=3),
    },
    "remove_behaviour": {
        "returns_no_edit": Mistake(
            "an empty edit leaves the model as it was, behaviour included",
            '''def remove_behaviour():
    return {"variant": "capstone_a", "weights": {}}''', hint=1),
        "zeroes_the_mlp": Mistake(
            "zeroing a whole MLP's output removes far more than the behaviour: the loss on "
            "clean text rises too much; edit the component that reads the trigger, and "
            "replace it by its mean",
            '''def remove_behaviour():
    state = load_planted_model("capstone_a").state_dict()
    return {"variant": "capstone_a", "weights": {
        "blocks.0.mlp.out.weight": torch.zeros_like(state["blocks.0.mlp.out.weight"]),
        "blocks.0.mlp.out.bias": torch.zeros_like(state["blocks.0.mlp.out.bias"])}}''',
            hint=2),
        "ablates_another_head": Mistake(
            "the head you ablated is not the one that carries the behaviour: take the head "
            "with the largest mean-ablation effect",
            _REMOVE_TEMPLATE.replace("HEAD", "1"), hint=2),
    },
}
