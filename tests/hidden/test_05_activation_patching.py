"""Hidden checks for chapter 05 (activation patching on IOI).

Inputs are IOI batches the learner has not seen (other seeds, another template, the "flip"
corruption) and expected values come from ``utils.reference.activation_patching``, whose patching
functions run one forward pass per patched component (the solutions batch them). Sweeps are
tiny (a few layers, two prompts) so the whole file stays fast, and every expected value is a
kept truth (computed once per machine, ``course_tools.grading.truth_cache``).
"""

from __future__ import annotations

import functools

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
from course_tools.grading.truth_cache import kept_truth
from utils.reference import activation_patching as ref

N_LAYERS, N_HEADS = 30, 9
# The chapter's held-out prompts (other pairs of names than the sweep's); the setup cell
# defines the same HELD_OUT_IOI.
HELD_OUT_IOI = {"n_prompts": 8, "seed": 1}
# Investigation answers may load SmolLM2 themselves: the sandbox worker loads it once, so
# every call shares it.
SANDBOX_MODELS = ["smollm2"]


_model = functools.partial(reference_model, "smollm2")
warm_up = warm_up_loading("smollm2")


@kept_truth
def _batch(seed: int, corruption: str) -> dict:
    """Two IOI prompts (one ABBA, one BABA) with their baselines, from utils.ioi."""
    from utils.ioi import make_ioi_dataset

    model = _model()
    data = make_ioi_dataset(model, n_prompts=2, seed=seed, corruption=corruption)
    with torch.no_grad():
        logits = model(torch.cat([data.clean_tokens, data.corrupted_tokens]))
    ld = ref.logit_diff(logits, data.answer_tokens.repeat(2, 1))
    clean, corrupted = ld[:2].mean().item(), ld[2:].mean().item()
    return {"clean": data.clean_tokens, "corrupted": data.corrupted_tokens,
            "answers": data.answer_tokens, "clean_ld": clean, "corrupted_ld": corrupted}


ABC_PROMPTS = "2 IOI prompts (one ABBA, one BABA), corrupted by a third name at S2"
FLIP_PROMPTS = "2 IOI prompts (one ABBA, one BABA), corrupted by putting the IO's name at S2"


def _args(b: dict) -> tuple:
    return b["clean"], b["corrupted"], b["answers"], b["clean_ld"], b["corrupted_ld"]


# ------------------------------------------------------------------------------ section 1
TEMPLATE = "Then {S1} and {IO} had lunch at the cafe, and {S2} bought a sandwich for"
NAMES = [("Lucy", "Henry", "Grace"), ("Adam", "Emma", "Frank"), ("Kevin", "Rose", "Max")]


@points(1)
def test_make_ioi_tokens(submission):
    make_ioi_tokens = submission.function("make_ioi_tokens")
    got = make_ioi_tokens(sandbox_model("smollm2"), TEMPLATE, NAMES)
    expected = _expected("ioi_tokens")
    if not isinstance(got, dict) or set(got) != {"clean", "corrupted", "answers"}:
        raise AssertionError("make_ioi_tokens should return a dict with the keys "
                             "'clean', 'corrupted' and 'answers'")
    n, length = expected["clean"].shape
    for key in ("clean", "corrupted"):
        expect_tensor(got[key], f"make_ioi_tokens()['{key}']", "batch pos", (n, length))
        if not torch.equal(got[key].long(), expected[key]):
            raise AssertionError(
                f"'{key}' tokens differ from the expected ones for the template {TEMPLATE!r}: "
                "fill {IO}, {S1} and {S2} as the docstring says (only S2 changes in the "
                "corrupted prompt) and start every row with the BOS token")
    expect_tensor(got["answers"], "make_ioi_tokens()['answers']", "batch 2", (n, 2))
    if not torch.equal(got["answers"].long(), expected["answers"]):
        raise AssertionError("'answers' should hold the ids of ' ' + io (column 0) and "
                             "' ' + s (column 1), with the leading space")
    for bad in ([("Lucy", "Henry", "Ingrid")], [("Priya", "Henry", "Grace")]):
        try:
            make_ioi_tokens(sandbox_model("smollm2"), TEMPLATE, bad)
        except SubmissionError as err:
            if "ValueError" not in str(err):
                raise AssertionError(
                    f"for a multi-token name, raise ValueError; got: {err}") from None
        else:
            raise AssertionError(f"{bad[0]} contains a name that is several tokens with a "
                                 "leading space: make_ioi_tokens should raise ValueError")
    source = submission.sources.get("make_ioi_tokens", "")
    if "utils.ioi" in source or "make_ioi_dataset" in source:
        raise AssertionError("build the tokens yourself rather than calling utils.ioi")


@points(1)
def test_logit_diff(submission):
    logit_diff = submission.function("logit_diff")
    gen = torch.Generator().manual_seed(505)
    logits = torch.randn(3, 6, 40, generator=gen) * 3
    answers = torch.tensor([[3, 17], [39, 0], [5, 6]])
    got = expect_tensor(logit_diff(logits, answers), "logit_diff", "batch", (3,))
    assert_close(got, ref.logit_diff(logits, answers), "logit_diff", dims="batch",
                 inputs="random logits for 3 prompts of 6 positions over a 40-token vocabulary")


# ------------------------------------------------------------------------------ section 2
@points(3)
def test_patch_residual_by_layer_and_position(submission):
    patch = submission.function("patch_residual_by_layer_and_position")
    b = _batch(11, "abc")
    layers, positions = [2, 20], [9, 10, 14]
    got = patch(sandbox_model("smollm2"), *_args(b), layers, positions)
    got = expect_tensor(got, "patch_residual_by_layer_and_position", "layer pos",
                        (len(layers), len(positions)))
    expected = _residual_expected()
    if abs(got[0, 0]) > 1e-3:
        raise AssertionError(
            f"position 9 comes before the only token that differs, so patching it at layer 2 "
            f"must give 0, got {got[0, 0].item():.3f}: check which position you patch")
    if (got - (1 - expected)).abs().max() < 1e-3:
        raise AssertionError("your scores are 1 - the expected ones: normalise so that 0 means "
                             "'as corrupted' and 1 means 'as clean'")
    assert_close(got, expected, "patch_residual_by_layer_and_position", atol=2e-3, rtol=1e-3,
                 what="normalised scores (rows: layers [2, 20], columns: positions [9, 10, 14])",
                 dims="layer pos", inputs=ABC_PROMPTS)


@kept_truth
def _residual_expected() -> torch.Tensor:
    b = _batch(11, "abc")
    return ref.patch_residual_by_layer_and_position(_model(), *_args(b), [2, 20], [9, 10, 14])


# ------------------------------------------------------------------------------ section 3
@points(2)
def test_patch_head_outputs(submission):
    patch = submission.function("patch_head_outputs")
    b = _batch(11, "abc")
    clean, corrupted, answers, c, r = _args(b)
    got = patch(sandbox_model("smollm2"), corrupted, clean, answers, c, r, [23])
    got = expect_tensor(got, "patch_head_outputs", "layer head_index", (1, N_HEADS))
    expected = _expected("head_outputs_denoising")
    assert_close(got, expected, "patch_head_outputs (denoising layer 23, all positions)",
                 atol=2e-3, rtol=1e-3, dims="layer head_index", inputs=ABC_PROMPTS)
    # Noising direction, one position, "flip" corruption.
    f = _batch(13, "flip")
    got = patch(sandbox_model("smollm2"), f["clean"], f["corrupted"], f["answers"],
                f["clean_ld"], f["corrupted_ld"], [20], 10)
    got = expect_tensor(got, "patch_head_outputs", "layer head_index", (1, N_HEADS))
    expected = _expected("head_outputs_noising")
    assert_close(got, expected, "patch_head_outputs (noising layer 20 at position 10 only)",
                 atol=2e-3, rtol=1e-3, dims="layer head_index", inputs=FLIP_PROMPTS)


# ------------------------------------------------------------------------------ section 4
SETS = [[], [(20, 0), (23, 3)], [(17, 4), (29, 1), (29, 0)]]
NOISE_SETS = [[(23, 3)], [(19, 2), (20, 0), (24, 4)]]


@points(2)
def test_patch_head_set(submission):
    patch_set = submission.function("patch_head_set")
    b = _batch(11, "abc")
    clean, corrupted, answers, c, r = _args(b)
    got = patch_set(sandbox_model("smollm2"), corrupted, clean, answers, c, r, SETS)
    got = expect_tensor(got, "patch_head_set", "n_sets", (len(SETS),))
    expected = _expected("head_set_denoising")
    assert_close(got, expected, "patch_head_set (denoising)", atol=2e-3, rtol=1e-3,
                 what=f"scores of the sets {SETS}", dims="head_set", inputs=ABC_PROMPTS)
    got = patch_set(sandbox_model("smollm2"), clean, corrupted, answers, c, r, NOISE_SETS)
    got = expect_tensor(got, "patch_head_set", "n_sets", (len(NOISE_SETS),))
    expected = _expected("head_set_noising")
    assert_close(got, expected, "patch_head_set (noising)", atol=2e-3, rtol=1e-3,
                 what=f"scores of the sets {NOISE_SETS}", dims="head_set", inputs=ABC_PROMPTS)


# ------------------------------------------------------------------------------ section 5
@points(3)
def test_attribution_patching_heads(submission):
    attribution = submission.function("attribution_patching_heads")
    b = _batch(13, "flip")
    got = attribution(sandbox_model("smollm2"), *_args(b))
    got = expect_tensor(got, "attribution_patching_heads", "layer head_index",
                        (N_LAYERS, N_HEADS))
    expected = _attribution_expected()
    if (got + expected).abs().max() < 1e-3 * expected.abs().max():
        raise AssertionError("your estimates have the opposite sign: the difference is "
                             "z_clean - z_corrupted")
    assert_close(got, expected, "attribution_patching_heads", atol=2e-3, rtol=2e-3,
                 what="estimated scores", dims="layer head_index", inputs=FLIP_PROMPTS)


@kept_truth
def _attribution_expected() -> torch.Tensor:
    return ref.attribution_patching_heads(_model(), *_args(_batch(13, "flip")))


@kept_truth
def _held_out_attribution() -> torch.Tensor:
    return ref.attribution_patching_heads(_model(), *_args(_held_out()))


@points(2)
def test_attribution_top_head(submission):
    got = submission.finding("attribution_top_head")
    if not (isinstance(got, (tuple, list)) and len(got) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in got)
            and 0 <= got[0] < N_LAYERS and 0 <= got[1] < N_HEADS):
        raise AssertionError(f"attribution_top_head returned {got!r}: return (layer, head), two "
                             f"ints with layer in 0..{N_LAYERS - 1} and head in 0..{N_HEADS - 1}")
    estimates = _held_out_attribution()
    expected = divmod(int(estimates.argmax()), N_HEADS)
    if tuple(got) != expected:
        mine = estimates[got[0], got[1]]
        larger = int((estimates > mine).sum())
        raise AssertionError(
            f"attribution_top_head returned {tuple(got)}: its attribution estimate on the "
            f"held-out prompts is {mine:+.2f}, and {larger} head(s) have a larger one (signs "
            "included). Estimate every head on the held-out prompts with their own baselines, "
            "then take the largest; check how you turn a flat index back into (layer, head).")


# ------------------------------------------------------------------------------ section 6
@points(3)
def test_path_patch_to_receivers(submission):
    path_patch = submission.function("path_patch_to_receivers")
    b = _batch(11, "abc")
    senders, receivers = [(17, 4), (25, 1)], [(23, 3)]
    got = path_patch(sandbox_model("smollm2"), *_args(b), senders, receivers, "q")
    got = expect_tensor(got, "path_patch_to_receivers", "sender", (len(senders),))
    expected = _expected("path_queries")
    if abs(got[1] - 1) > 1e-3:
        raise AssertionError("a sender in layer 25 cannot reach a layer-23 receiver: its score "
                             f"must be 1, got {got[1].item():.3f}")
    assert_close(got, expected, "path_patch_to_receivers (queries of L23H3)", atol=2e-3,
                 rtol=1e-3, what=f"scores of the senders {senders}", dims="sender",
                 inputs=ABC_PROMPTS)
    senders, receivers = [(20, 0)], [(23, 3), (29, 1)]
    got = path_patch(sandbox_model("smollm2"), *_args(b), senders, receivers, "k")
    got = expect_tensor(got, "path_patch_to_receivers", "sender", (1,))
    expected = _expected("path_keys")
    assert_close(got, expected, "path_patch_to_receivers (keys of L23H3 and L29H1)", atol=2e-3,
                 rtol=1e-3, what="score (for keys, receiver head h means key/value head h // 3)",
                 dims="sender", inputs=ABC_PROMPTS)


# ------------------------------------------------------------------------------ section 4: toys
TOY_CLEAN, TOY_CORRUPTED = torch.tensor([1.0, 0.7, 1.2]), torch.tensor([0.0, 0.2, -0.1])
TOY_INPUTS = "inputs clean x = [1.0, 0.7, 1.2], corrupted x = [0.0, 0.2, -0.1]"


@points(2)
def test_toy_patching_scores(submission):
    scores = submission.function("toy_patching_scores")
    for circuit in ("P", "Q", "R"):
        got = scores(circuit, TOY_CLEAN, TOY_CORRUPTED)
        got = expect_tensor(got, f"toy_patching_scores('{circuit}')", "direction component",
                            (2, 2))
        expected = ref.toy_patching_scores(circuit, TOY_CLEAN, TOY_CORRUPTED)
        assert_close(got, expected, f"toy_patching_scores('{circuit}')", atol=1e-4, rtol=1e-4,
                     what="row 0: denoising scores of A and B; row 1: noising effects "
                          "(1 - score)", dims="direction component", inputs=TOY_INPUTS)


@points(2)
def test_toy_circuit_kinds(submission):
    got = submission.finding("toy_circuit_kinds")
    expected = ref.toy_circuit_kinds()
    if not isinstance(got, dict) or set(got) != set(expected):
        raise AssertionError(f"toy_circuit_kinds returned {got!r}: return a dict with the keys "
                             f"{sorted(expected)} and values 'serial', 'AND' or 'OR'")
    wrong = sorted(name for name in expected if got[name] != expected[name])
    if wrong:
        raise AssertionError(
            f"the kind of circuit(s) {wrong} is wrong. For each, look at both rows of its "
            "toy_patching_scores: is each component sufficient alone (denoising near 1)? Is "
            "it necessary (noising effect near 1)? serial: both; AND: necessary only; OR: "
            "sufficient only.")


# ------------------------------------------------------------------------------ residual finding
@kept_truth
def _held_out() -> dict:
    from utils.ioi import make_ioi_dataset

    model = _model()
    data = make_ioi_dataset(model, corruption="abc", **HELD_OUT_IOI)
    with torch.no_grad():
        clean = ref.logit_diff(model(data.clean_tokens), data.answer_tokens).mean().item()
        corrupted = ref.logit_diff(model(data.corrupted_tokens), data.answer_tokens).mean().item()
    return {"clean": data.clean_tokens, "corrupted": data.corrupted_tokens,
            "answers": data.answer_tokens, "clean_ld": clean, "corrupted_ld": corrupted}


@kept_truth
def _held_out_end_scores() -> torch.Tensor:
    end = _held_out()["clean"].shape[1] - 1
    return ref.patch_residual_by_layer_and_position(
        _model(), *_args(_held_out()), list(range(N_LAYERS)), [end])[:, 0]


@points(2)
def test_end_takeover_layer(submission):
    got = submission.finding("end_takeover_layer")
    if isinstance(got, bool) or not isinstance(got, int) or not 0 <= got <= N_LAYERS:
        raise AssertionError(f"end_takeover_layer returned {got!r}: return a layer, an int "
                             f"from 0 to {N_LAYERS - 1} ({N_LAYERS} if no layer reaches 0.5)")
    scores = _held_out_end_scores()
    expected = ref.end_takeover_layer(scores)
    if got != expected:
        shown = f"{scores[got].item():.2f}" if got < N_LAYERS else "(none)"
        raise AssertionError(
            f"end_takeover_layer returned {got}: on the held-out prompts, denoising the "
            f"residual stream at END entering layer {got} scores {shown}. The answer is the "
            "first layer whose score at END is at least 0.5; sweep every layer at the END "
            "position on the held-out prompts, with their own clean and corrupted baselines.")


# ------------------------------------------------------------------------------ MLPs
MLP_LAYERS = [0, 22]  # the MLP that matters most, and a late one; each costs a patched run


@points(2)
def test_patch_mlp_outputs(submission):
    patch = submission.function("patch_mlp_outputs")
    b = _batch(11, "abc")
    clean, corrupted, answers, c, r = _args(b)
    layers = MLP_LAYERS
    got = patch(sandbox_model("smollm2"), corrupted, clean, answers, c, r, layers)
    got = expect_tensor(got, "patch_mlp_outputs", "layer", (len(layers),))
    expected = _expected("mlp_denoising")
    assert_close(got, expected, f"patch_mlp_outputs (denoising layers {MLP_LAYERS}, all positions)",
                 atol=2e-3, rtol=1e-3, dims="layer", inputs=ABC_PROMPTS)
    f = _batch(13, "flip")
    got = patch(sandbox_model("smollm2"), f["clean"], f["corrupted"], f["answers"],
                f["clean_ld"], f["corrupted_ld"], [0, 21], 10)
    got = expect_tensor(got, "patch_mlp_outputs", "layer", (2,))
    expected = _expected("mlp_noising")
    assert_close(got, expected, "patch_mlp_outputs (noising layers [0, 21] at position 10)",
                 atol=2e-3, rtol=1e-3, dims="layer", inputs=FLIP_PROMPTS)


@kept_truth
def _held_out_mlp_scores() -> torch.Tensor:
    b = _held_out()
    return ref.patch_mlp_outputs(_model(), b["corrupted"], b["clean"], b["answers"],
                                 b["clean_ld"], b["corrupted_ld"], list(range(N_LAYERS)))


@points(2)
def test_top_mlp_layer(submission):
    got = submission.finding("top_mlp_layer")
    if isinstance(got, bool) or not isinstance(got, int) or not 0 <= got < N_LAYERS:
        raise AssertionError(f"top_mlp_layer returned {got!r}: return a layer, an int from 0 "
                             f"to {N_LAYERS - 1}")
    scores = _held_out_mlp_scores()
    expected = ref.top_mlp_layer(scores)
    if got != expected:
        larger = int((scores > scores[got]).sum())
        raise AssertionError(
            f"top_mlp_layer returned {got}: denoising that layer's MLP output (every position) "
            f"on the held-out prompts scores {scores[got].item():+.2f}, and {larger} layer(s) "
            "score higher. Sweep all 30 layers on the held-out prompts and take the largest "
            "score, signs included.")


# ------------------------------------------------------------------------------ faithfulness
KEEP = [(17, 4), (20, 0), (23, 3), (29, 1)]


@points(2)
def test_mean_ablate_other_heads(submission):
    ablate = submission.function("mean_ablate_other_heads")
    b, means = _batch(11, "abc"), _batch(13, "abc")
    got = ablate(sandbox_model("smollm2"), b["clean"], b["answers"], KEEP, means["corrupted"])
    got = expect_tensor(got, "mean_ablate_other_heads", "batch", (2,))
    expected = _expected("ablate_keeping_circuit")
    assert_close(got, expected, "mean_ablate_other_heads", atol=2e-3, rtol=1e-3,
                 what=f"logit differences with every head but {KEEP} mean-ablated",
                 dims="batch", inputs=ABC_PROMPTS + "; means over 2 other corrupted prompts")
    got = ablate(sandbox_model("smollm2"), b["clean"], b["answers"], [], b["clean"])
    got = expect_tensor(got, "mean_ablate_other_heads", "batch", (2,))
    expected = _expected("ablate_keeping_none")
    assert_close(got, expected, "mean_ablate_other_heads (no head kept)", atol=2e-3, rtol=1e-3,
                 dims="batch", inputs=ABC_PROMPTS + "; means over the same prompts")


# ------------------------------------------------------------------------------ expectations
def _noising(seed: int) -> tuple:
    """The flip batch's arguments with base = clean, source = corrupted."""
    f = _batch(seed, "flip")
    return f["clean"], f["corrupted"], f["answers"], f["clean_ld"], f["corrupted_ld"]


def _denoising(seed: int) -> tuple:
    """The ABC batch's arguments with base = corrupted, source = clean."""
    b = _batch(seed, "abc")
    return b["corrupted"], b["clean"], b["answers"], b["clean_ld"], b["corrupted_ld"]


# The exercise checks' expected values, each the reference on the inputs its check passes.
_CASES = {
    "ioi_tokens": lambda: ref.make_ioi_tokens(_model(), TEMPLATE, NAMES),
    "head_outputs_denoising": lambda: ref.patch_head_outputs(_model(), *_denoising(11), [23]),
    "head_outputs_noising": lambda: ref.patch_head_outputs(_model(), *_noising(13), [20], 10),
    "head_set_denoising": lambda: ref.patch_head_set(_model(), *_denoising(11), SETS),
    "head_set_noising": lambda: ref.patch_head_set(
        _model(), *_args(_batch(11, "abc")), NOISE_SETS),
    "path_queries": lambda: ref.path_patch_to_receivers(
        _model(), *_args(_batch(11, "abc")), [(17, 4), (25, 1)], [(23, 3)], "q"),
    "path_keys": lambda: ref.path_patch_to_receivers(
        _model(), *_args(_batch(11, "abc")), [(20, 0)], [(23, 3), (29, 1)], "k"),
    "mlp_denoising": lambda: ref.patch_mlp_outputs(_model(), *_denoising(11), MLP_LAYERS),
    "mlp_noising": lambda: ref.patch_mlp_outputs(_model(), *_noising(13), [0, 21], 10),
    "ablate_keeping_circuit": lambda: ref.mean_ablate_other_heads(
        _model(), _batch(11, "abc")["clean"], _batch(11, "abc")["answers"], KEEP,
        _batch(13, "abc")["corrupted"]),
    "ablate_keeping_none": lambda: ref.mean_ablate_other_heads(
        _model(), _batch(11, "abc")["clean"], _batch(11, "abc")["answers"], [],
        _batch(11, "abc")["clean"]),
}


@kept_truth
def _expected(case: str):
    """The reference's answer for one of ``_CASES``, on SmolLM2."""
    return _CASES[case]()


# ------------------------------------------------------------------------------ mutants
_RESID_HEAD = '''def patch_residual_by_layer_and_position(model, clean_tokens, corrupted_tokens,
        answer_tokens, clean_logit_diff, corrupted_logit_diff, layers, positions):
    batch, n_pos = clean_tokens.shape[0], len(positions)
    names = [f"blocks.{layer}.hook_{KIND}" for layer in layers]
    _, cache = model.run_with_cache(clean_tokens, names_filter=lambda n: n in names)
    tokens = corrupted_tokens.repeat(n_pos, 1)
    answers = answer_tokens.repeat(n_pos, 1)
    rows = t.arange(n_pos * batch)
    cols = t.tensor(positions).repeat_interleave(batch) + SHIFT
    out = t.zeros(len(layers), n_pos)
    for i, name in enumerate(names):
        clean = cache[name].repeat(n_pos, 1, 1)
        def patch(resid, hook, clean=clean):
            resid = resid.clone()
            resid[rows, cols] = clean[rows, cols]
            return resid
'''
_RESID_RUN = '''        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
'''
_RESID_TAIL = '''        final = logits[:, -1]
        ld = final.gather(-1, answers[:, :1])[:, 0] - final.gather(-1, answers[:, 1:])[:, 0]
        ld = ld.view(n_pos, batch).mean(-1)
        out[i] = NORMALISED
    return out'''
_GOOD_NORM = "(ld - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)"


def _resid_mutant(kind="resid_pre", shift="0", run=_RESID_RUN, norm=_GOOD_NORM) -> str:
    return (_RESID_HEAD.replace("{KIND}", kind).replace("SHIFT", shift) + run
            + _RESID_TAIL.replace("NORMALISED", norm))


_HEADS = '''def patch_head_outputs(model, base_tokens, source_tokens, answer_tokens, clean_logit_diff,
        corrupted_logit_diff, layers, position=None):
    batch, n_heads = base_tokens.shape[0], model.cfg.n_heads
    names = [f"blocks.{layer}.attn.hook_z" for layer in layers]
    _, cache = model.run_with_cache(SOURCE, names_filter=lambda n: n in names)
    tokens = base_tokens.repeat(n_heads, 1)
    answers = answer_tokens.repeat(n_heads, 1)
    rows = t.arange(n_heads * batch)
HEADS    where = WHERE
    out = t.zeros(len(layers), n_heads)
    for i, name in enumerate(names):
        source = cache[name].repeat(n_heads, 1, 1, 1)
        def patch(z, hook, source=source):
            z = z.clone()
            ASSIGN
            return z
        logits = model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])
        final = logits[:, -1]
        ld = final.gather(-1, answers[:, :1])[:, 0] - final.gather(-1, answers[:, 1:])[:, 0]
        ld = ld.view(n_heads, batch).mean(-1)
        out[i] = (ld - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
    return out'''


def _heads_mutant(source="source_tokens", where="slice(None) if position is None else position",
                  assign="z[rows, where, heads] = source[rows, where, heads]",
                  heads="    heads = t.arange(n_heads).repeat_interleave(batch)\n") -> str:
    """A wrong ``patch_head_outputs``; ``heads`` is the line that gives each row its head."""
    return (_HEADS.replace("SOURCE", source).replace("WHERE", where)
            .replace("ASSIGN", assign).replace("HEADS", heads))


_SET = '''def patch_head_set(model, base_tokens, source_tokens, answer_tokens, clean_logit_diff,
        corrupted_logit_diff, head_sets):
    names = sorted({f"blocks.{l}.attn.hook_z" for hs in head_sets for l, _ in hs})
    _, cache = model.run_with_cache(source_tokens, names_filter=lambda n: n in names)
    def run(heads):
        def patch(z, hook):
            z = z.clone()
            for layer, head in heads:
                if hook.name == f"blocks.{layer}.attn.hook_z":
                    z[:, :, head] = cache[hook.name][:, :, head]
            return z
        hooks = [(n, patch) for n in {f"blocks.{l}.attn.hook_z" for l, _ in heads}]
        logits = model.run_with_hooks(base_tokens, fwd_hooks=hooks)
        final = logits[:, -1]
        ld = final.gather(-1, answer_tokens[:, :1])[:, 0] - final.gather(-1, answer_tokens[:, 1:])[:, 0]
        return (ld.mean() - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
    BODY'''

_ATTR = '''def attribution_patching_heads(model, clean_tokens, corrupted_tokens, answer_tokens,
        clean_logit_diff, corrupted_logit_diff):
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(CACHED, names_filter=lambda n: n in names)
    zs = {}
    def start(x, hook):
        return x.detach().requires_grad_(True)
    def keep(z, hook):
        zs[hook.name] = z
        RETURN
    with t.enable_grad():
        logits = model.run_with_hooks(GRAD_RUN, fwd_hooks=[("hook_embed", start)]
                                      + [(n, keep) for n in names])
        final = logits[:, -1]
        ld = final.gather(-1, answer_tokens[:, :1])[:, 0] - final.gather(-1, answer_tokens[:, 1:])[:, 0]
        grads = t.autograd.grad(ld.mean(), [zs[n] for n in names])
    out = t.stack([((cache[n] - zs[n].detach()) * g).sum((0, 1, 3)) for n, g in zip(names, grads)])
    return SCALE'''


def _attr_mutant(cached="clean_tokens", grad_run="corrupted_tokens", ret="return z",
                 scale="out / (clean_logit_diff - corrupted_logit_diff)") -> str:
    return (_ATTR.replace("CACHED", cached).replace("GRAD_RUN", grad_run)
            .replace("RETURN", ret).replace("SCALE", scale))


_PATH = '''def path_patch_to_receivers(model, clean_tokens, corrupted_tokens, answer_tokens,
        clean_logit_diff, corrupted_logit_diff, senders, receivers, component="q"):
    z_names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    _, clean = model.run_with_cache(clean_tokens, names_filter=lambda n: n in z_names)
    _, corr = model.run_with_cache(corrupted_tokens, names_filter=lambda n: n in z_names)
    targets = {}
    for layer, head in receivers:
        targets.setdefault(f"blocks.{layer}.attn.hook_TARGET", set()).add(KV_HEAD)
    out = t.zeros(len(senders))
    for k, (s_layer, s_head) in enumerate(senders):
        sender = f"blocks.{s_layer}.attn.hook_z"
        def freeze(z, hook):
            z = FROZEN
            if hook.name == sender:
                z[:, :, s_head] = corr[hook.name][:, :, s_head]
            return z
        rec = {}
        def record(act, hook):
            rec[hook.name] = act.clone()
        model.run_with_hooks(clean_tokens, fwd_hooks=[(n, freeze) for n in z_names]
                             + [(n, record) for n in targets])
        def patch(act, hook):
            act = act.clone()
            idx = sorted(targets[hook.name])
            act[:, :, idx] = rec[hook.name][:, :, idx]
            return act
        logits = model.run_with_hooks(clean_tokens, fwd_hooks=[(n, patch) for n in targets])
        final = logits[:, -1]
        ld = final.gather(-1, answer_tokens[:, :1])[:, 0] - final.gather(-1, answer_tokens[:, 1:])[:, 0]
        out[k] = (ld.mean() - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
    return out'''


def _path_mutant(target="{component}", frozen="clean[hook.name].clone()",
                 kv_head="head // (1 if component == 'q' else "
                         "model.cfg.n_heads // model.cfg.n_key_value_heads)") -> str:
    return (_PATH.replace("TARGET", target).replace("FROZEN", frozen)
            .replace("KV_HEAD", kv_head))


_TOY = '''def toy_patching_scores(circuit, clean_x, corrupted_x):
    from utils.ioi import run_toy_circuit
    clean = run_toy_circuit(circuit, clean_x)
    corrupted = run_toy_circuit(circuit, corrupted_x)
    low = corrupted["out"].mean()
HIGH    def norm(out):
        return NORM
    denoise = [norm(run_toy_circuit(circuit, corrupted_x, {c: clean[c]})["out"].mean())
               for c in ("A", "B")]
    noise = [NOISE for c in ("A", "B")]
    return t.stack([t.stack(denoise), t.stack(noise)])'''
_TOY_NOISE = 'norm(run_toy_circuit(circuit, clean_x, {c: corrupted[c]})["out"].mean())'


def _toy_mutant(norm="(out - low) / (high - low)", noise="1 - " + _TOY_NOISE) -> str:
    """A wrong ``toy_patching_scores``; the clean mean is computed only if ``norm`` uses it."""
    high = '    high = clean["out"].mean()\n' if "high" in norm else ""
    return _TOY.replace("NORM", norm).replace("NOISE", noise).replace("HIGH", high)


_KINDS = '''def toy_circuit_kinds():
    kinds = {}
    for circuit in ("P", "Q", "R"):
        SCORES = toy_patching_scores(circuit, t.tensor([1.0, 0.9]), t.tensor([0.0, 0.1]))
        sufficient = bool((denoise > 0.5).all())
NECESSARY        kinds[circuit] = KIND
    return kinds'''


def _kinds_mutant(scores: str, kind: str) -> str:
    """A wrong ``toy_circuit_kinds``; necessity is computed only if ``kind`` uses it."""
    necessary = ("        necessary = bool((noise > 0.5).all())\n" if "necessary" in kind else "")
    return (_KINDS.replace("SCORES", scores).replace("KIND", kind)
            .replace("NECESSARY", necessary))


_GOOD_KIND = '{(True, True): "serial", (False, True): "AND", (True, False): "OR"}[(sufficient, necessary)]'

_TAKEOVER = '''def end_takeover_layer():
    from utils.ioi import make_ioi_dataset
    from utils.smollm2 import load_smollm2
    model = load_smollm2()
    data = make_ioi_dataset(model, n_prompts=8, seed=1)
    a = data.answer_tokens
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.cfg.n_layers)]
    _, clean = model.run_with_cache(data.clean_tokens, names_filter=lambda n: n in names)
    _, corr = model.run_with_cache(data.corrupted_tokens, names_filter=lambda n: n in names)
    last = t.full((a.shape[0],), data.clean_tokens.shape[1] - 1)
    def ld(resid, layer):
        final = run_from_layer(model, resid, layer, positions=last)
        return (final.gather(-1, a[:, :1]) - final.gather(-1, a[:, 1:])).mean().item()
    c, r = ld(clean[names[0]], 0), ld(corr[names[0]], 0)
    scores = []
    for layer, name in enumerate(names):
        resid = corr[name].clone()
        resid[:, POSITION] = clean[name][:, POSITION]
        scores.append((ld(resid, layer) - r) / (c - r))
    first = next(l for l, score in enumerate(scores) if score >= 0.5)
    return first + SHIFT'''

_MLP = '''def patch_mlp_outputs(model, base_tokens, source_tokens, answer_tokens, clean_logit_diff,
        corrupted_logit_diff, layers, position=None):
    names = [f"blocks.{layer}.HOOK" for layer in layers]
    _, cache = model.run_with_cache(SOURCE, names_filter=lambda n: n in names)
    where = WHERE
    out = t.zeros(len(layers))
    for i, name in enumerate(names):
        def patch(act, hook, name=name):
            act = act.clone()
            act[:, where] = cache[name][:, where]
            return act
        logits = model.run_with_hooks(base_tokens, fwd_hooks=[(name, patch)])
        final = logits[:, -1]
        ld = final.gather(-1, answer_tokens[:, :1])[:, 0] - final.gather(-1, answer_tokens[:, 1:])[:, 0]
        out[i] = (ld.mean() - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
    return out'''


def _mlp_mutant(hook="hook_mlp_out", source="source_tokens",
                where="slice(None) if position is None else position") -> str:
    return _MLP.replace("HOOK", hook).replace("SOURCE", source).replace("WHERE", where)


_TOP_MLP = '''def top_mlp_layer():
    from utils.ioi import make_ioi_dataset
    from utils.smollm2 import load_smollm2
    model = load_smollm2()
    data = make_ioi_dataset(model, n_prompts=8, seed=1)
    a = data.answer_tokens
    names = [f"blocks.{l}.hook_mlp_out" for l in range(model.cfg.n_layers)]
    _, clean = model.run_with_cache(data.clean_tokens, names_filter=lambda n: n in names)
    _, corr = model.run_with_cache(data.corrupted_tokens,
                                   names_filter=lambda n: n.endswith("hook_resid_pre"))
    last = t.full((a.shape[0],), data.clean_tokens.shape[1] - 1)
    lds = []
    for l, name in enumerate(names):
        with model.hooks(fwd_hooks=[(name, lambda act, hook, name=name: clean[name])]):
            final = run_from_layer(model, corr[f"blocks.{l}.hook_resid_pre"], l, positions=last)
        lds.append((final.gather(-1, a[:, :1]) - final.gather(-1, a[:, 1:])).mean())
    scores = t.stack(lds)
    return PICK'''

_ATTR_TOP = '''def attribution_top_head():
    from utils.ioi import make_ioi_dataset
    from utils.smollm2 import load_smollm2
    model = load_smollm2()
    data = make_ioi_dataset(model, n_prompts=8, seed=1)
    a = data.answer_tokens
    names = [f"blocks.{l}.attn.hook_z" for l in range(model.cfg.n_layers)]
    _, clean = model.run_with_cache(data.clean_tokens, names_filter=lambda n: n in names)
    zs = {}
    def keep(z, hook, name):
        zs[name] = z
        return z
    hooks = [("hook_embed", lambda e, hook: e.detach().requires_grad_(True))]
    hooks += [(n, partial(keep, name=n)) for n in names]
    with t.enable_grad():
        final = model.run_with_hooks(data.corrupted_tokens, fwd_hooks=hooks)[:, -1]
        metric = (final.gather(-1, a[:, :1]) - final.gather(-1, a[:, 1:])).mean()
        grads = t.autograd.grad(metric, [zs[n] for n in names])
    est = t.stack([((clean[n] - zs[n].detach()) * g).sum((0, 1, 3)) for n, g in zip(names, grads)])
    return divmod(int(PICK), DIVISOR)'''

_ABLATE = '''def mean_ablate_other_heads(model, tokens, answer_tokens, keep_heads, mean_tokens):
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(mean_tokens, names_filter=lambda n: n in names)
    keep = {tuple(h) for h in keep_heads}
    hooks = []
    for layer, name in enumerate(names):
        heads = [h for h in range(model.cfg.n_heads) if SELECT]
        def ablate(z, hook, name=name, heads=heads):
            z = z.clone()
            z[:, :, heads] = MEAN
            return z
        hooks.append((name, ablate))
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    final = logits[:, -1]
    return final.gather(-1, answer_tokens[:, :1])[:, 0] - final.gather(-1, answer_tokens[:, 1:])[:, 0]'''


def _ablate_mutant(select="(layer, h) not in keep",
                   mean="cache[name].mean(0)[None, :, heads]") -> str:
    return _ABLATE.replace("SELECT", select).replace("MEAN", mean)


# Later answers use the learner's earlier functions in the notebook; while graded they get
# these. Only functions whose work is small and bounded by their arguments: the metric, and
# the toy circuits' scores (a few element-wise operations). The patching sweeps are not
# offered: an investigation that needs one runs it itself, or returns what the learner found.
REFERENCES = {"logit_diff": ref.logit_diff, "toy_patching_scores": ref.toy_patching_scores}

MUTANTS = {
    "make_ioi_tokens": {
        "no_leading_space": Mistake(
            "your answer ids are those of the names without a leading space: in the prompt every "
            "name follows a space, so look up the id of \" \" + name",
            '''def make_ioi_tokens(model, template, names):
    for triple in names:
        for n in triple:
            if len(model.tokenizer(" " + n, add_special_tokens=False)["input_ids"]) != 1:
                raise ValueError(n)
    def tid(name):
        return model.tokenizer(name, add_special_tokens=False)["input_ids"][0]
    clean = model.to_tokens([template.format(IO=io, S1=s, S2=s) for io, s, _ in names])
    corr = model.to_tokens([template.format(IO=io, S1=s, S2=c) for io, s, c in names])
    return {"clean": clean, "corrupted": corr,
            "answers": t.tensor([[tid(io), tid(s)] for io, s, _ in names])}''', hint=1),
        "corrupts_first_mention": Mistake(
            "you changed the subject's first mention, S1, in the corrupted prompt: only the second "
            "mention, S2, becomes the other name",
            '''def make_ioi_tokens(model, template, names):
    def tid(name):
        ids = model.tokenizer(" " + name, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(name)
        return ids[0]
    for triple in names:
        for n in triple:
            tid(n)
    clean = model.to_tokens([template.format(IO=io, S1=s, S2=s) for io, s, _ in names])
    corr = model.to_tokens([template.format(IO=io, S1=c, S2=s) for io, s, c in names])
    return {"clean": clean, "corrupted": corr,
            "answers": t.tensor([[tid(io), tid(s)] for io, s, _ in names])}''', hint=2),
        "checks_only_answer_names": Mistake(
            "you check only the answer names io and s: the corrupting name c must be a single "
            "token too, so raise ValueError for it as well",
            '''def make_ioi_tokens(model, template, names):
    def tid(name):
        ids = model.tokenizer(" " + name, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(name)
        return ids[0]
    clean = model.to_tokens([template.format(IO=io, S1=s, S2=s) for io, s, _ in names])
    corr = model.to_tokens([template.format(IO=io, S1=s, S2=c) for io, s, c in names])
    return {"clean": clean, "corrupted": corr,
            "answers": t.tensor([[tid(io), tid(s)] for io, s, _ in names])}''', hint=1),
        "no_bos": Mistake(
            "your prompts do not start with the BOS token: tokenise them so that it is prepended, "
            "as model.to_tokens does by default",
            '''def make_ioi_tokens(model, template, names):
    def tid(name):
        ids = model.tokenizer(" " + name, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(name)
        return ids[0]
    for triple in names:
        for n in triple:
            tid(n)
    clean = model.to_tokens([template.format(IO=io, S1=s, S2=s) for io, s, _ in names],
                            prepend_bos=False)
    corr = model.to_tokens([template.format(IO=io, S1=s, S2=c) for io, s, c in names],
                           prepend_bos=False)
    return {"clean": clean, "corrupted": corr,
            "answers": t.tensor([[tid(io), tid(s)] for io, s, _ in names])}''', hint=1),
    },
    "logit_diff": {
        "wrong_sign": Mistake(
            "you subtracted the correct answer's logit from the wrong one's: return "
            "logit(answer_tokens[:, 0]) - logit(answer_tokens[:, 1])",
            '''def logit_diff(logits, answer_tokens):
    final = logits[:, -1]
    return final.gather(-1, answer_tokens[:, 1:])[:, 0] - final.gather(-1, answer_tokens[:, :1])[:, 0]'''),
        "second_to_last_position": Mistake(
            "you read the logits at the second-to-last position: the next name is predicted at the "
            "last position",
            '''def logit_diff(logits, answer_tokens):
    final = logits[:, -2]
    return final.gather(-1, answer_tokens[:, :1])[:, 0] - final.gather(-1, answer_tokens[:, 1:])[:, 0]''', hint=1),
        "batch_mean": Mistake(
            "you averaged over the batch: return one logit difference per prompt, shape [batch]",
            '''def logit_diff(logits, answer_tokens):
    final = logits[:, -1]
    return (final.gather(-1, answer_tokens[:, :1]) - final.gather(-1, answer_tokens[:, 1:])).mean()'''),
    },
    "patch_residual_by_layer_and_position": {
        "patches_previous_position": Mistake(
            "you patched the position before the one asked for: each copy of the batch patches "
            "exactly the position positions[k]",
            _resid_mutant(shift="- 1"), hint=2),
        "resid_post_instead_of_pre": Mistake(
            "you patched blocks.L.hook_resid_post, after block L: patch hook_resid_pre, the stream "
            "before layer L reads it",
            _resid_mutant(kind="resid_post")),
        "normalised_backwards": Mistake(
            "your scores run from 1 (as corrupted) to 0 (as clean): normalise as (value - "
            "corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)",
            _resid_mutant(
                norm="(clean_logit_diff - ld) / (clean_logit_diff - corrupted_logit_diff)")),
        "not_normalised": Mistake(
            "you returned the raw change in logit difference: divide it by (clean_logit_diff - "
            "corrupted_logit_diff), so that 0 means as corrupted and 1 as clean",
            _resid_mutant(norm="ld - corrupted_logit_diff")),
        "hooks_left_attached": Mistake(
            "you attached hooks with model.add_hook and never removed them, so they stay on the "
            "model and pile up from layer to layer: use run_with_hooks, which removes them",
            _resid_mutant(run='''        model.add_hook(name, patch)
        logits = model(tokens)
''')),
    },
    "patch_head_outputs": {
        "patches_whole_layer": Mistake(
            "you patched every head of the layer in every copy of the batch: copy h must patch "
            "head h only",
            _heads_mutant(assign="z[rows, where] = source[rows, where]", heads=""), hint=2),
        "ignores_position": Mistake(
            "you patched every position even when a position was given: then patch only that "
            "position of head h",
            _heads_mutant(where="slice(None)"), hint=2),
        "caches_base_run": Mistake(
            "you took the patched values from the base run instead of the source run: cache hook_z "
            "on source_tokens",
            _heads_mutant(source="base_tokens")),
    },
    "toy_patching_scores": {
        "noising_score_not_effect": Mistake(
            "row 1 holds the noising *score*: the row is the noising effect, 1 - score, the "
            "fraction of the clean behaviour that corrupting the component destroys",
            _toy_mutant(noise=_TOY_NOISE), hint=2),
        "not_normalised": Mistake(
            "you returned raw changes of the output: normalise every run as (out - "
            "out_corrupted) / (out_clean - out_corrupted), batch means throughout",
            _toy_mutant(norm="out - low"), hint=2),
        "noising_from_clean_values": Mistake(
            "in the noising runs you overrode the component with its clean value, which "
            "changes nothing: a noising run is the clean input with the component taken from "
            "the corrupted run",
            _toy_mutant(noise='1 - norm(run_toy_circuit(circuit, clean_x, {c: clean[c]})'
                              '["out"].mean())'), hint=1),
    },
    "toy_circuit_kinds": {
        "rows_swapped": Mistake(
            "you read row 0 as the noising effects and row 1 as the denoising scores, which "
            "swaps AND and OR: row 0 is denoising (sufficient?), row 1 noising (necessary?)",
            _kinds_mutant("noise, denoise", _GOOD_KIND), hint=1),
        "denoising_only": Mistake(
            "you looked at denoising only, so the serial chain looks like an OR: a serial "
            "chain's components are sufficient alone *and* necessary alone",
            _kinds_mutant("denoise, noise", '"OR" if sufficient else "AND"'), hint=1),
    },
    "end_takeover_layer": {
        "last_layer_below": Mistake(
            "you returned the last layer *before* the END score reaches 0.5: the answer is the "
            "first layer whose score is at least 0.5",
            _TAKEOVER.replace("POSITION", "-1").replace("SHIFT", "- 1"), hint=1),
        "s2_position": Mistake(
            "you swept position S2 (10): the question is when END, the last position (14), "
            "carries enough of the clean information",
            _TAKEOVER.replace("POSITION", "10").replace("SHIFT", "+ 0"), hint=1),
    },
    "patch_mlp_outputs": {
        "patches_attention_output": Mistake(
            "you patched blocks.L.hook_attn_out, the attention layer's output: patch "
            "blocks.L.hook_mlp_out, what the MLP adds to the stream",
            _mlp_mutant(hook="hook_attn_out"), hint=2),
        "ignores_position": Mistake(
            "you patched every position even when a position was given: then patch only that "
            "position",
            _mlp_mutant(where="slice(None)"), hint=2),
        "caches_base_run": Mistake(
            "you took the patched values from the base run instead of the source run: cache "
            "hook_mlp_out on source_tokens",
            _mlp_mutant(source="base_tokens"), hint=1),
    },
    "top_mlp_layer": {
        "runner_up": Mistake(
            "you returned the layer with the second-largest score: the answer is the largest",
            _TOP_MLP.replace("PICK", "int(scores.argsort(descending=True)[1])"), hint=1),
        "most_negative": Mistake(
            "you returned the layer with the most negative score: the largest score, signs "
            "included, is the MLP whose clean output restores the most",
            _TOP_MLP.replace("PICK", "int(scores.argmin())"), hint=1),
    },
    "attribution_top_head": {
        "most_negative": Mistake(
            "you returned the head with the most negative estimate: the largest estimate, signs "
            "included, is the head whose clean output is predicted to restore the most",
            _ATTR_TOP.replace("PICK", "est.argmin()").replace("DIVISOR", "model.cfg.n_heads"),
            hint=1),
        "flat_index_unravelled_by_layers": Mistake(
            "you turned the flat index of the [layer, head] map back into (layer, head) with the "
            "number of layers: index = layer * n_heads + head, so divide by n_heads (9)",
            _ATTR_TOP.replace("PICK", "est.argmax()").replace("DIVISOR", "model.cfg.n_layers"),
            hint=2),
    },
    "mean_ablate_other_heads": {
        "zero_ablation": Mistake(
            "you set the ablated heads' outputs to zero: mean ablation replaces them with their "
            "mean over mean_tokens, which keeps the typical output a head always writes",
            _ablate_mutant(mean="0.0"), hint=1),
        "mean_over_positions_too": Mistake(
            "you averaged over positions as well as prompts: keep one mean per position (the "
            "mean over the batch), since a head's typical output differs from position to "
            "position",
            _ablate_mutant(mean="cache[name].mean((0, 1))[None, None, heads]"), hint=2),
        "ablates_kept_heads": Mistake(
            "you mean-ablated the heads in keep_heads and left the others alone: keep_heads run "
            "normally and every other head is ablated",
            _ablate_mutant(select="(layer, h) in keep"), hint=1),
    },
    "patch_head_set": {
        "only_first_head": Mistake(
            "you patched only the first head of each set: patch all of the set's heads together, "
            "in one forward pass",
            _SET.replace("BODY", "return t.stack([run(hs[:1]) for hs in head_sets])"), hint=1),
        "adds_single_head_scores": Mistake(
            "you added up single-head scores: patch all of the set's heads together in one run, "
            "since their effects need not add up",
            _SET.replace("BODY", "return t.stack([sum(run([h]) for h in hs) "
                                 "- (len(hs) - 1) * run([]) if hs else run([]) "
                                 "for hs in head_sets])"), hint=1),
        "last_layer_only": Mistake(
            "you patched only the heads in the set's last layer: a set may span several layers, so "
            "hook every layer it uses",
            _SET.replace("BODY", "return t.stack([run([h for h in hs if h[0] == max(hs)[0]]) "
                                 "for hs in head_sets])"), hint=1),
    },
    "attribution_patching_heads": {
        "gradient_on_clean_run": Mistake(
            "you took the gradient on the clean run: the linear estimate of denoising uses the "
            "gradient on the corrupted run, times (z_clean - z_corrupted)",
            _attr_mutant(cached="corrupted_tokens", grad_run="clean_tokens")),
        "not_normalised": Mistake(
            "you returned the raw estimates: divide them by (clean_logit_diff - "
            "corrupted_logit_diff), to put them on the scale of patch_head_outputs",
            _attr_mutant(scale="out")),
        "metric_summed_over_batch": Mistake(
            "you differentiated the sum of the logit differences over the batch: the metric is "
            "their batch mean, as in the patching functions",
            _attr_mutant().replace("ld.mean()", "ld.sum()")),
        "difference_reversed": Mistake(
            "your estimates have the opposite sign: the difference to multiply by the gradient is "
            "z_clean - z_corrupted",
            _attr_mutant(scale="-out / (clean_logit_diff - corrupted_logit_diff)"), hint=3),
    },
    "path_patch_to_receivers": {
        "no_freezing": Mistake(
            "in step 1 you let every other head respond to the sender's change: freeze all other "
            "heads' hook_z at their clean values, so that only the direct path from the sender to "
            "the receivers changes",
            _path_mutant(frozen="z.clone()"), hint=1),
        "patches_receiver_output": Mistake(
            "you recorded and patched the receivers' outputs (hook_z): record and patch their "
            "inputs, hook_q, hook_k or hook_v as component says",
            _path_mutant(target="z"), hint=2),
        "kv_head_round_robin": Mistake(
            "you mapped query head h to key/value head h % 3: in grouped-query attention "
            "consecutive query heads share a key/value head, so receiver head h reads key/value "
            "head h // 3",
            _path_mutant(
                kv_head="head if component == 'q' else head % model.cfg.n_key_value_heads")),
    },
}
