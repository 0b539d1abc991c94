"""Workarounds for TransformerLens 4.3 behaviour that is broken or surprising.

Each function says what is broken; ``tests/test_tl_compat.py`` asserts that the raw TL call
still misbehaves (so the test fails, as a reminder, once TL fixes it) and that the
workaround gives the right answer. Verified on transformer-lens 4.3.0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "accumulated_resid",
    "ensure_eval",
    "expand_kv_heads",
    "get_act_patch_block_every",
    "has_resid_mid",
    "run_from_layer",
    "stop_after_last_block",
]


def has_resid_mid(model: Any) -> bool:
    """Whether the blocks have a ``hook_resid_mid`` (False for attention-only models)."""
    return not getattr(model.cfg, "attn_only", False) and "blocks.0.hook_resid_mid" in (
        model.hook_dict
    )


_STOPPABLE_METHODS = ("forward", "run_with_cache", "run_with_hooks")


def _raise_stop(tensor: torch.Tensor, hook: Any) -> None:
    from transformer_lens.model_bridge.exceptions import StopAtLayerException

    raise StopAtLayerException(tensor)


def _call_stopping_after_last_block(model: Any, method_name: str, args: tuple,
                                    kwargs: dict) -> Any:
    method = getattr(type(model), method_name)
    if kwargs.get("stop_at_layer") != len(model.blocks):
        return method(model, *args, **kwargs)
    kwargs = {**kwargs, "stop_at_layer": None}
    with model.hooks(fwd_hooks=[("ln_final.hook_in", _raise_stop)]):
        return method(model, *args, **kwargs)


def _stopping_after_last_block(method_name: str) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _call_stopping_after_last_block(self, method_name, args, kwargs)

    call.__name__ = method_name
    call.__doc__ = getattr(getattr(torch.nn.Module, method_name, None), "__doc__", None)
    return call


def stop_after_last_block(model: Any) -> Any:
    """Make ``stop_at_layer=n_layers`` return the final residual stream, as TL 3 did.

    Broken/surprising: the bridge only stops for ``0 <= stop_at_layer < n_layers``; with
    ``stop_at_layer=n_layers`` (what ``max(layers) + 1`` gives when the last layer is among
    them) it silently runs ``ln_final`` and the unembedding and returns logits, which for
    SmolLM2 (49,152-token vocabulary) costs ~120 MB per 50x7-token batch for nothing. The
    patched ``forward``, ``run_with_cache`` and ``run_with_hooks`` of ``model`` stop at
    ``ln_final``'s input instead (the residual stream after the last block). Returns
    ``model``; the patch is per instance and survives ``copy.deepcopy``.
    """
    import types

    for name in _STOPPABLE_METHODS:
        setattr(model, name, types.MethodType(_stopping_after_last_block(name), model))
    return model


def _block_list(model: Any) -> tuple[Any, str]:
    """(owner, attribute name) of the underlying model's list of blocks (the bridge's blocks)."""
    for name, module in model.original_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) and module[0] is model.blocks[0]:
            owner_name, _, attr = name.rpartition(".")
            return model.original_model.get_submodule(owner_name), attr
    raise NotImplementedError(f"cannot find the list of blocks inside {type(model).__name__}")


def run_from_layer(model: Any, resid: torch.Tensor, layer: int,
                   positions: torch.Tensor | None = None) -> torch.Tensor:
    """Logits from ``resid [batch, pos, d_model]``, the residual stream entering block
    ``layer`` (that is, ``blocks.{layer - 1}.hook_resid_post``), running blocks ``layer..``
    only: ``[batch, pos, d_vocab]``, or with ``positions [batch]`` the logits at position
    ``positions[i]`` of row ``i`` only, ``[batch, d_vocab]``. ``layer == n_layers`` runs just
    the final norm and the unembedding.

    Surprising: ``forward(resid, start_at_layer=layer)`` gives the same logits but still runs
    blocks ``0..layer-1`` (on ``resid`` as if it were the embedding) and discards what they
    produce, so it costs a full forward pass. Here the lower blocks are taken out of the
    underlying model for the call, so an experiment that edits the residual stream after
    layer 26 of 30 in many ways pays for the first 27 blocks once, not every time. Hooks on
    the remaining blocks still fire. ``positions`` skips the unembedding elsewhere (for
    SmolLM2's 49,152-token vocabulary, most of the cost of the last few blocks).
    """
    n_layers = len(model.blocks)
    if not 0 <= layer <= n_layers:
        raise ValueError(f"layer must be in 0..{n_layers}, got {layer}")
    if resid.ndim != 3 or resid.shape[-1] != model.cfg.d_model:
        raise ValueError(f"expected resid [batch, pos, d_model={model.cfg.d_model}], "
                         f"got {list(resid.shape)}")
    final = resid  # the residual stream after the last block, once the blocks have run
    if layer < n_layers:
        with model.hooks(fwd_hooks=[("ln_final.hook_in", _raise_stop)]):
            final = _with_blocks_from(model, layer, lambda: model(resid, start_at_layer=layer))
    if positions is not None:
        final = final[torch.arange(final.shape[0]), positions][:, None]
    logits = model.unembed(model.ln_final(final))
    return logits[:, 0] if positions is not None else logits


def _with_blocks_from(model: Any, layer: int, call: Callable[[], Any]) -> Any:
    """``call()`` with blocks ``0..layer-1`` removed from the underlying model."""
    owner, attr = _block_list(model)
    blocks = getattr(owner, attr)
    setattr(owner, attr, torch.nn.ModuleList(list(blocks)[layer:]))
    try:
        return call()
    finally:
        setattr(owner, attr, blocks)


def ensure_eval(model: Any) -> Any:
    """Put ``model`` (and every submodule) in eval mode and return it.

    Broken/surprising: ``TransformerBridge.boot_native`` returns the model in *training*
    mode, and every ``transformer_lens.patching`` function raises ``ValueError: activation
    patching requires the model and all submodules to be in evaluation mode``.
    """
    model.eval()
    return model


def accumulated_resid(
    cache: Any,
    model: Any,
    layer: int | None = None,
    incl_mid: bool = False,
    apply_ln: bool = False,
    pos_slice: Any = None,
    return_labels: bool = False,
) -> Any:
    """``cache.accumulated_resid`` that also works on attention-only models.

    Broken: ``cache.accumulated_resid(incl_mid=True)`` raises ``KeyError:
    'blocks.0.hook_resid_mid'`` on attention-only models, which have no resid_mid. There the
    "mid" stream would equal the block's output (the next ``resid_pre``), so it is simply
    left out: the result is the same as ``incl_mid=False``. On normal models this is a plain
    pass-through. Returns ``[n_components, batch, pos, d_model]`` (and labels if asked).
    """
    if incl_mid and not has_resid_mid(model):
        incl_mid = False
    kwargs: dict[str, Any] = {
        "layer": layer,
        "incl_mid": incl_mid,
        "apply_ln": apply_ln,
        "return_labels": return_labels,
    }
    if pos_slice is not None:
        kwargs["pos_slice"] = pos_slice
    return cache.accumulated_resid(**kwargs)


def get_act_patch_block_every(
    model: Any,
    corrupted_tokens: torch.Tensor,
    clean_cache: Any,
    metric: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``patching.get_act_patch_block_every`` that also works on attention-only models.

    Broken: on attention-only models TL raises ``KeyError: 'blocks.0.hook_mlp_out'``. Here
    the result is ``[2, n_layers, pos]`` (resid_pre, attn_out) for attention-only models and
    TL's ``[3, n_layers, pos]`` (resid_pre, attn_out, mlp_out) otherwise. Puts the model in
    eval mode first (see :func:`ensure_eval`).
    """
    from transformer_lens import patching

    ensure_eval(model)
    if not getattr(model.cfg, "attn_only", False):
        return patching.get_act_patch_block_every(model, corrupted_tokens, clean_cache, metric)
    parts = [
        patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric),
        patching.get_act_patch_attn_out(model, corrupted_tokens, clean_cache, metric),
    ]
    return torch.stack(parts, dim=0)


def expand_kv_heads(w: torch.Tensor, n_heads: int = 9, dim: int = -3) -> torch.Tensor:
    """Repeat grouped key/value heads so there is one per query head (GQA).

    Surprising: on GQA models (SmolLM2: 9 query heads, 3 KV heads) ``model.W_K`` / ``W_V``
    (``[n_layers, 3, d_model, d_head]``), ``b_K`` / ``b_V`` and the ``hook_k`` / ``hook_v``
    activations (``[batch, pos, 3, d_head]``) keep 3 heads, so ``W_Q @ W_K`` style code
    breaks. Query head ``h`` reads KV head ``h // (n_heads // n_kv)`` (HF's ``repeat_kv``):
    that is ``repeat_interleave``, not ``repeat``. ``dim`` is the head axis: -3 for weights
    (``W_K``, ``W_V``), -2 for ``hook_k`` / ``hook_v`` activations and for ``b_K`` / ``b_V``.
    """
    n_kv = w.shape[dim]
    if n_kv == n_heads:
        return w
    if n_heads % n_kv:
        raise ValueError(f"cannot expand {n_kv} KV heads to {n_heads} query heads")
    return w.repeat_interleave(n_heads // n_kv, dim=dim)
