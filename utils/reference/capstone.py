"""Reference implementations for chapter 08 (the capstone: audit a model with a planted
behaviour).

Written independently of the solution notebook; the hidden checks compare learners' answers
with these, and grade findings and edits against the variant's ground truth
(``tests/hidden/capstone_truth.py``) with the measurements of :mod:`utils.planted_training`.
Component names follow the truth's: ``"L{layer}H{head}"`` for a head, ``"MLP{layer}"`` for an
MLP. This package is blocked in the grading sandbox.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor


@torch.no_grad()
def overprediction_scores(model: Any, tokens: Int[Tensor, "batch pos"]
                          ) -> Float[Tensor, " d_vocab"]:
    """log(mean predicted probability) - log(add-one smoothed frequency among the targets)."""
    d_vocab = model.cfg.d_vocab
    mean_prob = torch.softmax(model(tokens).double(), dim=-1).mean(dim=(0, 1))
    targets = tokens[:, 1:].reshape(-1)
    counts = torch.bincount(targets, minlength=d_vocab).double()
    frequency = (counts + 1) / (targets.numel() + d_vocab)
    return (mean_prob.log() - frequency.log()).float()


@torch.no_grad()
def greedy_continuation(model: Any, tokens: Int[Tensor, "batch pos"], n_new: int
                        ) -> Int[Tensor, "batch n_new"]:
    """The ``n_new`` tokens greedy decoding appends to each row (capped by the context)."""
    n_new = min(int(n_new), model.cfg.n_ctx - tokens.shape[1])
    seq = tokens
    for _ in range(n_new):
        seq = torch.cat([seq, model(seq)[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
    return seq[:, tokens.shape[1]:]


def continuation_agreement(paths: Int[Tensor, "batch n_new"]) -> Float[Tensor, " n_new"]:
    """At each step, the share of rows whose token is that step's most common token."""
    common = paths.mode(dim=0).values
    return (paths == common).double().mean(dim=0).float()


@torch.no_grad()
def insertion_shift(model: Any, tokens: Int[Tensor, "batch pos"], token: int, position: int
                    ) -> Float[Tensor, "batch shifted"]:
    """KL(P_inserted || P_clean) of the next-token predictions at clean positions
    ``position..pos-1``, the inserted row's position being one to the right."""
    batch = tokens.shape[0]
    inserted = torch.cat([tokens[:, :position], torch.full((batch, 1), int(token)),
                          tokens[:, position:]], dim=1)
    clean = F.log_softmax(model(tokens).double(), dim=-1)[:, position:]
    moved = F.log_softmax(model(inserted).double(), dim=-1)[:, position + 1:]
    return (moved.exp() * (moved - clean)).sum(-1).float()


def component_names(n_layers: int, n_heads: int) -> list[str]:
    """Heads of each layer, then its MLP: L0H0 .. L0H3, MLP0, L1H0, ..."""
    return [name for layer in range(n_layers)
            for name in [f"L{layer}H{h}" for h in range(n_heads)] + [f"MLP{layer}"]]


@torch.no_grad()
def mean_ablation_effects(model: Any, tokens: Int[Tensor, "batch pos"],
                          mask: Bool[Tensor, "batch pos"], target: int,
                          reference_tokens: Int[Tensor, "ref_batch ref_pos"]
                          ) -> dict[str, float]:
    """1 - behaviour(ablated) / behaviour(clean) for each head and MLP, one at a time.

    behaviour = mean over ``mask`` of the probability of ``target``; a component is replaced
    at every position by its mean output over ``reference_tokens`` (heads: their ``hook_z``
    slice, MLPs: ``hook_mlp_out``).
    """
    cfg = model.cfg
    hooks = {layer: (f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_mlp_out")
             for layer in range(cfg.n_layers)}
    wanted = {name for pair in hooks.values() for name in pair}
    _, cache = model.run_with_cache(reference_tokens, names_filter=lambda n: n in wanted)
    means = {name: cache[name].double().mean(dim=(0, 1)) for name in wanted}

    def behaviour(fwd_hooks: list) -> float:
        probs = torch.softmax(model.run_with_hooks(tokens, fwd_hooks=fwd_hooks).double(), -1)
        return float(probs[..., target][mask].mean())

    clean = behaviour([])
    effects: dict[str, float] = {}
    for layer, (z_name, mlp_name) in hooks.items():
        for head in range(cfg.n_heads):
            def one_head(z, hook, head=head, mean=means[z_name][head]):
                z = z.clone()
                z[:, :, head] = mean.to(z.dtype)
                return z
            effects[f"L{layer}H{head}"] = 1 - behaviour([(z_name, one_head)]) / clean

        def whole_mlp(out, hook, mean=means[mlp_name]):
            return mean.to(out.dtype).expand_as(out).clone()
        effects[f"MLP{layer}"] = 1 - behaviour([(mlp_name, whole_mlp)]) / clean
    return effects


@torch.no_grad()
def fold_head_ablation(model: Any, layer: int, head: int, mean_z: Float[Tensor, " d_head"]
                       ) -> dict[str, Tensor]:
    """The output projection of ``layer`` with ``head`` replaced, for good, by ``mean_z``:
    the head's columns of ``blocks.{layer}.attn.o.weight`` zeroed, their contribution at
    ``mean_z`` added to ``blocks.{layer}.attn.o.bias``."""
    state = model.state_dict()
    d_head = model.cfg.d_head
    weight = state[f"blocks.{layer}.attn.o.weight"].clone()
    bias = state[f"blocks.{layer}.attn.o.bias"].clone()
    columns = slice(head * d_head, (head + 1) * d_head)
    bias = bias + weight[:, columns] @ mean_z.to(weight.dtype)
    weight[:, columns] = 0
    return {f"blocks.{layer}.attn.o.weight": weight, f"blocks.{layer}.attn.o.bias": bias}


def apply_edit(model: Any, edit: Any) -> list[str]:
    """Load ``edit`` (state-dict key -> tensor) into ``model``; the problems found, if any
    (then nothing is loaded)."""
    if not isinstance(edit, dict):
        return [f"the edit should be a dict of weight name -> tensor, got {type(edit).__name__}"]
    state = model.state_dict()
    problems = []
    for key, value in edit.items():
        if key not in state:
            problems.append(f"{key!r} is not a weight of the model (see model.state_dict())")
        elif not isinstance(value, torch.Tensor) or value.shape != state[key].shape:
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            problems.append(f"{key}: expected a tensor of shape {list(state[key].shape)}, "
                            f"got {shape}")
        elif not torch.isfinite(value).all():
            problems.append(f"{key}: contains NaN or infinite values")
    if not problems:
        model.load_state_dict({k: v.to(state[k].dtype) for k, v in edit.items()}, strict=False)
    return problems


@torch.no_grad()
def attention_to_source(model: Any, tokens: Int[Tensor, "batch pos"],
                        mask: Bool[Tensor, "batch pos"], layer: int, head: int
                        ) -> Float[Tensor, " d_vocab"]:
    """Mean attention of ``head`` from the ``mask`` positions, summed by source token id."""
    name = f"blocks.{layer}.attn.hook_pattern"
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n == name)
    pattern = cache[name][:, head].double()  # batch query key
    rows = mask.nonzero()[:, 0]
    weights = pattern[mask]  # selected queries, key
    mass = torch.zeros(model.cfg.d_vocab, dtype=torch.float64)
    mass.index_add_(0, tokens[rows].reshape(-1), weights.reshape(-1))
    return (mass / weights.shape[0]).float()
