"""The sparse autoencoder the course ships for SmolLM2, and the script that trains it.

Chapter 06 trains small SAEs by hand; a useful SAE on SmolLM2's residual stream takes far
more CPU time than a notebook's budget, so one is shipped pre-trained:
``utils/weights/sae_smollm2_l12/`` holds ``sae.safetensors`` (fp16, the four tensors of the
chapter's SAE dict), ``config.json``, ``training_log.json`` and ``SHA256SUMS``.

* :func:`load_pretrained_sae` — the SAE as a dict of fp32 tensors (``W_enc [d_in, d_sae]``,
  ``b_enc``, ``W_dec [d_sae, d_in]`` with unit-norm rows, ``b_dec``) plus its config;
  checksums are verified first.
* :func:`shipped_sae_config` — only the recipe (``config.json``): cheap, loads no weights
  and needs no reference code, so the chapter's setup cell can read its hook from it.
* :func:`collect_activations` — residual-stream activations of SmolLM2 at one hook, batched,
  with ``stop_at_layer`` and a ``names_filter`` (BOS positions dropped on request).
* :func:`corpus_split` — the (train, held-out) documents the shipped SAE was trained and
  evaluated on.
* ``python -m utils.sae --retrain`` — rebuilds the shipped SAE deterministically (seeded;
  tokens from :mod:`utils.text_corpus`). ``--check`` verifies the shipped files and
  re-measures the quality figures on held-out text.

How long a retrain takes: the shipped run recorded ``collect_seconds`` 972.6 (activations of
480 rows of 128 tokens, about 2 s a row) and ``train_seconds`` 3012.4 (1,000 steps) in
``config.json``: about 16 + 50 minutes. That machine was evidently loaded: the README's
``make bench`` (2 idle cores) executes all of chapter 06, which collects the same activations
for 96 rows and trains a smaller SAE, in under a minute. Expect less on an idle machine; no
idle timing of a full retrain has been recorded.

Training text: the first ``train_sequences`` = 480 rows of the training split's token
stream. The pydoc help topics come first in :func:`utils.text_corpus.python_docs_corpus` and
their training documents alone give 820 rows, so the shipped SAE saw pydoc topics only (no
docstrings); a pydoc topic held out by ``split_documents(pydoc_topics(), 0.1, seed=0)`` (the
chapter's held-out text) is held out here too, since the split is decided per document.

The maths (encoder, TopK, training loop, dead-latent resampling, evaluation) lives in
:mod:`utils.reference.sparse_autoencoders`, which is blocked while answers are graded; this
module imports it only inside the functions that train or evaluate.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from utils import weights_files
from utils.paths import WEIGHTS_DIR
from utils.weights_files import (  # noqa: F401  (WeightsChecksumError: public here too)
    CHECKSUM_FILE,
    WeightsChecksumError,
    atomic_folder,
    write_checksums,
)

DEFAULT_NAME = "sae_smollm2_l12"
WEIGHTS_FILE = "sae.safetensors"
SUMS_FILE = CHECKSUM_FILE
SAE_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")

# Everything that defines the shipped SAE; ``--retrain`` reproduces it from these.
RECIPE: dict[str, Any] = {
    "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "hook_name": "blocks.12.hook_resid_pre",
    "layer": 12,
    "d_in": 576,
    "d_sae": 2304,
    "k": 32,
    "seq_len": 128,
    "train_sequences": 480,
    "eval_sequences": 32,
    "steps": 1000,
    "batch_size": 1024,
    "lr": 1e-3,
    "resample_at": [250, 500],
    "seed": 0,
    "corpus": "utils.text_corpus.python_docs_corpus(), split_documents(test_fraction=0.1, seed=0)",
}


def sae_dir(name: str = DEFAULT_NAME) -> Path:
    return WEIGHTS_DIR / name


def verify_checksums(folder: Path) -> None:
    """Raise :class:`WeightsChecksumError` unless every file listed in SHA256SUMS matches."""
    weights_files.verify_checksums(folder, required=(WEIGHTS_FILE,),
                                   rebuild_command="python -m utils.sae --retrain")


def shipped_sae_config(name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The shipped SAE's ``config.json`` (recipe, hook, quality figures), without its weights.

    Cheap and free of reference code: the chapter's setup cell takes ``layer`` and
    ``hook_name`` from it. Checksums are verified when the weights are loaded
    (:func:`load_pretrained_sae`).
    """
    return json.loads((sae_dir(name) / "config.json").read_text())


def load_pretrained_sae(name: str = DEFAULT_NAME) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The shipped SAE as ``(sae dict of fp32 tensors, config dict)``; checksums verified."""
    from safetensors.torch import load_file

    folder = sae_dir(name)
    verify_checksums(folder)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    sae = {key: tensors[key].float() for key in SAE_KEYS}
    config = json.loads((folder / "config.json").read_text())
    return sae, config


def save_sae(sae: dict[str, Tensor], config: dict[str, Any], log: dict[str, Any],
             folder: Path) -> None:
    """Write weights (fp16), config, training log and SHA256SUMS as the folder ``folder``.

    The folder is replaced as a whole, and only once every file is written.
    """
    from safetensors.torch import save_file

    with atomic_folder(folder) as tmp:
        save_file({key: sae[key].detach().to(torch.float16).contiguous() for key in SAE_KEYS},
                  str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (tmp / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
        write_checksums(tmp, [WEIGHTS_FILE, "config.json", "training_log.json"])


def collect_activations(model, tokens: Int[Tensor, "batch pos"], hook_name: str,
                        batch_size: int = 16, drop_bos: bool = True, progress: bool = True,
                        dtype: torch.dtype = torch.float32
                        ) -> Float[Tensor, "batch pos d_model"]:
    """Activations at ``hook_name`` for every row of ``tokens``, ``batch_size`` rows at a time.

    Runs the model only as far as the hook's layer (``stop_at_layer``) and caches only that
    hook. With ``drop_bos`` the first position is left out (``[batch, pos - 1, d_model]``):
    the residual stream at BOS has a norm hundreds of times larger than elsewhere.
    """
    from tqdm.auto import tqdm

    layer = int(hook_name.split(".")[1]) if hook_name.startswith("blocks.") else None
    # (TL 4.3's bridge fires block L's input hooks only if block L runs: stop after it.)
    stop = None if layer is None else layer + 1
    chunks = []
    starts = range(0, tokens.shape[0], batch_size)
    for start in tqdm(starts, desc=f"activations at {hook_name}", disable=not progress):
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens[start:start + batch_size],
                                            names_filter=[hook_name], stop_at_layer=stop)
        acts = cache[hook_name]
        chunks.append((acts[:, 1:] if drop_bos else acts).to(dtype))
        del cache
    return torch.cat(chunks)


def fold_input_scale(sae: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """An SAE trained on ``x * scale`` rewritten to act on ``x`` (decoder rows stay unit-norm).

    Latents shrink by ``1 / scale``; the TopK choice and the reconstruction (in the original
    units) are unchanged.
    """
    return {"W_enc": sae["W_enc"].clone(), "b_enc": sae["b_enc"] / scale,
            "W_dec": sae["W_dec"].clone(), "b_dec": sae["b_dec"] / scale}


def corpus_split() -> tuple[list[str], list[str]]:
    """(train, held-out) documents of the shipped SAE: ``RECIPE["corpus"]``."""
    from utils.text_corpus import python_docs_corpus, split_documents

    return split_documents(python_docs_corpus(), test_fraction=0.1, seed=0)


def _corpus_tokens(model, recipe: dict[str, Any]) -> tuple[Tensor, Tensor]:
    from utils.text_corpus import token_sequences

    train_docs, test_docs = corpus_split()
    bos = model.tokenizer.bos_token_id
    bos = 1 if bos is None else bos
    train = token_sequences(model.tokenizer, train_docs, recipe["seq_len"],
                            max_sequences=recipe["train_sequences"], bos_token_id=bos)
    test = token_sequences(model.tokenizer, test_docs, recipe["seq_len"],
                           max_sequences=recipe["eval_sequences"], bos_token_id=bos)
    return train, test


def retrain(recipe: dict[str, Any] = RECIPE, folder: Path | None = None,
            verbose: bool = True) -> dict[str, Any]:
    """Rebuild the shipped SAE from ``recipe`` (deterministic for a given machine/torch)."""
    from tqdm.auto import tqdm

    from utils.reference import sparse_autoencoders as ref
    from utils.smollm2 import load_smollm2

    folder = sae_dir() if folder is None else folder
    torch.manual_seed(recipe["seed"])
    model = load_smollm2()
    train_tokens, eval_tokens = _corpus_tokens(model, recipe)
    t0 = time.perf_counter()
    acts = collect_activations(model, train_tokens, recipe["hook_name"], progress=verbose)
    acts = acts.reshape(-1, acts.shape[-1])
    collect_s = time.perf_counter() - t0
    # Train on activations scaled to mean squared norm d_in (scale-free hyperparameters).
    scale = math.sqrt(recipe["d_in"] / acts.pow(2).sum(-1).mean().item())
    acts = acts * scale
    gen = torch.Generator().manual_seed(recipe["seed"])
    sae = ref.init_sae(acts, recipe["d_sae"], gen)
    log: dict[str, Any] = {"loss": [], "resampled": []}
    steps_done = 0
    t1 = time.perf_counter()
    bar = tqdm(total=recipe["steps"], desc="training SAE", disable=not verbose)
    bounds = [*recipe["resample_at"], recipe["steps"]]
    for phase, end in enumerate(bounds):
        n = end - steps_done

        def on_step(step, out, offset=steps_done):
            bar.update(1)
            if (offset + step) % 50 == 0:
                log["loss"].append([offset + step, round(out["loss"].item(), 5)])

        trained = ref.train_sae(acts, recipe["d_sae"], n, recipe["batch_size"], recipe["lr"],
                                0.0, recipe["k"], seed=recipe["seed"] + phase, init=sae,
                                on_step=on_step)
        sae = {key: trained[key] for key in SAE_KEYS}
        steps_done = end
        if end in recipe["resample_at"]:
            sample = acts[torch.randint(0, acts.shape[0], (16384,), generator=gen)]
            latents = ref.sae_encode(sample, sae, recipe["k"])
            new = ref.resample_dead_latents(sample, latents, sae)
            log["resampled"].append([end, int(new["dead"].sum())])
            sae = {key: new[key] for key in SAE_KEYS}
    bar.close()
    train_s = time.perf_counter() - t1
    sae = fold_input_scale(sae, scale)
    sae16 = {key: value.to(torch.float16).float() for key, value in sae.items()}
    metrics = evaluate(model, eval_tokens, sae16, recipe)
    config = {**recipe, "input_scale_folded": scale, "metrics": metrics,
              "collect_seconds": round(collect_s, 1), "train_seconds": round(train_s, 1),
              "train_tokens": int(acts.shape[0]), "torch": torch.__version__}
    save_sae(sae, config, log, folder)
    if verbose:
        print(json.dumps(metrics, indent=2))
        print(f"collect {collect_s:.0f} s, train {train_s:.0f} s -> {folder}")
    return config


def evaluate(model, tokens: Int[Tensor, "batch pos"], sae: dict[str, Tensor],
             recipe: dict[str, Any], batch_size: int = 8) -> dict[str, float]:
    """Quality figures on held-out rows: L0, FVU, CE recovered, dead fraction."""
    from utils.reference import sparse_autoencoders as ref

    rows = []
    for start in range(0, tokens.shape[0], batch_size):
        rows.append(ref.evaluate_sae(model, tokens[start:start + batch_size],
                                     recipe["hook_name"], sae, recipe["k"]))
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
    mean["ce_recovered"] = (mean["ce_zero"] - mean["ce_sae"]) / (mean["ce_zero"]
                                                                 - mean["ce_clean"])
    acts = collect_activations(model, tokens, recipe["hook_name"], progress=False)
    latents = ref.sae_encode(acts.reshape(-1, acts.shape[-1]), sae, recipe["k"])
    mean["dead_fraction"] = (~(latents > 0).any(0)).float().mean().item()
    return {key: round(value, 4) for key, value in mean.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.sae",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--retrain", action="store_true", help="rebuild the shipped SAE")
    parser.add_argument("--check", action="store_true",
                        help="verify checksums and re-measure quality on held-out text")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: shipped)")
    args = parser.parse_args(argv)
    if args.retrain:
        retrain(folder=args.out)
    if args.check:
        from utils.smollm2 import load_smollm2

        folder = args.out or sae_dir()
        verify_checksums(folder)
        sae, config = load_pretrained_sae(folder.name) if args.out is None else (None, None)
        if sae is None:
            from safetensors.torch import load_file

            raw = load_file(str(folder / WEIGHTS_FILE))
            sae = {key: raw[key].float() for key in SAE_KEYS}
            config = json.loads((folder / "config.json").read_text())
        model = load_smollm2()
        _, eval_tokens = _corpus_tokens(model, config)
        print(json.dumps(evaluate(model, eval_tokens, sae, config), indent=2))
    if not (args.retrain or args.check):
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
