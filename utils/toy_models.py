"""Small TransformerLens-native models that the course builds, trains, saves and ships itself.

TransformerLens 4.3 has no ``HookedTransformer``. A tiny model with random weights comes from
``TransformerBridge.boot_native(cfg_dict)`` — no download, no tokenizer. This module wraps that:

* :func:`attn_only_config` — a plain, JSON-serialisable config dict (attention-only by default;
  ``attn_only=False, d_mlp=...`` adds MLPs).
* :func:`make_toy_model` — a freshly initialised model, deterministic from ``seed``, in eval mode.
* :func:`save_toy_model` / :func:`load_toy_model` — ``model.safetensors`` + ``config.json`` +
  ``SHA256SUMS`` (``sha256sum -c SHA256SUMS`` format). Loading verifies every checksum first and
  raises :class:`WeightsChecksumError` naming the bad file and how to restore it.

Shipped models live in ``utils/weights/<name>/`` (``load_toy_model("attn_only_2l")``).

What works on a native model, as in classic TransformerLens (checked on TL 4.3.0)
--------------------------------------------------------------------------------
* ``run_with_cache`` / ``run_with_hooks`` with the familiar names: ``hook_embed``,
  ``hook_pos_embed``, ``blocks.{l}.hook_resid_pre`` / ``hook_resid_post`` / ``hook_attn_out``,
  ``blocks.{l}.attn.hook_q`` / ``hook_k`` / ``hook_v`` / ``hook_z`` (``[batch, pos, head,
  d_head]``), ``blocks.{l}.attn.hook_pattern`` (``[batch, head, dest, src]``),
  ``blocks.{l}.ln1.hook_scale`` / ``hook_normalized``, ``ln_final.hook_scale`` /
  ``hook_normalized``; ``cache["pattern", 0]`` shorthand. Hooks on ``hook_pattern``, ``hook_q``
  and ``hook_z`` really change the forward pass (they are applied inside the attention).
* Weights: ``W_Q``/``W_K``/``W_V`` ``[layer, head, d_model, d_head]``, ``W_O``
  ``[layer, head, d_head, d_model]``, ``b_Q``/``b_K``/``b_V``/``b_O``, ``W_E`` ``[d_vocab,
  d_model]``, ``W_pos`` ``[n_ctx, d_model]``, ``W_U`` ``[d_model, d_vocab]``, ``b_U``;
  ``model.QK`` / ``model.OV`` are ``FactoredMatrix`` ``[layer, head, d_model, d_model]``.
  ``hook_attn_out == hook_z @ W_O + b_O`` exactly. LayerNorm weights are *not* folded on load:
  ``hook_q == (ln1.hook_normalized * ln1.weight + ln1.bias) @ W_Q + b_Q`` (weights as named in
  ``state_dict()``), which equals
  ``hook_normalized @ W_Q + b_Q`` only after ``model.enable_compatibility_mode()`` folds them.
* ``model(tokens, return_type="loss")`` and ``loss_per_token=True``; ``cache.decompose_resid``
  (labels ``embed, pos_embed, 0_attn_out, 1_attn_out``), ``cache.accumulated_resid()``.

What differs from classic TransformerLens (TL 4.3.0 native models)
------------------------------------------------------------------
* ``boot_native`` returns a model in **training mode**; ``transformer_lens.patching`` refuses to
  run on it. Everything here returns models in eval mode.
* ``blocks.{l}.attn.hook_attn_scores`` holds the **post-softmax pattern** (identical to
  ``hook_pattern``, zeros above the diagonal), not the pre-softmax scores, and editing it has no
  effect on the forward pass. Recompute scores from ``hook_q``/``hook_k`` if you need them:
  ``einsum(q, k, "b q h e, b k h e -> b h q k") / sqrt(d_head)``.
* No ``hook_result`` (``set_use_attn_result`` is unsupported on native attention); use
  ``hook_z`` with ``W_O`` per head. Attention-only models have no ``hook_resid_mid`` /
  ``hook_mlp_out`` (so ``accumulated_resid(incl_mid=True)`` fails).
* The cache also holds bridge aliases (``blocks.0.hook_in``, ``blocks.0.attn.q.hook_out``,
  ``embed.hook_out`` …): ~63 names for a 2-layer model rather than ~30. Use ``names_filter``.
* ``unembed.bias`` / ``b_U`` is a non-trainable all-zero buffer (the native head has no bias),
  but it is in ``state_dict()``, so it is saved and must be present when loading.
* No tokenizer: ``to_tokens`` / ``to_str_tokens`` / string inputs fail. Feed token tensors.
* ``TransformerBridgeConfig.from_dict`` silently **drops unknown keys** (a typo such as
  ``"n_head"`` is ignored, not an error); :func:`make_toy_model` checks keys itself.
* ``boot_native`` without a ``seed`` initialises from (and advances) the global torch RNG;
  with a ``seed`` it uses its own generator and leaves the global RNG alone. Here a seed is
  always given.
* Parameter names differ between ``named_parameters()`` (bridge-internal
  ``layers.0._original_component.attn…``) and ``state_dict()`` (clean TL keys:
  ``blocks.0.attn.q.weight``, ``embed.weight``, ``unembed.weight`` …). Save ``state_dict()``.
* ``cfg.to_dict()`` is not JSON-serialisable (a ``torch.dtype``): keep the small dict you built
  the model from (``config.json`` stores exactly that).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from utils import weights_files
from utils.paths import WEIGHTS_DIR
from utils.tl_compat import stop_after_last_block
from utils.weights_files import (
    CHECKSUM_FILE,
    WeightsChecksumError,
    display_path,
    write_checksums,
    write_json,
)

__all__ = [
    "WeightsChecksumError",
    "attn_only_config",
    "load_toy_model",
    "make_toy_model",
    "read_toy_model_info",
    "save_toy_model",
    "verify_checksums",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "mech-interp-course/toy-model"
FORMAT_VERSION = 1


def attn_only_config(
    n_layers: int = 2,
    d_model: int = 128,
    n_heads: int = 4,
    d_head: int = 32,
    n_ctx: int = 128,
    d_vocab: int = 512,
    *,
    attn_only: bool = True,
    d_mlp: int | None = None,
    act_fn: str = "gelu",
    normalization_type: str | None = "LN",
    positional_embedding_type: str = "standard",
    init_mode: str = "gpt2",
    model_name: str = "toy",
) -> dict[str, Any]:
    """A plain config dict for ``TransformerBridge.boot_native`` (JSON-serialisable).

    Defaults: 2 layers, d_model 128, 4 heads of 32, context 128, vocabulary 512, learned
    positional embeddings (``"standard"``), LayerNorm, attention only. With
    ``attn_only=False`` each block gets an MLP of width ``d_mlp`` (default ``4 * d_model``).
    """
    if attn_only and d_mlp is not None:
        raise ValueError("d_mlp is only meaningful with attn_only=False")
    cfg: dict[str, Any] = {
        "model_name": model_name,
        "n_layers": n_layers,
        "d_model": d_model,
        "n_heads": n_heads,
        "d_head": d_head,
        "n_ctx": n_ctx,
        "d_vocab": d_vocab,
        "attn_only": attn_only,
        "normalization_type": normalization_type,
        "positional_embedding_type": positional_embedding_type,
        "init_mode": init_mode,
        "device": "cpu",
    }
    if not attn_only:
        cfg["d_mlp"] = d_mlp if d_mlp is not None else 4 * d_model
        cfg["act_fn"] = act_fn
    return cfg


def _valid_config_keys() -> set[str]:
    from transformer_lens.config import TransformerBridgeConfig, TransformerLensConfig

    keys: set[str] = set()
    for cls in (TransformerBridgeConfig, TransformerLensConfig):
        keys.update(inspect.signature(cls).parameters)
    keys.discard("kwargs")
    return keys


def _boot(cfg: dict[str, Any], seed: int) -> Any:
    """``boot_native`` with a key check (TL silently drops unknown keys) and a seed."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.sources.native import boot

    unknown = sorted(set(cfg) - _valid_config_keys())
    if unknown:
        raise ValueError(f"unknown config keys for a native TransformerBridge: {unknown}")
    if "seed" in cfg:
        raise ValueError("pass the seed to make_toy_model(cfg, seed), not inside cfg")
    model = boot(dict(cfg, seed=int(seed)), tokenizer=None)
    assert isinstance(model, TransformerBridge)
    return stop_after_last_block(model).eval()


def make_toy_model(cfg: dict[str, Any], seed: int) -> Any:
    """A freshly initialised ``TransformerBridge`` for ``cfg``, in eval mode.

    Initialisation is deterministic from ``seed`` (TL's ``gpt2`` init: N(0, 0.8/sqrt(d_model)),
    output projections scaled by 1/sqrt(2 n_layers), norms at 1, biases at 0) and independent
    of the global RNG, which is left untouched.
    """
    return _boot(cfg, seed)


# --------------------------------------------------------------------------- checksums


def verify_checksums(directory: str | os.PathLike[str]) -> None:
    """Check every file listed in ``directory/SHA256SUMS``; raise :class:`WeightsChecksumError`.

    The weights and config must be listed. Files present but not listed are ignored.
    """
    directory = Path(directory)
    weights_files.verify_checksums(directory, required=(WEIGHTS_FILE, CONFIG_FILE),
                                   rebuild_command=_rebuild_command(directory))


def _rebuild_command(directory: Path) -> str | None:
    """How a shipped model is rebuilt: the command its training log records (``None`` for a
    folder outside ``utils/weights/``)."""
    if directory.resolve().parent != WEIGHTS_DIR.resolve():
        return None
    try:
        return json.loads((directory / "training_log.json").read_text())["command"]
    except (OSError, ValueError, KeyError):
        return f"python -m utils.training --retrain {directory.name}"


# --------------------------------------------------------------------------- save / load


def save_toy_model(
    model: Any,
    cfg: dict[str, Any],
    directory: str | os.PathLike[str],
    extra_metadata: dict[str, Any] | None = None,
    extra_json_files: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` (+ any ``extra_json_files``) and SHA256SUMS.

    ``cfg`` is the plain dict the model was built from (``model.cfg`` cannot be serialised).
    ``extra_metadata`` (JSON-serialisable) goes into ``config.json`` under ``"metadata"``;
    ``extra_json_files`` maps file names (e.g. ``"training_log.json"``) to JSON-serialisable
    objects written next to the weights. ``SHA256SUMS`` then covers every file in the folder.
    Output bytes are deterministic: identical weights give identical checksums.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json.dumps(cfg)  # fail early, before writing anything, if cfg is not serialisable
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    config_doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": cfg,
        "metadata": extra_metadata or {},
    }
    write_json(directory / CONFIG_FILE, config_doc)
    for name, obj in (extra_json_files or {}).items():
        if Path(name).name != name or name in (WEIGHTS_FILE, CONFIG_FILE, CHECKSUM_FILE):
            raise ValueError(f"bad extra file name {name!r}")
        write_json(directory / name, obj)
    write_checksums(directory)
    return directory


def _resolve(name_or_dir: str | os.PathLike[str]) -> Path:
    path = Path(name_or_dir)
    if isinstance(name_or_dir, str) and os.sep not in name_or_dir and not path.is_dir():
        path = WEIGHTS_DIR / name_or_dir
    if not path.is_dir():
        shipped = sorted(
            p.name for p in WEIGHTS_DIR.glob("*") if p.is_dir() and not p.name.startswith(".")
        )
        raise FileNotFoundError(
            f"no toy model at {display_path(path)}; shipped models: {shipped}"
        )
    return path


def read_toy_model_info(name_or_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``config.json`` of a saved model: ``{"config": {...}, "metadata": {...}, ...}``.

    Does not verify checksums (``load_toy_model`` does).
    """
    directory = _resolve(name_or_dir)
    doc = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT_NAME:
        raise ValueError(f"{display_path(directory / CONFIG_FILE)} is not a toy-model config")
    return doc


def load_toy_model(name_or_dir: str | os.PathLike[str], *, verify: bool = True) -> Any:
    """Load a saved toy model (``utils/weights/<name>/`` or a directory), in eval mode.

    Checksums are verified first (:class:`WeightsChecksumError` on any mismatch).
    """
    directory = _resolve(name_or_dir)
    if verify:
        verify_checksums(directory)
    cfg = read_toy_model_info(directory)["config"]
    model = _boot(cfg, seed=0)  # the seed only avoids touching the global RNG
    state = load_file(str(directory / WEIGHTS_FILE), device="cpu")
    model.load_state_dict(state, strict=True)
    return model.eval()


def state_dicts_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bit-for-bit equality of two state dicts (same keys, dtypes, shapes and values)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a
    )
