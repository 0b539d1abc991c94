"""Reference implementations for chapter 05 (activation patching on IOI).

Used by the hidden checks and by later chapters. Each sweep here puts *all* its patched runs
into one forward pass, with hooks that patch only their own block of rows; the chapter's
solutions batch one layer at a time instead, so the two agree only if both index correctly.

Conventions shared by every function here:

* the metric is the **mean over the batch** of the logit difference
  ``logit(answer_tokens[:, 0]) - logit(answer_tokens[:, 1])`` at the last position;
* a patching result is normalised as ``(metric - corrupted) / (clean - corrupted)``, where
  ``clean`` and ``corrupted`` are the metric on the unpatched clean and corrupted runs:
  0 means "as on the corrupted prompt", 1 means "as on the clean prompt", whatever the
  direction of the patch;
* ``model`` is SmolLM2 (or any TransformerLens-style model with ``hook_resid_pre``,
  ``attn.hook_z``, ``attn.hook_q``/``hook_k``/``hook_v``); no function leaves a hook behind.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "attribution_patching_heads",
    "logit_diff",
    "make_ioi_tokens",
    "patch_head_outputs",
    "patch_head_set",
    "patch_residual_by_layer_and_position",
    "end_takeover_layer",
    "mean_ablate_other_heads",
    "patch_mlp_outputs",
    "path_patch_to_receivers",
    "toy_circuit_kinds",
    "toy_patching_scores",
    "top_mlp_layer",
]


# ------------------------------------------------------------------------------ data, metric
def make_ioi_tokens(model: Any, template: str, names: list[tuple[str, str, str]]
                    ) -> dict[str, Tensor]:
    """Clean/corrupted tokens and answer ids for ``template`` filled with (io, s, c) triples.

    The template holds ``{IO}``, ``{S1}`` and ``{S2}``. Clean: IO=io, S1=S2=s. Corrupted: the
    same with S2=c. Tokens start with the BOS. ``answers[:, 0]`` is the id of ``" " + io``,
    ``answers[:, 1]`` of ``" " + s``. ``ValueError`` if a name is not one token with a space.
    """
    tokenizer = model.tokenizer
    ids: dict[str, int] = {}
    for triple in names:
        for name in triple:
            pieces = tokenizer.encode(" " + name, add_special_tokens=False)
            if len(pieces) != 1:
                raise ValueError(f"{name!r} is not a single token")
            ids[name] = pieces[0]

    def fill(io: str, s1: str, s2: str) -> str:
        return template.replace("{IO}", io).replace("{S1}", s1).replace("{S2}", s2)

    clean = model.to_tokens([fill(io, s, s) for io, s, _ in names], prepend_bos=True)
    corrupted = model.to_tokens([fill(io, s, c) for io, s, c in names], prepend_bos=True)
    answers = torch.tensor([[ids[io], ids[s]] for io, s, _ in names], dtype=torch.long)
    return {"clean": clean, "corrupted": corrupted, "answers": answers}


def logit_diff(logits: Float[Tensor, "batch pos d_vocab"], answer_tokens: Int[Tensor, "batch 2"]
               ) -> Float[Tensor, " batch"]:
    """Per prompt: final-position logit of the correct answer minus that of the wrong one."""
    rows = torch.arange(logits.shape[0])
    last = logits[rows, -1]
    return last[rows, answer_tokens[:, 0]] - last[rows, answer_tokens[:, 1]]


def _cache(model: Any, tokens: Tensor, names: list[str]) -> dict[str, Tensor]:
    """Activations at ``names``, keyed by the names asked for. (``hook.name`` is not used: on a
    TransformerBridge it is the canonical name, e.g. ``blocks.2.hook_in`` for
    ``blocks.2.hook_resid_pre``.)"""
    store: dict[str, Tensor] = {}

    def saver(name: str):
        def save(act: Tensor, hook: Any) -> None:
            store[name] = act.detach().clone()
        return save

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(n, saver(n)) for n in names])
    return store


# ------------------------------------------------------------------------------ patching
# Every sweep below is ONE forward pass: patched run k is the k-th block of `batch` rows of a
# big batch, and each hook patches only the blocks that belong to it. (The chapter's solutions
# loop over layers instead; the two formulations agree only if both index correctly.) Memory
# grows with the number of patched runs, so keep these sweeps small.
def _block_means(model: Any, tokens: Tensor, answer_tokens: Tensor, n_runs: int,
                 hooks: list) -> Tensor:
    """Batch-mean logit difference of each of ``n_runs`` stacked copies of a batch. Only the
    last position is unembedded when the model stops after its last block
    (``utils.tl_compat.stop_after_last_block``, as ``load_smollm2`` sets up); other models
    return full logits, read at the last position all the same."""
    batch = answer_tokens.shape[0]
    with torch.no_grad():
        out = model.run_with_hooks(tokens.repeat(n_runs, 1), fwd_hooks=hooks,
                                   stop_at_layer=model.cfg.n_layers)
        if out.shape[-1] == model.cfg.d_model:  # the residual stream after the last block
            out = model.unembed(model.ln_final(out[:, -1:]))  # logits at the last position only
    return logit_diff(out, answer_tokens.repeat(n_runs, 1)).view(n_runs, batch).mean(-1)


def _in_chunks(sweep, runs: list, max_rows: int, batch: int) -> Tensor:
    """``sweep(runs[i:j])`` over chunks of at most ``max_rows // batch`` runs, concatenated
    (the full logits of a stacked batch are 15 x 49,152 floats per row: keep them small)."""
    size = max(1, max_rows // batch)
    return torch.cat([sweep(runs[i:i + size]) for i in range(0, len(runs), size)])


def patch_residual_by_layer_and_position(
    model: Any, clean_tokens: Tensor, corrupted_tokens: Tensor, answer_tokens: Tensor,
    clean_logit_diff: float, corrupted_logit_diff: float, layers: list[int],
    positions: list[int],
) -> Float[Tensor, "layer pos"]:
    """Denoising: the corrupted run with ``blocks.{L}.hook_resid_pre[:, p]`` from the clean run."""
    batch = clean_tokens.shape[0]
    names = {layer: f"blocks.{layer}.hook_resid_pre" for layer in set(layers)}
    clean = _cache(model, clean_tokens, list(names.values()))

    def sweep(runs: list[tuple[int, int]]) -> Tensor:
        hooks = []
        for layer, name in names.items():
            def put(act: Tensor, hook: Any, layer: int = layer, name: str = name) -> Tensor:
                act = act.clone()
                for k, (run_layer, pos) in enumerate(runs):
                    if run_layer == layer:
                        act[k * batch:(k + 1) * batch, pos] = clean[name][:, pos]
                return act

            hooks.append((name, put))
        return _block_means(model, corrupted_tokens, answer_tokens, len(runs), hooks)

    runs = [(layer, pos) for layer in layers for pos in positions]
    values = _in_chunks(sweep, runs, 64, batch)
    scores = (values - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
    return scores.view(len(layers), len(positions))


def _patch_head_runs(model: Any, base_tokens: Tensor, source_tokens: Tensor,
                     answer_tokens: Tensor, runs: list[list[tuple[int, int]]],
                     position: int | None) -> Tensor:
    """Mean logit diff of each run; run k patches every (layer, head) in ``runs[k]``."""
    batch = base_tokens.shape[0]
    layers = sorted({layer for heads in runs for layer, _ in heads})
    names = {layer: f"blocks.{layer}.attn.hook_z" for layer in layers}
    source = _cache(model, source_tokens, list(names.values()))
    where = slice(None) if position is None else position

    def sweep(chunk: list[list[tuple[int, int]]]) -> Tensor:
        hooks = []
        for layer, name in names.items():
            def put(z: Tensor, hook: Any, layer: int = layer, name: str = name) -> Tensor:
                z = z.clone()
                for k, heads in enumerate(chunk):
                    for run_layer, head in heads:
                        if run_layer == layer:
                            z[k * batch:(k + 1) * batch, where, head] = \
                                source[name][:, where, head]
                return z

            hooks.append((name, put))
        return _block_means(model, base_tokens, answer_tokens, len(chunk), hooks)

    return _in_chunks(sweep, runs, 64, batch)


def patch_head_outputs(
    model: Any, base_tokens: Tensor, source_tokens: Tensor, answer_tokens: Tensor,
    clean_logit_diff: float, corrupted_logit_diff: float, layers: list[int],
    position: int | None = None,
) -> Float[Tensor, "layer head_index"]:
    """Run ``base_tokens`` with one head's ``hook_z`` (all positions, or only ``position``)
    taken from the run on ``source_tokens``; one result per (layer, head), normalised."""
    n_heads = model.cfg.n_heads
    runs = [[(layer, head)] for layer in layers for head in range(n_heads)]
    values = _patch_head_runs(model, base_tokens, source_tokens, answer_tokens, runs, position)
    scores = (values - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)
    return scores.view(len(layers), n_heads)


def patch_head_set(
    model: Any, base_tokens: Tensor, source_tokens: Tensor, answer_tokens: Tensor,
    clean_logit_diff: float, corrupted_logit_diff: float,
    head_sets: list[list[tuple[int, int]]],
) -> Float[Tensor, " n_sets"]:
    """For each set of (layer, head): patch all of them together (every position); normalised."""
    values = _patch_head_runs(model, base_tokens, source_tokens, answer_tokens,
                              [list(heads) for heads in head_sets], None)
    return (values - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


# ------------------------------------------------------------------------------ gradients
def attribution_patching_heads(
    model: Any, clean_tokens: Tensor, corrupted_tokens: Tensor, answer_tokens: Tensor,
    clean_logit_diff: float, corrupted_logit_diff: float,
) -> Float[Tensor, "layer head_index"]:
    """Linear estimate of denoising each head's output (all positions), normalised.

    ``(z_clean - z_corrupted) . d metric / d z`` at the corrupted run, summed over batch,
    position and ``d_head``, divided by ``clean - corrupted``. The gradient is taken by
    marking each ``hook_z`` output with ``retain_grad`` and calling ``backward``.
    """
    n_layers = model.cfg.n_layers
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    clean = _cache(model, clean_tokens, names)
    kept: dict[str, Tensor] = {}

    def embed(x: Tensor, hook: Any) -> Tensor:
        return x.detach().requires_grad_(True)

    def keep(z: Tensor, hook: Any) -> Tensor:
        # Return the tensor: in TransformerLens 4 a hook that returns None on hook_z leaves
        # the value it was given outside the autograd graph of the output.
        z.retain_grad()
        kept[hook.name] = z
        return z

    hooks = [("hook_embed", embed)] + [(n, keep) for n in names]
    with torch.enable_grad():
        logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=hooks)
        logit_diff(logits, answer_tokens).mean().backward()
    rows = []
    for name in names:
        z = kept[name]
        delta = clean[name] - z.detach()
        rows.append(torch.einsum("bphd,bphd->h", delta, z.grad))
    return torch.stack(rows) / (clean_logit_diff - corrupted_logit_diff)


# ------------------------------------------------------------------------------ paths
def path_patch_to_receivers(
    model: Any, clean_tokens: Tensor, corrupted_tokens: Tensor, answer_tokens: Tensor,
    clean_logit_diff: float, corrupted_logit_diff: float, senders: list[tuple[int, int]],
    receivers: list[tuple[int, int]], component: str = "q",
) -> Float[Tensor, " sender"]:
    """Path patching sender -> receivers' ``component`` ("q", "k" or "v"), one value per sender.

    For each sender: (1) run the clean prompt with the sender's ``hook_z`` from the corrupted
    run and every other head's ``hook_z`` frozen at its clean value (MLPs recompute), and
    record the receivers' ``hook_<component>``; (2) run the clean prompt with only those
    receiver activations replaced. Returns the normalised metric of run (2). For keys and
    values (GQA) the receiver's unit is its key/value head ``head // (n_heads // n_kv)``.
    All senders share one forward pass per step (sender k owns the k-th block of rows).
    """
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    batch, n_runs = clean_tokens.shape[0], len(senders)
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    clean_z = _cache(model, clean_tokens, z_names)
    corrupted_z = _cache(model, corrupted_tokens, z_names)
    group = 1
    if component in ("k", "v"):
        group = n_heads // (getattr(model.cfg, "n_key_value_heads", None) or n_heads)
    targets: dict[str, list[int]] = {}
    for layer, head in receivers:
        name = f"blocks.{layer}.attn.hook_{component}"
        targets[name] = sorted(set(targets.get(name, [])) | {head // group})

    def freezer(layer: int, name: str):
        def freeze(z: Tensor, hook: Any) -> Tensor:
            z = clean_z[name].repeat(n_runs, 1, 1, 1)
            for k, (s_layer, s_head) in enumerate(senders):
                if s_layer == layer:
                    z[k * batch:(k + 1) * batch, :, s_head] = corrupted_z[name][:, :, s_head]
            return z
        return freeze

    recorded: dict[str, Tensor] = {}

    def recorder(name: str):
        def record(act: Tensor, hook: Any) -> None:
            recorded[name] = act.detach().clone()
        return record

    hooks = [(name, freezer(layer, name)) for layer, name in enumerate(z_names)]
    hooks += [(name, recorder(name)) for name in targets]
    with torch.no_grad():
        model.run_with_hooks(clean_tokens.repeat(n_runs, 1), fwd_hooks=hooks)

    def patcher(name: str):
        def put(act: Tensor, hook: Any) -> Tensor:
            act = act.clone()
            act[:, :, targets[name]] = recorded[name][:, :, targets[name]]
            return act
        return put

    values = _block_means(model, clean_tokens, answer_tokens, n_runs,
                          [(name, patcher(name)) for name in targets])
    return (values - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


# ------------------------------------------------------------------------------ toy circuits
def toy_patching_scores(circuit: str, clean_x: Tensor, corrupted_x: Tensor
                        ) -> Float[Tensor, "direction component"]:
    """Row 0: denoising score of each toy component (corrupted run, component from the clean
    run); row 1: noising effect, 1 - score (clean run, component from the corrupted run).
    Scores are normalised batch means of the output, 0 = corrupted, 1 = clean."""
    from utils.ioi import TOY_COMPONENTS, run_toy_circuit

    clean = run_toy_circuit(circuit, clean_x)
    corrupted = run_toy_circuit(circuit, corrupted_x)
    low, high = corrupted["out"].mean(), clean["out"].mean()
    rows = []
    for base_x, source, sign in ((corrupted_x, clean, 0.0), (clean_x, corrupted, 1.0)):
        row = []
        for name in TOY_COMPONENTS:
            out = run_toy_circuit(circuit, base_x, {name: source[name]})["out"].mean()
            score = (out - low) / (high - low)
            row.append(sign - score if sign else score)
        rows.append(torch.stack(row))
    return torch.stack(rows)


def toy_circuit_kinds(clean_x: Tensor | None = None, corrupted_x: Tensor | None = None
                      ) -> dict[str, str]:
    """Each toy circuit's kind, read off its patching scores: "serial" if every component is
    both sufficient and necessary, "AND" if necessary but not sufficient alone, "OR" if
    sufficient alone but not necessary."""
    from utils.ioi import TOY_CIRCUITS

    clean_x = torch.tensor([1.0, 0.9]) if clean_x is None else clean_x
    corrupted_x = torch.tensor([0.0, 0.1]) if corrupted_x is None else corrupted_x
    kinds = {}
    for circuit in TOY_CIRCUITS:
        denoise, noise = toy_patching_scores(circuit, clean_x, corrupted_x)
        sufficient, necessary = bool((denoise > 0.5).all()), bool((noise > 0.5).all())
        kinds[circuit] = {(True, True): "serial", (False, True): "AND",
                          (True, False): "OR"}.get((sufficient, necessary), "neither")
    return kinds


# ------------------------------------------------------------------------------ MLPs
def patch_mlp_outputs(
    model: Any, base_tokens: Tensor, source_tokens: Tensor, answer_tokens: Tensor,
    clean_logit_diff: float, corrupted_logit_diff: float, layers: list[int],
    position: int | None = None,
) -> Float[Tensor, " layer"]:
    """Run ``base_tokens`` with ``blocks.{L}.hook_mlp_out`` (all positions, or only
    ``position``) from the run on ``source_tokens``; one normalised result per layer."""
    batch = base_tokens.shape[0]
    names = {layer: f"blocks.{layer}.hook_mlp_out" for layer in layers}
    source = _cache(model, source_tokens, list(names.values()))
    where = slice(None) if position is None else position

    def sweep(chunk: list[int]) -> Tensor:
        hooks = []
        for k, layer in enumerate(chunk):
            def put(act: Tensor, hook: Any, k: int = k, name: str = names[layer]) -> Tensor:
                act = act.clone()
                act[k * batch:(k + 1) * batch, where] = source[name][:, where]
                return act

            hooks.append((names[layer], put))
        return _block_means(model, base_tokens, answer_tokens, len(chunk), hooks)

    values = _in_chunks(sweep, list(layers), 64, batch)
    return (values - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)


# ------------------------------------------------------------------------------ faithfulness
def mean_ablate_other_heads(
    model: Any, tokens: Tensor, answer_tokens: Tensor, keep_heads: list[tuple[int, int]],
    mean_tokens: Tensor,
) -> Float[Tensor, " batch"]:
    """Per-prompt logit difference on ``tokens`` when every head not in ``keep_heads`` has its
    ``hook_z`` replaced by its mean over the batch ``mean_tokens`` (position by position)."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    means = {name: z.mean(0) for name, z in _cache(model, mean_tokens, names).items()}
    keep = set(map(tuple, keep_heads))

    def ablater(layer: int, name: str):
        ablated = [head for head in range(n_heads) if (layer, head) not in keep]

        def put(z: Tensor, hook: Any) -> Tensor:
            z = z.clone()
            z[:, :, ablated] = means[name][None, :, ablated]
            return z
        return put

    with torch.no_grad():
        logits = model.run_with_hooks(
            tokens, fwd_hooks=[(name, ablater(layer, name)) for layer, name in enumerate(names)])
    return logit_diff(logits, answer_tokens)


# ------------------------------------------------------------------------------ findings
def end_takeover_layer(end_scores: Tensor) -> int:
    """The first layer whose score (denoising ``hook_resid_pre`` at END) is at least 0.5."""
    above = (end_scores >= 0.5).nonzero()
    return int(above[0]) if len(above) else len(end_scores)


def top_mlp_layer(mlp_scores: Tensor) -> int:
    """The layer with the largest (signed) MLP denoising score."""
    return int(mlp_scores.argmax())
