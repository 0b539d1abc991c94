"""Hidden checks for chapter 04 (probing).

Probe exercises are checked on small synthetic activations with a planted direction (no
model), compared with the independent reference in ``utils.reference.probing`` through
accuracies and behaviour rather than exact weights, so any correct optimiser passes
(LBFGS, Newton, gradient descent and a half-converged Adam, 200 steps at lr 0.01, were
checked). One probe case has test rows from a shifted distribution, so that standardising
with test-row or all-row statistics changes the held-out accuracy by ~0.25: the leakage
itself is what fails, not only an inconsistency between the returned weights and accuracy.
The two model exercises run SmolLM2 on a few short prompts the notebook never uses.

The investigations are graded against findings recomputed here from SmolLM2 with
``utils.reference.probing`` (never a stored number), on the notebook's own prompts and split.
Forward passes dominate, so each finding is computed from the least data that gives the
notebook's answer (the first layers of the 1,000 prompts; the 16 validation and 64 test
prompts of section 5, with class means from 80 training prompts per class), once per grading
process. The notebook asserts the margins that make this safe (each threshold is crossed by a
wide margin).
"""

from __future__ import annotations

import functools

import torch

from course_tools.grading.checks import (
    SubmissionError,
    assert_close,
    assert_number,
    expect_tensor,
    points,
    reference_model,
    sandbox_model,
    warm_up_loading,
)
from course_tools.grading.diagnosis import Mistake
from course_tools.grading.truth_cache import kept_truth
from utils.reference import probing as ref

# Prompts the notebook never shows (different nouns and shapes), of different lengths, so
# that right padding matters.
CHECK_PROMPTS = [
    "Several old fishing boats beside the harbour wall",
    "A recipe",
    "The engineers who designed the bridges",
    "The",
    "My neighbour's cat",
    "Every answer in the final section of the exam",
]


_model = functools.partial(reference_model, "smollm2")
warm_up = warm_up_loading("smollm2")


@functools.cache
def _padded_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    from utils.probing_data import tokenize_with_last_positions

    return tokenize_with_last_positions(_model(), CHECK_PROMPTS)


# ------------------------------------------------------------------ synthetic probe data
def _planted(n: int, d: int, frac_pos: float, seed: int, shift: float = 2.0
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations with per-dimension scales and offsets; class 1 moves along a planted
    direction. Fixed direction and scales across calls (seed 0), samples from ``seed``."""
    base = torch.Generator().manual_seed(0)
    direction = torch.randn(d, generator=base)
    direction /= direction.norm()
    scales = torch.rand(d, generator=base) * 4 + 0.2
    offsets = torch.randn(d, generator=base) * 6
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=gen) < frac_pos).long()
    noise = torch.randn(n, d, generator=gen)
    x = (noise + shift * y[:, None] * direction) * scales + offsets
    return x, y


def _shifted_test(n_train: int = 100, n_test: int = 400, d: int = 30, k: int = 3,
                  seed: int = 1) -> tuple[torch.Tensor, ...]:
    """A case where standardising with anything but the training rows changes the answer.

    Class 1 moves along a direction in the first ``k`` dimensions; the other ``d - k`` are
    noise. The held-out rows come from a shifted distribution: their noise dimensions are 8
    times wider and offset by 2 (in units of the training spread). A probe standardised with
    the training statistics keeps the small weights it fitted on those dimensions, and they
    hurt it on the wide test rows (reference held-out accuracy ~0.61). Statistics over all
    rows (or over the test rows) inflate the noise dimensions' std, which rescales their
    penalty and shrinks their weights: that probe scores ~0.87 (all rows) and points elsewhere
    (cosine ~0.56 with the reference); scoring test rows with their own statistics undoes the
    shift and also scores ~0.87. Converged and half-converged optimisers (LBFGS, Newton, GD,
    Adam 200 steps at lr 0.01) agree with the reference to within 0.01 here.
    """
    gen = torch.Generator().manual_seed(seed)
    scales = torch.rand(d, generator=gen) * 4 + 0.2
    offsets = torch.randn(d, generator=gen) * 6
    direction = torch.zeros(d)
    direction[:k] = torch.randn(k, generator=gen)
    direction /= direction.norm()

    def draw(n: int, shifted: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.rand(n, generator=gen) < 0.5).long()
        x = torch.randn(n, d, generator=gen) + 2.5 * y[:, None] * direction
        if shifted:
            x[:, k:] = x[:, k:] * 8.0 + 2.0
        return x * scales + offsets, y

    return (*draw(n_train, False), *draw(n_test, True))


# The probe cases and the weight decay each is fitted with. The notebook only ever uses 1e-2 (the
# default), so one case uses a strong penalty: an answer that ignores the argument, or drops the
# penalty term, fits the same probe as the reference everywhere else.
PROBE_CASES = {"shifted_test": 1e-2, "imbalanced_test": 1e-2, "imbalanced_train": 1e-2,
               "balanced": 1e-2, "strong_penalty": 1.0}


@functools.cache
def _probe_case(kind: str):
    if kind == "shifted_test":
        x_tr, y_tr, x_te, y_te = _shifted_test()
    elif kind == "imbalanced_train":
        # 80% positive in training and test, a weak planted direction: the intercept carries
        # the base rate, and a probe fitted without one scores ~0.65 instead of ~0.84.
        x_tr, y_tr = _planted(200, 30, 0.8, seed=6, shift=1.5)
        x_te, y_te = _planted(300, 30, 0.8, seed=7, shift=1.5)
    elif kind == "imbalanced_test":
        # 60 training rows in 30 dims (easy to overfit), 400 held-out rows, 80% positive.
        x_tr, y_tr = _planted(60, 30, 0.5, seed=1)
        x_te, y_te = _planted(400, 30, 0.8, seed=2)
    else:
        # "balanced" and "strong_penalty": the same rows; with weight_decay 1.0 the optimum's
        # train accuracy is ~0.1 lower and its w ~0.88 cosine from the 1e-2 one.
        x_tr, y_tr = _planted(80, 30, 0.5, seed=3, shift=1.5)
        x_te, y_te = _planted(300, 30, 0.5, seed=4, shift=1.5)
    # Interleave train and test rows so that "the first rows are the training set" fails.
    x = torch.cat([x_tr, x_te])
    y = torch.cat([y_tr, y_te])
    is_train = torch.cat([torch.ones(len(y_tr), dtype=torch.bool),
                          torch.zeros(len(y_te), dtype=torch.bool)])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(5))
    x, y, is_train = x[order], y[order], is_train[order]
    return x, y, is_train, ref.train_and_test_probe(x, y, is_train,
                                                    weight_decay=PROBE_CASES[kind])


def _check_probe_result(got, kind: str) -> None:
    x, y, is_train, expected = _probe_case(kind)
    if not isinstance(got, dict):
        raise SubmissionError(f"train_and_test_probe should return a dict, got "
                              f"{type(got).__name__}")
    missing = {"w", "b", "train_acc", "test_acc", "test_stderr"} - set(got)
    if missing:
        raise SubmissionError(f"train_and_test_probe: the dict lacks keys {sorted(missing)}")
    w = expect_tensor(got["w"], "probe['w']", "d_model", (x.shape[1],))
    b = got["b"]
    b = b.item() if isinstance(b, torch.Tensor) and b.numel() == 1 else b
    if not isinstance(b, (int, float)):
        raise SubmissionError("probe['b'] should be a number (or a one-element tensor)")
    test = ~is_train
    n_test = int(test.sum())
    penalty = (f" This case passes weight_decay={PROBE_CASES[kind]}: use the argument, in "
               "the loss, on w only." if PROBE_CASES[kind] != 1e-2 else "")
    if kind == "shifted_test":
        # Checked first, before any consistency check: this is the leakage signal.
        assert_number(got["test_acc"], expected["test_acc"], "train_and_test_probe", atol=0.05,
                      what=f"held-out accuracy on {n_test} rows whose noise dimensions are "
                           "shifted and 8x wider than in training (a probe standardised with "
                           "test-row or all-row statistics scores about 0.25 higher here: "
                           "compute the mean and std from the training rows only, and use "
                           "them for every row; a probe whose w and b were not converted back "
                           "to raw coordinates, or whose optimiser stopped before the minimum, "
                           "scores differently too)")
    acc_from_weights = (((x.double() @ w.double() + b) > 0).long() == y)[test].double().mean()
    assert_number(got["test_acc"], acc_from_weights.item(), "train_and_test_probe", atol=1e-6,
                  what="test_acc (recomputed from your returned w and b on the held-out rows)")
    assert_number(got["train_acc"], expected["train_acc"], "train_and_test_probe", atol=0.04,
                  what="train_acc of the regularised minimiser (fit on the training rows only, "
                       "with the intercept, until the loss stops decreasing)." + penalty)
    assert_number(got["test_acc"], expected["test_acc"], "train_and_test_probe", atol=0.025,
                  what=f"held-out accuracy on {n_test} rows (standardise with the *training* "
                       "mean and std, fit on the training rows only until converged, score "
                       "the others)." + penalty)
    acc = float(got["test_acc"])
    assert_number(got["test_stderr"], (acc * (1 - acc) / n_test) ** 0.5, "train_and_test_probe",
                  atol=1e-6, what="test_stderr = sqrt(acc (1 - acc) / n_test)")
    cos = torch.nn.functional.cosine_similarity(w.double(), expected["w"].double(), dim=0)
    if cos < 0.9:
        leak = (" On this case the test rows are distributed differently from the training "
                "rows: are the mean and std for standardising taken from the training rows "
                "only?" if kind == "shifted_test" else "")
        raise SubmissionError(
            f"train_and_test_probe: your w points elsewhere than the regularised optimum "
            f"(cosine {cos:.2f}); is w in raw activation coordinates, is the loss mean BCE + "
            f"weight_decay * |w|^2, and did the optimiser converge (the docstring asks for the "
            f"minimiser, whatever the optimiser: run it until the loss stops changing)?{leak}"
            f"{penalty}")


@points(2)
def test_collect_resid_at_positions(submission):
    collect = submission.function("collect_resid_at_positions")
    tokens, last_pos = _padded_tokens()
    layers = [0, 4, 9]
    got = collect(sandbox_model("smollm2"), tokens, last_pos, layers, 4)
    got = expect_tensor(got, "collect_resid_at_positions", "layer batch d_model",
                        (len(layers), tokens.shape[0], 576))
    expected = ref.collect_resid_at_positions(_model(), tokens, last_pos, layers, batch_size=16)
    for k, layer in enumerate(layers):
        assert_close(got[k], expected[k], "collect_resid_at_positions", atol=2e-3, rtol=1e-3,
                     what=f"activations of blocks.{layer}.hook_resid_post at each prompt's "
                          "last real token", dims="batch d_model",
                     inputs=f"{tokens.shape[0]} right-padded prompts of different lengths, "
                            "batch_size 4")


@points(3)
def test_train_and_test_probe(submission):
    probe = submission.function("train_and_test_probe")
    for kind, weight_decay in PROBE_CASES.items():
        x, y, is_train, _ = _probe_case(kind)
        _check_probe_result(probe(x, y, is_train, weight_decay), kind)


@points(2)
def test_control_task_labels(submission):
    control = submission.function("control_task_labels")
    gen = torch.Generator().manual_seed(21)
    n_types = 41
    type_values = torch.randperm(500, generator=gen)[:n_types] * 3 + 7  # arbitrary ids
    word_ids = type_values[torch.randint(0, n_types, (300,), generator=gen)]
    word_ids[:n_types] = type_values  # every type occurs
    labelings = []
    for seed in (0, 1, 2, 3):
        got = expect_tensor(control(word_ids, seed), "control_task_labels", "batch",
                            (word_ids.shape[0],))
        if got.is_floating_point() or not set(got.unique().tolist()) <= {0, 1}:
            raise SubmissionError("control_task_labels should return integer labels 0 or 1")
        per_type = {}
        for wid, lab in zip(word_ids.tolist(), got.tolist()):
            if per_type.setdefault(wid, lab) != lab:
                raise SubmissionError(
                    "control_task_labels: two examples of the same word type got different "
                    "labels; the control label must be a function of the word type")
        n_ones = sum(per_type.values())
        if n_ones != n_types // 2:
            raise SubmissionError(
                f"control_task_labels: with {n_types} word types exactly {n_types // 2} should "
                f"get label 1 (seed {seed}), got {n_ones}")
        labelings.append(tuple(per_type[v] for v in type_values.tolist()))
    if len(set(labelings)) < 3:
        raise SubmissionError("control_task_labels: different seeds should give different "
                              "random assignments of labels to word types")
    again = expect_tensor(control(word_ids, 2), "control_task_labels", "batch",
                          (word_ids.shape[0],))
    repeat = tuple(dict(zip(word_ids.tolist(), again.tolist()))[v] for v in type_values.tolist())
    if repeat != labelings[2]:
        raise SubmissionError("control_task_labels: the same seed should give the same labels "
                              "(use torch.Generator().manual_seed(seed))")


@points(2)
def test_paired_bootstrap_interval(submission):
    interval = submission.function("paired_bootstrap_interval")
    gen = torch.Generator().manual_seed(31)
    n = 500
    correct_a = torch.rand(n, generator=gen) < 0.85
    flip = torch.rand(n, generator=gen) < 0.06
    correct_b = correct_a ^ flip  # b differs from a on ~6% of the examples: strongly paired
    got = interval(correct_a, correct_b, 4000, 3, 0.95)
    got = expect_tensor(got, "paired_bootstrap_interval", "low_high", (2,))
    expected = ref.paired_bootstrap_interval(correct_a, correct_b, 4000, seed=11)
    observed = correct_a.double().mean() - correct_b.double().mean()
    if not got[0] <= observed <= got[1]:
        raise SubmissionError(
            f"paired_bootstrap_interval: the interval [{got[0]:.4f}, {got[1]:.4f}] should "
            f"contain the observed difference {observed:.4f}")
    assert_close(got, expected, "paired_bootstrap_interval", atol=0.006, rtol=0,
                 what="interval ends (resample example indices with replacement, the same "
                      "indices for a and b; take the 2.5% and 97.5% percentiles)",
                 dims="low_high", inputs=f"{n} paired examples, 4000 resamples")
    wide = interval(correct_a, correct_b, 4000, 3, 0.5)
    wide = expect_tensor(wide, "paired_bootstrap_interval", "low_high", (2,))
    expected_50 = ref.paired_bootstrap_interval(correct_a, correct_b, 4000, seed=11,
                                                confidence=0.5)
    assert_close(wide, expected_50, "paired_bootstrap_interval", atol=0.006, rtol=0,
                 what="interval ends at confidence=0.5 (use the confidence argument)",
                 dims="low_high", inputs=f"{n} paired examples, 4000 resamples")


@points(1)
def test_class_mean_direction(submission):
    direction = submission.function("class_mean_direction")
    x, y = _planted(150, 20, 0.3, seed=41)
    got = expect_tensor(direction(x, y), "class_mean_direction", "d_model", (20,))
    assert_close(got, ref.class_mean_direction(x, y), "class_mean_direction", atol=1e-4,
                 what="direction (unit length, pointing from the class-0 mean to the class-1 "
                      "mean)", dims="d_model",
                 inputs="150 activations of 20 dimensions, about 30% in class 1")


@points(2)
def test_project_out(submission):
    project = submission.function("project_out")
    gen = torch.Generator().manual_seed(51)
    x = torch.randn(3, 5, 12, generator=gen) * 2 + 1
    one = torch.randn(1, 12, generator=gen) * 5  # a single direction, far from unit length
    first = torch.randn(12, generator=gen)
    many = torch.stack([first, first + 0.3 * torch.randn(12, generator=gen),
                        torch.randn(12, generator=gen) * 3])  # not orthogonal, not unit
    # Several directions first: a correct answer that changes x in place then returns values
    # no other known mistake returns, so the diagnosis can name it.
    got = expect_tensor(project(x, many), "project_out", "batch pos d_model", (3, 5, 12))
    assert_close(got, ref.project_out(x, many), "project_out", atol=1e-4,
                 what="result for three non-orthogonal directions (remove their whole span: "
                      "orthonormalise them first)", dims="batch pos d_model",
                 inputs="activations [3, 5, 12] and 3 directions of norms 2.8, 3.5 and 14")
    got = expect_tensor(project(x, one), "project_out", "batch pos d_model", (3, 5, 12))
    assert_close(got, ref.project_out(x, one), "project_out", atol=1e-4,
                 what="result for one direction of norm 20 (normalise it first)",
                 dims="batch pos d_model", inputs="activations [3, 5, 12] and 1 direction")


@points(3)
def test_steer_logit_diff(submission):
    steer = submission.function("steer_logit_diff")
    tokens, last_pos = _padded_tokens()
    model = _model()
    answer_ids = torch.tensor([model.to_single_token(" was"), model.to_single_token(" were")])
    direction = torch.randn(576, generator=torch.Generator().manual_seed(61)) * 3
    layer, alpha = 7, 12.0
    got = steer(sandbox_model("smollm2"), tokens, last_pos, direction, layer, alpha, answer_ids)
    got = expect_tensor(got, "steer_logit_diff", "batch", (tokens.shape[0],))
    expected = ref.steer_logit_diff(model, tokens, last_pos, direction, layer, alpha, answer_ids)
    assert_close(got, expected, "steer_logit_diff", atol=5e-3, rtol=1e-3,
                 what=f"logit differences after adding {alpha} x unit(direction) to "
                      f"blocks.{layer}.hook_resid_post at each prompt's last token",
                 dims="batch", inputs=f"{tokens.shape[0]} right-padded prompts of different "
                                      "lengths, a random direction of norm 70")


# ------------------------------------------------------------------ LEACE
def _leace_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Correlated dimensions with large offsets, class 1 shifted along a direction that the
    noise also varies along; the held-out rows come from a shifted distribution, so statistics
    from anything but the training rows change every erased row."""
    gen = torch.Generator().manual_seed(71)
    d = 10
    mixing = torch.randn(d, d, generator=gen) + 2 * torch.eye(d)
    shift = torch.randn(d, generator=gen) * 2

    def draw(n: int, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.rand(n, generator=gen) < 0.4).long()
        x = torch.randn(n, d, generator=gen) @ mixing + y[:, None] * shift + 8.0 + offset
        return x, y

    x_tr, y_tr = draw(160, 0.0)
    x_te, y_te = draw(60, 3.0)
    order = torch.randperm(220, generator=gen)
    is_train = torch.cat([torch.ones(160, dtype=torch.bool), torch.zeros(60, dtype=torch.bool)])
    return torch.cat([x_tr, x_te])[order], torch.cat([y_tr, y_te])[order], is_train[order]


@points(2)
def test_leace_erase(submission):
    erase = submission.function("leace_erase")
    x, y, is_train = _leace_case()
    got = expect_tensor(erase(x, y, is_train), "leace_erase", "batch d_model", tuple(x.shape))
    expected = ref.leace_erase(x, y, is_train)
    gap = (got[is_train & (y == 1)].double().mean(0) - got[is_train & (y == 0)].double().mean(0))
    if gap.abs().max() > 1e-3:
        raise SubmissionError(
            f"leace_erase: on the training rows the two classes' means still differ after "
            f"erasure (largest gap {gap.abs().max():.3g}): the edit must make them equal (are "
            f"the mean, the covariance and the class means all taken from the training rows "
            f"only?)")
    offset = (got.double() - expected.double())
    if offset.abs().max() > 2e-3 and (offset - offset[0]).abs().max() < 2e-3:
        raise SubmissionError(
            "leace_erase: every row is off from the reference by the same vector, a constant "
            "shift along the class-mean difference: measure each row's deviation from the "
            "mean of the training rows (x - mu), not from 0 or from the mean of all rows, "
            "before reading it along the whitened direction")
    assert_close(got, expected, "leace_erase", atol=2e-3, rtol=1e-3,
                 what="erased activations (statistics from the training rows only; the edit "
                      "is along the class-mean difference, by the amount the whitened "
                      "direction measures from the training mean)",
                 dims="batch d_model",
                 inputs="220 rows of 10 correlated dimensions with offsets of about 8, 60 "
                        "held-out rows shifted by 3")


# ------------------------------------------------------------------ investigations
SELECTIVITY_MARGIN = 0.2  # the investigation's threshold, as its docstring states
CONTROL_SLACK = 0.03  # control labels differ between correct answers: a layer this close counts
READ_THRESHOLD = 0.9
STEERING_THRESHOLD = 0.5
STEERING_SLACK = 0.1
# The checks' class means come from 80 training prompts per class (the notebook's from all 700
# training rows, a forward pass too long for grading); at the steering layer, where agreement
# is near chance and many prompts sit close to the boundary, that moves the agreement from the
# notebook's 0.50 to 0.61 (measured). The tolerance covers that estimate's error; the known
# wrong answers (no ablation: 0.81, a percentage) stay well outside it.
AGREEMENT_TOLERANCE = 0.15


@functools.cache
def _chapter_data():
    return ref.chapter_data(_model())


@kept_truth
def _early_accuracies(n_layers: int) -> dict[str, list[float]]:
    return ref.early_layer_accuracies(_model(), _chapter_data(), n_layers)


def _first_selective_layers() -> tuple[set[int], list[float]]:
    """Layers that count as the first with selectivity >= the margin, and the selectivities.
    The first two layers are enough unless a retrained model reads number later."""
    for n_layers in (2, _model().cfg.n_layers):
        acc = _early_accuracies(n_layers)
        sel = [t - c for t, c in zip(acc["task"], acc["control"])]
        ok = set()
        for layer, value in enumerate(sel):
            if value >= SELECTIVITY_MARGIN - CONTROL_SLACK and all(
                    v < SELECTIVITY_MARGIN + CONTROL_SLACK for v in sel[:layer]):
                ok.add(layer)
        if any(v >= SELECTIVITY_MARGIN for v in sel):
            return ok, sel
    return set(), sel


@kept_truth
def _steering() -> dict:
    return ref.steering_findings(_model(), _chapter_data())


def _onset_layers() -> set[int]:
    effect = _steering()["effect"]
    layers = list(effect)
    ok = set()
    for i, layer in enumerate(layers):
        if effect[layer] > STEERING_THRESHOLD - STEERING_SLACK and all(
                effect[k] <= STEERING_THRESHOLD + STEERING_SLACK for k in layers[:i]):
            ok.add(layer)
    return ok


def _layer_answer(value, name: str) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise SubmissionError(f"{name} should return a layer index (an int), got "
                              f"{type(value).__name__}")
    return value


@points(2)
def test_first_selective_layer(submission):
    answer = _layer_answer(submission.function("first_selective_layer")(),
                           "first_selective_layer")
    ok, sel = _first_selective_layers()
    if answer not in ok:
        raise SubmissionError(
            f"first_selective_layer: layer {answer} is not the first layer whose held-out "
            f"selectivity (task accuracy minus control-task accuracy, same split) reaches "
            f"{SELECTIVITY_MARGIN}. Read your selectivity curve from layer 0 upwards (the "
            f"layer index is L in blocks.L.hook_resid_post), and compare with the margin, not "
            f"with zero or with the peak")


_NUMBER_OPTIONS = ("subject", "attractor", "both", "neither")


@points(1)
def test_number_read_at_layer_0(submission):
    answer = submission.function("number_read_at_layer_0")()
    if answer not in _NUMBER_OPTIONS:
        raise SubmissionError(f"number_read_at_layer_0 should return one of {_NUMBER_OPTIONS}, "
                              f"got {answer!r}")
    acc = _early_accuracies(2)
    reads = (acc["task"][0] >= READ_THRESHOLD, acc["attractor"][0] >= READ_THRESHOLD)
    truth = {(True, True): "both", (True, False): "subject", (False, True): "attractor",
             (False, False): "neither"}[reads]
    if answer != truth:
        raise SubmissionError(
            f"number_read_at_layer_0: {answer!r} does not match the layer-0 probes: look at "
            f"both accuracy curves of section 2 at layer 0 and compare each with "
            f"{READ_THRESHOLD}")


@points(2)
def test_steering_onset_layer(submission):
    answer = _layer_answer(submission.function("steering_onset_layer")(),
                           "steering_onset_layer")
    if answer not in ref.SWEEP_LAYERS:
        raise SubmissionError(f"steering_onset_layer: answer with one of the steered layers "
                              f"{list(ref.SWEEP_LAYERS)}, got {answer}")
    if answer not in _onset_layers():
        raise SubmissionError(
            f"steering_onset_layer: layer {answer} is not the first steered layer at which "
            f"pushing along the class-mean direction moves logit(' is') - logit(' are') by "
            f"more than {STEERING_THRESHOLD} logit on average (the blue curve of the sweep, "
            f"not the random band and not the probe's accuracy)")


@points(2)
def test_ablation_agreement(submission):
    answer = submission.function("ablation_agreement")()
    onset = min(_onset_layers())
    truth = _steering()["agreement"][onset]
    assert_number(answer, truth, "ablation_agreement", atol=AGREEMENT_TOLERANCE, rtol=0,
                  what=f"fraction of the 64 test prompts on which SmolLM2 still prefers the "
                       f"agreeing verb after mean-ablating the class-mean direction at the "
                       f"first layer where steering moves the verb by more than half a logit (within {AGREEMENT_TOLERANCE}; a fraction between 0 and 1, "
                       f"measured with the ablation, not without it)")


_COLLECT = """def collect_resid_at_positions(model, tokens, positions, layers, batch_size=64):
    names = [f"blocks.{{layer}}.{hook}" for layer in layers]
    out = t.zeros(len(layers), tokens.shape[0], model.cfg.d_model)
    for start in range(0, {stop}, batch_size):
        batch = tokens[start : start + batch_size]
        _, cache = model.run_with_cache(batch, names_filter=lambda n: n in names,
                                        stop_at_layer=max(layers) + 1)
        rows = t.arange(batch.shape[0])
        pos = {pos}
        for k, name in enumerate(names):
            out[k, start : start + batch.shape[0]] = cache[name][rows, pos]
    return out
"""

_PROBE = """def train_and_test_probe(x, y, is_train, weight_decay=1e-2):
    x_train, y_train = x[{fit_rows}], y[{fit_rows}].float()
    mean, std = {stats}.mean(0), {stats}.std(0) + 1e-6
    z = (x_train - mean) / std
    w = t.zeros(x.shape[1], requires_grad=True)
    b = t.zeros((), requires_grad=True)
    opt = t.optim.LBFGS({params}, lr=1.0, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y_train) + weight_decay * (w**2).sum()
        loss.backward()
        return loss

    with t.enable_grad():
        opt.step(closure)
    test = ~is_train
    z_test = {z_test}
    test_acc = ((z_test @ w.detach() + b.detach() > 0).long() == y[test]).float().mean().item()
    w_raw = {w_raw}
    b_raw = {b_raw}
    train_acc = ((x[is_train] @ w_raw + b_raw > 0).long() == y[is_train]).float().mean().item()
    if {recompute}:
        test_acc = ((x[test] @ w_raw + b_raw > 0).long() == y[test]).float().mean().item()
    n = {n_se}
    return {{"w": w_raw, "b": b_raw, "train_acc": train_acc, "test_acc": test_acc,
            "test_stderr": (test_acc * (1 - test_acc) / n) ** 0.5}}
"""

_STEER = """def steer_logit_diff(model, tokens, last_pos, direction, layer, alpha, answer_ids):
    unit = {unit}
    rows = t.arange(tokens.shape[0])

    def add_direction(resid, hook):
        resid = resid.clone()
        resid[{where}] += alpha * unit
        return resid

    logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{{layer}}.{hook}", add_direction)])
    final = logits[rows, {read}]
    return final[:, answer_ids[0]] - final[:, answer_ids[1]]
"""

_LEACE = """def leace_erase(x, y, is_train):
    xd = x.double()
    tr, yt = xd[is_train], y[is_train]
    delta = tr[yt == 1].mean(0) - tr[yt == 0].mean(0)
"""


def _leace_mutant(ending: str) -> str:
    """A wrong ``leace_erase``: training rows and class-mean difference as they should be,
    then ``ending``."""
    return _LEACE + ending


_GOOD_STEER = dict(unit="direction / direction.norm()", where="rows, last_pos",
                   hook="hook_resid_post", read="last_pos")
_GOOD_PROBE = dict(fit_rows="is_train", stats="x_train", z_test="(x[test] - mean) / std",
                   recompute="True", n_se="int(test.sum())", params="[w, b]",
                   w_raw="w.detach() / std",
                   b_raw="b.detach().item() - (mean * w_raw).sum().item()")

MUTANTS = {
    "collect_resid_at_positions": {
        "reads_position_minus_1": Mistake(
            "you read every row at position -1, which on a right-padded row is a padding token: "
            "read row i at its own last real token, positions[i]",
            _COLLECT.format(hook="hook_resid_post", stop="tokens.shape[0]", pos="-1"),
            hint=2),
        "resid_pre_instead_of_post": Mistake(
            "you collected blocks.L.hook_resid_pre, the stream entering block L: the exercise asks "
            "for hook_resid_post, the stream after block L",
            _COLLECT.format(hook="hook_resid_pre", stop="tokens.shape[0]",
                            pos="positions[start : start + batch_size]")),
        "drops_last_partial_batch": Mistake(
            "your batch loop stops before the last, shorter batch, so its rows stay zero: step "
            "through every start index up to the number of prompts, and let the last batch be "
            "shorter",
            _COLLECT.format(hook="hook_resid_post", stop="tokens.shape[0] - batch_size + 1",
                            pos="positions[start : start + batch_size]"), hint=2),
    },
    "train_and_test_probe": {
        "trains_on_test_rows_too": Mistake(
            "you fitted the probe on every row, the held-out ones included: fit it (and the "
            "standardisation) on the training rows only, so the test accuracy is measured on rows "
            "the probe never saw",
            _PROBE.format(**{**_GOOD_PROBE, "fit_rows": "slice(None)"})),
        "normalises_test_with_test_statistics": Mistake(
            "you standardised the held-out rows with their own mean and std: every row must be "
            "scaled with the training rows' statistics (or scored in raw coordinates with the "
            "converted w and b)",
            _PROBE.format(**{
                **_GOOD_PROBE, "recompute": "False",
                "z_test": "(x[test] - x[test].mean(0)) / (x[test].std(0) + 1e-6)"}), hint=1),
        "standardises_with_all_rows": Mistake(
            "you took the mean and std for standardising from all rows, so the held-out rows leak "
            "into the probe: compute them from the training rows only",
            _PROBE.format(**{**_GOOD_PROBE, "stats": "x"})),
        "stderr_over_all_rows": Mistake(
            "your test_stderr divides by the number of all rows: the standard error of the "
            "held-out accuracy uses n_test, the number of held-out rows",
            _PROBE.format(**{**_GOOD_PROBE, "n_se": "len(y)"})),
        "reports_training_accuracy": Mistake(
            "the accuracy you return as test_acc was measured on the training rows: score the "
            "probe on the rows where is_train is False",
            _PROBE.format(**{**_GOOD_PROBE, "z_test": "z", "recompute": "False"}).replace(
                "== y[test]).float()", "== y_train.long()).float()")),
        "intercept_without_the_mean": Mistake(
            "your b is the intercept of the standardised probe: in raw coordinates the "
            "standardisation's mean moves into the intercept, b = b_z - mean . w (w = w_z / std)",
            _PROBE.format(**{**_GOOD_PROBE, "b_raw": "b.detach().item()"}), hint=2),
        "weights_not_rescaled": Mistake(
            "your w is the standardised probe's weight vector: in raw coordinates each weight "
            "is divided by its dimension's std (w = w_z / std), and b = b_z - mean . w",
            _PROBE.format(**{**_GOOD_PROBE, "w_raw": "w.detach()"}), hint=2),
        "no_intercept": Mistake(
            "your probe has no trainable intercept (b stays 0 during the fit): fit b along with "
            "w (without penalising it), or the decision boundary is forced through the "
            "training mean",
            _PROBE.format(**{**_GOOD_PROBE, "params": "[w]"}), hint=2),
        "ignores_weight_decay": Mistake(
            "your probe is fitted with the penalty 1e-2 whatever weight_decay says: use the "
            "weight_decay argument in the loss (the notebook only calls it with the default, "
            "the grader does not)",
            _PROBE.format(**_GOOD_PROBE).replace("weight_decay * (w**2)", "1e-2 * (w**2)"),
            hint=2),
        "drops_the_penalty": Mistake(
            "your loss has no L2 penalty: the probe is the minimiser of the mean BCE *plus* "
            "weight_decay * |w_z|^2 (without it the optimum is not unique on separable data, "
            "and the weights grow as long as the optimiser runs)",
            _PROBE.format(**_GOOD_PROBE).replace(" + weight_decay * (w**2).sum()", ""), hint=2),
        "penalises_the_intercept": Mistake(
            "your penalty includes the intercept: only the weights w_z are penalised, b_z is "
            "free (penalising it pulls the decision boundary towards the standardised origin)",
            _PROBE.format(**_GOOD_PROBE).replace("weight_decay * (w**2).sum()",
                                                 "weight_decay * ((w**2).sum() + b**2)")),
        "stops_before_converging": Mistake(
            "your optimiser stops before the loss reaches its minimum, so the probe is not the "
            "regularised optimum the contract asks for: run more steps (or use LBFGS) until the "
            "loss stops changing",
            _PROBE.format(**{**_GOOD_PROBE}).replace("max_iter=100", "max_iter=3"), hint=2),
    },
    "control_task_labels": {
        "random_label_per_example": Mistake(
            "you drew a random label for each example, so two examples of the same word can "
            "disagree: draw one label per word type and give every example its type's label",
            """def control_task_labels(word_ids, seed=0):
    gen = t.Generator().manual_seed(seed)
    return t.randint(0, 2, word_ids.shape, generator=gen)
""", hint=1),
        "parity_of_word_id": Mistake(
            "your labels follow the parity of the word id, which is neither random nor balanced: "
            "choose exactly half the types (rounded down) at random, with the seeded generator",
            """def control_task_labels(word_ids, seed=0):
    return word_ids % 2
""", hint=2),
        "coin_flip_per_type": Mistake(
            "you flipped a coin for each word type, so the number of types labelled 1 varies: "
            "choose exactly floor(n_types / 2) of them, with a random permutation of the types",
            """def control_task_labels(word_ids, seed=0):
    types, inverse = t.unique(word_ids, return_inverse=True)
    gen = t.Generator().manual_seed(seed)
    return t.randint(0, 2, (len(types),), generator=gen)[inverse]
""", hint=2),
    },
    "paired_bootstrap_interval": {
        "unpaired_resampling": Mistake(
            "you resampled a and b with different indices, which throws away the pairing: draw one "
            "set of example indices per resample and use it for both",
            """def paired_bootstrap_interval(correct_a, correct_b, n_resamples=2000, seed=0,
                              confidence=0.95):
    gen = t.Generator().manual_seed(seed)
    n = correct_a.shape[0]
    ia = t.randint(0, n, (n_resamples, n), generator=gen)
    ib = t.randint(0, n, (n_resamples, n), generator=gen)
    diffs = correct_a.float()[ia].mean(1) - correct_b.float()[ib].mean(1)
    tail = (1 - confidence) / 2
    return t.quantile(diffs, t.tensor([tail, 1 - tail]))
""", hint=1),
        "resamples_without_replacement": Mistake(
            "your resamples draw the indices without replacement (a permutation), so every "
            "resample has the same difference and the interval collapses: draw n indices with "
            "replacement",
            """def paired_bootstrap_interval(correct_a, correct_b, n_resamples=2000, seed=0,
                              confidence=0.95):
    gen = t.Generator().manual_seed(seed)
    n = correct_a.shape[0]
    diffs = t.stack([correct_a.float()[idx].mean() - correct_b.float()[idx].mean()
                     for idx in (t.randperm(n, generator=gen) for _ in range(n_resamples))])
    tail = (1 - confidence) / 2
    return t.quantile(diffs, t.tensor([tail, 1 - tail]))
""", hint=1),
        "ignores_confidence": Mistake(
            "your interval is the 95% one whatever the confidence argument says: take the (1 - "
            "confidence) / 2 and 1 - (1 - confidence) / 2 quantiles",
            """def paired_bootstrap_interval(correct_a, correct_b, n_resamples=2000, seed=0,
                              confidence=0.95):
    gen = t.Generator().manual_seed(seed)
    n = correct_a.shape[0]
    idx = t.randint(0, n, (n_resamples, n), generator=gen)
    diffs = correct_a.float()[idx].mean(1) - correct_b.float()[idx].mean(1)
    return t.quantile(diffs, t.tensor([0.025, 0.975]))
""", hint=2),
    },
    "class_mean_direction": {
        "not_normalised": Mistake(
            "you returned the difference of the class means without normalising it: divide it by "
            "its norm to get a unit vector",
            """def class_mean_direction(x, y):
    return x[y == 1].mean(0) - x[y == 0].mean(0)
""", hint=1),
        "sign_flipped": Mistake(
            "your direction points from the class-1 mean to the class-0 mean: subtract the class-0 "
            "mean from the class-1 mean",
            """def class_mean_direction(x, y):
    d = x[y == 0].mean(0) - x[y == 1].mean(0)
    return d / d.norm()
"""),
        "normalises_rows_first": Mistake(
            "you normalised each activation before averaging, which changes the means: average the "
            "raw activations of each class and normalise only their difference",
            """def class_mean_direction(x, y):
    x = x / x.norm(dim=-1, keepdim=True)
    d = x[y == 1].mean(0) - x[y == 0].mean(0)
    return d / d.norm()
""", hint=1),
    },
    "project_out": {
        "unnormalised_direction": Mistake(
            "you projected onto directions that are not unit length, so you removed the wrong "
            "amount: turn the directions into an orthonormal basis first",
            """def project_out(x, directions):
    for d in directions:
        x = x - (x @ d)[..., None] * d
    return x
""", hint=2),
        "sequential_without_orthogonalising": Mistake(
            "you projected out non-orthogonal directions one after another, which leaves part of "
            "their span behind: build an orthonormal basis of the span and remove the projection "
            "onto it at once",
            """def project_out(x, directions):
    for d in directions:
        u = d / d.norm()
        x = x - (x @ u)[..., None] * u
    return x
""", hint=2),
        "in_place": Mistake(
            "you changed the input x in place (`x -= ...`): compute the result as a new tensor and "
            "leave x as it was",
            """def project_out(x, directions):
    q, _ = t.linalg.qr(directions.T)
    x -= (x @ q) @ q.T
    return x
"""),
    },
    "steer_logit_diff": {
        "unnormalised_direction": Mistake(
            "you added alpha times the raw direction: scale the direction to unit length first, so "
            "that alpha alone sets the size of the push",
            _STEER.format(**{**_GOOD_STEER, "unit": "direction"})),
        "resid_pre_instead_of_post": Mistake(
            "you hooked blocks.L.hook_resid_pre, the stream before block L: add the direction to "
            "blocks.L.hook_resid_post, after it",
            _STEER.format(**{**_GOOD_STEER, "hook": "hook_resid_pre"})),
        "adds_at_every_position": Mistake(
            "you added the direction at every position: add it only at each prompt's last real "
            "token, last_pos[i] of row i",
            _STEER.format(**{**_GOOD_STEER, "where": ":, :"}), hint=2),
        "reads_position_minus_1": Mistake(
            "you read the logits at position -1, which is a padding token on right-padded rows: "
            "read row i at its last real token, last_pos[i]",
            _STEER.format(**{**_GOOD_STEER, "read": "-1"})),
    },
    "leace_erase": {
        "drops_the_mean": Mistake(
            "your edit measures x along the whitened direction from 0 instead of from the "
            "training mean, so every row is also shifted by a constant: subtract the training "
            "mean of x before projecting (the class means still match, but the edit is not the "
            "least-squares one)",
            _leace_mutant('''\
    s = t.linalg.solve(t.cov(tr.T), delta)
    return (xd - (xd @ s)[:, None] * delta / (delta @ s)).to(x.dtype)
'''), hint=2),
        "orthogonal_projection": Mistake(
            "you projected out the class-mean difference orthogonally (as project_out does): "
            "LEACE measures how far to move along it with the covariance, through Σ⁻¹Δ, so that "
            "the edit is the smallest one that equalises the class means",
            _leace_mutant('''\
    u = delta / delta.norm()
    return (xd - ((xd - tr.mean(0)) @ u)[:, None] * u).to(x.dtype)
'''), hint=1),
        "drops_the_normaliser": Mistake(
            "you moved each row by Delta times its reading along Sigma^-1 Delta without dividing "
            "by Delta . Sigma^-1 Delta, so the edit has the wrong length and the class means stay "
            "apart: a row one class-mean difference away must move by exactly Delta",
            _leace_mutant('''\
    s = t.linalg.solve(t.cov(tr.T), delta)
    return (xd - ((xd - tr.mean(0)) @ s)[:, None] * delta).to(x.dtype)
'''), hint=1),
        "statistics_from_all_rows": Mistake(
            "you estimated the mean, covariance or class means from every row, the held-out ones "
            "included: fit the eraser on the training rows only, then apply it to every row",
            """def leace_erase(x, y, is_train):
    xd = x.double()
    delta = xd[y == 1].mean(0) - xd[y == 0].mean(0)
    s = t.linalg.solve(t.cov(xd.T), delta)
    return (xd - ((xd - xd.mean(0)) @ s)[:, None] * delta / (delta @ s)).to(x.dtype)
"""),
    },
    "first_selective_layer": {
        "counts_from_one": Mistake(
            "you counted layers from 1: layer L is blocks.L.hook_resid_post, and the first block "
            "is layer 0",
            """def first_selective_layer():
    return 2
"""),
        "first_layer_above_zero": Mistake(
            "you took the first layer where selectivity is above zero (layer 0 is slightly "
            "positive): the question asks for the first layer where it reaches the margin",
            """def first_selective_layer():
    return 0
"""),
    },
    "number_read_at_layer_0": {
        "the_label": Mistake(
            "at layer 0 the probe for the subject's number is close to chance: the last "
            "position has not yet looked back at the subject",
            """def number_read_at_layer_0():
    return "subject"
"""),
        "both": Mistake(
            "only one of the two curves is above the threshold at layer 0: check the subject "
            "curve there",
            """def number_read_at_layer_0():
    return "both"
"""),
    },
    "steering_onset_layer": {
        "last_layer": Mistake(
            "you answered the last layer: the question asks for the first steered layer where "
            "the effect exceeds half a logit",
            """def steering_onset_layer():
    return 29
"""),
        "most_selective_probe_layer": Mistake(
            "you answered a middle layer, where a probe reads subject number well: steering "
            "there moves the verb by much less than half a logit (readable is not used)",
            """def steering_onset_layer():
    return 17
"""),
    },
    "ablation_agreement": {
        "without_ablation": Mistake(
            "that is about the agreement without any ablation: measure it with the class-mean "
            "component replaced by its training mean",
            """def ablation_agreement():
    return 0.81
"""),
        "percent": Mistake(
            "return a fraction between 0 and 1, not a percentage",
            """def ablation_agreement():
    return 60.0
"""),
    },
}
