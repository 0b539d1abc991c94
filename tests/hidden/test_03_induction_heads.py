"""Hidden checks for chapter 03 (induction heads).

Every check compares the learner's function, run in the sandbox, with the independent
reference in ``utils.reference.induction_heads`` on inputs the notebook never shows (other
seeds, other lengths, other prefixes). Model checks use the shipped toy model
``attn_only_2l``; the heads they ablate are found by computing scores, never hard-coded.
Investigations (functions without arguments that return a finding) are checked against the
truth computed here, in the trusted process, from the models themselves: the toy model (its
LayerNorms folded, as chapter 2 and TransformerLens do) and SmolLM2.
"""

from __future__ import annotations

import functools
import re

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
from utils.data import repeated_random_tokens
from utils.reference import induction_heads as ref
from utils.reference.qk_ov_circuits import diagonal_argmax_fraction, k_composition_circuit

TOY = "attn_only_2l"
# Modules that compute this chapter's answers: the grader leaves them off the sandbox's disk.
ANSWER_KEYS = ["utils.head_scores", "utils.training"]
_CALLS_REFERENCE = re.compile(
    r"\butils\s*\.\s*head_scores\b|from\s+utils\s+import\s+[^\n]*\bhead_scores\b")
# The notebook's section 6 settings (its setup cell): the investigations ask about these.
SMOL_HALF_LEN, SMOL_BATCH, DATA_SEED = 40, 4, 0
CORPUS_ROWS, ICL_EARLY, ICL_LATE, ICL_WINDOW = 12, 20, 200, 10
DIAGONAL_SHARE_TOLERANCE = 0.02
ICL_TOLERANCE = 0.05


# ------------------------------------------------------------------------- trusted inputs
_toy = functools.partial(reference_model, TOY)
_load_models = warm_up_loading(TOY, "smollm2")


def warm_up() -> None:
    """Load both models and compute the investigations' truths while the sandbox starts (so the
    SmolLM2 forward passes do not count against a notebook's grading time)."""
    _load_models()
    _smol_scores()
    _smol_icl()
    _path_rises()
    _diagonal_shares()


@functools.cache
def _toy_bos() -> int:
    from utils.toy_models import read_toy_model_info

    return int(read_toy_model_info(TOY)["metadata"]["bos_token"])


@functools.cache
def _tokens(batch: int, half_len: int, seed: int) -> torch.Tensor:
    return repeated_random_tokens(batch, half_len, _toy().cfg.d_vocab, seed, bos_token=_toy_bos())


@functools.cache
def _scores() -> dict[str, torch.Tensor]:
    return ref.score_every_head(_toy(), _tokens(8, 30, 90_001), 30)


@functools.cache
def _circuit() -> tuple[int, int, int]:
    """(previous-token head of layer 0, best and second-best induction heads of layer 1)."""
    scores = _scores()
    prev = int(scores["previous_token"][0].argmax())
    ind = scores["induction"][1].argsort(descending=True)
    return prev, int(ind[0]), int(ind[1])


@functools.cache
def _folded_toy():
    """A private copy of the toy model with its LayerNorms folded (the shared one stays as is)."""
    from utils.toy_models import load_toy_model

    model = load_toy_model(TOY)
    model.enable_compatibility_mode()
    return model


@functools.cache
def _folded_weights() -> tuple[torch.Tensor, ...]:
    m = _folded_toy()
    return tuple(w.detach().clone() for w in (m.W_E, m.W_Q, m.W_K, m.W_V, m.W_O))


@functools.cache
def _smol_tokens() -> torch.Tensor:
    smol = reference_model("smollm2")
    return repeated_random_tokens(SMOL_BATCH, SMOL_HALF_LEN, smol.cfg.d_vocab, DATA_SEED,
                                  bos_token=smol.tokenizer.bos_token_id)


@kept_truth
def _smol_scores() -> dict[str, torch.Tensor]:
    return ref.score_every_head(reference_model("smollm2"), _smol_tokens(), SMOL_HALF_LEN)


@kept_truth
def _smol_icl() -> float:
    from utils import text_corpus
    from utils.reference.residual_stream import per_token_loss

    smol = reference_model("smollm2")
    rows = text_corpus.document_rows(smol.tokenizer, text_corpus.pydoc_topics(), ICL_LATE + 1,
                                     max_rows=CORPUS_ROWS, bos_token_id=smol.tokenizer.bos_token_id)
    with torch.no_grad():
        loss = torch.cat([per_token_loss(smol(row[None]), row[None]) for row in rows])
    return ref.in_context_learning_scores(loss, ICL_EARLY, ICL_LATE, ICL_WINDOW).mean().item()


_CALLS_REFERENCE_MISTAKE = (
    "you called the course's reference scores (utils.head_scores), which the grader does not "
    "let answers use: compute the scores yourself; an answer that calls them earns no marks")


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


def _as_head(value, name: str) -> tuple[int, int]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        return int(value[0]), int(value[1])
    raise SubmissionError(f"{name} should return a head as (layer, head), two ints; got {value!r}")


def _second_half_loss(logits: torch.Tensor, tokens: torch.Tensor, half_len: int) -> float:
    return ref.half_losses(ref.per_token_loss(logits, tokens), half_len)[1]


# ------------------------------------------------------------------------- checks
@points(1)
def test_repetition_gain(submission):
    gain = submission.function("repetition_gain")
    g = torch.Generator().manual_seed(3_002)
    # (half_len, prefix length): with a BOS, with a longer prefix, and with none at all.
    for half_len, prefix in [(7, 1), (5, 3), (6, 0)]:
        lpt = torch.rand(2, prefix + 2 * half_len - 1, generator=g) * 5
        got = gain(lpt, half_len)
        if not isinstance(got, dict) or set(got) != {"first_half", "second_half", "gain"}:
            raise SubmissionError('repetition_gain should return a dict with keys '
                                  f'"first_half", "second_half", "gain"; got {got!r}')
        expected = ref.repetition_gain(lpt, half_len)
        for key in ("first_half", "second_half", "gain"):
            assert_number(got[key], expected[key], "repetition_gain",
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


def _uneven_targets(batch: int, seq: int, seed: int) -> torch.Tensor:
    """Random causal targets, -1 at random places, a different number counted in each row."""
    g = torch.Generator().manual_seed(seed)
    dest = torch.arange(seq).expand(batch, seq)
    targets = (torch.rand(batch, seq, generator=g) * (dest + 1)).long()
    keep = torch.rand(batch, seq, generator=g) < torch.linspace(0.9, 0.3, batch)[:, None]
    return torch.where(keep, targets, torch.full_like(targets, -1))


@points(2)
def test_attention_to_targets(submission):
    _no_reference_calls(submission, "attention_to_targets")
    attention_to_targets = submission.function("attention_to_targets")
    half_len = 13
    tokens = _tokens(3, half_len, 3_006)
    batch, seq = tokens.shape
    cases = [("previous-token targets (dest - 1 from position 1)", ref.stripe_targets(batch, seq, 1, 1)),
             ("induction-stripe targets", ref.stripe_targets(batch, seq, half_len - 1, seq - half_len)),
             ("random targets, a different number counted in each row",
              _uneven_targets(batch, seq, 3_011))]
    n_layers, n_heads = _toy().cfg.n_layers, _toy().cfg.n_heads
    for what, targets in cases:
        got = expect_tensor(attention_to_targets(sandbox_model(TOY), tokens, targets),
                            "attention_to_targets", "layer head_index", (n_layers, n_heads))
        assert_close(got, ref.attention_to_targets(_toy(), tokens, targets), "attention_to_targets",
                     atol=1e-5, what="mean attention to the targets", dims="layer head_index",
                     inputs=f"the toy model on 3 sequences of 13 random tokens repeated after BOS, "
                     f"{what}")


@points(2)
def test_ablated_logits(submission):
    ablated = submission.function("ablated_logits")
    prev, ind, ind2 = _circuit()
    other = next(h for h in range(_toy().cfg.n_heads) if h != prev)
    tokens = _tokens(4, 15, 3_007)
    for heads, method in [([(0, prev), (1, ind)], "zero"), ([(1, ind)], "mean"),
                          ([(0, other), (0, prev), (1, ind2)], "mean"), ([], "zero")]:
        expected = ref.ablated_logits(_toy(), tokens, heads, method)
        got = expect_tensor(ablated(sandbox_model(TOY), tokens, heads, method), "ablated_logits",
                            "batch pos d_vocab", tuple(expected.shape))
        assert_close(got, expected, "ablated_logits", atol=2e-4, rtol=1e-3,
                     what=f"logits with heads {heads} {method}-ablated", dims="batch pos d_vocab",
                     inputs="the toy model on 4 sequences of 15 random tokens repeated after BOS")


@points(2)
def test_path_ablated_logits(submission):
    path_ablated = submission.function("path_ablated_logits")
    prev, ind, ind2 = _circuit()
    other = next(h for h in range(_toy().cfg.n_heads) if h != prev)
    tokens = _tokens(4, 15, 3_008)
    for sender, receivers, path in [(prev, [ind], "k"), (prev, [ind], "v"),
                                    (prev, [ind, ind2], "q"), (other, [ind2], "k")]:
        expected = ref.path_ablated_logits(_toy(), tokens, sender, receivers, path)
        got = expect_tensor(path_ablated(sandbox_model(TOY), tokens, sender, receivers, path),
                            "path_ablated_logits", "batch pos d_vocab", tuple(expected.shape))
        assert_close(got, expected, "path_ablated_logits", atol=2e-4, rtol=1e-3,
                     what=f'logits (sender L0H{sender}, receivers '
                          f'{[f"L1H{h}" for h in receivers]}, path "{path}")',
                     dims="batch pos d_vocab",
                     inputs="the toy model on 4 sequences of 15 random tokens repeated after BOS")


@functools.cache
def _path_rises() -> dict[str, float]:
    prev = _circuit()[0]
    receivers = [h for h in range(_toy().cfg.n_heads) if _scores()["induction"][1, h] > 0.2]
    tokens = _tokens(8, 30, 90_002)
    clean = _second_half_loss(_toy()(tokens), tokens, 30)
    return {p: _second_half_loss(ref.path_ablated_logits(_toy(), tokens, prev, receivers, p),
                                 tokens, 30) - clean for p in "qkv"}


@points(1)
def test_path_that_matters(submission):
    got = submission.function("path_that_matters")()
    if got not in ("q", "k", "v"):
        raise SubmissionError(f'path_that_matters should return "q", "k" or "v"; got {got!r}')
    rises = _path_rises()
    truth = max(rises, key=rises.get)
    if got != truth:
        raise SubmissionError(
            f'path_that_matters: removing the previous-token head from the induction heads\' '
            f'"{got}" input alone is not what hurts most. Compare the three bars of the best '
            "previous-token head in the path-ablation plot with the clean line: the path that "
            "matters raises the repeated-half loss by over a nat")


@functools.cache
def _diagonal_shares() -> torch.Tensor:
    """[layer-0 head, layer-1 head]: diagonal share of chapter 2's token-level K-composition
    circuit (folded weights, BOS left out)."""
    W_E, W_Q, W_K, W_V, W_O = _folded_weights()
    n = W_Q.shape[1]
    return torch.tensor([[diagonal_argmax_fraction(k_composition_circuit(
        W_E, W_Q[1, late], W_K[1, late], W_V[0, early], W_O[0, early])) for late in range(n)]
        for early in range(n)])


@points(1)
def test_k_circuit_diagonal_share(submission):
    got = submission.function("k_circuit_diagonal_share")()
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        raise SubmissionError(f"k_circuit_diagonal_share should return a number; got {got!r}")
    second = int(_scores()["previous_token"][0].argsort(descending=True)[1])
    truth = _diagonal_shares()[second].mean().item()
    if abs(got - truth) > DIAGONAL_SHARE_TOLERANCE:
        raise SubmissionError(
            f"k_circuit_diagonal_share: {got:.3f} is not the diagonal share of the second-best "
            "previous-token head's circuit, averaged over the layer-1 heads (within "
            f"{DIAGONAL_SHARE_TOLERANCE}). Check which row of the diagonal-share table you read "
            "(rank the layer-0 heads by previous-token score) and that you averaged the whole row")


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


@points(1)
def test_smollm2_top_induction_head(submission):
    got = _as_head(submission.function("smollm2_top_induction_head")(),
                   "smollm2_top_induction_head")
    scores = _smol_scores()
    n_heads = scores["induction"].shape[1]
    truth = divmod(int(scores["induction"].argmax()), n_heads)
    if got != truth:
        layer, head = got
        in_range = 0 <= layer < scores["induction"].shape[0] and 0 <= head < n_heads
        yours = (f"L{layer}H{head} has induction score {scores['induction'][layer, head]:.2f} and "
                 f"previous-token score {scores['previous_token'][layer, head]:.2f}; "
                 if in_range else "")
        raise SubmissionError(
            f"smollm2_top_induction_head: {yours}another head scores higher for induction on the "
            "chapter's repeated tokens. Read the top of the induction list (not the "
            "previous-token one), and give (layer, head) in that order")


@points(2)
def test_induction_targets(submission):
    induction_targets = submission.function("induction_targets")
    g = torch.Generator().manual_seed(3_012)
    for batch, seq, vocab in [(3, 17, 5), (2, 9, 1_000), (1, 12, 2)]:
        tokens = torch.randint(0, vocab, (batch, seq), generator=g)
        got = expect_tensor(induction_targets(tokens), "induction_targets", "batch pos",
                            (batch, seq))
        expected = ref.induction_targets(tokens)
        if not torch.equal(got.long(), expected):
            b, d = (got.long() != expected).nonzero()[0].tolist()
            raise SubmissionError(
                f"induction_targets: for the row {tokens[b].tolist()}, position {d} (token "
                f"{tokens[b, d].item()}) should target {expected[b, d].item()}, got "
                f"{got[b, d].item()} (the position after the most recent earlier copy; -1 if "
                "none)")


@points(1)
def test_in_context_learning_scores(submission):
    icl = submission.function("in_context_learning_scores")
    g = torch.Generator().manual_seed(3_013)
    for batch, pos, early, late, window in [(3, 30, 5, 25, 1), (2, 40, 12, 39, 4),
                                            (4, 21, 3, 20, 3)]:
        lpt = torch.rand(batch, pos - 1, generator=g) * 6
        got = expect_tensor(icl(lpt, early, late, window), "in_context_learning_scores", "batch",
                            (batch,))
        assert_close(got, ref.in_context_learning_scores(lpt, early, late, window),
                     "in_context_learning_scores", atol=1e-5, what="scores", dims="batch",
                     inputs=f"random losses for {batch} rows of {pos} tokens, early={early}, "
                     f"late={late}, window={window}")


@points(1)
def test_smollm2_in_context_learning_score(submission):
    got = submission.function("smollm2_in_context_learning_score")()
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        raise SubmissionError(
            f"smollm2_in_context_learning_score should return a number; got {got!r}")
    truth = _smol_icl()
    if abs(got - truth) > ICL_TOLERANCE:
        sign = ("the sign is the other way round: late minus early is negative when the model "
                "improves as it reads; " if got * truth < 0 else "")
        raise SubmissionError(
            f"smollm2_in_context_learning_score: {got:.3f} nats is not SmolLM2's mean score on "
            f"the chapter's {CORPUS_ROWS} documents (within {ICL_TOLERANCE}): {sign}use the mean "
            f"of the per-document scores for token {ICL_LATE} minus token {ICL_EARLY}, windows "
            f"of {ICL_WINDOW}, as printed under the loss-by-token-index plot")


# ------------------------------------------------------------------------- mutants
_ABLATION_TEMPLATE = '''def ablated_logits(model, tokens, heads, method="zero"):
    names = sorted({{f"blocks.{{l}}.attn.hook_{hook}" for l, _ in heads}})
    _, cache = model.run_with_cache(tokens, names_filter=names)
    def ablate(z, hook):
        z = z.clone()
        for l, h in heads:
            if l == hook.layer():
                z[:, :, h] = 0.0 if method == "zero" else {mean}
        return z
    return model.run_with_hooks(tokens, fwd_hooks=[(n, ablate) for n in names])'''


def _ablation_mutant(mean="cache[hook.name].mean((0, 1))[h]", hook="z") -> str:
    return _ABLATION_TEMPLATE.format(mean=mean, hook=hook)


_PATH_TEMPLATE = '''def path_ablated_logits(model, tokens, sender_head, receiver_heads, path):
    name = f"blocks.1.attn.hook_{{{path}}}"
    def zero(z, hook):
        z = z.clone()
        z[:, :, sender_head] = 0.0
        return z
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", zero)]):
        _, cache = model.run_with_cache(tokens, names_filter=[name])
    def patch(act, hook):
        act = act.clone()
        {patch}
        return act
    return model.run_with_hooks(tokens, fwd_hooks=[(name, patch)])'''


def _path_mutant(path="path", patch="act[:, :, receiver_heads] = cache[name][:, :, receiver_heads]"
                 ) -> str:
    return _PATH_TEMPLATE.format(path=path, patch=patch)


_SHARE_TEMPLATE = '''import torch as t
from utils.data import repeated_random_tokens
from utils.toy_models import load_toy_model
def k_circuit_diagonal_share():
    model = load_toy_model("attn_only_2l")
    tokens = repeated_random_tokens(8, 30, model.cfg.d_vocab, 0, bos_token=0)
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    prev = cache["pattern", 0].diagonal(-1, -2, -1).mean((0, 2))
    writer = int(prev.argsort(descending={descending})[1])
    model.enable_compatibility_mode()
    shares = []
    for reader in range(model.cfg.n_heads):
        q = model.W_E @ model.W_Q[1, reader]
        k = model.W_E @ model.W_V[0, writer] @ model.W_O[0, writer] @ model.W_K[1, reader]
        circuit = (q @ k.T)[1:, 1:]
        shares.append((circuit.argmax(dim={axis}) == t.arange(circuit.shape[0])).float().mean().item())
    return sum(shares) / len(shares)'''


_TARGETS_TEMPLATE = '''import torch as t
def induction_targets(tokens):
    batch, seq = tokens.shape
    out = t.full((batch, seq), -1, dtype=t.long)
    for b in range(batch):
        for d in range(seq):
            for j in {order}:
                if tokens[b, j] == tokens[b, d]:
                    out[b, d] = {target}
                    break
    return out'''

_ICL_TEMPLATE = '''def in_context_learning_scores(loss_per_token, early, late, window=1):
    def at(i):
        return loss_per_token[:, {window_slice}].mean(dim=1)
    return {result}'''


def _icl_mutant(window_slice="i - window : i", result="at(late) - at(early)") -> str:
    return _ICL_TEMPLATE.format(window_slice=window_slice, result=result)


MUTANTS = {
    "repetition_gain": {
        "includes_boundary": Mistake(
            "your first half also counts the prediction of the second half's first token: each "
            "half leaves out the prediction of its own first token, so the first half ends at "
            "loss position o + half_len - 2",
            '''def repetition_gain(loss_per_token, half_len):
    o = loss_per_token.shape[1] + 1 - 2 * half_len
    first = loss_per_token[:, o : o + half_len].mean().item()
    second = loss_per_token[:, o + half_len :].mean().item()
    return {"first_half": first, "second_half": second, "gain": first - second}''', hint=2),
        "ignores_prefix": Mistake(
            "you assumed the repeated tokens start at position 0: they are the last 2 * half_len "
            "positions, after a prefix (such as BOS) of o = seq - 2 * half_len positions",
            '''def repetition_gain(loss_per_token, half_len):
    first = loss_per_token[:, : half_len - 1].mean().item()
    second = loss_per_token[:, half_len : 2 * half_len - 1].mean().item()
    return {"first_half": first, "second_half": second, "gain": first - second}''', hint=1),
        "gain_reversed": Mistake(
            "your gain has the wrong sign: it is first_half - second_half, positive when the "
            "model does better on the repeat",
            '''def repetition_gain(loss_per_token, half_len):
    o = loss_per_token.shape[1] + 1 - 2 * half_len
    first = loss_per_token[:, o : o + half_len - 1].mean().item()
    second = loss_per_token[:, o + half_len : o + 2 * half_len - 1].mean().item()
    return {"first_half": first, "second_half": second, "gain": second - first}'''),
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
    return pattern[:, :, dest, dest - half_len + 1].mean(dim=(0, 2))''', hint=3),
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
    "attention_to_targets": {
        "mean_per_row_first": Mistake(
            "you averaged each row first and then the rows: pool every counted (row, destination) "
            "pair together, so that a row with more counted destinations weighs more",
            '''import torch as t
def attention_to_targets(model, tokens, targets):
    scores = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    def hook(pattern, hook):
        per_row = []
        for b in range(tokens.shape[0]):
            d = (targets[b] >= 0).nonzero()[:, 0]
            per_row.append(pattern[b, :, d, targets[b, d]].mean(-1))
        scores[hook.layer()] = t.stack(per_row).mean(0)
    model.run_with_hooks(tokens, return_type=None,
                         fwd_hooks=[(lambda n: n.endswith("hook_pattern"), hook)])
    return scores''', hint=1),
        "counts_uncounted_destinations": Mistake(
            "you also counted the destinations whose target is -1 (as zeros): average only over "
            "the (row, destination) pairs with a target >= 0",
            '''import torch as t
def attention_to_targets(model, tokens, targets):
    scores = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    valid = targets >= 0
    rows, dests = valid.nonzero(as_tuple=True)
    def hook(pattern, hook):
        picked = pattern[rows, :, dests, targets[rows, dests]]
        scores[hook.layer()] = picked.sum(0) / targets.numel()
    model.run_with_hooks(tokens, return_type=None,
                         fwd_hooks=[(lambda n: n.endswith("hook_pattern"), hook)])
    return scores''', hint=1),
        "source_and_destination_swapped": Mistake(
            "you read pattern[b, h, target, dest], the attention FROM the target TO the "
            "destination: the pattern is [batch, head, dest, src], so read pattern[b, h, d, "
            "targets[b, d]]",
            '''import torch as t
def attention_to_targets(model, tokens, targets):
    scores = t.zeros(model.cfg.n_layers, model.cfg.n_heads)
    rows, dests = (targets >= 0).nonzero(as_tuple=True)
    def hook(pattern, hook):
        scores[hook.layer()] = pattern[rows, :, targets[rows, dests], dests].mean(0)
    model.run_with_hooks(tokens, return_type=None,
                         fwd_hooks=[(lambda n: n.endswith("hook_pattern"), hook)])
    return scores''', hint=3),
        "calls_reference": Mistake(
            _CALLS_REFERENCE_MISTAKE,
            '''import torch as t
from utils import head_scores
def attention_to_targets(model, tokens, targets):
    _, cache = model.run_with_cache(tokens)
    return t.stack([head_scores.previous_token_score(cache["pattern", l])
                    for l in range(model.cfg.n_layers)])'''),
    },
    "ablated_logits": {
        "mean_over_batch_only": Mistake(
            "you mean-ablated with the mean over the batch only, which still varies with "
            "position: the mean is over batch and positions, one d_head vector per head",
            _ablation_mutant(mean="cache[hook.name].mean(0)[:, h]"), hint=2),
        "mean_over_positions_only": Mistake(
            "you mean-ablated with each sequence's own mean over positions, which still carries "
            "information about that sequence: the mean is over batch and positions, one d_head "
            "vector per head",
            _ablation_mutant(mean="cache[hook.name].mean(1, keepdim=True)[:, :, h]"), hint=2),
        "ablates_hook_q": Mistake(
            "you ablated the heads' queries (hook_q): a head's output is removed at "
            "blocks.L.attn.hook_z, the attention-weighted values just before W_O",
            _ablation_mutant(hook="q"), hint=2),
    },
    "path_ablated_logits": {
        "patches_all_heads": Mistake(
            "you replaced the whole layer's activation, every head's slice: patch only the "
            "receiver heads' slice of hook_{path} and leave the other heads clean",
            _path_mutant(patch="act = cache[name].clone()"), hint=3),
        "patches_hook_z": Mistake(
            "you patched the receivers' hook_z, their whole output: to cut one path, patch only "
            "the input named by path, blocks.1.attn.hook_q, hook_k or hook_v",
            _path_mutant(path="'z'"), hint=2),
        "ablates_sender_everywhere": Mistake(
            "you ablated the sender for the whole model: remove its output only from the chosen "
            "input of the receiver heads (keep that input from an ablated run, then patch it "
            "into a clean run)",
            '''def path_ablated_logits(model, tokens, sender_head, receiver_heads, path):
    def zero(z, hook):
        z = z.clone()
        z[:, :, sender_head] = 0.0
        return z
    return model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_z", zero)])''', hint=1),
    },
    "path_that_matters": {
        "values": Mistake(
            "the induction head copies, but what it copies is the source token itself, already "
            "in the source's own embedding: look again at which of the three bars of the "
            "previous-token head rises far above the clean line",
            '''def path_that_matters():
    return "v"'''),
        "queries": Mistake(
            "the query is the current token, which needs no earlier head: look again at which "
            "of the three bars of the previous-token head rises far above the clean line",
            '''def path_that_matters():
    return "q"'''),
    },
    "k_circuit_diagonal_share": {
        "best_previous_token_head": Mistake(
            "you reported the best previous-token head's share: the question asks about the "
            "runner-up, the head with the second-highest previous-token score in layer 0",
            _SHARE_TEMPLATE.format(descending=True, axis=1).replace("[1])", "[0])"), hint=1),
        "ranked_from_lowest": Mistake(
            "you took the head with the second-LOWEST previous-token score: rank the layer-0 "
            "heads from the highest score down and take the second",
            _SHARE_TEMPLATE.format(descending=False, axis=1), hint=1),
    },
    "phase_change_steps": {
        "returns_indices": Mistake(
            'you returned list positions: report the entries\' "step" values',
            '''def phase_change_steps(log, threshold=0.5):
    losses = [e["heldout_loss_second_half"] for e in log]
    drops = [losses[i - 1] - losses[i] for i in range(1, len(losses))]
    drop = drops.index(max(drops)) + 1
    crossing = next((i for i, e in enumerate(log) if e["induction_score_layer1"] >= threshold), None)
    return {"largest_drop": drop, "first_crossing": crossing}''', hint=2),
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
    # SmolLM2 is a fixed pretrained model, and loading it inside a mutant's sandboxed call
    # exceeds the call's memory limit: its plausible wrong findings are written as the values
    # they compute (measured on the chapter's tokens), which no retrain can make right.
    "smollm2_top_induction_head": {
        "previous_token_head": Mistake(
            "you reported SmolLM2's best previous-token head: the question asks for the top of "
            "the induction list",
            '''def smollm2_top_induction_head():
    return (16, 0)''', hint=1),
        "runner_up": Mistake(
            "you reported the second-best induction head: the question asks for the head with "
            "the highest induction score",
            '''def smollm2_top_induction_head():
    return (17, 3)''', hint=1),
    },
    "induction_targets": {
        "earliest_copy": Mistake(
            "you used the EARLIEST earlier occurrence of the token: use the most recent one "
            "(the largest earlier position holding the same token)",
            _TARGETS_TEMPLATE.format(order="range(d)", target="j + 1"), hint=1),
        "the_copy_itself": Mistake(
            "you targeted the earlier copy of the token itself (what a duplicate-token head "
            "attends to): an induction head attends to the position right after it, j + 1",
            _TARGETS_TEMPLATE.format(order="range(d - 1, -1, -1)", target="j"), hint=3),
    },
    "in_context_learning_scores": {
        "index_off_by_one": Mistake(
            "you read the loss of token index i from column i: column p of loss_per_token is "
            "the prediction of token p + 1, so token index i is column i - 1",
            _icl_mutant(window_slice="i - window + 1 : i + 1"), hint=1),
        "early_minus_late": Mistake(
            "your score has the wrong sign: it is the late loss minus the early loss, negative "
            "when the model improves as it reads",
            _icl_mutant(result="at(early) - at(late)")),
        "single_token": Mistake(
            "you ignored the window: each end is the mean loss over the window token indices "
            "ending at that index (late - window + 1 .. late)",
            _icl_mutant(window_slice="i - 1 : i"), hint=2),
    },
    "smollm2_in_context_learning_score": {
        "no_gain": Mistake(
            "SmolLM2 is not already as good early in a document as late in it: look at the "
            "mean of the per-document scores printed under the loss-by-token-index plot",
            '''def smollm2_in_context_learning_score():
    return 0.0'''),
        "repetition_gain_instead": Mistake(
            "you reported (minus) SmolLM2's gain from repeated random tokens, section 1's "
            "measure: the question asks for Olsson's score on the corpus documents, loss at "
            "token 200 minus loss at token 20",
            '''def smollm2_in_context_learning_score():
    return -11.17''', hint=1),
    },
}
