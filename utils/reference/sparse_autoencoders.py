"""Reference implementations for chapter 06 (superposition and sparse autoencoders).

Written independently of the solution notebook; the hidden checks compare learners' answers
with these, and :mod:`utils.sae` builds the shipped SAE with them. This package is blocked in
the grading sandbox, so an answer that calls into it (or into the functions of
:mod:`utils.sae` that train or evaluate, which import it when called) cannot run.

An SAE is a plain dict of tensors throughout the chapter::

    W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]

with ``latents = act(((x - b_dec) @ W_enc) + b_enc)`` and ``x_hat = latents @ W_dec + b_dec``,
where ``act`` is a ReLU, or (``k`` given) a ReLU applied to the ``k`` largest
pre-activations of each input, all others set to zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

SAE_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")


# ----------------------------------------------------------------------- toy model
def toy_sparse_batch(feature_probability: Float[Tensor, " instances"], n_features: int,
                     batch_size: int, generator: torch.Generator
                     ) -> Float[Tensor, "batch instances features"]:
    """Features uniform in [0, 1], each present independently with its instance's probability."""
    shape = (batch_size, feature_probability.shape[0], n_features)
    values = torch.rand(shape, generator=generator)
    present = torch.rand(shape, generator=generator) < feature_probability[None, :, None]
    return values * present


def toy_forward(W: Float[Tensor, "instances d_hidden features"],
                b_final: Float[Tensor, "instances features"],
                x: Float[Tensor, "batch instances features"]
                ) -> Float[Tensor, "batch instances features"]:
    hidden = torch.einsum("ihf,bif->bih", W, x)
    return torch.relu(torch.einsum("ihf,bih->bif", W, hidden) + b_final)


def train_toy_model(feature_probability: Float[Tensor, " instances"],
                    importance: Float[Tensor, " features"], n_hidden: int, steps: int,
                    batch_size: int, lr: float, seed: int) -> dict[str, Tensor]:
    """Train one toy model of superposition per instance (see the chapter for the contract)."""
    gen = torch.Generator().manual_seed(seed)
    n_inst, n_feat = feature_probability.shape[0], importance.shape[0]
    std = (2.0 / (n_hidden + n_feat)) ** 0.5
    W = (torch.randn(n_inst, n_hidden, n_feat, generator=gen) * std).requires_grad_(True)
    b_final = torch.zeros(n_inst, n_feat, requires_grad=True)
    opt = torch.optim.Adam([W, b_final], lr=lr)
    losses = torch.zeros(steps, n_inst)
    for step in range(steps):
        x = toy_sparse_batch(feature_probability, n_feat, batch_size, gen)
        err = importance * (x - toy_forward(W, b_final, x)) ** 2
        per_instance = err.sum(-1).mean(0)
        opt.zero_grad()
        per_instance.sum().backward()
        opt.step()
        losses[step] = per_instance.detach()
    return {"W": W.detach(), "b_final": b_final.detach(), "losses": losses}


def superposition_stats(W: Float[Tensor, "instances d_hidden features"]
                        ) -> dict[str, Float[Tensor, "instances features"]]:
    """Each feature's norm and how much the other features overlap its direction."""
    norms = W.norm(dim=1)
    unit = W / (norms[:, None, :] + 1e-8)
    overlaps = torch.einsum("ihf,ihg->ifg", unit, W) ** 2
    interference = overlaps.sum(-1) - torch.diagonal(overlaps, dim1=-2, dim2=-1)
    return {"norms": norms, "interference": interference}


# ----------------------------------------------------------------------- SAE basics
def sae_encode(x: Float[Tensor, "... d_in"], sae: dict[str, Tensor], k: int | None = None
               ) -> Float[Tensor, "... d_sae"]:
    pre = (x - sae["b_dec"]) @ sae["W_enc"] + sae["b_enc"]
    if k is None:
        return torch.relu(pre)
    top = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))


def sae_decode(latents: Float[Tensor, "... d_sae"], sae: dict[str, Tensor]
               ) -> Float[Tensor, "... d_in"]:
    return latents @ sae["W_dec"] + sae["b_dec"]


def sae_forward(x: Float[Tensor, "batch d_in"], sae: dict[str, Tensor], l1_coeff: float,
                k: int | None = None) -> dict[str, Tensor]:
    latents = sae_encode(x, sae, k)
    recon = sae_decode(latents, sae)
    recon_loss = (recon - x).pow(2).sum(-1).mean()
    sparsity_loss = latents.abs().sum(-1).mean()
    return {"latents": latents, "reconstruction": recon, "recon_loss": recon_loss,
            "sparsity_loss": sparsity_loss, "loss": recon_loss + l1_coeff * sparsity_loss}


def init_sae(activations: Float[Tensor, "batch d_in"], n_latents: int,
             generator: torch.Generator) -> dict[str, Tensor]:
    """Unit-norm random decoder rows, encoder = decoder transposed, b_dec = data mean."""
    d_in = activations.shape[1]
    W_dec = torch.randn(n_latents, d_in, generator=generator)
    W_dec = W_dec / W_dec.norm(dim=-1, keepdim=True)
    return {"W_enc": W_dec.T.clone(), "b_enc": torch.zeros(n_latents),
            "W_dec": W_dec, "b_dec": activations.mean(0).clone()}


def train_sae(activations: Float[Tensor, "batch d_in"], n_latents: int, steps: int,
              batch_size: int, lr: float, l1_coeff: float, k: int | None = None, seed: int = 0,
              init: dict[str, Tensor] | None = None,
              on_step: Callable[[int, dict], None] | None = None) -> dict[str, Tensor]:
    """Adam on recon + l1_coeff * L1, decoder rows renormalised after every step."""
    gen = torch.Generator().manual_seed(seed)
    start = init_sae(activations, n_latents, gen) if init is None else init
    params = {key: start[key].detach().clone().float().requires_grad_(True) for key in SAE_KEYS}
    opt = torch.optim.Adam(list(params.values()), lr=lr)
    losses = torch.zeros(steps)
    for step in range(steps):
        idx = torch.randint(0, activations.shape[0], (batch_size,), generator=gen)
        out = sae_forward(activations[idx], params, l1_coeff, k)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=-1, keepdim=True)
        losses[step] = out["loss"].detach()
        if on_step is not None:
            on_step(step, out)
    result = {key: value.detach() for key, value in params.items()}
    result["losses"] = losses
    return result


def mean_max_cosine_similarity(true_features: Float[Tensor, "n_true d_in"],
                               learned: Float[Tensor, "d_sae d_in"]) -> float:
    """For each true feature, the best cosine similarity with a learned direction; averaged."""
    a = true_features / true_features.norm(dim=-1, keepdim=True)
    b = learned / learned.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return (a @ b.T).max(dim=1).values.mean().item()


def resample_dead_latents(activations: Float[Tensor, "batch d_in"],
                          latents: Float[Tensor, "batch d_sae"],
                          sae: dict[str, Tensor]) -> dict[str, Tensor | float]:
    """Point every dead latent at one of the worst-reconstructed inputs' residual error."""
    dead: Bool[Tensor, " d_sae"] = ~(latents > 0).any(dim=0)
    W_enc, b_enc, W_dec = sae["W_enc"].clone(), sae["b_enc"].clone(), sae["W_dec"].clone()
    dead_idx = dead.nonzero().flatten()
    if len(dead_idx) > 0:
        residual = activations - (latents @ sae["W_dec"] + sae["b_dec"])
        worst = residual.pow(2).sum(-1).topk(len(dead_idx)).indices
        directions = residual[worst]
        directions = directions / directions.norm(dim=-1, keepdim=True)
        alive = ~dead
        scale = 0.2 * (W_enc[:, alive].norm(dim=0).mean().item() if alive.any() else 1.0)
        W_dec[dead_idx] = directions
        W_enc[:, dead_idx] = directions.T * scale
        b_enc[dead_idx] = 0.0
    return {"dead": dead, "dead_fraction": dead.float().mean().item(), "W_enc": W_enc,
            "b_enc": b_enc, "W_dec": W_dec, "b_dec": sae["b_dec"].clone()}


# ----------------------------------------------------------------------- SAE on a model
def evaluate_sae(model, tokens: Int[Tensor, "batch pos"], hook_name: str,
                 sae: dict[str, Tensor], k: int | None = None) -> dict[str, float]:
    """L0, FVU and next-token loss with the SAE spliced in (BOS position left untouched)."""
    with torch.no_grad():
        ce_clean, cache = model.run_with_cache(tokens, return_type="loss",
                                               names_filter=[hook_name])
        acts = cache[hook_name][:, 1:]
        latents = sae_encode(acts, sae, k)
        recon = sae_decode(latents, sae)

        def splice(value, hook):
            value = value.clone()
            value[:, 1:] = recon
            return value

        def zero(value, hook):
            value = value.clone()
            value[:, 1:] = 0.0
            return value

        ce_sae = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_name, splice)])
        ce_zero = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=[(hook_name, zero)])
    flat, flat_recon = acts.reshape(-1, acts.shape[-1]), recon.reshape(-1, acts.shape[-1])
    fvu = (flat - flat_recon).pow(2).sum() / (flat - flat.mean(0)).pow(2).sum()
    ce_clean, ce_sae, ce_zero = float(ce_clean), float(ce_sae), float(ce_zero)
    return {"l0": (latents > 0).float().sum(-1).mean().item(), "fvu": fvu.item(),
            "ce_clean": ce_clean, "ce_sae": ce_sae, "ce_zero": ce_zero,
            "ce_recovered": (ce_zero - ce_sae) / (ce_zero - ce_clean)}


def top_activating_contexts(latent_acts: Float[Tensor, "batch pos"],
                            tokens: Int[Tensor, "batch pos"], k: int, window: int,
                            pad_id: int = 0) -> dict[str, Tensor]:
    """The k largest activations anywhere, with the ``window`` tokens ending at each."""
    values, flat_idx = latent_acts.flatten().topk(k)
    n_pos = latent_acts.shape[1]
    batch_idx, pos_idx = flat_idx // n_pos, flat_idx % n_pos
    padded = torch.cat([torch.full((tokens.shape[0], window - 1), pad_id,
                                   dtype=tokens.dtype), tokens], dim=1)
    offsets = torch.arange(window)
    contexts = padded[batch_idx[:, None], pos_idx[:, None] + offsets]
    return {"values": values, "batch_idx": batch_idx, "pos_idx": pos_idx, "contexts": contexts}


def steer_generation(model, tokens: Int[Tensor, "batch pos"], hook_name: str,
                     direction: Float[Tensor, " d_model"], scale: float, n_new_tokens: int
                     ) -> Int[Tensor, "batch pos_plus_new"]:
    """Greedy decoding with ``scale * direction`` added at every non-BOS position."""

    def add(value, hook):
        value = value.clone()
        value[:, 1:] = value[:, 1:] + scale * direction
        return value

    out = tokens.clone()
    with torch.no_grad():
        for _ in range(n_new_tokens):
            logits = model.run_with_hooks(out, fwd_hooks=[(hook_name, add)])
            out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out


# ----------------------------------------------------------------------- findings
def encoder_decoder_cosines(sae: dict[str, Tensor]) -> Float[Tensor, " d_sae"]:
    """Cosine between each latent's encoder column W_enc[:, i] and its decoder row W_dec[i]."""
    enc = sae["W_enc"] / sae["W_enc"].norm(dim=0, keepdim=True).clamp_min(1e-8)
    dec = sae["W_dec"] / sae["W_dec"].norm(dim=1, keepdim=True).clamp_min(1e-8)
    return (enc.T * dec).sum(-1)


def nearest_latent_cosines(sae: dict[str, Tensor]) -> Float[Tensor, " d_sae"]:
    """For each decoder row, its largest cosine with any *other* decoder row (signed)."""
    dec = sae["W_dec"] / sae["W_dec"].norm(dim=1, keepdim=True).clamp_min(1e-8)
    gram = dec @ dec.T
    gram.fill_diagonal_(-float("inf"))
    return gram.max(dim=1).values


def ablation_losses(model, tokens: Int[Tensor, "batch pos"], hook_name: str,
                    sae: dict[str, Tensor], k: int | None = None) -> dict[str, float]:
    """Mean next-token loss clean, with the SAE spliced in, and with positions 1: of
    ``hook_name`` replaced by zeros or by their mean over all (batch, 1:) tokens; BOS kept."""
    with torch.no_grad():
        ce_clean, cache = model.run_with_cache(tokens, return_type="loss",
                                               names_filter=[hook_name])
        acts = cache[hook_name][:, 1:]
        replacements = {"sae": sae_decode(sae_encode(acts, sae, k), sae),
                        "zero": torch.zeros_like(acts),
                        "mean": acts.reshape(-1, acts.shape[-1]).mean(0).expand_as(acts)}
        losses = {"clean": float(ce_clean)}
        for name, new in replacements.items():
            def splice(value, hook, new=new):
                value = value.clone()
                value[:, 1:] = new
                return value
            losses[name] = float(model.run_with_hooks(tokens, return_type="loss",
                                                      fwd_hooks=[(hook_name, splice)]))
    return losses


def loss_recovered(losses: dict[str, float], baseline: str) -> float:
    """Share of the ``baseline`` ablation's loss increase that the SAE splice avoids."""
    return (losses[baseline] - losses["sae"]) / (losses[baseline] - losses["clean"])


def neuron_carriers(neuron_acts: Float[Tensor, "tokens d_mlp"],
                    latents: Float[Tensor, "tokens d_sae"], W_out: Float[Tensor, "d_mlp d_model"],
                    W_dec: Float[Tensor, "d_sae d_model"], n_top: int
                    ) -> Int[Tensor, "d_mlp n_top"]:
    """For every MLP neuron and each of its ``n_top`` largest activations (largest first), the
    SAE latent that carries most of the neuron's output direction at that token: the argmax
    over latents of activation * cosine(W_dec[latent], W_out[neuron])."""
    out_dirs = W_out / W_out.norm(dim=-1, keepdim=True)
    dec_dirs = W_dec / W_dec.norm(dim=-1, keepdim=True)
    alignment = dec_dirs @ out_dirs.T  # [d_sae, d_mlp]
    top_tokens = neuron_acts.topk(n_top, dim=0).indices.T  # [d_mlp, n_top]
    carriers = torch.empty_like(top_tokens)
    for start in range(0, top_tokens.shape[0], 128):
        block = top_tokens[start:start + 128]  # [n, n_top]
        contributions = latents[block] * alignment[:, start:start + 128].T[:, None, :]
        carriers[start:start + 128] = contributions.argmax(-1)
    return carriers


def carrier_groups(carriers: Int[Tensor, "d_mlp n_top"], min_tokens: int) -> Int[Tensor, " d_mlp"]:
    """For every neuron, how many latents carry at least ``min_tokens`` of its top tokens."""
    counts = torch.zeros(carriers.shape[0], int(carriers.max()) + 1, dtype=torch.long)
    counts.scatter_add_(1, carriers, torch.ones_like(carriers))
    return (counts >= min_tokens).sum(-1)
