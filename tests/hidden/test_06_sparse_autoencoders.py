"""Hidden checks for chapter 06 (superposition and sparse autoencoders).

Training exercises are checked by behaviour on small seeded problems (what a correct
trainer must learn), not by comparing weights; everything else is compared with
``utils.reference.sparse_autoencoders`` on inputs the notebook never uses. The two model
exercises run on the course's 2-layer attention-only toy model (fast, no tokenizer needed).
The four investigations are graded against findings computed here, in the trusted process,
from SmolLM2 and the shipped SAE (never a fixed number).
"""

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
from utils.reference import sparse_autoencoders as ref

# Later answers call sae_forward by name; while graded they get the course's version. (Only
# functions whose work is bounded by their arguments: a trusted call has no time limit.)
REFERENCES = {"sae_forward": ref.sae_forward}
# Investigation answers may load SmolLM2 and the shipped SAE themselves: the sandbox worker loads
# SmolLM2 once, so each call shares it.
SANDBOX_MODELS = ["smollm2"]

TOY = "attn_only_2l"
SAE_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")
SAE_DIMS = {"W_enc": "d_in d_sae", "b_enc": "d_sae", "W_dec": "d_sae d_in", "b_dec": "d_in"}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _expect_dict(value, name, keys):
    if not isinstance(value, dict):
        raise SubmissionError(f"{name} should return a dict with keys {sorted(keys)}, "
                              f"got {type(value).__name__}")
    missing = [k for k in keys if k not in value]
    if missing:
        raise SubmissionError(f"{name}: the returned dict lacks {missing}")
    return value


_toy_model = functools.partial(reference_model, TOY)
warm_up = warm_up_loading(TOY, "smollm2")


def _toy_tokens(batch, half_len, seed):
    """Random tokens repeated once, BOS first: the toy model predicts the repeat well."""
    from utils.data import repeated_random_tokens

    return repeated_random_tokens(batch, half_len, _toy_model().cfg.d_vocab, seed=seed,
                                  bos_token=0)


# ----------------------------------------------------------------------- section 1
@points(3)
def test_train_toy_model(submission):
    train_toy_model = submission.function("train_toy_model")
    # Importance in a shuffled order: the two most important features are 1 and 4.
    importance = torch.tensor([0.3, 1.0, 0.6, 0.45, 0.8, 0.2])
    probs = torch.tensor([1.0, 0.02])
    # lr 5e-2 for 400 steps converges for every seed tried (0-24) with the reference and with
    # correct trainers that draw their random numbers in another order: the dense norms were
    # >= 0.98 (kept) and <= 0.21 (dropped), the sparse instance had >= 4 features above 0.7 and
    # a squared Frobenius norm >= 4.0. The bounds below keep a margin on each.
    out = _expect_dict(train_toy_model(probs, importance, n_hidden=2, steps=400, batch_size=256,
                                       lr=5e-2, seed=2),
                       "train_toy_model", ["W", "b_final", "losses"])
    W = expect_tensor(out["W"], "train_toy_model()['W']", "instances d_hidden features", (2, 2, 6))
    b_final = expect_tensor(out["b_final"], "train_toy_model()['b_final']", "instances features",
                            (2, 6))
    losses = expect_tensor(out["losses"], "train_toy_model()['losses']", "steps instances",
                           (400, 2))
    if not (losses[-50:].mean(0) < losses[:50].mean(0)).all():
        raise AssertionError("train_toy_model: the loss of some instance did not go down")
    norms = W.norm(dim=1)
    dense = norms[0]
    top = [1, 4]
    rest = [0, 2, 3, 5]
    if not (dense[top] > 0.8).all() or not (dense[rest] < 0.35).all():
        raise AssertionError(
            "train_toy_model: with dense features (p = 1) and importance "
            f"{importance.tolist()}, the model should keep exactly the two most important "
            f"features (1 and 4) and drop the others; learned feature norms "
            f"{[round(v, 2) for v in dense.tolist()]}. Is the loss weighted by importance, "
            "and are features present with probability p (not 1 - p)?")
    # A dense feature the model drops is best predicted by its mean, E[x] = 0.5: that is the
    # bias's job (seeds 0-24 with the reference: 0.45-0.57).
    dropped = b_final[0, rest]
    if not ((dropped > 0.3) & (dropped < 0.7)).all():
        raise AssertionError(
            "train_toy_model: with dense features, the model drops features 0, 2, 3 and 5 and "
            "should output their mean (0.5) through b_final; b_final for them is "
            f"{[round(v, 2) for v in dropped.tolist()]}. Is b_final added before the ReLU and "
            "trained with W?")
    sparse = norms[1]
    # A linear model (no ReLU) is a projection at best: its squared norms sum to about
    # d_hidden = 2. Superposition packs more features in: well above 2.
    squared_total = float(sparse.pow(2).sum())
    if int((sparse > 0.7).sum()) < 3 or squared_total < 3.0:
        raise AssertionError(
            "train_toy_model: with sparse features (p = 0.02) the model should superpose "
            "features in its 2 dimensions: at least 3 of the 6 with norm > 0.7, squared norms "
            f"summing to well over 2; learned feature norms "
            f"{[round(v, 2) for v in sparse.tolist()]} (squared sum {squared_total:.2f}). "
            "Check the ReLU on the output and the sparsity of the data.")


@points(2)
def test_superposition_stats(submission):
    superposition_stats = submission.function("superposition_stats")
    W = torch.randn(3, 4, 7, generator=_gen(61))
    W[1, :, 2] = 0.0  # a dropped feature
    W[2, :, 5] *= 3.0
    got = _expect_dict(superposition_stats(W), "superposition_stats", ["norms", "interference"])
    expected = ref.superposition_stats(W)
    for key in ("norms", "interference"):
        value = expect_tensor(got[key], f"superposition_stats()['{key}']", "instances features",
                              (3, 7))
        assert_close(value, expected[key], f"superposition_stats()['{key}']", atol=1e-4,
                     rtol=1e-4, dims="instances features",
                     inputs="W of 3 instances, 4 hidden dimensions and 7 features, one feature "
                            "all zeros")


# ----------------------------------------------------------------------- section 2
def _random_sae(d_in, d_sae, seed, b_enc_shift=0.0):
    gen = _gen(seed)
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    return {"W_enc": torch.randn(d_in, d_sae, generator=gen) * 0.5,
            "b_enc": torch.randn(d_sae, generator=gen) * 0.2 + b_enc_shift,
            "W_dec": W_dec, "b_dec": torch.randn(d_in, generator=gen) * 0.3}


@points(2)
def test_sae_forward(submission):
    sae_forward = submission.function("sae_forward")
    sae = _random_sae(10, 24, seed=62)
    x = torch.randn(16, 10, generator=_gen(63)) + 0.5
    inputs = "16 inputs of 10 dimensions, an SAE with 24 latents, l1_coeff 0.07"
    for k in (None, 5):
        got = _expect_dict(sae_forward(x, sae, 0.07, k), "sae_forward",
                           ["latents", "reconstruction", "recon_loss", "sparsity_loss", "loss"])
        expected = ref.sae_forward(x, sae, 0.07, k)
        label = "sae_forward" if k is None else f"sae_forward with k={k}"
        latents = expect_tensor(got["latents"], f"{label}: latents", "batch d_sae", (16, 24))
        if k is not None and int((latents > 0).sum(-1).max()) > k:
            raise AssertionError(f"{label}: an input has more than k={k} active latents; keep "
                                 "the k largest pre-activations of each input (row)")
        assert_close(latents, expected["latents"], f"{label}: latents", atol=1e-4,
                     dims="batch d_sae", inputs=inputs)
        recon = expect_tensor(got["reconstruction"], f"{label}: reconstruction", "batch d_in",
                              (16, 10))
        assert_close(recon, expected["reconstruction"], f"{label}: reconstruction", atol=1e-4,
                     dims="batch d_in", inputs=inputs)
        for key in ("recon_loss", "sparsity_loss", "loss"):
            assert_number(got[key], expected[key].item(), f"{label}: {key}", atol=1e-4,
                          rtol=1e-4)


def _synthetic(seed):
    gen = _gen(seed)
    features = torch.randn(16, 8, generator=gen)
    features = features / features.norm(dim=-1, keepdim=True)
    coeffs = torch.rand(4096, 16, generator=gen) * (torch.rand(4096, 16, generator=gen) < 0.06)
    return coeffs @ features, features


@functools.cache
def _reference_sae_run():
    acts, features = _synthetic(64)
    run = ref.train_sae(acts, 32, steps=300, batch_size=128, lr=2e-2, l1_coeff=0.3, seed=5)
    latents = ref.sae_encode(acts, run)
    topk = ref.train_sae(acts, 32, steps=100, batch_size=128, lr=2e-2, l1_coeff=0.0, k=2, seed=6)
    return (ref.mean_max_cosine_similarity(features, run["W_dec"]),
            (latents > 0).float().sum(-1).mean().item(), topk["losses"][-20:].mean().item())


def _check_sae_result(out, name, d_in, n_latents, steps):
    _expect_dict(out, name, [*SAE_KEYS, "losses"])
    shapes = {"W_enc": ("d_in d_sae", (d_in, n_latents)), "b_enc": ("d_sae", (n_latents,)),
              "W_dec": ("d_sae d_in", (n_latents, d_in)), "b_dec": ("d_in", (d_in,)),
              "losses": ("steps", (steps,))}
    for key, (dims, shape) in shapes.items():
        expect_tensor(out[key], f"{name}['{key}']", dims, shape)
    norms = out["W_dec"].norm(dim=-1)
    if not torch.allclose(norms, torch.ones_like(norms), atol=1e-3):
        raise AssertionError(
            f"{name}: the decoder rows must have unit norm after training (renormalise W_dec's "
            f"rows after every step); their norms range from {norms.min():.3f} to "
            f"{norms.max():.3f}")


@points(3)
def test_train_sae(submission):
    train_sae = submission.function("train_sae")
    acts, features = _synthetic(64)
    out = train_sae(acts, 32, steps=300, batch_size=128, lr=2e-2, l1_coeff=0.3, k=None, seed=5)
    _check_sae_result(out, "train_sae", 8, 32, 300)
    if not out["losses"][-50:].mean() < out["losses"][:50].mean():
        raise AssertionError("train_sae: the loss did not go down")
    mmcs = ref.mean_max_cosine_similarity(features, out["W_dec"])
    l0 = (ref.sae_encode(acts, out) > 0).float().sum(-1).mean().item()
    ref_mmcs, ref_l0, ref_topk_loss = _reference_sae_run()
    if mmcs < min(0.9, ref_mmcs - 0.05):
        raise AssertionError(
            f"train_sae: on synthetic data with 16 known features your ReLU + L1 SAE matches "
            f"them with a mean max cosine similarity of {mmcs:.3f}; a correct trainer reaches "
            f"about {ref_mmcs:.2f}. Check the loss and the decoder normalisation.")
    if not ref_l0 / 1.6 < l0 < ref_l0 * 1.6:
        raise AssertionError(
            f"train_sae: your SAE has L0 = {l0:.2f} active latents per input where a correct "
            f"trainer gets about {ref_l0:.2f}; is the L1 penalty on the latents (after the "
            "ReLU), scaled by l1_coeff?")
    # TopK: every input keeps at most k latents.
    topk = train_sae(acts, 32, steps=100, batch_size=128, lr=2e-2, l1_coeff=0.0, k=2, seed=6)
    _check_sae_result(topk, "train_sae with k=2", 8, 32, 100)
    topk_loss = topk["losses"][-20:].mean().item()
    if topk_loss > 2 * ref_topk_loss:
        raise AssertionError(
            f"train_sae with k=2: the TopK SAE's loss ends at {topk_loss:.4f}, a correct one at "
            f"about {ref_topk_loss:.4f}. Is TopK taken over each input's latents (the last "
            "axis), not over the batch?")
    # `init` must be the starting point.
    start = _random_sae(8, 32, seed=65)
    cont = train_sae(acts, 32, steps=2, batch_size=64, lr=1e-6, l1_coeff=0.1, seed=7, init=start)
    _check_sae_result(cont, "train_sae with init", 8, 32, 2)
    for key in SAE_KEYS:
        assert_close(cont[key], start[key], f"train_sae with init: {key}", atol=1e-3,
                     what="with lr=1e-6 and 2 steps, values should stay at init's; values",
                     dims=SAE_DIMS[key], inputs="init = a random SAE with 32 latents")


# ----------------------------------------------------------------------- section 3
@points(2)
def test_resample_dead_latents(submission):
    resample = submission.function("resample_dead_latents")
    sae = _random_sae(6, 12, seed=66)
    sae["b_enc"][[1, 4, 5, 9]] = -50.0  # these latents never fire
    acts = torch.randn(40, 6, generator=_gen(67)) * 2
    latents = ref.sae_encode(acts, sae)
    expected = ref.resample_dead_latents(acts, latents, sae)
    got = _expect_dict(resample(acts, latents, sae), "resample_dead_latents",
                       ["dead", "dead_fraction", *SAE_KEYS])
    dead = expect_tensor(got["dead"], "resample_dead_latents()['dead']", "d_sae", (12,))
    if dead.dtype != torch.bool or not torch.equal(dead, expected["dead"]):
        raise AssertionError(
            "resample_dead_latents: 'dead' should be a bool tensor marking the latents that are "
            f"active on no input of the batch: expected {expected['dead'].int().tolist()}, got "
            f"{dead.int().tolist() if dead.dtype == torch.bool else dead.tolist()}")
    assert_number(got["dead_fraction"], expected["dead_fraction"],
                  "resample_dead_latents: dead_fraction", atol=1e-6)
    for key, dims in SAE_DIMS.items():
        value = expect_tensor(got[key], f"resample_dead_latents()['{key}']", dims,
                              tuple(sae[key].shape))
        assert_close(value, expected[key], f"resample_dead_latents()['{key}']", atol=1e-4,
                     dims=dims, inputs="40 inputs of 6 dimensions, an SAE with 12 latents of "
                                       "which 4 never fire")
    # With nothing dead, nothing changes.
    alive = _random_sae(6, 12, seed=68, b_enc_shift=50.0)
    got = resample(acts, ref.sae_encode(acts, alive), alive)
    if bool(torch.as_tensor(got["dead"]).any()):
        raise AssertionError("resample_dead_latents: no latent is dead here, but some were "
                             "marked dead")
    for key in SAE_KEYS:
        assert_close(got[key], alive[key], f"resample_dead_latents (nothing dead): {key}",
                     dims=SAE_DIMS[key], inputs="an SAE whose 12 latents all fire")


# ----------------------------------------------------------------------- section 4
HOOK = "blocks.1.hook_resid_pre"


@functools.cache
def _evaluate_case():
    model = _toy_model()
    tokens = _toy_tokens(3, 10, seed=69)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=[HOOK])
    acts = cache[HOOK][:, 1:].reshape(-1, model.cfg.d_model)
    sae = ref.init_sae(acts, 256, _gen(70))
    sae["b_enc"] = torch.full((256,), -0.05)
    sae["W_enc"] = sae["W_enc"] * 0.8
    results = {k: ref.evaluate_sae(model, tokens, HOOK, sae, k) for k in (16, None)}
    return tokens, sae, results


@points(3)
def test_evaluate_sae(submission):
    evaluate_sae = submission.function("evaluate_sae")
    tokens, sae, results = _evaluate_case()
    keys = ["l0", "fvu", "ce_clean", "ce_sae", "ce_zero", "ce_recovered"]
    for k, expected in results.items():
        label = f"evaluate_sae (k={k})"
        got = _expect_dict(evaluate_sae(sandbox_model(TOY), tokens, HOOK, sae, k), label, keys)
        for key in keys:
            hint = {
                "l0": "the mean over tokens (BOS excluded) of the number of active latents",
                "fvu": "squared error over the variance around the mean activation, BOS excluded",
                "ce_clean": "the model's plain next-token loss",
                "ce_sae": "loss with positions 1: replaced by the reconstruction, BOS untouched",
                "ce_zero": "loss with positions 1: set to zero, BOS untouched",
                "ce_recovered": "(ce_zero - ce_sae) / (ce_zero - ce_clean)",
            }[key]
            assert_number(got[key], expected[key], f"{label}: {key} ({hint})", atol=2e-4,
                          rtol=2e-4)


# ----------------------------------------------------------------------- section 5
@points(2)
def test_top_activating_contexts(submission):
    top_contexts = submission.function("top_activating_contexts")
    acts = torch.relu(torch.randn(6, 15, generator=_gen(71)))
    acts[2, 0] = 9.0  # needs padding on the left
    acts[2, 2] = 8.5
    acts[4, 9] = 8.0  # two of the top values in row 4
    acts[4, 11] = 7.5
    tokens = torch.randint(0, 1000, (6, 15), generator=_gen(72))
    got = _expect_dict(top_contexts(acts, tokens, 7, 5, pad_id=-7), "top_activating_contexts",
                       ["values", "batch_idx", "pos_idx", "contexts"])
    expected = ref.top_activating_contexts(acts, tokens, 7, 5, pad_id=-7)
    values = expect_tensor(got["values"], "top_activating_contexts()['values']", "k", (7,))
    assert_close(values, expected["values"], "top_activating_contexts()['values']", dims="k",
                 inputs="activations of 6 rows and 15 positions, k=7, window=5")
    for key in ("batch_idx", "pos_idx"):
        value = expect_tensor(got[key], f"top_activating_contexts()['{key}']", "k", (7,))
        if value.tolist() != expected[key].tolist():
            raise AssertionError(
                f"top_activating_contexts: {key} should be {expected[key].tolist()}, got "
                f"{value.tolist()} (the k largest activations over all rows and positions, "
                "largest first)")
    contexts = expect_tensor(got["contexts"], "top_activating_contexts()['contexts']",
                             "k window", (7, 5))
    if contexts.tolist() != expected["contexts"].tolist():
        bad = next(i for i in range(7) if contexts[i].tolist() != expected["contexts"][i].tolist())
        raise AssertionError(
            f"top_activating_contexts: context {bad} should be "
            f"{expected['contexts'][bad].tolist()}, got {contexts[bad].tolist()} (the window "
            "tokens ending at the activating token, left-padded with pad_id)")


@functools.cache
def _steer_case():
    model = _toy_model()
    tokens = _toy_tokens(2, 5, seed=73)
    direction = torch.randn(model.cfg.d_model, generator=_gen(74))
    direction = direction / direction.norm() * 1.6
    return tokens, direction, {
        s: ref.steer_generation(model, tokens, HOOK, direction, s, 6) for s in (0.0, 2.0)}


@points(3)
def test_steer_generation(submission):
    steer = submission.function("steer_generation")
    tokens, direction, expected = _steer_case()
    for scale, want in expected.items():
        got = expect_tensor(steer(sandbox_model(TOY), tokens, HOOK, direction, scale, 6),
                            f"steer_generation (scale {scale:g})", "batch pos_plus_new",
                            tuple(want.shape))
        if not torch.equal(got.long(), want):
            raise AssertionError(
                f"steer_generation with scale {scale:g}: generated tokens "
                f"{got[:, tokens.shape[1]:].tolist()}, expected {want[:, tokens.shape[1]:].tolist()}"
                " (greedy decoding, scale * direction added at every position except 0, on "
                "every forward pass)")


# ----------------------------------------------------------------------- investigations
# Each truth is computed here from SmolLM2 and the shipped SAE, once per grading process.
@functools.cache
def _shipped_sae():
    from utils.sae import load_pretrained_sae

    return load_pretrained_sae()


@functools.cache
def _heldout_rows(n_rows):
    from utils.text_corpus import pydoc_topics, split_documents, token_sequences

    model = reference_model("smollm2")
    _, heldout = split_documents(pydoc_topics(), test_fraction=0.1, seed=0)
    bos = model.tokenizer.bos_token_id
    return token_sequences(model.tokenizer, heldout, seq_len=128, max_sequences=n_rows,
                           bos_token_id=1 if bos is None else bos)


@kept_truth
def _ablation_losses():
    sae, config = _shipped_sae()
    return ref.ablation_losses(reference_model("smollm2"), _heldout_rows(4), config["hook_name"],
                               sae, config["k"])


NEURON_TOP, NEURON_MIN = 30, 3


@kept_truth
def _carrier_counts():
    sae, config = _shipped_sae()
    model = reference_model("smollm2")
    layer = config["layer"] - 1
    neuron_hook = f"blocks.{layer}.mlp.hook_post"
    rows = _heldout_rows(36)[4:36]
    with torch.no_grad():
        _, cache = model.run_with_cache(rows, names_filter=[neuron_hook, config["hook_name"]],
                                        stop_at_layer=config["layer"] + 1)
    neuron_acts = cache[neuron_hook][:, 1:].reshape(-1, model.cfg.d_mlp)
    stream = cache[config["hook_name"]][:, 1:].reshape(-1, model.cfg.d_model)
    latents = ref.sae_encode(stream, sae, config["k"])
    carriers = ref.neuron_carriers(neuron_acts, latents, model.W_out[layer].detach(),
                                   sae["W_dec"], NEURON_TOP)
    return ref.carrier_groups(carriers, NEURON_MIN)


def _as_float(value, name):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AssertionError(f"{name} returned {value!r}: return one number, a Python float")
    return float(value)


@points(2)
def test_mean_ablation_recovered(submission):
    got = _as_float(submission.finding("mean_ablation_recovered", timeout=180.0),
                    "mean_ablation_recovered")
    losses = _ablation_losses()
    expected = ref.loss_recovered(losses, "mean")
    if abs(got - expected) > 0.002:
        zero = ref.loss_recovered(losses, "zero")
        raise AssertionError(
            f"mean_ablation_recovered returned {got:.4f}. On the first 4 held-out rows, one "
            f"batch, splicing the mean raises the loss by {losses['mean'] - losses['clean']:.2f} "
            f"nats and splicing the SAE by {losses['sae'] - losses['clean']:.3f}; against zeroing "
            f"the share would be {zero:.4f}. Check the baseline (the mean over positions 1: of "
            "all 4 rows, BOS left out of the mean and left clean in every run) and the formula "
            "(ce_mean - ce_sae) / (ce_mean - ce_clean).")


@points(1)
def test_encoder_decoder_cosine(submission):
    got = _as_float(submission.finding("encoder_decoder_cosine", timeout=180.0),
                    "encoder_decoder_cosine")
    cosines = ref.encoder_decoder_cosines(_shipped_sae()[0])
    expected = cosines.median().item()
    if abs(got - expected) > 0.001:
        below = (cosines < got).float().mean().item()
        raise AssertionError(
            f"encoder_decoder_cosine returned {got:.4f}: {below:.0%} of the shipped SAE's "
            "latents have a cosine below that, where the median has half. Normalise both the "
            "encoder column W_enc[:, i] and the decoder row W_dec[i], and take the median, not "
            "the mean.")


@points(1)
def test_nearest_latent_cosine(submission):
    got = _as_float(submission.finding("nearest_latent_cosine", timeout=180.0),
                    "nearest_latent_cosine")
    nearest = ref.nearest_latent_cosines(_shipped_sae()[0])
    expected = nearest.median().item()
    if abs(got - expected) > 0.001:
        below = (nearest < got).float().mean().item()
        raise AssertionError(
            f"nearest_latent_cosine returned {got:.4f}: {below:.0%} of the latents have a "
            "nearest neighbour less similar than that, where the median has half. Normalise "
            "each decoder row W_dec[i] over its d_model entries (not the columns), leave each "
            "latent's cosine with itself out, keep the sign, and take the median.")


@points(2)
def test_polysemantic_neuron(submission):
    got = submission.finding("polysemantic_neuron", timeout=180.0)
    counts = _carrier_counts()
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = int(got.item())
    if isinstance(got, bool) or not isinstance(got, int) or not 0 <= got < len(counts):
        raise AssertionError(f"polysemantic_neuron returned {got!r}: return a neuron index, an "
                             f"int in [0, {len(counts)})")
    best = int(counts.max())
    if int(counts[got]) != best:
        raise AssertionError(
            f"polysemantic_neuron returned neuron {got}: {int(counts[got])} latents carry at "
            f"least {NEURON_MIN} of its {NEURON_TOP} strongest activations, and "
            f"{int((counts == best).sum())} neuron(s) reach {best}. Check that the carrier is "
            "the latent writing most along the neuron's output direction (activation times the "
            "cosine with W_out[layer][n]), not simply the most active latent; that you count "
            f"latents with at least {NEURON_MIN} tokens; and that the neuron is in the MLP of "
            "the layer *before* the SAE's stream.")


# ----------------------------------------------------------------------- mutants
_TRAIN_TOY = '''import math
import torch as t
def train_toy_model(feature_probability, importance, n_hidden, steps=2000, batch_size=1024, lr=1e-2, seed=0, progress=False):
    gen = t.Generator().manual_seed(seed)
    n_inst, n_feat = feature_probability.shape[0], importance.shape[0]
    W = (t.randn(n_inst, n_hidden, n_feat, generator=gen) * math.sqrt(2 / (n_hidden + n_feat))).requires_grad_(True)
    b = t.zeros(n_inst, n_feat, requires_grad=True)
    opt = t.optim.Adam([W, b], lr=lr)
    losses = []
    for _ in range(steps):
        shape = (batch_size, n_inst, n_feat)
        x = t.rand(shape, generator=gen) * (t.rand(shape, generator=gen) < PROB)
        h = t.einsum("ihf,bif->bih", W, x)
        out = ACT(t.einsum("ihf,bih->bif", W, h) + b)
        loss = (WEIGHT * (x - out) ** 2).sum(-1).mean(0)
        opt.zero_grad(); loss.sum().backward(); opt.step()
        losses.append(loss.detach())
    return {"W": W.detach(), "b_final": b.detach(), "losses": t.stack(losses)}
'''


def _toy_mutant(prob="feature_probability[:, None]", act="t.relu", weight="importance"):
    return (_TRAIN_TOY.replace("PROB", prob).replace("ACT", act).replace("WEIGHT", weight))


_STATS = '''import torch as t
def superposition_stats(W):
    norms = W.norm(dim=1)
    unit = UNIT
    dots = t.einsum("ihf,ihg->ifg", unit, W) ** 2
    inter = DIAG
    return {"norms": norms, "interference": inter}
'''


def _stats_mutant(unit="W / (norms[:, None, :] + 1e-8)",
                  diag="dots.sum(-1) - t.diagonal(dots, dim1=-2, dim2=-1)"):
    return _STATS.replace("UNIT", unit).replace("DIAG", diag)


_FORWARD = '''import torch as t
def sae_forward(x, sae, l1_coeff, k=None):
    pre = (x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]
    if k is None:
        z = t.relu(pre)
    else:
        v, i = pre.topk(k, dim=TOPK_DIM)
        z = t.zeros_like(pre).scatter(TOPK_DIM, i, t.relu(v))
    xh = z @ sae["W_dec"] + sae["b_dec"]
    rec = RECON
    sp = SPARSE
    return {"latents": z, "reconstruction": xh, "recon_loss": rec, "sparsity_loss": sp, "loss": rec + l1_coeff * sp}
'''


def _forward_mutant(topk_dim="-1", recon="(xh - x).pow(2).sum(-1).mean()",
                    sparse="z.abs().sum(-1).mean()",
                    encoder='(x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]',
                    decoder='z @ sae["W_dec"] + sae["b_dec"]'):
    return (_FORWARD.replace('(x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]', encoder)
            .replace('z @ sae["W_dec"] + sae["b_dec"]', decoder)
            .replace("TOPK_DIM", topk_dim).replace("RECON", recon).replace("SPARSE", sparse))


_TRAIN_SAE = '''import torch as t
def train_sae(activations, n_latents, steps, batch_size=256, lr=1e-2, l1_coeff=0.0, k=None, seed=0, init=None, progress=False):
    gen = t.Generator().manual_seed(seed)
    if INIT_CHECK:
        W_dec = t.randn(n_latents, activations.shape[1], generator=gen)
        W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
        init = {"W_enc": W_dec.T, "b_enc": t.zeros(n_latents), "W_dec": W_dec, "b_dec": activations.mean(0)}
    p = {n: init[n].detach().clone().requires_grad_(True) for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    opt = t.optim.Adam(p.values(), lr=lr)
    losses = t.zeros(steps)
    for s in range(steps):
        x = activations[t.randint(0, activations.shape[0], (batch_size,), generator=gen)]
        pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
        if k is None:
            z = t.relu(pre)
        else:
            v, i = pre.topk(k, dim=TOPK_DIM)
            z = t.zeros_like(pre).scatter(TOPK_DIM, i, t.relu(v))
        xh = z @ p["W_dec"] + p["b_dec"]
        loss = (xh - x).pow(2).sum(-1).mean() + l1_coeff * L1_TARGET.abs().sum(-1).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        if NORMALISE:
            with t.no_grad():
                p["W_dec"] /= p["W_dec"].norm(dim=-1, keepdim=True)
        losses[s] = loss.item()
    return {**{n: v.detach() for n, v in p.items()}, "losses": losses}
'''


def _train_sae_mutant(init_check="init is None", topk_dim="-1", l1_target="z",
                      normalise="True"):
    return (_TRAIN_SAE.replace("INIT_CHECK", init_check).replace("TOPK_DIM", topk_dim)
            .replace("L1_TARGET", l1_target).replace("NORMALISE", normalise))


_RESAMPLE = '''def resample_dead_latents(activations, latents, sae):
    dead = DEAD
    W_enc, b_enc, W_dec = sae["W_enc"].clone(), sae["b_enc"].clone(), sae["W_dec"].clone()
    idx = dead.nonzero().flatten()
    if len(idx) > 0:
        res = activations - (latents @ sae["W_dec"] + sae["b_dec"])
        worst = res.pow(2).sum(-1).argsort(descending=DESC)[: len(idx)]
        u = res[worst]
        u = NORMALISE
        alive = sae["W_enc"][:, ~dead].norm(dim=0)
        scale = 0.2 * (alive.mean().item() if len(alive) else 1.0)
        W_dec[idx] = u
        W_enc[:, idx] = scale * u.T
        RESET_BIAS
    return {"dead": dead, "dead_fraction": dead.float().mean().item(), "W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": sae["b_dec"].clone()}
'''


def _resample_mutant(dead="(latents <= 0).all(dim=0)", desc="True",
                     normalise="u / u.norm(dim=-1, keepdim=True)",
                     reset="b_enc[idx] = 0.0"):
    return (_RESAMPLE.replace("DEAD", dead).replace("DESC", desc).replace("NORMALISE", normalise)
            .replace("RESET_BIAS", reset))


_EVALUATE = '''import torch as t
def evaluate_sae(model, tokens, hook_name, sae, k=None):
    with t.no_grad():
        ce_clean, cache = model.run_with_cache(tokens, return_type="loss", names_filter=[hook_name])
        x = cache[hook_name][:, START:]
        pre = (x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]
        if k is None:
            z = t.relu(pre)
        else:
            v, i = pre.topk(k, dim=-1)
            z = t.zeros_like(pre).scatter(-1, i, t.relu(v))
        xh = z @ sae["W_dec"] + sae["b_dec"]
        def splice(new):
            def hook(act, hook):
                act = act.clone()
                act[:, START:] = new
                return act
            return hook
        ce_sae = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_name, splice(xh))])
        ce_zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_name, splice(ABLATION))])
    xf = x.reshape(-1, x.shape[-1])
    fvu = (xf - xh.reshape(-1, x.shape[-1])).pow(2).sum() / DENOM
    a, b, c = ce_clean.item(), ce_sae.item(), ce_zero.item()
    return {"l0": (z > 0).float().sum(-1).mean().item(), "fvu": fvu.item(), "ce_clean": a, "ce_sae": b, "ce_zero": c, "ce_recovered": RECOVERED}
'''


def _evaluate_mutant(start="1", ablation="t.zeros_like(x)",
                     denom="(xf - xf.mean(0)).pow(2).sum()", recovered="(c - b) / (c - a)"):
    return (_EVALUATE.replace("START", start).replace("ABLATION", ablation)
            .replace("DENOM", denom).replace("RECOVERED", recovered))


_CONTEXTS = '''import torch as t
def top_activating_contexts(latent_acts, tokens, k, window, pad_id=0):
    n_pos = latent_acts.shape[1]
    values, flat = latent_acts.reshape(-1).topk(k)
    b_idx, p_idx = flat // n_pos, flat % n_pos
    padded = t.cat([t.full((tokens.shape[0], window), pad_id, dtype=tokens.dtype), tokens, t.full((tokens.shape[0], window), pad_id, dtype=tokens.dtype)], dim=1)
    offsets = t.arange(window) + OFFSET
    contexts = padded[b_idx[:, None], p_idx[:, None] + window + offsets]
    return {"values": values, "batch_idx": b_idx, "pos_idx": p_idx, "contexts": contexts}
'''

_STEER = '''import torch as t
def steer_generation(model, tokens, hook_name, direction, scale, n_new_tokens):
    def add(act, hook):
        act = act.clone()
        act[:, POSITIONS] += scale * DIRECTION
        return act
    out = tokens
    with t.no_grad():
        for _ in range(n_new_tokens):
            logits = model.run_with_hooks(out, fwd_hooks=[(HOOK, add)])
            out = t.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out
'''


def _steer_mutant(positions="1:", direction="direction", hook="hook_name"):
    return (_STEER.replace("POSITIONS", positions).replace("DIRECTION", direction)
            .replace("HOOK", hook))


_MEAN_ABLATION = """import torch as t
def mean_ablation_recovered():
    from utils.sae import load_pretrained_sae
    from utils.smollm2 import load_smollm2
    from utils.text_corpus import pydoc_topics, split_documents, token_sequences
    model = load_smollm2()
    sae, config = load_pretrained_sae()
    hook_name = config["hook_name"]
    _, heldout = split_documents(pydoc_topics(), test_fraction=0.1, seed=0)
    tokens = token_sequences(model.tokenizer, heldout, seq_len=128, max_sequences=4, bos_token_id=model.tokenizer.bos_token_id or 1)
    def splice(new):
        def hook(act, hook):
            return t.cat([act[:, :1], new], dim=1)
        return hook
    with t.no_grad():
        ce_clean, cache = model.run_with_cache(tokens, return_type="loss", names_filter=[hook_name])
        full = cache[hook_name]
        x = full[:, 1:]
        x_hat = sae_forward(x.reshape(-1, x.shape[-1]), sae, 0.0, config["k"])["reconstruction"].reshape(x.shape)
        baseline = BASELINE
        ce_sae = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_name, splice(x_hat))])
        ce_base = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_name, splice(baseline))])
    return ((ce_base - ce_sae) / (ce_base - ce_clean)).item()
"""

_SHIPPED_WEIGHTS = """def NAME():
    from utils.sae import load_pretrained_sae
    sae, _ = load_pretrained_sae()
    BODY
"""


def _weights_mutant(name, body):
    return _SHIPPED_WEIGHTS.replace("NAME", name).replace("BODY", body)


_POLYSEMANTIC = """import torch as t
def polysemantic_neuron():
    from utils.sae import load_pretrained_sae
    from utils.smollm2 import load_smollm2
    from utils.text_corpus import pydoc_topics, split_documents, token_sequences
    model = load_smollm2()
    sae, config = load_pretrained_sae()
    layer = config["layer"] - 1
    nh, sh = f"blocks.{layer}.mlp.hook_post", config["hook_name"]
    _, heldout = split_documents(pydoc_topics(), test_fraction=0.1, seed=0)
    rows = token_sequences(model.tokenizer, heldout, seq_len=128, max_sequences=36, bos_token_id=model.tokenizer.bos_token_id or 1)[4:36]
    with t.no_grad():
        _, cache = model.run_with_cache(rows, names_filter=[nh, sh], stop_at_layer=config["layer"] + 1)
    acts = cache[nh][:, 1:].reshape(-1, model.cfg.d_mlp)
    z = sae_forward(cache[sh][:, 1:].reshape(-1, model.cfg.d_model), sae, 0.0, config["k"])["latents"]
    ALIGN
    top = acts.topk(30, dim=0).indices
    counts = []
    for n in range(acts.shape[1]):
        carriers = CARRIERS
        counts.append(COUNT)
    return int(t.tensor(counts).argmax())
"""


def _polysemantic_mutant(carriers="(z[top[:, n]] * align[:, n]).argmax(-1)",
                         count="int((carriers.bincount() >= 3).sum())",
                         align='w = model.W_out[layer].detach()\n'
                               '    align = sae["W_dec"] @ (w / w.norm(dim=-1, keepdim=True)).T'):
    return (_POLYSEMANTIC.replace("CARRIERS", carriers).replace("COUNT", count)
            .replace("ALIGN", align))


MUTANTS = {
    "train_toy_model": {
        "no_relu": Mistake(
            "your model has no ReLU on its output, so it is linear and can at best keep as many "
            "features as it has dimensions: apply the ReLU to W.T @ h + b_final",
            _toy_mutant(act="")),
        "importance_ignored": Mistake(
            "your loss does not weight the squared errors by importance: multiply each feature's "
            "squared error by importance[f] before summing over the features",
            _toy_mutant(weight="1.0")),
        "bias_not_trained": Mistake(
            "your b_final never changes from zero: give it to the optimiser with W, so the model "
            "can output a dropped feature's mean",
            _toy_mutant().replace("t.optim.Adam([W, b], lr=lr)", "t.optim.Adam([W], lr=lr)")),
        "sparsity_inverted": Mistake(
            "your features are present with probability 1 - p instead of p: a feature is present "
            "where its uniform draw is below feature_probability",
            _toy_mutant(prob="1 - feature_probability[:, None]"), hint=1),
    },
    "superposition_stats": {
        "diagonal_included": Mistake(
            "your interference includes each feature's overlap with itself (the diagonal): sum "
            "only over the other features, g != f",
            _stats_mutant(diag="dots.sum(-1)"), hint=2),
        "not_normalised": Mistake(
            "you took the dot products with the column W_f itself: use its unit direction, the "
            "column divided by (its norm + 1e-8)",
            _stats_mutant(unit="W"), hint=2),
        "epsilon_dropped": Mistake(
            "you divided by the norm without the + 1e-8: a dropped feature (a zero column) then "
            "gives 0 / 0 = nan; add 1e-8 to the norm as the contract says",
            _stats_mutant(unit="W / norms[:, None, :]")),
        "normalised_over_features": Mistake(
            "you normalised W along the features axis: a feature's direction is its own column "
            "W[i, :, f] divided by that column's norm over d_hidden",
            _stats_mutant(unit="W / W.norm(dim=2, keepdim=True)"), hint=1),
    },
    "sae_forward": {
        "l1_on_pre_activations": Mistake(
            "your sparsity loss is the L1 norm of the pre-activations: penalise the latents, after "
            "the ReLU",
            _forward_mutant(sparse="pre.abs().sum(-1).mean()"), hint=1),
        "topk_over_batch_axis": Mistake(
            "you took the top k over the batch axis (per latent) instead of per input: keep each "
            "row's k largest pre-activations",
            _forward_mutant(topk_dim="0"), hint=2),
        "recon_mean_over_d_in": Mistake(
            "your reconstruction loss also averages over d_in: sum the squared error over d_in, "
            "then average over the batch",
            _forward_mutant(recon="(xh - x).pow(2).mean()")),
        "b_dec_not_subtracted": Mistake(
            "you encoded x without subtracting b_dec: the encoder reads x - b_dec",
            _forward_mutant(encoder='x @ sae["W_enc"] + sae["b_enc"]')),
        "b_enc_dropped": Mistake(
            "your pre-activations leave out the encoder bias: add b_enc after multiplying by "
            "W_enc (it sets each latent's threshold)",
            _forward_mutant(encoder='(x - sae["b_dec"]) @ sae["W_enc"]')),
        "b_dec_not_added_back": Mistake(
            "your reconstruction leaves out b_dec: the decoder adds it back, latents @ W_dec + "
            "b_dec, as the encoder took it away",
            _forward_mutant(decoder='z @ sae["W_dec"]')),
    },
    "train_sae": {
        "decoder_not_normalised": Mistake(
            "you never renormalised the decoder: after every optimiser step, rescale each row of "
            "W_dec to unit norm",
            _train_sae_mutant(normalise="False"), hint=2),
        "l1_on_pre_activations": Mistake(
            "your L1 penalty is on the pre-activations: put it on the latents, after the ReLU, as "
            "in sae_forward",
            _train_sae_mutant(l1_target="pre"), hint=1),
        "topk_over_batch_axis": Mistake(
            "you took TopK over the batch axis instead of over each input's latents: keep the k "
            "largest pre-activations of every row",
            _train_sae_mutant(topk_dim="0"), hint=1),
        "init_ignored": Mistake(
            "you ignored init and started from a fresh random SAE: when init is given, start from "
            "copies of its four tensors",
            _train_sae_mutant(init_check="True"), hint=1),
    },
    "resample_dead_latents": {
        "dead_per_token": Mistake(
            "you marked a latent dead when it is inactive on some input: dead means inactive on "
            "every input of the batch",
            _resample_mutant(dead="(latents <= 0).any(dim=0)"), hint=1),
        "best_inputs_instead_of_worst": Mistake(
            "you resampled from the best-reconstructed inputs: take the inputs with the largest "
            "squared residual norm, worst first",
            _resample_mutant(desc="False"), hint=2),
        "direction_not_normalised": Mistake(
            "you wrote the residuals into the SAE as they are: normalise each one to unit length "
            "first",
            _resample_mutant(normalise="u")),
        "encoder_scale_ignores_alive_norm": Mistake(
            "your new encoder columns are 0.2 * u: scale them by 0.2 times the mean norm of the "
            "live latents' encoder columns, so they start at the size of the others",
            _resample_mutant().replace(
                "alive = sae[\"W_enc\"][:, ~dead].norm(dim=0)\n"
                "        scale = 0.2 * (alive.mean().item() if len(alive) else 1.0)",
                "scale = 0.2")),
        "bias_not_reset": Mistake(
            "you left the resampled latents' encoder biases as they were: set b_enc of every dead "
            "latent to 0",
            _resample_mutant(reset="pass")),
    },
    "evaluate_sae": {
        "bos_included": Mistake(
            "you included the BOS position: encode, count and replace positions 1: only, and leave "
            "position 0 as it is in every run",
            _evaluate_mutant(start="0"), hint=2),
        "fvu_not_centred": Mistake(
            "your FVU divides by the raw squared norm of x: divide by its variance, the squared "
            "distance from the mean activation over tokens",
            _evaluate_mutant(denom="xf.pow(2).sum()"), hint=2),
        "recovered_wrong_baseline": Mistake(
            "your ce_recovered is measured against zero loss: the fraction of the gap between "
            "ce_zero and ce_clean that the SAE closes is (ce_zero - ce_sae) / (ce_zero - ce_clean)",
            _evaluate_mutant(recovered="(c - b) / c")),
        "l0_counts_distinct_latents": Mistake(
            "your l0 counts the latents active anywhere in the batch: l0 is the number of active "
            "latents of each token, averaged over tokens",
            _evaluate_mutant().replace('(z > 0).float().sum(-1).mean().item()',
                                       '(z > 0).flatten(0, 1).any(0).sum().item()')),
    },
    "top_activating_contexts": {
        "centred_window": Mistake(
            "your window is centred on the activating token: it must end at that token, since the "
            "model at position p has seen only tokens 0..p",
            _CONTEXTS.replace("OFFSET", "-(window // 2)"), hint=2),
        "ends_before_token": Mistake(
            "your window stops just before the activating token: it must end with that token",
            _CONTEXTS.replace("OFFSET", "-window"), hint=2),
        "one_per_row": Mistake(
            "you took at most one activation per row: take the k largest over all rows and "
            "positions together",
            '''import torch as t
def top_activating_contexts(latent_acts, tokens, k, window, pad_id=0):
    row_max, row_pos = latent_acts.max(dim=1)
    values, b_idx = row_max.topk(min(k, latent_acts.shape[0]))
    p_idx = row_pos[b_idx]
    contexts = t.full((len(b_idx), window), pad_id, dtype=tokens.dtype)
    for i, (b, p) in enumerate(zip(b_idx.tolist(), p_idx.tolist())):
        piece = tokens[b, max(0, p - window + 1): p + 1]
        contexts[i, window - len(piece):] = piece
    return {"values": values, "batch_idx": b_idx, "pos_idx": p_idx, "contexts": contexts}
''', hint=1),
    },
    "mean_ablation_recovered": {
        "zero_baseline": Mistake(
            "you measured against zeroing the activation: the baseline of this question is the "
            "mean activation over the tokens, put at every position but BOS",
            _MEAN_ABLATION.replace("BASELINE", "t.zeros_like(x)"), hint=1),
        "mean_includes_bos": Mistake(
            "your mean includes the BOS positions, whose norm is hundreds of times the others': "
            "average over positions 1: only",
            _MEAN_ABLATION.replace("BASELINE", "full.reshape(-1, full.shape[-1]).mean(0)"
                                               ".expand_as(x)"), hint=1),
    },
    "encoder_decoder_cosine": {
        "encoder_not_normalised": Mistake(
            "you took dot products without normalising the encoder columns (they are not unit "
            "length): divide each W_enc[:, i] by its norm first",
            _weights_mutant("encoder_decoder_cosine",
                            'return (sae["W_enc"].T * sae["W_dec"]).sum(-1).median().item()'),
            hint=1),
        "mean_not_median": Mistake(
            "you averaged the cosines: the question asks for their median",
            _weights_mutant("encoder_decoder_cosine",
                            'e = sae["W_enc"] / sae["W_enc"].norm(dim=0, keepdim=True)\n'
                            '    return (e.T * sae["W_dec"]).sum(-1).mean().item()')),
    },
    "nearest_latent_cosine": {
        "self_included": Mistake(
            "each latent found itself as its nearest neighbour (cosine 1): leave the diagonal "
            "out before taking the largest cosine",
            _weights_mutant("nearest_latent_cosine",
                            'd = sae["W_dec"] / sae["W_dec"].norm(dim=1, keepdim=True)\n'
                            '    return (d @ d.T).max(dim=1).values.median().item()'), hint=2),
        "encoder_columns": Mistake(
            "you compared the encoder columns: the dictionary is the decoder rows W_dec[i]",
            _weights_mutant("nearest_latent_cosine",
                            'e = sae["W_enc"].T / sae["W_enc"].T.norm(dim=1, keepdim=True)\n'
                            '    c = e @ e.T\n    c.fill_diagonal_(-2.0)\n'
                            '    return c.max(dim=1).values.median().item()'), hint=1),
        "absolute_cosines": Mistake(
            "you took absolute cosines: the question asks for the largest signed cosine (a "
            "latent pointing the opposite way is not a near neighbour)",
            _weights_mutant("nearest_latent_cosine",
                            'd = sae["W_dec"] / sae["W_dec"].norm(dim=1, keepdim=True)\n'
                            '    c = (d @ d.T).abs()\n    c.fill_diagonal_(-2.0)\n'
                            '    return c.max(dim=1).values.median().item()')),
    },
    "polysemantic_neuron": {
        "most_active_latent": Mistake(
            "your carrier is the most active latent at the token, whatever it writes: the "
            "carrier is the latent writing most along the neuron's output direction, its "
            "activation times the cosine of its decoder row with W_out[layer][n]",
            _polysemantic_mutant(carriers="z[top[:, n]].argmax(-1)", align=""), hint=1),
        "distinct_carriers": Mistake(
            "you counted every latent that carries at least one top token: count only the "
            "latents that carry at least 3 of the 30",
            _polysemantic_mutant(count="len(set(carriers.tolist()))"), hint=3),
    },
    "steer_generation": {
        "bos_steered_too": Mistake(
            "you also steered position 0 (BOS): add the direction at every position except 0",
            _steer_mutant(positions=":"), hint=1),
        "last_position_only": Mistake(
            "you steered only the last position: add the direction at every position except 0, on "
            "every forward pass",
            _steer_mutant(positions="-1:"), hint=1),
        "direction_normalised": Mistake(
            "you normalised the direction: add scale * direction exactly as given",
            _steer_mutant(direction="direction / direction.norm()")),
        "wrong_hook": Mistake(
            "you added the direction at a fixed hook point instead of hook_name: hook the "
            "activation the caller names",
            _steer_mutant(hook='"blocks.0.hook_resid_pre"')),
    },
}
