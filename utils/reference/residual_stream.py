"""Reference implementations for chapter 01, "The residual stream".

Written independently of ``solutions/01_residual_stream.ipynb``: where the notebook computes
something by hand, the reference usually takes another route to the same number (cross-entropy
from ``torch.nn.functional``, residual pieces as differences of successive residual snapshots,
the model's own final-norm module, TransformerLens's ``decompose_resid`` /
``stack_head_results`` / ``apply_ln_to_stack``, singular values instead of a covariance
eigen-decomposition). The hidden checks compare the two; later chapters may import these.

Every function has the same name, arguments and output as the exercise it mirrors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "component_labels",
    "directions_holding",
    "explained_variance_ratio",
    "largest_bos_writer",
    "lens_logit_diffs",
    "lens_prefers_answer_layer",
    "per_prompt_head_dla",
    "positional_directions",
    "top_dla_head",
    "head_logit_attribution",
    "key_read_shares",
    "logit_diff_attribution",
    "logit_lens",
    "logit_lens_agreement",
    "per_token_loss",
    "residual_components",
]


def per_token_loss(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos_minus_1"]:
    """Cross-entropy of the true next token at every position but the last."""
    batch, pos, d_vocab = logits.shape
    flat = logits[:, :-1].reshape(-1, d_vocab).double()
    target = tokens[:, 1:].reshape(-1)
    return F.cross_entropy(flat, target, reduction="none").reshape(batch, pos - 1).float()


def residual_components(cache: Any, n_layers: int) -> Float[Tensor, "component batch pos d_model"]:
    """``[embed, attn_0, mlp_0, ..., attn_{n-1}, mlp_{n-1}]`` as differences of snapshots.

    Needs ``blocks.{L}.hook_resid_pre``, ``hook_resid_mid`` and ``hook_resid_post`` in the cache.
    """
    pieces = [cache["blocks.0.hook_resid_pre"]]
    for layer in range(n_layers):
        pre = cache[f"blocks.{layer}.hook_resid_pre"]
        mid = cache[f"blocks.{layer}.hook_resid_mid"]
        post = cache[f"blocks.{layer}.hook_resid_post"]
        pieces += [mid - pre, post - mid]
    return torch.stack(pieces)


def logit_lens(cache: Any, n_layers: int, W_U: Float[Tensor, "d_model d_vocab"],
               b_U: Float[Tensor, " d_vocab"], eps: float
               ) -> Float[Tensor, "layer_plus_1 batch pos d_vocab"]:
    """Each layer's input residual (and the final output) through a weightless RMSNorm and the
    given unembedding. Entry ``L < n_layers`` decodes ``blocks.{L}.hook_resid_pre``; the last
    entry decodes ``blocks.{n_layers - 1}.hook_resid_post``."""
    stack = cache.accumulated_resid(apply_ln=False)[: n_layers + 1].double()
    x = F.rms_norm(stack, (stack.shape[-1],), eps=eps)
    return F.linear(x, W_U.double().T, b_U.double()).float()


def logit_lens_agreement(
    lens_logits: Float[Tensor, "layer batch pos d_vocab"],
) -> Float[Tensor, " layer"]:
    """Fraction of (batch, pos) where each layer's top-1 token equals the last layer's."""
    top = lens_logits.argmax(dim=-1)  # [layer, batch, pos]
    final = top[-1]
    n_layers = top.shape[0]
    return torch.tensor(
        [float((top[i] == final).sum()) / final.numel() for i in range(n_layers)]
    )


def _logit_direction(model: Any, answer: int, wrong: int) -> Float[Tensor, " d_model"]:
    return model.W_U[:, answer] - model.W_U[:, wrong]


def logit_diff_attribution(cache: Any, n_layers: int, W_U: Float[Tensor, "d_model d_vocab"],
                           b_U: Float[Tensor, " d_vocab"], answer: int, wrong: int
                           ) -> Float[Tensor, " component"]:
    """Direct logit attribution of ``logit[answer] - logit[wrong]`` at the last position of a
    one-prompt cache, per component ``[embed, attn_0, mlp_0, ..., b_U]`` (TL's own route); the
    last entry is ``b_U[answer] - b_U[wrong]``, so the entries sum to the logit difference."""
    stack = cache.decompose_resid(layer=None, mode="all", incl_embeds=True)[: 1 + 2 * n_layers]
    stack = cache.apply_ln_to_stack(stack, layer=None)  # divides by the cached final scale
    with torch.no_grad():
        direct = stack[:, 0, -1].double() @ (W_U[:, answer] - W_U[:, wrong]).double()
    bias = (b_U[answer] - b_U[wrong]).double().reshape(1)
    return torch.cat([direct, bias]).float()


def head_logit_attribution(model: Any, cache: Any, answer: int, wrong: int
                           ) -> Float[Tensor, "layer head_index"]:
    """Direct logit attribution of ``logit[answer] - logit[wrong]`` to every attention head."""
    stack = cache.stack_head_results(layer=-1)  # [layer*head, batch, pos, d_model]
    stack = cache.apply_ln_to_stack(stack, layer=None)
    with torch.no_grad():
        values = stack[:, 0, -1] @ _logit_direction(model, answer, wrong)
    return values.reshape(model.cfg.n_layers, model.cfg.n_heads)


def explained_variance_ratio(W: Float[Tensor, "n_vectors d_model"]) -> Float[Tensor, " d_model"]:
    """PCA of the rows of ``W`` (centred): fraction of variance per principal direction,
    sorted in decreasing order (assumes ``n_vectors >= d_model``)."""
    centred = W.double() - W.double().mean(dim=0)
    sing = torch.linalg.svdvals(centred)
    var = sing**2
    return (var / var.sum()).float()


def key_read_shares(
    parts: Float[Tensor, "component batch pos d_model"],
    ln_scale: Float[Tensor, "batch pos 1"],
    W: Float[Tensor, "d_model d_head"],
) -> Float[Tensor, " component"]:
    """Share of the variance of ``LayerNorm(sum(parts)) @ W`` (bias-free) due to each part.

    LayerNorm is linearised with the given scale: part ``c`` contributes
    ``centre(parts[c]) / ln_scale @ W``. The share of part ``c`` is the covariance of its
    contribution with the total, over batch and positions and summed over ``d_head``, divided
    by the total's variance; the shares sum to 1.
    """
    p = parts.double()
    p = p - p.mean(dim=-1, keepdim=True)
    p = p / ln_scale.double()
    contrib = torch.einsum("cbpm,mh->cbph", p, W.double())
    n_comp = contrib.shape[0]
    flat = contrib.reshape(n_comp, -1, contrib.shape[-1])  # [component, sample, d_head]
    flat = flat - flat.mean(dim=1, keepdim=True)
    total = flat.sum(dim=0)
    cov = (flat * total).sum(dim=(1, 2))
    return (cov / (total * total).sum()).float()


# ------------------------------------------------------------------ investigations' truths
def component_labels(n_layers: int) -> list[str]:
    """``["embed", "attn0", "mlp0", "attn1", ...]``, the order of ``residual_components``."""
    return ["embed"] + [f"{kind}{layer}" for layer in range(n_layers) for kind in ("attn", "mlp")]


def largest_bos_writer(model: Any) -> str:
    """The label of the component whose write at position 0 (BOS) has the largest norm.

    Position 0 attends only to itself, so its stream is the same for every prompt."""
    tokens = model.to_tokens("Hello")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: "resid" in n)
    parts = residual_components(cache, model.cfg.n_layers)[:, 0, 0]  # [component, d_model]
    return component_labels(model.cfg.n_layers)[int(parts.norm(dim=-1).argmax())]


def lens_logit_diffs(model: Any, cache: Any, answers: Int[Tensor, "batch 2"]
                     ) -> Float[Tensor, "layer_plus_1 batch"]:
    """Through the logit lens, ``logit[answers[:, 0]] - logit[answers[:, 1]]`` at the last
    position, for every stream (before each layer, then the final one). ``cache`` needs every
    residual snapshot."""
    with torch.no_grad():
        stack = cache.accumulated_resid(apply_ln=False)[:, :, -1].double()  # [layer, batch, d]
        x = F.rms_norm(stack, (stack.shape[-1],), eps=model.cfg.eps)
        directions = (model.W_U[:, answers[:, 0]] - model.W_U[:, answers[:, 1]]).double()
        bias = (model.b_U[answers[:, 0]] - model.b_U[answers[:, 1]]).double()
        return (torch.einsum("lbd,db->lb", x, directions) + bias).float()


def lens_prefers_answer_layer(diffs: Float[Tensor, "layer_plus_1 batch"]) -> int:
    """The smallest ``L`` from which on the mean (over prompts) lens logit difference is > 0."""
    positive = (diffs.mean(dim=1) > 0).tolist()
    layer = len(positive)
    while layer > 0 and positive[layer - 1]:
        layer -= 1
    return layer


def per_prompt_head_dla(model: Any, cache: Any, answers: Int[Tensor, "batch 2"]
                        ) -> Float[Tensor, "batch layer head_index"]:
    """Every head's direct logit attribution of ``logit[answers[:, 0]] - logit[answers[:, 1]]``
    at the last position, prompt by prompt (TL's ``stack_head_results`` route). ``cache``
    needs every ``hook_z`` and ``ln_final.hook_scale``."""
    with torch.no_grad():
        stack = cache.stack_head_results(layer=-1, pos_slice=-1)  # [layer*head, batch, d]
        stack = cache.apply_ln_to_stack(stack, layer=None, pos_slice=-1)
        directions = model.W_U[:, answers[:, 0]] - model.W_U[:, answers[:, 1]]  # [d, batch]
        values = torch.einsum("kbd,db->bk", stack, directions)
    return values.reshape(answers.shape[0], model.cfg.n_layers, model.cfg.n_heads)


def top_dla_head(dla: Float[Tensor, "batch layer head_index"]) -> tuple[int, int]:
    """``(layer, head)`` with the largest mean direct logit attribution over the prompts."""
    mean = dla.mean(dim=0)
    layer, head = divmod(int(mean.argmax()), mean.shape[1])
    return layer, head


def directions_holding(ratio: Float[Tensor, " d_model"], fraction: float) -> int:
    """The smallest ``k`` whose top-``k`` principal directions hold at least ``fraction``."""
    cumulative = ratio.double().cumsum(0)
    return int(torch.searchsorted(cumulative, torch.tensor([fraction], dtype=torch.float64))) + 1


def positional_directions(W_pos: Float[Tensor, "n_ctx d_model"]) -> tuple[int, int]:
    """How many principal directions hold 80% and 95% of the variance of the rows of W_pos."""
    ratio = explained_variance_ratio(W_pos)
    return directions_holding(ratio, 0.8), directions_holding(ratio, 0.95)
