"""Hidden checks for chapter 01, "The residual stream".

Each check calls the learner's function (in the sandbox) on inputs the notebook never uses and
compares with ``utils.reference.residual_stream`` computed here, in the trusted process. Model
checks use SmolLM2 on short prompts (a full cache of a 6-15 token prompt is small); the rest use
seeded synthetic tensors built to expose specific mistakes (listed in ``MUTANTS``).
"""

import functools

import torch

from course_tools.grading.checks import (
    SubmissionError,
    assert_close,
    expect_tensor,
    points,
    reference_model,
    sandbox_cache,
    sandbox_model,
    warm_up_loading,
)
from course_tools.grading.diagnosis import Mistake
from course_tools.grading.truth_cache import kept_truth
from utils.ioi import make_ioi_dataset
from utils.reference import residual_stream as ref

SMOL_LAYERS = 30
# Prompts the notebook never uses. One prompt serves the component and attribution checks, so
# each side builds only two caches; the lens check uses a shorter one (its output is
# layers x positions x 49,152 floats).
IOI_CHECK_PROMPT = "When Alice and Bob arrived at the party, Bob handed a gift to"
COMPONENT_PROMPT = IOI_CHECK_PROMPT
LENS_PROMPT = "Paris is the capital of"
IOI_CHECK_ANSWER, IOI_CHECK_WRONG = " Alice", " Bob"
# The chapter's held-out IOI prompts (its setup cell's HELD_OUT_IOI): the investigations of
# sections 3 and 4 ask about exactly these prompts.
HELD_OUT_IOI = {"n_prompts": 16, "seed": 2}
# An investigation's answer may compute its finding (loading a model in the sandbox).
# Loaded once by the sandbox worker: an investigation answer that calls load_smollm2() itself
# shares it instead of loading SmolLM2 on every call.
SANDBOX_MODELS = ["smollm2"]


_model = functools.partial(reference_model, "smollm2")
warm_up = warm_up_loading("smollm2", "attn_only_2l")


@functools.cache
def _tokens(text: str) -> torch.Tensor:
    return _model().to_tokens(text)


@functools.cache
def _cache(text: str):
    with torch.no_grad():
        _, cache = _model().run_with_cache(_tokens(text))
    return cache


def _token(text: str) -> int:
    return int(_model().to_single_token(text))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------ section 1
@points(2)
def test_per_token_loss(submission):
    per_token_loss = submission.function("per_token_loss")
    g = _generator(101)
    logits = torch.randn(3, 9, 17, generator=g) * 3
    tokens = torch.randint(0, 17, (3, 9), generator=g)
    got = expect_tensor(per_token_loss(logits, tokens), "per_token_loss", "batch pos_minus_1",
                        (3, 8))
    assert_close(got, ref.per_token_loss(logits, tokens), "per_token_loss", atol=1e-4,
                 what="losses (entry [b, i] is the loss of predicting tokens[b, i + 1])",
                 dims="batch pos", inputs="random logits for 3 sequences of 9 tokens, "
                 "a 17-token vocabulary")
    # Logits with gaps of hundreds: softmax(...).log() underflows here, log_softmax does not.
    sharp = logits * 80
    got = per_token_loss(sharp, tokens)
    if isinstance(got, torch.Tensor) and got.shape == (3, 8) and not torch.isfinite(got).all():
        raise SubmissionError("per_token_loss returns inf or nan for large logits: use "
                              "log_softmax rather than the log of a softmax")
    got = expect_tensor(got, "per_token_loss", "batch pos_minus_1", (3, 8))
    assert_close(got, ref.per_token_loss(sharp, tokens), "per_token_loss", atol=1e-2, rtol=1e-4,
                 what="losses for large logits", dims="batch pos",
                 inputs="the same logits times 80 (gaps of hundreds between logits)")


# ------------------------------------------------------------------------------ section 2
@points(2)
def test_residual_components(submission):
    residual_components = submission.function("residual_components")
    tokens = _tokens(COMPONENT_PROMPT)
    cache = sandbox_cache("smollm2", tokens)
    expected = ref.residual_components(_cache(COMPONENT_PROMPT), SMOL_LAYERS)
    got = expect_tensor(residual_components(cache, SMOL_LAYERS), "residual_components",
                        "component batch pos d_model", tuple(expected.shape))
    # Entries at BOS reach ~25,000, where float32 resolves ~0.002; the reference takes
    # differences of residual snapshots, so allow a few units in the last place.
    assert_close(got, expected, "residual_components", atol=2e-2, rtol=1e-4,
                 what="components (order: embed, attn 0, mlp 0, attn 1, mlp 1, ...)",
                 dims="component batch pos d_model",
                 inputs=f"SmolLM2's cache of {COMPONENT_PROMPT!r}, n_layers={SMOL_LAYERS}")
    few = expect_tensor(residual_components(cache, 4), "residual_components(cache, n_layers=4)",
                        "component batch pos d_model", (9, *expected.shape[1:]))
    assert_close(few, expected[:9], "residual_components(cache, n_layers=4)", atol=2e-2,
                 rtol=1e-4, what="components", dims="component batch pos d_model",
                 inputs=f"SmolLM2's cache of {COMPONENT_PROMPT!r}, n_layers=4")


# ------------------------------------------------------------------------------ section 3
def _unembedding_sample(seed: int, n_columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A few columns of SmolLM2's W_U and a bias that is far from zero (SmolLM2's b_U is zero,
    so only a non-zero bias shows whether an answer adds it)."""
    g = _generator(seed)
    columns = torch.randperm(_model().cfg.d_vocab, generator=g)[:n_columns]
    with torch.no_grad():
        W_U = _model().W_U[:, columns].clone()
    return W_U, 2.0 * torch.randn(n_columns, generator=g)


@points(2)
def test_logit_lens(submission):
    logit_lens = submission.function("logit_lens")
    tokens = _tokens(LENS_PROMPT)
    W_U, b_U = _unembedding_sample(505, 400)
    eps = float(_model().cfg.eps)
    expected = ref.logit_lens(_cache(LENS_PROMPT), SMOL_LAYERS, W_U, b_U, eps)
    got = expect_tensor(logit_lens(sandbox_cache("smollm2", tokens), SMOL_LAYERS, W_U, b_U, eps),
                        "logit_lens", "layer_plus_1 batch pos d_vocab", tuple(expected.shape))
    inputs = (f"SmolLM2's cache of {LENS_PROMPT!r}, 400 columns of W_U and a bias b_U with "
              "entries of size ~2 (not zero)")
    assert_close(got[-1], expected[-1], "logit_lens", atol=5e-3, rtol=1e-3,
                 what="final entry (the model's logits for these columns, plus b_U)",
                 dims="batch pos d_vocab", inputs=inputs)
    for layer in range(expected.shape[0] - 1):
        assert_close(got[layer], expected[layer], f"logit_lens, entry {layer}", atol=5e-3,
                     rtol=1e-3, what=f"logits decoded from blocks.{layer}.hook_resid_pre",
                     dims="batch pos d_vocab", inputs=inputs)
    few = expect_tensor(logit_lens(sandbox_cache("smollm2", tokens), 3, W_U, b_U, eps),
                        "logit_lens(..., n_layers=3)", "layer_plus_1 batch pos d_vocab",
                        (4, *expected.shape[1:]))
    assert_close(few, expected[:4], "logit_lens(..., n_layers=3)", atol=5e-3, rtol=1e-3,
                 what="entries (the last one decodes the stream leaving layer 2)",
                 dims="layer_plus_1 batch pos d_vocab", inputs=inputs + ", n_layers=3")


@points(1)
def test_logit_lens_agreement(submission):
    logit_lens_agreement = submission.function("logit_lens_agreement")
    g = _generator(202)
    lens = torch.randn(6, 2, 5, 4, generator=g)
    # Make some layers agree with the last one at some positions.
    lens[3:5, :, :3] = lens[-1, :, :3] * 2 + 0.5
    lens[1, 1] = lens[-1, 1]
    expected = ref.logit_lens_agreement(lens)
    got = expect_tensor(logit_lens_agreement(lens), "logit_lens_agreement", "layer", (6,))
    assert_close(got, expected, "logit_lens_agreement", atol=1e-6,
                 what="fractions of (batch, pos) agreeing with the last layer's top-1",
                 dims="layer", inputs="lens logits for 6 layers, 2 prompts, 5 positions, "
                 "a 4-token vocabulary")


# ------------------------------------------------------------------------------ section 4
@points(3)
def test_logit_diff_attribution(submission):
    logit_diff_attribution = submission.function("logit_diff_attribution")
    tokens = _tokens(IOI_CHECK_PROMPT)
    # Eight columns of W_U: the two names (at columns 5 and 2) among six others, and a bias
    # that is not zero, so that b_U[answer] - b_U[wrong] matters.
    W_U, b_U = _unembedding_sample(606, 8)
    with torch.no_grad():
        W_U[:, 5], W_U[:, 2] = _model().W_U[:, _token(IOI_CHECK_ANSWER)], \
            _model().W_U[:, _token(IOI_CHECK_WRONG)]
    answer, wrong = 5, 2
    expected = ref.logit_diff_attribution(_cache(IOI_CHECK_PROMPT), SMOL_LAYERS, W_U, b_U,
                                          answer, wrong)
    inputs = f"SmolLM2's cache of {IOI_CHECK_PROMPT!r}; an 8-column W_U whose columns 5 and 2 " \
        f"are {IOI_CHECK_ANSWER!r} and {IOI_CHECK_WRONG!r}, answer=5, wrong=2, and a bias " \
        f"with b_U[5] - b_U[2] = {float(b_U[5] - b_U[2]):.3f}"
    got = logit_diff_attribution(sandbox_cache("smollm2", tokens), SMOL_LAYERS, W_U, b_U,
                                 answer, wrong)
    got = expect_tensor(got, "logit_diff_attribution", "component_plus_1", tuple(expected.shape))
    assert_close(got, expected, "logit_diff_attribution", atol=2e-3, rtol=1e-3,
                 what="attributions (embed, attn 0, mlp 0, ..., then b_U[answer] - b_U[wrong])",
                 dims="component_plus_1", inputs=inputs)
    # Swapping the two answers flips every sign.
    flipped = expect_tensor(logit_diff_attribution(
        sandbox_cache("smollm2", tokens), SMOL_LAYERS, W_U, b_U, wrong, answer),
        "logit_diff_attribution", "component_plus_1", tuple(expected.shape))
    assert_close(flipped, -expected, "logit_diff_attribution (answers swapped)", atol=2e-3,
                 rtol=1e-3, dims="component_plus_1", inputs=inputs)


@points(2)
def test_head_logit_attribution(submission):
    head_logit_attribution = submission.function("head_logit_attribution")
    tokens = _tokens(IOI_CHECK_PROMPT)
    answer, wrong = _token(IOI_CHECK_ANSWER), _token(IOI_CHECK_WRONG)
    expected = ref.head_logit_attribution(_model(), _cache(IOI_CHECK_PROMPT), answer, wrong)
    got = head_logit_attribution(sandbox_model("smollm2"), sandbox_cache("smollm2", tokens),
                                 answer, wrong)
    got = expect_tensor(got, "head_logit_attribution", "layer head_index", tuple(expected.shape))
    assert_close(got, expected, "head_logit_attribution", atol=2e-3, rtol=1e-3,
                 what="attributions [layer, head]", dims="layer head_index",
                 inputs=f"SmolLM2's cache of {IOI_CHECK_PROMPT!r}, answer "
                 f"{IOI_CHECK_ANSWER!r}, wrong {IOI_CHECK_WRONG!r}")


# ------------------------------------------------------------------------------ section 5
def _spectrum_matrix(seed: int, n: int, d: int, offset: float) -> torch.Tensor:
    """Rows with a known, decaying spectrum in a random basis, plus a large common offset."""
    g = _generator(seed)
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    scales = torch.logspace(1, -1, d)
    return (torch.randn(n, d, generator=g) * scales) @ basis.T + offset * torch.randn(d, generator=g)


@points(2)
def test_explained_variance_ratio(submission):
    explained_variance_ratio = submission.function("explained_variance_ratio")
    for seed, n, d in [(303, 600, 24), (304, 90, 30)]:
        W = _spectrum_matrix(seed, n, d, offset=6.0)
        got = expect_tensor(explained_variance_ratio(W), "explained_variance_ratio", "d_model",
                            (d,))
        assert_close(got, ref.explained_variance_ratio(W), "explained_variance_ratio",
                     atol=2e-5, rtol=1e-3, what="variance fractions (largest first)",
                     dims="d_model", inputs=f"a {n} x {d} matrix whose rows have a large "
                     "common mean")


# ------------------------------------------------------------------------------ section 6
@points(3)
def test_key_read_shares(submission):
    key_read_shares = submission.function("key_read_shares")
    g = _generator(404)
    n_comp, batch, pos, d_model, d_head = 5, 3, 7, 16, 6
    parts = torch.randn(n_comp, batch, pos, d_model, generator=g)
    parts[2] = 0.8 * parts[1] + 0.3 * parts[2]  # correlated parts: covariances matter
    parts[3] = parts[3] + 2.0  # an offset along the all-ones direction: LayerNorm removes it
    parts[0] = parts[0] + 1.5 * torch.randn(d_model, generator=g)  # a non-zero mean over samples
    parts[4] = torch.randn(d_model, generator=g).expand(batch, pos, d_model)  # bias-like
    ln_scale = 0.5 + 2 * torch.rand(batch, pos, 1, generator=g)
    W = torch.randn(d_model, d_head, generator=g)
    expected = ref.key_read_shares(parts, ln_scale, W)
    got = expect_tensor(key_read_shares(parts, ln_scale, W), "key_read_shares", "component",
                        (n_comp,))
    assert_close(got, expected, "key_read_shares", atol=1e-4, rtol=1e-3, what="shares",
                 dims="component", inputs="5 random parts (two correlated, one offset along "
                 "all-ones, one constant) over 3 sequences of 7 positions, d_model=16, d_head=6")


# ------------------------------------------------------------------------------ investigations
# Each truth is computed here from the model (never a fixed number), once per grading process.
@functools.cache
def _held_out() -> tuple:
    """The chapter's held-out IOI prompts and one cache of them (residuals, z, final scale)."""
    data = make_ioi_dataset(_model(), **HELD_OUT_IOI)
    with torch.no_grad():
        _, cache = _model().run_with_cache(data.clean_tokens, names_filter=lambda name: (
            "resid" in name or name.endswith("hook_z") or name == "ln_final.hook_scale"))
    return data, cache


@kept_truth
def _lens_diffs() -> torch.Tensor:
    data, cache = _held_out()
    return ref.lens_logit_diffs(_model(), cache, data.answer_tokens)  # [stream, prompt]


@kept_truth
def _held_out_dla() -> torch.Tensor:
    data, cache = _held_out()
    return ref.per_prompt_head_dla(_model(), cache, data.answer_tokens)  # [prompt, layer, head]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@points(2)
def test_largest_bos_writer(submission):
    got = submission.finding("largest_bos_writer")
    labels = ref.component_labels(SMOL_LAYERS)
    if got not in labels:
        raise AssertionError(f"largest_bos_writer returned {got!r}: return one of the chart's "
                             "labels, 'embed', 'attn{L}' or 'mlp{L}' with L from 0 to 29")
    expected = ref.largest_bos_writer(_model())
    if got != expected:
        tokens = _tokens(COMPONENT_PROMPT)
        norms = ref.residual_components(_cache(COMPONENT_PROMPT), SMOL_LAYERS)[:, 0].norm(dim=-1)
        mine, best = norms[labels.index(got)], norms[labels.index(expected)]
        raise AssertionError(
            f"largest_bos_writer returned {got!r}, whose write at position 0 (BOS) has norm "
            f"{mine[0]:,.0f}; another component writes {best[0] / mine[0]:.1f} times more there. "
            f"(Your component's mean write over the other positions is {mine[1:].mean():,.0f}: "
            "make sure you measure position 0 only.) Measured on "
            f"{tokens.shape[1]} tokens of {COMPONENT_PROMPT!r}; position 0 is the same for "
            "every prompt.")


@points(2)
def test_lens_prefers_answer_layer(submission):
    got = submission.finding("lens_prefers_answer_layer")
    if not _is_int(got) or not 0 <= got <= SMOL_LAYERS:
        raise AssertionError(f"lens_prefers_answer_layer returned {got!r}: return a stream "
                             f"index, an int from 0 to {SMOL_LAYERS}")
    means = _lens_diffs().mean(dim=1)
    expected = ref.lens_prefers_answer_layer(_lens_diffs())
    if got != expected:
        later_negative = [L for L in range(got, SMOL_LAYERS + 1) if means[L] <= 0]
        if later_negative:
            why = (f"the mean logit(IO) - logit(S) is not positive at {len(later_negative)} "
                   f"stream(s) from {got} on (the first is stream {later_negative[0]}: "
                   f"{means[later_negative[0]]:+.2f}): the mean must stay positive from your "
                   "stream to the final one")
        else:
            why = (f"the mean is positive from stream {got} on, but also at stream {got - 1} "
                   f"({means[got - 1]:+.2f}): return the smallest such stream. Is your stream "
                   "L the one *entering* layer L (resid_pre), with 30 the final stream?")
        raise AssertionError(f"lens_prefers_answer_layer returned {got}: {why}. Measured on "
                             f"make_ioi_dataset(model, **{HELD_OUT_IOI}), last position.")


@points(2)
def test_top_dla_head(submission):
    got = submission.finding("top_dla_head")
    n_heads = _model().cfg.n_heads
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(_is_int(x) for x in got)
            and 0 <= got[0] < SMOL_LAYERS and 0 <= got[1] < n_heads):
        raise AssertionError(f"top_dla_head returned {got!r}: return (layer, head), two ints "
                             f"with layer in 0..{SMOL_LAYERS - 1} and head in 0..{n_heads - 1}")
    mean = _held_out_dla().mean(dim=0)
    expected = ref.top_dla_head(_held_out_dla())
    if tuple(got) != expected:
        mine = mean[got[0], got[1]]
        larger = int((mean > mine).sum())
        raise AssertionError(
            f"top_dla_head returned {tuple(got)}: its mean direct logit attribution over the "
            f"16 held-out prompts is {mine:+.2f}, and {larger} head(s) have a larger mean "
            "(signs included). Average each head over the prompts first, then take the "
            "largest; check how you turn a flat index back into (layer, head).")


@points(2)
def test_positional_directions(submission):
    got = submission.finding("positional_directions")
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(_is_int(x) for x in got)):
        raise AssertionError(f"positional_directions returned {got!r}: return (k80, k95), "
                             "two ints")
    W_pos = reference_model("attn_only_2l").W_pos.detach()
    expected = ref.positional_directions(W_pos)
    if tuple(got) != expected:
        ratio = ref.explained_variance_ratio(W_pos).double().cumsum(0)
        held = [f"the top {k} hold {ratio[k - 1]:.1%}" if 1 <= k <= len(ratio) else
                f"{k} is not a number of directions" for k in got]
        raise AssertionError(
            f"positional_directions returned {tuple(got)}: of the variance of the toy model's "
            f"W_pos around its mean, {held[0]} and {held[1]}. Each number should be the "
            "smallest k whose top k directions reach 80% (resp. 95%).")


# ------------------------------------------------------------------------------ mutants
_IOI_INVESTIGATION = """def NAME():
    from utils.ioi import make_ioi_dataset
    from utils.smollm2 import load_smollm2

    model = load_smollm2()
    data = make_ioi_dataset(model, n_prompts=16, seed=2)
BODY"""


def _ioi_investigation(name: str, body: str) -> str:
    """A wrong answer to an investigation on the IOI prompts: SmolLM2 and the notebook's 16
    prompts loaded as an answer would, then ``body`` (indented as in the function)."""
    return _IOI_INVESTIGATION.replace("NAME", name).replace("BODY", body)


def _lens_mutant(ending: str) -> str:
    """A wrong ``lens_prefers_answer_layer``: the right normalised streams, then ``ending``."""
    return _ioi_investigation("lens_prefers_answer_layer", """\
    n = model.cfg.n_layers
    _, cache = model.run_with_cache(data.clean_tokens)
    x = t.stack([cache["resid_pre", L][:, -1] for L in range(n)] + [cache["resid_post", n - 1][:, -1]])
    x = x / (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
""" + ending)


def _top_dla_mutant(pick: str = "argmax", divisor: str = "n_heads") -> str:
    """A wrong ``top_dla_head``: the right attributions, then ``pick`` and ``divisor`` in
    ``divmod(dla.mean(0).<pick>(), n_<divisor>)``."""
    return _ioi_investigation("top_dla_head", f"""\
    _, cache = model.run_with_cache(data.clean_tokens)
    z = t.stack([cache["z", L][:, -1] for L in range(model.cfg.n_layers)], dim=1)
    w = einops.einsum(z, model.W_O, "b l h d, l h d m -> b l h m")
    w = w / cache["ln_final.hook_scale"][:, -1].reshape(-1, 1, 1, 1)
    io, s = data.answer_tokens[:, 0], data.answer_tokens[:, 1]
    dla = einops.einsum(w, model.W_U[:, io] - model.W_U[:, s], "b l h m, m b -> b l h")
    return divmod(int(dla.mean(0).{pick}()), model.cfg.{divisor})""")


MUTANTS = {
    "per_token_loss": {
        "off_by_one_shift": Mistake(
            "you dropped the first position's logits instead of the last: the logits at position "
            "i predict the token at i + 1, so pair logits 0..pos-2 with tokens 1..pos-1",
            '''def per_token_loss(logits, tokens):
    log_probs = logits.log_softmax(dim=-1)[:, 1:]
    return -log_probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)''', hint=1),
        "predicts_current_token": Mistake(
            "you scored the logits at each position against the token at that same position: "
            "they are the model's guess for the next token, at i + 1",
            '''def per_token_loss(logits, tokens):
    log_probs = logits.log_softmax(dim=-1)[:, :-1]
    return -log_probs.gather(-1, tokens[:, :-1].unsqueeze(-1)).squeeze(-1)''', hint=1),
        "log_of_softmax": Mistake(
            "you took the log of a softmax, which underflows to -inf when the logits are far "
            "apart: log_softmax gives the same log-probabilities stably",
            '''def per_token_loss(logits, tokens):
    probs = logits.softmax(dim=-1)[:, :-1]
    return -probs.gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1).log()''', hint=2),
        "raw_logit_not_log_prob": Mistake(
            "you used the target's raw logit: the loss is minus its log-probability, so "
            "normalise the logits over the vocabulary (log_softmax) before picking the target",
            '''def per_token_loss(logits, tokens):
    return -logits[:, :-1].gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)''', hint=2),
    },
    "residual_components": {
        "cumulative_streams": Mistake(
            "you stacked snapshots of the residual stream (resid_mid, resid_post), which are "
            "running sums: each component is what one sublayer writes, its attn_out or mlp_out",
            '''def residual_components(cache, n_layers):
    parts = [cache["hook_embed"]]
    for layer in range(n_layers):
        parts += [cache["resid_mid", layer], cache["resid_post", layer]]
    return t.stack(parts)''', hint=1),
        "attention_first_then_mlps": Mistake(
            "you put all the attention outputs before all the MLP outputs: keep the order in "
            "which they are written, layer by layer (embed, attn 0, mlp 0, attn 1, mlp 1, ...)",
            '''def residual_components(cache, n_layers):
    attn = [cache["attn_out", layer] for layer in range(n_layers)]
    mlp = [cache["mlp_out", layer] for layer in range(n_layers)]
    return t.stack([cache["hook_embed"]] + attn + mlp)'''),
        "ignores_n_layers": Mistake(
            "you used a fixed number of layers instead of the n_layers argument: with n_layers=4 "
            "the answer holds the embedding and the first four layers' two outputs, 9 components",
            '''def residual_components(cache, n_layers):
    parts = [cache["hook_embed"]]
    for layer in range(30):
        parts += [cache["attn_out", layer], cache["mlp_out", layer]]
    return t.stack(parts)'''),
    },
    "logit_lens": {
        "no_final_norm": Mistake(
            "you decoded the streams without the final RMSNorm: divide each stream by its "
            "root-mean-square over d_model before multiplying by W_U",
            '''def logit_lens(cache, n_layers, W_U, b_U, eps):
    x = t.stack([cache["resid_pre", L] for L in range(n_layers)]
                + [cache["resid_post", n_layers - 1]])
    return x @ W_U + b_U''', hint=1),
        "drops_unembed_bias": Mistake(
            "you left out the unembedding bias: decoding is RMSNorm, then @ W_U, then + b_U. "
            "SmolLM2's b_U happens to be zero, so the notebook's lens looks right without it, "
            "but the function must add the b_U it is given",
            '''def logit_lens(cache, n_layers, W_U, b_U, eps):
    x = t.stack([cache["resid_pre", L] for L in range(n_layers)]
                + [cache["resid_post", n_layers - 1]])
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x @ W_U''', hint=3),
        "final_scale_for_every_layer": Mistake(
            "you divided every layer's stream by the final norm's cached scale, which belongs to "
            "the last stream only: compute each stream's own root-mean-square over d_model",
            '''def logit_lens(cache, n_layers, W_U, b_U, eps):
    x = t.stack([cache["resid_pre", L] for L in range(n_layers)]
                + [cache["resid_post", n_layers - 1]])
    return x / cache["ln_final.hook_scale"] @ W_U + b_U''', hint=1),
        "resid_post_wrong_layer": Mistake(
            "you decoded each layer's output (resid_post) instead of its input: entry L decodes "
            "blocks.L.hook_resid_pre, so entry 0 is the bare embedding and only the last entry "
            "is a resid_post",
            '''def logit_lens(cache, n_layers, W_U, b_U, eps):
    x = t.stack([cache["resid_post", L] for L in range(n_layers)]
                + [cache["resid_post", n_layers - 1]])
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x @ W_U + b_U''', hint=2),
        "layernorm_not_rmsnorm": Mistake(
            "you subtracted the mean over d_model as a LayerNorm would: SmolLM2's final norm is "
            "an RMSNorm, which only divides by the root-mean-square",
            '''def logit_lens(cache, n_layers, W_U, b_U, eps):
    x = t.stack([cache["resid_pre", L] for L in range(n_layers)]
                + [cache["resid_post", n_layers - 1]])
    x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x @ W_U + b_U'''),
        "ignores_n_layers": Mistake(
            "you decoded all 30 layers whatever n_layers says: with n_layers=3 the lens has 4 "
            "entries, the inputs of layers 0-2 and the output of layer 2",
            '''def logit_lens(cache, n_layers, W_U, b_U, eps):
    x = t.stack([cache["resid_pre", L] for L in range(30)] + [cache["resid_post", 29]])
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x @ W_U + b_U''', hint=2),
    },
    "logit_lens_agreement": {
        "compares_with_first_layer": Mistake(
            "you compared every layer with the first layer: agreement is with the last layer's "
            "top-1 token, the model's own prediction, so the last entry is 1",
            '''def logit_lens_agreement(lens_logits):
    top = lens_logits.argmax(-1)
    return (top == top[0]).float().mean(dim=(1, 2))''', hint=1),
        "compares_with_next_layer": Mistake(
            "you compared each layer with the next one: every layer is compared with the last "
            "layer's top-1 token, the model's own prediction",
            '''def logit_lens_agreement(lens_logits):
    top = lens_logits.argmax(-1)
    nxt = t.cat([top[1:], top[-1:]])
    return (top == nxt).float().mean(dim=(1, 2))''', hint=1),
        "argmax_over_positions": Mistake(
            "you took the argmax over positions: the top-1 token is the argmax over the "
            "vocabulary, the last axis",
            '''def logit_lens_agreement(lens_logits):
    top = lens_logits.argmax(dim=2)
    return (top == top[-1]).float().mean(dim=(1, 2))''', hint=1),
    },
    "logit_diff_attribution": {
        "forgets_final_norm_scale": Mistake(
            "you left out the final norm: divide every component by ln_final.hook_scale at "
            "the last position before projecting onto the answer direction",
            '''def logit_diff_attribution(cache, n_layers, W_U, b_U, answer, wrong):
    parts = [cache["hook_embed"][0, -1]]
    for L in range(n_layers):
        parts += [cache["attn_out", L][0, -1], cache["mlp_out", L][0, -1]]
    direct = t.stack(parts) @ (W_U[:, answer] - W_U[:, wrong])
    return t.cat([direct, (b_U[answer] - b_U[wrong]).reshape(1)])''', hint=2),
        "normalises_each_component": Mistake(
            "you normalised each component by its own root-mean-square: the final norm "
            "divides the whole stream, so every component shares one divisor, the cached "
            "ln_final.hook_scale at the last position",
            '''def logit_diff_attribution(cache, n_layers, W_U, b_U, answer, wrong):
    parts = [cache["hook_embed"][0, -1]]
    for L in range(n_layers):
        parts += [cache["attn_out", L][0, -1], cache["mlp_out", L][0, -1]]
    x = t.stack(parts)
    x = x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    direct = x @ (W_U[:, answer] - W_U[:, wrong])
    return t.cat([direct, (b_U[answer] - b_U[wrong]).reshape(1)])''', hint=1),
        "scale_from_first_position": Mistake(
            "you took the final norm's scale at the first position: the logits are read at "
            "the last position, so divide by the scale there",
            '''def logit_diff_attribution(cache, n_layers, W_U, b_U, answer, wrong):
    parts = [cache["hook_embed"][0, -1]]
    for L in range(n_layers):
        parts += [cache["attn_out", L][0, -1], cache["mlp_out", L][0, -1]]
    direct = t.stack(parts) / cache["ln_final.hook_scale"][0, 0] @ (W_U[:, answer] - W_U[:, wrong])
    return t.cat([direct, (b_U[answer] - b_U[wrong]).reshape(1)])''', hint=2),
        "answer_logit_only": Mistake(
            "you attributed the answer's logit alone: project onto the difference W_U[:, "
            "answer] - W_U[:, wrong], so that the wrong answer's logit is subtracted",
            '''def logit_diff_attribution(cache, n_layers, W_U, b_U, answer, wrong):
    parts = [cache["hook_embed"][0, -1]]
    for L in range(n_layers):
        parts += [cache["attn_out", L][0, -1], cache["mlp_out", L][0, -1]]
    direct = t.stack(parts) / cache["ln_final.hook_scale"][0, -1] @ W_U[:, answer]
    return t.cat([direct, b_U[answer].reshape(1)])''', hint=2),
        "drops_bias_difference": Mistake(
            "your last entry leaves out the bias: it is b_U[answer] - b_U[wrong], the term "
            "of the logit difference that no component writes (zero for SmolLM2, not in "
            "general), so that the entries add up to the logit difference",
            '''def logit_diff_attribution(cache, n_layers, W_U, b_U, answer, wrong):
    parts = [cache["hook_embed"][0, -1]]
    for L in range(n_layers):
        parts += [cache["attn_out", L][0, -1], cache["mlp_out", L][0, -1]]
    direct = t.stack(parts) / cache["ln_final.hook_scale"][0, -1] @ (W_U[:, answer] - W_U[:, wrong])
    return t.cat([direct, t.zeros(1)])''', hint=1),
        "bias_divided_by_scale": Mistake(
            "you divided the bias difference by the final norm's scale too: b_U is added "
            "after the norm, so the last entry is b_U[answer] - b_U[wrong] as it is",
            '''def logit_diff_attribution(cache, n_layers, W_U, b_U, answer, wrong):
    parts = [cache["hook_embed"][0, -1]]
    for L in range(n_layers):
        parts += [cache["attn_out", L][0, -1], cache["mlp_out", L][0, -1]]
    scale = cache["ln_final.hook_scale"][0, -1]
    direct = t.stack(parts) / scale @ (W_U[:, answer] - W_U[:, wrong])
    return t.cat([direct, (b_U[answer] - b_U[wrong]).reshape(1) / scale])''', hint=1),
    },
    "head_logit_attribution": {
        "forgets_final_norm_scale": Mistake(
            "you left out the final norm: divide every head's write by ln_final.hook_scale at "
            "the last position, as in logit_diff_attribution",
            '''def head_logit_attribution(model, cache, answer, wrong):
    z = t.stack([cache["z", L][0, -1] for L in range(model.cfg.n_layers)])
    out = einops.einsum(z, model.W_O, "l h d, l h d m -> l h m")
    return out @ (model.W_U[:, answer] - model.W_U[:, wrong])''', hint=1),
        "sums_over_positions": Mistake(
            "you summed z over all positions: only the head's write at the last position reaches "
            "the logits read there",
            '''def head_logit_attribution(model, cache, answer, wrong):
    z = t.stack([cache["z", L][0].sum(0) for L in range(model.cfg.n_layers)])
    out = einops.einsum(z, model.W_O, "l h d, l h d m -> l h m")
    out = out / cache["ln_final.hook_scale"][0, -1]
    return out @ (model.W_U[:, answer] - model.W_U[:, wrong])''', hint=2),
        "layer_output_split_evenly": Mistake(
            "you shared each layer's attention output equally among its heads: each head writes "
            "its own z @ W_O[L, h], so compute every head's write separately",
            '''def head_logit_attribution(model, cache, answer, wrong):
    n, h = model.cfg.n_layers, model.cfg.n_heads
    out = t.stack([cache["attn_out", L][0, -1] for L in range(n)]) / cache["ln_final.hook_scale"][0, -1]
    per_layer = out @ (model.W_U[:, answer] - model.W_U[:, wrong])
    return (per_layer / h)[:, None].expand(n, h).clone()''', hint=1),
    },
    "explained_variance_ratio": {
        "not_centred": Mistake(
            "you did not centre the rows: PCA measures variance around the mean vector, so "
            "subtract it first (otherwise the first direction mostly points at the mean)",
            '''def explained_variance_ratio(W):
    s = t.linalg.svdvals(W).pow(2)
    return s / s.sum()''', hint=1),
        "singular_values_not_squared": Mistake(
            "you used singular values: variances are the squared singular values of the centred "
            "matrix (or the eigenvalues of its covariance)",
            '''def explained_variance_ratio(W):
    s = t.linalg.svdvals(W - W.mean(0))
    return s / s.sum()''', hint=1),
        "columns_as_samples": Mistake(
            "you treated the columns as the samples: each row of W is one vector, so centre over "
            "the rows and take the covariance over d_model",
            '''def explained_variance_ratio(W):
    X = W.T - W.T.mean(0)
    s = t.linalg.svdvals(X).pow(2)
    return s / s.sum()''', hint=1),
        "cumulative": Mistake(
            "you returned the cumulative fractions: each entry is the fraction explained by that "
            "one direction, and the entries sum to 1",
            '''def explained_variance_ratio(W):
    s = t.linalg.svdvals(W - W.mean(0)).pow(2)
    return (s / s.sum()).cumsum(0)'''),
    },
    "key_read_shares": {
        "variance_of_each_part_alone": Mistake(
            "you gave each part the variance of its own term: correlated parts share variance, "
            "so use each part's covariance with the total, Cov(k_c, k), divided by Var(k)",
            '''def key_read_shares(parts, ln_scale, W):
    x = (parts - parts.mean(-1, keepdim=True)) / ln_scale
    k = einops.einsum(x, W, "c b p m, m h -> c b p h")
    k = k - k.mean(dim=(1, 2), keepdim=True)
    var = k.pow(2).sum(dim=(1, 2, 3))
    return var / var.sum()''', hint=2),
        "forgets_ln_scale": Mistake(
            "you left out the LayerNorm's scale: divide each centred part by ln_scale before "
            "projecting with W",
            '''def key_read_shares(parts, ln_scale, W):
    x = parts - parts.mean(-1, keepdim=True)
    k = einops.einsum(x, W, "c b p m, m h -> c b p h")
    k = k - k.mean(dim=(1, 2), keepdim=True)
    total = k.sum(0)
    return (k * total).sum(dim=(1, 2, 3)) / total.pow(2).sum()''', hint=1),
        "no_layernorm_centring": Mistake(
            "you did not centre the parts over d_model: LayerNorm subtracts each vector's mean "
            "first, which removes anything written along the all-ones direction",
            '''def key_read_shares(parts, ln_scale, W):
    k = einops.einsum(parts / ln_scale, W, "c b p m, m h -> c b p h")
    k = k - k.mean(dim=(1, 2), keepdim=True)
    total = k.sum(0)
    return (k * total).sum(dim=(1, 2, 3)) / total.pow(2).sum()''', hint=1),
        "second_moments_not_variances": Mistake(
            "you did not subtract the mean over samples: shares are of variances and covariances "
            "over (batch, pos), so a part that only adds a constant, like a bias, gets 0",
            '''def key_read_shares(parts, ln_scale, W):
    x = (parts - parts.mean(-1, keepdim=True)) / ln_scale
    k = einops.einsum(x, W, "c b p m, m h -> c b p h")
    total = k.sum(0)
    return (k * total).sum(dim=(1, 2, 3)) / total.pow(2).sum()''', hint=1),
    },
    "largest_bos_writer": {
        "averaged_over_other_positions": Mistake(
            "you found the largest writer at the ordinary positions (averaged over positions "
            "1 onwards, as in the bar chart): the question is about position 0, the BOS token, "
            "alone",
            '''def largest_bos_writer():
    from utils.smollm2 import load_smollm2

    model = load_smollm2()
    n = model.cfg.n_layers
    _, cache = model.run_with_cache(model.to_tokens("The cat sat on the mat and looked out."))
    writes = [cache["hook_embed"][0]] + [cache[f"{k}_out", L][0] for L in range(n)
                                         for k in ("attn", "mlp")]
    names = ["embed"] + [f"{k}{L}" for L in range(n) for k in ("attn", "mlp")]
    return names[int(t.stack(writes)[:, 1:].norm(dim=-1).mean(dim=1).argmax())]''', hint=1),
        "labels_without_embed": Mistake(
            "you named the component with a list of labels that lacks 'embed', so every label "
            "is shifted by one: component 0 is the embedding, then attn0, mlp0, attn1, ...",
            '''def largest_bos_writer():
    from utils.smollm2 import load_smollm2

    model = load_smollm2()
    n = model.cfg.n_layers
    _, cache = model.run_with_cache(model.to_tokens("Hello"))
    writes = [cache["hook_embed"][0, 0]] + [cache[f"{k}_out", L][0, 0] for L in range(n)
                                            for k in ("attn", "mlp")]
    names = [f"{k}{L}" for L in range(n) for k in ("attn", "mlp")] + ["embed"]
    return names[int(t.stack(writes).norm(dim=-1).argmax())]''', hint=2),
    },
    "lens_prefers_answer_layer": {
        "first_positive_stream": Mistake(
            "you returned the first stream where the mean difference is positive: on these "
            "prompts the mean hovers around zero, by chance above it, in the lower layers, and "
            "drops below zero again before the preference settles. The finding is the stream "
            "from which it *stays* positive",
            _lens_mutant('''\
    io, s = data.answer_tokens[:, 0], data.answer_tokens[:, 1]
    diffs = einops.einsum(x, model.W_U[:, io] - model.W_U[:, s], "l b d, d b -> l b")
    return int((diffs.mean(1) > 0).float().argmax())'''), hint=1),
        "decodes_layer_outputs": Mistake(
            "you numbered the streams by the layer that wrote them (resid_post of layer L as "
            "stream L): stream L is the one *entering* layer L, so your answer is one too low",
            _ioi_investigation("lens_prefers_answer_layer", '''\
    n = model.cfg.n_layers
    _, cache = model.run_with_cache(data.clean_tokens)
    x = t.stack([cache["resid_post", L][:, -1] for L in range(n)])
    x = x / (x.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    io, s = data.answer_tokens[:, 0], data.answer_tokens[:, 1]
    positive = (einops.einsum(x, model.W_U[:, io] - model.W_U[:, s], "l b d, d b -> l b")
                .mean(1) > 0).tolist() + [True]
    return next(L for L in range(n + 1) if all(positive[L:]))'''), hint=2),
        "answer_ranked_top": Mistake(
            "you looked for the stream from which the lens ranks the right name *top*: the "
            "question is when the lens prefers it to the repeated name, logit(IO) - logit(S) > 0 "
            "on average, which happens much earlier",
            _lens_mutant('''\
    top = (x @ model.W_U).argmax(-1) == data.answer_tokens[:, 0]
    majority = (top.float().mean(1) > 0.5).tolist()
    return next(L for L in range(n + 1) if all(majority[L:]))'''), hint=1),
    },
    "top_dla_head": {
        "most_negative_head": Mistake(
            "you returned the head with the most negative mean: the largest attribution, signs "
            "included, is the head that pushes logit(IO) - logit(S) up the most",
            _top_dla_mutant(pick="argmin"), hint=1),
        "flat_index_unravelled_by_layers": Mistake(
            "you turned the flat index of the [layer, head] map back into (layer, head) with the "
            "number of layers: index = layer * n_heads + head, so divide by n_heads (9)",
            _top_dla_mutant(divisor="n_layers"), hint=3),
    },
    "positional_directions": {
        "not_centred": Mistake(
            "you did not centre W_pos: PCA measures variance around the mean positional vector, "
            "so subtract it first (your explained_variance_ratio should already do this)",
            '''def positional_directions():
    from utils.toy_models import load_toy_model

    W = load_toy_model("attn_only_2l").W_pos.detach()
    s = t.linalg.svdvals(W).pow(2)
    c = (s / s.sum()).cumsum(0)
    return int((c < 0.8).sum()) + 1, int((c < 0.95).sum()) + 1''', hint=1),
        "one_direction_short": Mistake(
            "you counted the directions *before* the fraction is reached: the answer is the "
            "smallest k whose top k directions hold at least 80% (95%), one more than the "
            "number of running totals below it",
            '''def positional_directions():
    from utils.toy_models import load_toy_model

    W = load_toy_model("attn_only_2l").W_pos.detach()
    s = t.linalg.svdvals(W - W.mean(0)).pow(2)
    c = (s / s.sum()).cumsum(0)
    return int((c < 0.8).sum()), int((c < 0.95).sum())''', hint=3),
        "token_embedding": Mistake(
            "you measured the token embedding W_E: the question is about the positional "
            "embedding, W_pos (one row per position)",
            '''def positional_directions():
    from utils.toy_models import load_toy_model

    W = load_toy_model("attn_only_2l").W_E.detach()
    s = t.linalg.svdvals(W - W.mean(0)).pow(2)
    c = (s / s.sum()).cumsum(0)
    return int((c < 0.8).sum()) + 1, int((c < 0.95).sum()) + 1''', hint=2),
    },
}
