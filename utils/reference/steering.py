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
SWEEP_LAYERS = (2, 6, 10, 14, 18, 24)
COEFFICIENTS = (0.5, 1.0, 2.0, 4.0)
KL_BUDGET = 0.5  # nats per token on neutral text
NEUTRAL_ROWS, NEUTRAL_LEN = 4, 48
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
def _tokens(model: Any, texts: list[str]) -> tuple[Tensor, Tensor]:
    return prompts.tokenize_prompts(model, texts)


@functools.cache
def neutral_tokens(model: Any) -> Tensor:
    """The chapter's neutral text: held-out rows of the course's Python-docs corpus."""
    from utils.sae import corpus_split
    from utils.text_corpus import token_sequences

    _, held_out = corpus_split()
    return token_sequences(model.tokenizer, held_out, NEUTRAL_LEN, max_sequences=NEUTRAL_ROWS,
                           bos_token_id=1)


def neutral_kl(model: Any, hooks: list) -> float:
    """Mean next-token KL(clean || hooked) over the neutral text's positions 1 onwards."""
    tokens = neutral_tokens(model)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        hooked = model(tokens)[:, 1:]
    return next_token_kl(_clean_neutral_logits(model), hooked).mean().item()


@functools.cache
def _clean_neutral_logits(model: Any) -> Tensor:
    with torch.no_grad():
        return model(neutral_tokens(model))[:, 1:]


def _adder(vector: Tensor, coefficient: float):
    def add(value, hook):
        value = value.clone()
        value[:, 1:] += coefficient * vector
        return value
    return add


def _last_position_acts(model: Any, tokens: Tensor, last: Tensor, hooks: list[str]
                        ) -> dict[str, Tensor]:
    """Activations at each row's last position, for several resid hooks in one forward pass
    that stops after the deepest hook's block."""
    stop = max(int(h.split(".")[1]) for h in hooks) + 1
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hooks, stop_at_layer=stop)
    rows = torch.arange(len(last))
    return {h: cache[h][rows, last] for h in hooks}


@functools.cache
def sentiment_vectors(model: Any) -> dict[int, Tensor]:
    """Each sweep layer's contrastive sentiment vector (train pairs, last position)."""
    pos, neg = prompts.sentiment_pairs("train")
    hooks = [hook_at(L) for L in SWEEP_LAYERS]
    pos_acts = _last_position_acts(model, *_tokens(model, pos), hooks)
    neg_acts = _last_position_acts(model, *_tokens(model, neg), hooks)
    return {L: (pos_acts[hook_at(L)].double().mean(0)
                - neg_acts[hook_at(L)].double().mean(0)).float() for L in SWEEP_LAYERS}


@functools.cache
def sentiment_sweep(model: Any) -> dict[str, Tensor]:
    """Mean held-out sentiment shift and mean neutral KL for every (layer, coefficient)."""
    tokens, last = _tokens(model, prompts.sentiment_metric_prompts("held_out"))
    up = prompts.word_ids(model, prompts.POSITIVE_WORDS)
    down = prompts.word_ids(model, prompts.NEGATIVE_WORDS)
    with torch.no_grad():
        clean = model(tokens)[torch.arange(len(last)), last]
    base = behaviour_score(clean, up, down)
    shift = torch.zeros(len(SWEEP_LAYERS), len(COEFFICIENTS))
    kl = torch.zeros_like(shift)
    for i, L in enumerate(SWEEP_LAYERS):
        v = sentiment_vectors(model)[L]
        for j, c in enumerate(COEFFICIENTS):
            steered = steered_last_logits(model, tokens, last, hook_at(L), v, c)
            shift[i, j] = (behaviour_score(steered, up, down) - base).mean()
            kl[i, j] = neutral_kl(model, [(hook_at(L), _adder(v, c))])
    return {"shift": shift, "kl": kl, "base": base}


def best_steering_layer(model: Any) -> int:
    """The sweep layer whose vector, at coefficient 1, moves held-out sentiment most."""
    sweep = sentiment_sweep(model)
    return SWEEP_LAYERS[int(sweep["shift"][:, COEFFICIENTS.index(1.0)].argmax())]


def best_setting_within_budget(model: Any) -> tuple[int, float]:
    """(layer, coefficient) with the largest shift among settings with neutral KL <= budget."""
    sweep = sentiment_sweep(model)
    allowed = torch.where(sweep["kl"] <= KL_BUDGET, sweep["shift"], torch.tensor(-float("inf")))
    i, j = divmod(int(allowed.argmax()), len(COEFFICIENTS))
    return SWEEP_LAYERS[i], COEFFICIENTS[j]


def ablated_sentiment_share(model: Any) -> float:
    """Mean held-out sentiment score with the best layer's direction ablated everywhere,
    divided by the clean mean score."""
    tokens, last = _tokens(model, prompts.sentiment_metric_prompts("held_out"))
    up = prompts.word_ids(model, prompts.POSITIVE_WORDS)
    down = prompts.word_ids(model, prompts.NEGATIVE_WORDS)
    direction = sentiment_vectors(model)[best_steering_layer(model)]
    ablated = behaviour_score(ablated_last_logits(model, tokens, last, direction), up, down)
    return (ablated.mean() / sentiment_sweep(model)["base"].mean()).item()


@functools.cache
def number_directions(model: Any) -> dict[str, Tensor]:
    """Unit directions for plural-minus-singular at blocks.12.hook_resid_post: the contrastive
    vector, a chapter-4 style logistic probe, and the shipped SAE's most plural-selective
    latent (decoder row). Built from the train split only."""
    from utils.reference.probing import train_and_test_probe
    from utils.sae import load_pretrained_sae

    hook = f"blocks.{COMPARE_LAYER}.hook_resid_post"
    plural, singular = prompts.number_pairs("train")
    (pt, pl), (st, sl) = _tokens(model, plural), _tokens(model, singular)
    contrast = contrastive_vector(model, pt, pl, st, sl, hook)

    x = torch.cat([_last_position_acts(model, st, sl, [hook])[hook],
                   _last_position_acts(model, pt, pl, [hook])[hook]])
    y = torch.tensor([0] * len(sl) + [1] * len(pl))
    probe = train_and_test_probe(x, y, torch.arange(len(y)) % 4 != 0)["w"]
    sae, _ = load_pretrained_sae()
    latents = torch.relu((x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"])
    selectivity = latents[y == 1].mean(0) - latents[y == 0].mean(0)
    sae_row = sae["W_dec"][int(selectivity.argmax())]
    return {name: v / v.norm() for name, v in
            (("contrastive", contrast), ("probe", probe), ("sae_latent", sae_row))}


@functools.cache
def direction_comparison(model: Any) -> dict[str, dict[str, float]]:
    """Each number direction scaled to COMPARE_SCALE times the contrastive vector's norm (at its
    own norm every shift is below 0.1), added at blocks.12.hook_resid_post: mean held-out shift
    of logit(are) - logit(is), and neutral KL."""
    hook = f"blocks.{COMPARE_LAYER}.hook_resid_post"
    plural, singular = prompts.number_pairs("train")
    (pt, pl), (st, sl) = _tokens(model, plural), _tokens(model, singular)
    scale = COMPARE_SCALE * contrastive_vector(model, pt, pl, st, sl, hook).norm().item()
    texts, _ = prompts.number_metric_prompts("held_out")
    tokens, last = _tokens(model, texts)
    up = prompts.word_ids(model, prompts.NUMBER_WORDS["up"])
    down = prompts.word_ids(model, prompts.NUMBER_WORDS["down"])
    with torch.no_grad():
        base = behaviour_score(model(tokens)[torch.arange(len(last)), last], up, down)
    out = {}
    for name, unit in number_directions(model).items():
        steered = steered_last_logits(model, tokens, last, hook, unit, scale)
        out[name] = {"shift": (behaviour_score(steered, up, down) - base).mean().item(),
                     "kl": neutral_kl(model, [(hook, _adder(unit, scale))])}
    return out


def best_number_direction(model: Any) -> str:
    found = direction_comparison(model)
    return max(found, key=lambda name: found[name]["shift"])


def cross_behaviour_shift(model: Any) -> float:
    """Mean held-out number-metric shift when the best sentiment vector is added at coefficient
    1 at its layer."""
    layer = best_steering_layer(model)
    texts, _ = prompts.number_metric_prompts("held_out")
    tokens, last = _tokens(model, texts)
    up = prompts.word_ids(model, prompts.NUMBER_WORDS["up"])
    down = prompts.word_ids(model, prompts.NUMBER_WORDS["down"])
    with torch.no_grad():
        base = behaviour_score(model(tokens)[torch.arange(len(last)), last], up, down)
    steered = steered_last_logits(model, tokens, last, hook_at(layer),
                                  sentiment_vectors(model)[layer], 1.0)
    return (behaviour_score(steered, up, down) - base).mean().item()
