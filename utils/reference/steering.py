"""Reference implementations for chapter 07 (steering), used by its hidden checks.

Written separately from the solution notebook (the KL is computed from log-probabilities with
``torch.kl_div``, the projection from an outer-product projector, the steered runs with
``model.hooks``), so a check never compares a learner with a copy of the notebook.

The findings at the bottom recompute what the chapter's investigations ask, from the model
and the chapter's prompt sets (:mod:`utils.steering_prompts`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils import steering_prompts as prompts

# The chapter's settings (its setup cell holds the same values).
SWEEP_LAYERS = (2, 6, 10, 14, 18, 24)  # compared at coefficient 1
DOSE_LAYERS = (6, 14, 24)  # swept over COEFFICIENTS
COEFFICIENTS = (0.5, 1.0, 2.0, 4.0)
KL_BUDGET = 0.5  # nats per token on neutral text
NEUTRAL_ROWS, NEUTRAL_LEN = 4, 32
COMPARE_LAYER = 12  # the shipped SAE reads blocks.12.hook_resid_post = blocks.13.hook_resid_pre
COMPARE_SCALE = 8  # section 5 pushes each unit direction with 8 x the contrastive vector's norm


def hook_at(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


# ------------------------------------------------------------------------------ exercises
def behaviour_score(last_logits: Float[Tensor, "batch d_vocab"], up_ids: Int[Tensor, " n_up"],
                    down_ids: Int[Tensor, " n_down"]) -> Float[Tensor, " batch"]:
    up = torch.index_select(last_logits, 1, up_ids).sum(1) / len(up_ids)
    down = torch.index_select(last_logits, 1, down_ids).sum(1) / len(down_ids)
    return up - down


def contrastive_vector(model: Any, positive_tokens: Tensor, positive_last: Tensor,
                       negative_tokens: Tensor, negative_last: Tensor, hook_name: str
                       ) -> Float[Tensor, " d_model"]:
    stop = int(hook_name.split(".")[1]) + 1  # nothing after the hook's block is needed

    def last_mean(tokens: Tensor, last: Tensor) -> Tensor:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=[hook_name], stop_at_layer=stop)
        acts = cache[hook_name].double()
        picked = torch.stack([acts[i, int(p)] for i, p in enumerate(last)])
        return picked.sum(0) / len(picked)

    return (last_mean(positive_tokens, positive_last)
            - last_mean(negative_tokens, negative_last)).float()


def steered_last_logits(model: Any, tokens: Tensor, last: Tensor, hook_name: str,
                        vector: Tensor, coefficient: float) -> Float[Tensor, "batch d_vocab"]:
    keep_bos = torch.ones(tokens.shape[1], 1)
    keep_bos[0] = 0.0

    def add(value, hook):
        return value + coefficient * keep_bos * vector

    with torch.no_grad(), model.hooks(fwd_hooks=[(hook_name, add)]):
        logits = model(tokens)
    return logits[torch.arange(tokens.shape[0]), last]


def next_token_kl(clean_logits: Float[Tensor, "... d_vocab"],
                  steered_logits: Float[Tensor, "... d_vocab"]) -> Float[Tensor, "..."]:
    clean = torch.log_softmax(clean_logits.double(), -1)
    steered = torch.log_softmax(steered_logits.double(), -1)
    return torch.nn.functional.kl_div(steered, clean, reduction="none",
                                      log_target=True).sum(-1).float()


def repetition_rate(tokens: Int[Tensor, "batch pos"], n_prompt: int) -> Float[Tensor, " batch"]:
    out = []
    for row in tokens[:, n_prompt:].tolist():
        repeats = sum(1 for i, tok in enumerate(row) if tok in row[:i])
        out.append(repeats / max(len(row) - 1, 1) if len(row) > 1 else 0.0)
    return torch.tensor(out)


def project_out_direction(x: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"]
                          ) -> Float[Tensor, "... d_model"]:
    u = direction.double() / direction.double().norm()
    projector = torch.eye(len(u), dtype=torch.float64) - torch.outer(u, u)
    return (x.double() @ projector).to(x.dtype)


def ablated_last_logits(model: Any, tokens: Tensor, last: Tensor, direction: Tensor
                        ) -> Float[Tensor, "batch d_vocab"]:
    n = model.cfg.n_layers
    names = ([f"blocks.{L}.hook_resid_pre" for L in range(n)]
             + [f"blocks.{L}.hook_resid_mid" for L in range(n)]
             + [f"blocks.{n - 1}.hook_resid_post"])

    def remove(value, hook):
        return project_out_direction(value, direction)

    with torch.no_grad(), model.hooks(fwd_hooks=[(name, remove) for name in names]):
        logits = model(tokens)
    return logits[torch.arange(tokens.shape[0]), last]


# ------------------------------------------------------------------------------ findings
# Each truth runs the blocks below a steered layer once (``stream_at``) and every steered
# setting from that layer up only (``utils.tl_compat.run_from_layer``): the same logits as a
# hook at the layer's resid_pre, for a fraction of the cost.
def _tokens(model: Any, texts: list[str]) -> tuple[Tensor, Tensor]:
    return prompts.tokenize_prompts(model, texts)


def _streams(model: Any, tokens: Tensor, hooks: list[str]) -> dict[str, Tensor]:
    """The clean stream at each hook (all positions), one pass up to the deepest hook."""
    stop = max(int(h.split(".")[1]) for h in hooks) + 1
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop)
    return {h: cache[h] for h in hooks}


def _run_pushed(model: Any, stream: Tensor, layer: int, vector: Tensor, coefficient: float,
                last: Tensor | None = None) -> Tensor:
    """Logits with coefficient * vector added to ``stream`` (resid_pre of ``layer``) at
    positions 1 onwards, running blocks ``layer..`` only."""
    from utils.tl_compat import run_from_layer

    offset = torch.zeros_like(stream)
    offset[:, 1:] = coefficient * vector
    with torch.no_grad():
        return run_from_layer(model, stream + offset, layer, last)


@functools.cache
def neutral_tokens(model: Any) -> Tensor:
    """The chapter's neutral text: held-out rows of the course's Python-docs corpus."""
    from utils.sae import corpus_split
    from utils.text_corpus import token_sequences

    _, held_out = corpus_split()
    return token_sequences(model.tokenizer, held_out, NEUTRAL_LEN, max_sequences=NEUTRAL_ROWS,
                           bos_token_id=1)


@functools.cache
def _neutral_streams(model: Any) -> dict[str, Tensor]:
    hooks = [hook_at(L) for L in DOSE_LAYERS] + [f"blocks.{COMPARE_LAYER}.hook_resid_post"]
    return _streams(model, neutral_tokens(model), hooks)


@functools.cache
def _clean_neutral_logits(model: Any) -> Tensor:
    with torch.no_grad():
        return model(neutral_tokens(model))[:, 1:]


def _neutral_kl(model: Any, layer: int, hook: str, vector: Tensor, coefficient: float) -> float:
    """Mean next-token KL(clean || steered) over the neutral text's positions 1 onwards."""
    steered = _run_pushed(model, _neutral_streams(model)[hook], layer, vector, coefficient)
    return next_token_kl(_clean_neutral_logits(model), steered[:, 1:]).mean().item()


@functools.cache
def sentiment_vectors(model: Any) -> dict[int, Tensor]:
    """Each sweep layer's contrastive sentiment vector (train pairs, last position)."""
    pos, neg = prompts.sentiment_pairs("train")
    hooks = [hook_at(L) for L in SWEEP_LAYERS]
    (pt, pl), (nt, nl) = _tokens(model, pos), _tokens(model, neg)
    pos_acts, neg_acts = _streams(model, pt, hooks), _streams(model, nt, hooks)
    return {L: (pos_acts[hook_at(L)][torch.arange(len(pl)), pl].double().mean(0)
                - neg_acts[hook_at(L)][torch.arange(len(nl)), nl].double().mean(0)).float()
            for L in SWEEP_LAYERS}


@functools.cache
def _sentiment_metric(model: Any) -> dict[str, Any]:
    """Held-out sentiment prompts: tokens, last positions, word ids, clean streams, scores."""
    tokens, last = _tokens(model, prompts.sentiment_metric_prompts("held_out"))
    up = prompts.word_ids(model, prompts.POSITIVE_WORDS)
    down = prompts.word_ids(model, prompts.NEGATIVE_WORDS)
    streams = _streams(model, tokens, [hook_at(L) for L in SWEEP_LAYERS])
    deepest = max(SWEEP_LAYERS)  # the clean logits, from the deepest cached stream up
    clean = _run_pushed(model, streams[hook_at(deepest)], deepest, torch.zeros(1), 0.0, last)
    return {"tokens": tokens, "last": last, "up": up, "down": down, "streams": streams,
            "base": behaviour_score(clean, up, down)}


def _sentiment_shift(model: Any, layer: int, coefficient: float) -> float:
    m = _sentiment_metric(model)
    steered = _run_pushed(model, m["streams"][hook_at(layer)], layer,
                          sentiment_vectors(model)[layer], coefficient, m["last"])
    return (behaviour_score(steered, m["up"], m["down"]) - m["base"]).mean().item()


@functools.cache
def layer_shifts(model: Any) -> dict[int, float]:
    """Mean held-out sentiment shift of each sweep layer's vector at coefficient 1."""
    return {L: _sentiment_shift(model, L, 1.0) for L in SWEEP_LAYERS}


def best_steering_layer(model: Any) -> int:
    """The sweep layer whose vector, at coefficient 1, moves held-out sentiment most."""
    shifts = layer_shifts(model)
    return max(shifts, key=shifts.get)


@functools.cache
def dose_grid(model: Any) -> dict[str, Tensor]:
    """Mean neutral KL for every (dose layer, coefficient), and the mean held-out sentiment
    shift of the settings within KL_BUDGET (NaN for the others: they are never chosen)."""
    shift = torch.full((len(DOSE_LAYERS), len(COEFFICIENTS)), float("nan"))
    kl = torch.zeros_like(shift)
    for i, L in enumerate(DOSE_LAYERS):
        for j, c in enumerate(COEFFICIENTS):
            kl[i, j] = _neutral_kl(model, L, hook_at(L), sentiment_vectors(model)[L], c)
            if kl[i, j] <= KL_BUDGET:
                shift[i, j] = _sentiment_shift(model, L, c)
    return {"shift": shift, "kl": kl}


def best_setting_within_budget(model: Any) -> tuple[int, float]:
    """(layer, coefficient) with the largest shift among settings with neutral KL <= budget."""
    grid = dose_grid(model)
    allowed = torch.where(grid["kl"] <= KL_BUDGET, grid["shift"], torch.tensor(-float("inf")))
    i, j = divmod(int(allowed.argmax()), len(COEFFICIENTS))
    return DOSE_LAYERS[i], COEFFICIENTS[j]


@functools.cache
def ablated_sentiment_share(model: Any) -> float:
    """Mean held-out sentiment score with the best layer's direction ablated everywhere,
    divided by the clean mean score."""
    m = _sentiment_metric(model)
    direction = sentiment_vectors(model)[best_steering_layer(model)]
    ablated = behaviour_score(ablated_last_logits(model, m["tokens"], m["last"], direction),
                              m["up"], m["down"])
    return (ablated.mean() / m["base"].mean()).item()


@functools.cache
def _number_metric(model: Any) -> dict[str, Any]:
    """Held-out number prompts: tokens, last positions, verb ids, clean scores."""
    texts, _ = prompts.number_metric_prompts("held_out")
    tokens, last = _tokens(model, texts)
    up = prompts.word_ids(model, prompts.NUMBER_WORDS["up"])
    down = prompts.word_ids(model, prompts.NUMBER_WORDS["down"])
    with torch.no_grad():
        base = behaviour_score(model(tokens)[torch.arange(len(last)), last], up, down)
    return {"tokens": tokens, "last": last, "up": up, "down": down, "base": base}


@functools.cache
def number_directions(model: Any) -> dict[str, Tensor]:
    """Plural-minus-singular directions at blocks.12.hook_resid_post, unnormalised: the
    contrastive vector, a chapter-4 style logistic probe's weights, and the shipped SAE's most
    plural-selective latent (decoder row). Built from the train split only."""
    from utils.reference.probing import train_and_test_probe
    from utils.sae import load_pretrained_sae

    hook = f"blocks.{COMPARE_LAYER}.hook_resid_post"
    plural, singular = prompts.number_pairs("train")
    (pt, pl), (st, sl) = _tokens(model, plural), _tokens(model, singular)
    plural_x = _streams(model, pt, [hook])[hook][torch.arange(len(pl)), pl]
    singular_x = _streams(model, st, [hook])[hook][torch.arange(len(sl)), sl]
    x = torch.cat([singular_x, plural_x])
    y = torch.tensor([0] * len(sl) + [1] * len(pl))
    probe = train_and_test_probe(x, y, torch.arange(len(y)) % 4 != 0)["w"]
    sae, _ = load_pretrained_sae()
    latents = torch.relu((x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"])
    selectivity = latents[y == 1].mean(0) - latents[y == 0].mean(0)
    contrast = (plural_x.double().mean(0) - singular_x.double().mean(0)).float()
    return {"contrastive": contrast, "probe": probe,
            "sae_latent": sae["W_dec"][int(selectivity.argmax())]}


@functools.cache
def direction_comparison(model: Any) -> dict[str, dict[str, float]]:
    """Each number direction made unit length and scaled to COMPARE_SCALE times the
    contrastive vector's norm, added at blocks.12.hook_resid_post (positions 1 onwards): mean
    held-out shift of logit(are) - logit(is), and mean neutral KL."""
    hook = f"blocks.{COMPARE_LAYER}.hook_resid_post"
    directions = number_directions(model)
    scale = COMPARE_SCALE * directions["contrastive"].norm().item()
    m = _number_metric(model)
    stream = _streams(model, m["tokens"], [hook])[hook]
    out = {}
    for name, v in directions.items():
        unit = v / v.norm()
        steered = _run_pushed(model, stream, COMPARE_LAYER + 1, unit, scale, m["last"])
        out[name] = {"shift": (behaviour_score(steered, m["up"], m["down"])
                               - m["base"]).mean().item(),
                     "kl": _neutral_kl(model, COMPARE_LAYER + 1, hook, unit, scale)}
    return out


def best_number_direction(model: Any) -> str:
    found = direction_comparison(model)
    return max(found, key=lambda name: found[name]["shift"])


@functools.cache
def cross_behaviour_shift(model: Any) -> float:
    """Mean held-out number-metric shift when the best sentiment vector is added at coefficient
    1 at its layer."""
    layer = best_steering_layer(model)
    m = _number_metric(model)
    stream = _streams(model, m["tokens"], [hook_at(layer)])[hook_at(layer)]
    steered = _run_pushed(model, stream, layer, sentiment_vectors(model)[layer], 1.0, m["last"])
    return (behaviour_score(steered, m["up"], m["down"]) - m["base"]).mean().item()
