"""Reference implementations for chapter 04 (probing), used by its hidden checks.

Written separately from the solution notebook (different algorithms where there is a
choice: the probe here is fitted by Newton's method in float64, the bootstrap draws all
resamples at once), so a check never compares a learner with a copy of the notebook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["class_mean_direction", "collect_resid_at_positions", "control_task_labels",
           "paired_bootstrap_interval", "project_out", "steer_logit_diff",
           "train_and_test_probe"]


def collect_resid_at_positions(model: Any, tokens: Int[Tensor, "batch pos"],
                               positions: Tensor, layers: list[int],
                               batch_size: int = 64) -> Float[Tensor, "layer batch d_model"]:
    """``blocks.{L}.hook_resid_post`` at ``positions[i]`` of row ``i``, for each L in layers."""
    wanted = {f"blocks.{layer}.hook_resid_post": k for k, layer in enumerate(layers)}
    out = torch.empty(len(layers), tokens.shape[0], model.cfg.d_model)
    for start in range(0, tokens.shape[0], batch_size):
        stop = min(start + batch_size, tokens.shape[0])
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens[start:stop],
                                            names_filter=lambda n: n in wanted,
                                            stop_at_layer=max(layers) + 1)
        rows = torch.arange(stop - start)
        for name, k in wanted.items():
            out[k, start:stop] = cache[name][rows, positions[start:stop]]
    return out


def _newton_logistic(z: Tensor, y: Tensor, weight_decay: float, n_iter: int = 50
                     ) -> tuple[Tensor, Tensor]:
    """argmin mean BCE(z @ w + b, y) + weight_decay * |w|^2, by Newton's method (float64)."""
    n, d = z.shape
    za = torch.cat([z, torch.ones(n, 1, dtype=z.dtype)], dim=1)
    theta = torch.zeros(d + 1, dtype=z.dtype)
    reg = torch.full((d + 1,), 2 * weight_decay, dtype=z.dtype)
    reg[-1] = 0.0
    for _ in range(n_iter):
        p = torch.sigmoid(za @ theta)
        grad = za.T @ (p - y) / n + reg * theta
        hess = (za.T * (p * (1 - p))) @ za / n + torch.diag(reg) + 1e-10 * torch.eye(d + 1,
                                                                                     dtype=z.dtype)
        step = torch.linalg.solve(hess, grad)
        theta = theta - step
        if step.abs().max() < 1e-10:
            break
    return theta[:-1], theta[-1]


def train_and_test_probe(x: Float[Tensor, "batch d_model"], y: Tensor,
                         is_train: Tensor, weight_decay: float = 1e-2
                         ) -> dict[str, Any]:
    """Standardise with training statistics, fit L2 logistic regression, score held-out rows."""
    x = x.to(torch.float64)
    yf = y.to(torch.float64)
    train, test = is_train, ~is_train
    mu = x[train].mean(0)
    sigma = x[train].std(0) + 1e-6
    w, b = _newton_logistic((x[train] - mu) / sigma, yf[train], weight_decay)
    w_raw = w / sigma
    b_raw = b - (mu * w_raw).sum()
    pred = (x @ w_raw + b_raw > 0).long()
    correct = pred == y
    test_acc = correct[test].double().mean().item()
    n_test = int(test.sum())
    return {"w": w_raw.float(), "b": b_raw.float(),
            "train_acc": correct[train].double().mean().item(), "test_acc": test_acc,
            "test_stderr": (test_acc * (1 - test_acc) / n_test) ** 0.5}


def control_task_labels(word_ids: Tensor, seed: int = 0) -> Tensor:
    """Each word type gets one random label; exactly floor(n_types / 2) types get label 1."""
    types, inverse = torch.unique(word_ids, return_inverse=True)
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(len(types), generator=gen)
    ones = scores.argsort()[: len(types) // 2]
    type_label = torch.zeros(len(types), dtype=torch.long)
    type_label[ones] = 1
    return type_label[inverse]


def paired_bootstrap_interval(correct_a: Tensor, correct_b: Tensor,
                              n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
                              ) -> Tensor:
    """Percentile interval for accuracy(a) - accuracy(b), resampling examples in pairs."""
    n = correct_a.shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (n_resamples, n), generator=gen)
    diff = correct_a.double()[idx].mean(1) - correct_b.double()[idx].mean(1)
    tail = (1 - confidence) / 2
    return torch.quantile(diff, torch.tensor([tail, 1 - tail], dtype=torch.float64)).float()


def class_mean_direction(x: Float[Tensor, "batch d_model"], y: Tensor
                         ) -> Tensor:
    """Unit vector along mean(x | y=1) - mean(x | y=0)."""
    x = x.to(torch.float64)
    diff = x[y == 1].sum(0) / (y == 1).sum() - x[y == 0].sum(0) / (y == 0).sum()
    return (diff / diff.norm()).float()


def project_out(x: Float[Tensor, "... d_model"], directions: Float[Tensor, "k d_model"]
                ) -> Float[Tensor, "... d_model"]:
    """x minus its orthogonal projection onto the span of the rows of ``directions``."""
    d = directions.to(torch.float64)
    # Projector onto the row space via the pseudo-inverse: P = D^T (D D^T)^+ D.
    proj = d.T @ torch.linalg.pinv(d @ d.T) @ d
    xd = x.to(torch.float64)
    return (xd - xd @ proj).to(x.dtype)


def steer_logit_diff(model: Any, tokens: Int[Tensor, "batch pos"],
                     last_pos: Tensor, direction: Tensor,
                     layer: int, alpha: float, answer_ids: Tensor
                     ) -> Tensor:
    """Add alpha * unit(direction) to resid_post[layer] at each row's last position; return
    logit[answer_ids[0]] - logit[answer_ids[1]] there."""
    unit = direction / direction.norm()
    rows = torch.arange(tokens.shape[0])

    def hook(resid, hook):
        delta = torch.zeros_like(resid)
        delta[rows, last_pos] = alpha * unit.to(resid.dtype)
        return resid + delta

    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post",
                                                          hook)])
    final = logits[rows, last_pos]
    return final[:, answer_ids[0]] - final[:, answer_ids[1]]


# ------------------------------------------------------------------ the chapter's findings
# What the notebook measures, recomputed for its investigations' hidden checks. Forward passes
# of SmolLM2 dominate the cost, so each finding uses the least data that gives the notebook's
# answer: the early layers only, or a few validation and test prompts.
N_PROMPTS, SEED, TEST_FRACTION, WEIGHT_DECAY = 1000, 0, 0.3, 1e-2
SWEEP_LAYERS = (1, 9, 17, 21, 24, 27, 29)  # the layers section 5 steers
STEER_PROMPTS_PER_CLASS = 8  # validation prompts for choosing the steering layer
TEST_PROMPTS_PER_CLASS = 32  # held-out prompts for the ablation
DIRECTION_PROMPTS_PER_CLASS = 80  # training prompts the checks estimate class means from


@dataclass
class ChapterData:
    """The notebook's prompts and labels (``make_subject_number_dataset(1000, seed=0)``)."""
    tokens: Tensor
    last_pos: Tensor
    labels: Tensor
    attractor_labels: Tensor
    word_ids: Tensor
    is_train: Tensor


def chapter_data(model: Any) -> ChapterData:
    from utils.probing_data import (
        make_subject_number_dataset,
        stratified_split,
        tokenize_with_last_positions,
    )

    data = make_subject_number_dataset(N_PROMPTS, seed=SEED)
    tokens, last_pos = tokenize_with_last_positions(model, data["prompt"])
    labels = torch.tensor(data["label"])
    types = sorted(set(data["subject"]))
    return ChapterData(tokens, last_pos, labels, torch.tensor(data["attractor_label"]),
                       torch.tensor([types.index(s) for s in data["subject"]]),
                       stratified_split(labels, TEST_FRACTION, SEED))


def early_layer_accuracies(model: Any, data: ChapterData, n_layers: int
                           ) -> dict[str, list[float]]:
    """Held-out accuracy of a probe at layers ``0..n_layers-1`` for the subject's number
    ("task") and a control task ("control", this module's labels, seed 0), and at layer 0 for
    the attractor's number ("attractor"), on the notebook's split."""
    acts = collect_resid_at_positions(model, data.tokens, data.last_pos, list(range(n_layers)),
                                      batch_size=250)
    control = control_task_labels(data.word_ids, SEED)
    out: dict[str, list[float]] = {"task": [], "control": []}
    for x in acts:
        for name, y in (("task", data.labels), ("control", control)):
            out[name].append(train_and_test_probe(x, y, data.is_train, WEIGHT_DECAY)["test_acc"])
    out["attractor"] = [train_and_test_probe(acts[0], data.attractor_labels, data.is_train,
                                             WEIGHT_DECAY)["test_acc"]]  # layer 0 only
    return out


def steering_findings(model: Any, data: ChapterData) -> dict[str, Any]:
    """Section 5's steering sweep and ablation, with each layer's class-mean direction
    estimated from ``DIRECTION_PROMPTS_PER_CLASS`` training prompts per class.

    ``effect[layer]``: mean over the validation prompts of half of (logit diff after pushing
    by -2 class-mean gaps) minus (after +2 gaps), pushing the last token's
    ``resid_post`` along the unit class-mean direction. ``agreement[layer]``: fraction of the
    test prompts on which the model prefers the verb that agrees with the subject after the
    component along that direction is replaced by its training mean.
    """
    from utils.probing_data import VERBS, stratified_rows
    from utils.tl_compat import run_from_layer

    is_id, are_id = (model.to_single_token(v) for v in VERBS)
    fit = stratified_rows(data.labels, data.is_train, DIRECTION_PROMPTS_PER_CLASS, SEED + 3)
    val = stratified_rows(data.labels, data.is_train, STEER_PROMPTS_PER_CLASS, SEED)
    test = stratified_rows(data.labels, ~data.is_train, TEST_PROMPTS_PER_CLASS, SEED)
    names = [f"blocks.{layer}.hook_resid_post" for layer in SWEEP_LAYERS]

    def resid(rows: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            _, cache = model.run_with_cache(data.tokens[rows], names_filter=lambda n: n in names,
                                            stop_at_layer=max(SWEEP_LAYERS) + 1)
        return {n: cache[n] for n in names}

    fit_resid, val_resid, test_resid = resid(fit), resid(val), resid(test)

    def diff_after(layer: int, stream: Tensor, last: Tensor, add: Tensor) -> Tensor:
        """Logit diff with ``add`` added to each row's last-token residual after ``layer``."""
        stream = stream.clone()
        stream[torch.arange(len(stream)), last] += add
        with torch.no_grad():
            logits = run_from_layer(model, stream, layer + 1, positions=last)
        return logits[:, is_id] - logits[:, are_id]

    effect, agreement = {}, {}
    y_fit, y_test = data.labels[fit], data.labels[test]
    for layer, name in zip(SWEEP_LAYERS, names):
        x_fit = fit_resid[name][torch.arange(len(fit)), data.last_pos[fit]]
        u = class_mean_direction(x_fit, y_fit)
        proj = x_fit @ u
        step = 2 * (proj[y_fit == 1].mean() - proj[y_fit == 0].mean())
        down = diff_after(layer, val_resid[name], data.last_pos[val], -step * u)
        up = diff_after(layer, val_resid[name], data.last_pos[val], step * u)
        effect[layer] = ((down - up) / 2).mean().item()
        x_test = test_resid[name][torch.arange(len(test)), data.last_pos[test]]
        ablated = diff_after(layer, test_resid[name], data.last_pos[test],
                             -(x_test @ u - proj.mean())[:, None] * u)
        agreement[layer] = ((ablated < 0).long() == y_test).double().mean().item()
    return {"effect": effect, "agreement": agreement}


def leace_erase(x: Float[Tensor, "batch d_model"], y: Tensor, is_train: Tensor
                ) -> Float[Tensor, "batch d_model"]:
    """LEACE for a binary label (Belrose et al., 2023), fitted on the training rows.

    With ``W`` the whitening ``Σ^{-1/2}`` and ``σ = Cov(x, y)``, the eraser is
    ``x - W⁺ P W (x - μ)`` where ``P`` projects onto ``Wσ``; written here in that form, with an
    eigendecomposition of Σ (the notebook's formula is the same map, simplified).
    """
    xd = x.to(torch.float64)
    train = xd[is_train]
    yt = y[is_train].to(torch.float64)
    mu = train.mean(0)
    centred = train - mu
    sigma = centred.T @ centred / len(train)
    cross = centred.T @ (yt - yt.mean()) / len(train)  # Cov(x, y), a vector along Δμ
    evals, evecs = torch.linalg.eigh(sigma)
    whiten = evecs @ torch.diag(evals.clamp_min(1e-12) ** -0.5) @ evecs.T
    unwhiten = evecs @ torch.diag(evals.clamp_min(0) ** 0.5) @ evecs.T
    v = whiten @ cross
    v = v / v.norm()
    erased = xd - ((xd - mu) @ whiten @ v)[:, None] * (unwhiten @ v)[None, :]
    return erased.to(x.dtype)
