"""Deterministic training of the course's small attention-only models (and the CLI that
rebuilds the shipped ones).

    python -m utils.training --retrain attn_only_2l

retrains ``utils/weights/attn_only_2l/`` from scratch with the recipe in :data:`RECIPES` and
writes ``model.safetensors``, ``config.json``, ``training_log.json`` and ``SHA256SUMS``.

Determinism: :func:`train_attn_only` runs under :func:`deterministic_torch`
(``torch.use_deterministic_algorithms(True)`` and a fixed intra-op thread count, both restored
afterwards), draws initial weights and every batch from explicitly seeded generators, and
never touches the global RNG. Same seed + same machine (and torch build) → bit-identical
weights. The thread count is pinned because CPU reductions split work by thread, so a
different thread count can change the last bits.

Training data: each batch is :func:`utils.data.training_mixture` — in the shipped recipe every
row is a random block tiled with a random period of 8 to 63 tokens — with a BOS token (id 0) at
position 0 of every row. Induction is the only way to predict the tiled rows, so a
previous-token head (layer 0) and an induction head (layer 1) form after a sharp phase change.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from utils.data import repeated_random_tokens, training_mixture
from utils.head_scores import induction_score, previous_token_score
from utils.paths import WEIGHTS_DIR
from utils.toy_models import attn_only_config, make_toy_model, save_toy_model
from utils.weights_files import atomic_folder, environment

__all__ = [
    "RECIPES",
    "TrainResult",
    "TrainingConfig",
    "deterministic_torch",
    "evaluate_heads",
    "retrain",
    "train_attn_only",
]

#: Held-out batch: repeated random tokens drawn with this fixed seed (never used for training).
HELDOUT_SEED = 2_147_483_647

@dataclass(frozen=True)
class TrainingConfig:
    """How :func:`train_attn_only` trains: optimisation, data and evaluation settings.

    ``steps`` AdamW steps (``betas=(0.9, 0.99)``) at learning rate ``lr`` after a linear
    warm-up over ``warmup_steps``, on batches of ``batch_size`` rows, gradient norms clipped to
    ``grad_clip`` (``None``: no clipping). Data: :func:`training_mixture`, a
    ``repeat_fraction`` of the rows a random block tiled with a period drawn from
    ``min_period..max_period``, ``bos_token`` at position 0 (``None``: no BOS). Evaluation
    every ``log_every`` steps on ``heldout_batch`` rows of repeated random tokens, each half
    ``heldout_half_len`` long (``None``: up to 50, as fits the context). ``num_threads`` pins
    the thread count for determinism (``None`` leaves it alone). Change one setting with
    ``dataclasses.replace(config, steps=600)``.
    """

    steps: int
    seed: int
    lr: float = 1e-3
    batch_size: int = 32
    log_every: int = 50
    weight_decay: float = 0.0
    warmup_steps: int = 50
    grad_clip: float | None = 1.0
    repeat_fraction: float = 0.5
    min_period: int = 4
    max_period: int = 64
    bos_token: int | None = 0
    heldout_batch: int = 32
    heldout_half_len: int | None = None
    num_threads: int | None = None


#: Shipped models: everything needed to rebuild them bit-for-bit on the same machine.
RECIPES: dict[str, dict[str, Any]] = {
    "attn_only_2l": {
        "cfg": attn_only_config(
            n_layers=2, d_model=128, n_heads=4, d_head=32, n_ctx=128, d_vocab=512,
            model_name="attn_only_2l",
        ),
        "train": TrainingConfig(
            steps=1500, seed=0, lr=1e-3, batch_size=32, log_every=50, weight_decay=0.0,
            warmup_steps=50, grad_clip=1.0,
            # Every row a random block tiled with a random period: with half the rows uniform
            # random tokens (the first recipe tried) no head formed within 2,500 steps.
            repeat_fraction=1.0, min_period=8, max_period=63, bos_token=0, num_threads=None,
        ),
        # Acceptance thresholds checked on fresh repeated random tokens after training.
        "require": {"prev_token_layer0": 0.4, "induction_layer1": 0.6},
    },
}


@contextlib.contextmanager
def deterministic_torch(num_threads: int | None = None) -> Iterator[None]:
    """Deterministic algorithms on (and optionally a fixed thread count) inside the block.

    The previous ``use_deterministic_algorithms`` setting (including ``warn_only``) and the
    previous thread count are restored on exit, even after an exception.
    """
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        if num_threads is not None:
            torch.set_num_threads(prev_threads)


@dataclass
class TrainResult:
    """What :func:`train_attn_only` returns. ``model`` is in eval mode.

    ``steps_done`` is the number of optimiser steps taken: ``hyperparameters["steps"]``
    unless the ``max_seconds`` time guard stopped the run early (``stopped_early``).
    """

    model: Any
    cfg: dict[str, Any]
    hyperparameters: dict[str, Any]
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    steps_done: int = 0
    stopped_early: bool = False


def _half_losses(
    loss_per_token: Float[Tensor, "batch pos"], half_len: int
) -> tuple[float, float]:
    """Mean loss of predictions made *from* first-half vs second-half positions.

    ``loss_per_token[:, p]`` is the loss of predicting token ``p + 1`` at position ``p``. With
    the repeated part occupying the last ``2 * half_len`` positions (after an optional
    prefix of length ``o``), first-half predictions are ``p in [o, o + half_len - 1)`` and
    second-half ones ``p in [o + half_len, o + 2 * half_len - 1)``: every second-half target
    has appeared before, one period earlier.
    """
    seq = loss_per_token.shape[1] + 1
    o = seq - 2 * half_len
    first = loss_per_token[:, o : o + half_len - 1]
    second = loss_per_token[:, o + half_len : o + 2 * half_len - 1]
    return first.mean().item(), second.mean().item()


@torch.no_grad()
def evaluate_heads(
    model: Any, tokens: Int[Tensor, "batch pos"], half_len: int
) -> dict[str, Any]:
    """Losses on a repeated-random-tokens batch and the head scores of every layer.

    Returns ``heldout_loss_first_half``, ``heldout_loss_second_half``, per-layer lists
    ``prev_token_scores`` / ``induction_scores`` ([layer][head]), and the best previous-token
    head of layer 0 and the best induction head of layer 1 (score and index).
    """
    was_training = model.training
    model.eval()
    try:
        logits, cache = model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith("attn.hook_pattern")
        )
    finally:
        model.train(was_training)
    n_layers = model.cfg.n_layers
    lpt = F.cross_entropy(
        logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="none"
    ).view(tokens.shape[0], -1)
    first, second = _half_losses(lpt, half_len)
    prev = [previous_token_score(cache["pattern", layer]) for layer in range(n_layers)]
    ind = [induction_score(cache["pattern", layer], half_len) for layer in range(n_layers)]
    out: dict[str, Any] = {
        "heldout_loss_first_half": first,
        "heldout_loss_second_half": second,
        "prev_token_scores": [[round(x, 4) for x in s.tolist()] for s in prev],
        "induction_scores": [[round(x, 4) for x in s.tolist()] for s in ind],
        "prev_token_score_layer0": prev[0].max().item(),
        "prev_token_head_layer0": int(prev[0].argmax()),
    }
    if n_layers >= 2:
        out["induction_score_layer1"] = ind[1].max().item()
        out["induction_head_layer1"] = int(ind[1].argmax())
    return out


def _lr_at(step: int, lr: float, warmup_steps: int, steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then constant ``lr``."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr


def train_attn_only(
    cfg: dict[str, Any],
    training: TrainingConfig,
    *,
    progress: bool = True,
    callback: Callable[[Any], dict[str, Any]] | None = None,
    max_seconds: float | None = None,
    guard_steps: int = 20,
) -> TrainResult:
    """Train a toy model from ``make_toy_model(cfg, training.seed)`` as ``training`` says.

    Next-token cross-entropy on every position (see :class:`TrainingConfig` for the optimiser,
    schedule and data). Step ``s`` trains on ``training_mixture(..., seed=seed * 1_000_003 +
    s)``, so every batch is reproducible.

    At step 0, every ``log_every`` steps and at the end the log records ``step``,
    ``train_loss`` (mean over the steps since the previous entry), ``lr``, the held-out
    losses on a fixed repeated-random-tokens batch (first vs second half), the best
    previous-token score in layer 0 and the best induction score in layer 1 (with head
    indices), all heads' scores, and ``elapsed_s``.

    ``callback(model)``, if given, is called at every log point (model in eval mode, no
    gradients) and must return a dict of extra entries for the log (keys must not clash with
    the built-in ones). It does not touch the training data or the optimiser, so it cannot
    change the run. ``max_seconds`` is a time guard: from ``guard_steps`` steps on, after every
    step the projected total time (elapsed + mean time per step so far x steps left) is
    compared with it, and if it is exceeded training stops there, logs a final entry and
    returns with ``stopped_early=True``. Stopping early never changes the steps already
    taken: the log is a prefix of the full run's.
    """
    n_ctx = cfg["n_ctx"]
    d_vocab = cfg["d_vocab"]
    prefix = 0 if training.bos_token is None else 1
    if training.heldout_half_len is None:
        training = replace(training, heldout_half_len=min(50, (n_ctx - prefix) // 2))
    if training.max_period > n_ctx - prefix:
        raise ValueError(f"max_period {training.max_period} does not fit in n_ctx {n_ctx}")
    steps, seed, lr = training.steps, training.seed, training.lr
    warmup_steps, heldout_half_len = training.warmup_steps, training.heldout_half_len
    hyper = {
        **asdict(training),
        "heldout_seed": HELDOUT_SEED,
        "seq_len": n_ctx,
        "optimizer": "AdamW(betas=(0.9, 0.99))",
        "schedule": "linear warm-up over warmup_steps, then constant lr",
        "data": "utils.data.training_mixture(seed=seed * 1_000_003 + step)",
    }
    heldout = repeated_random_tokens(
        training.heldout_batch, heldout_half_len, d_vocab, HELDOUT_SEED,
        bos_token=training.bos_token,
    )
    log: list[dict[str, Any]] = []
    start = time.perf_counter()
    with deterministic_torch(training.num_threads):
        model = make_toy_model(cfg, seed)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99),
                                weight_decay=training.weight_decay)

        def record(step: int, losses: list[float]) -> dict[str, Any]:
            entry: dict[str, Any] = {
                "step": step,
                "train_loss": sum(losses) / len(losses) if losses else None,
                "lr": _lr_at(max(step - 1, 0), lr, warmup_steps, steps),
            }
            entry.update(evaluate_heads(model, heldout, heldout_half_len))
            if callback is not None:
                was_training = model.training
                model.eval()
                try:
                    with torch.no_grad():
                        extra = callback(model)
                finally:
                    model.train(was_training)
                if not isinstance(extra, dict):
                    raise TypeError(f"callback must return a dict, got {type(extra).__name__}")
                clash = sorted(set(extra) & (set(entry) | {"elapsed_s"}))
                if clash:
                    raise ValueError(f"callback keys {clash} clash with the built-in log keys")
                entry.update(extra)
            entry["elapsed_s"] = round(time.perf_counter() - start, 2)
            log.append(entry)
            return entry

        record(0, [])
        losses: list[float] = []
        done = 0
        stopped_early = False
        loop_start = time.perf_counter()
        bar = tqdm(range(steps), desc="training", disable=not progress, mininterval=1.0)
        for step in bar:
            tokens = training_mixture(
                training.batch_size, n_ctx, d_vocab, seed * 1_000_003 + step,
                repeat_fraction=training.repeat_fraction, min_period=training.min_period,
                max_period=training.max_period, bos_token=training.bos_token,
            )
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, lr, warmup_steps, steps)
            logits = model(tokens)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if training.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, training.grad_clip)
            opt.step()
            losses.append(loss.item())
            done = step + 1
            if done % training.log_every == 0 or done == steps:
                entry = record(done, losses)
                losses = []
                bar.set_postfix(
                    loss=f"{entry['train_loss']:.3f}",
                    rep_loss=f"{entry['heldout_loss_second_half']:.3f}",
                    prev=f"{entry['prev_token_score_layer0']:.2f}",
                    ind=f"{entry.get('induction_score_layer1', float('nan')):.2f}",
                )
            if max_seconds is not None and done >= guard_steps and done < steps:
                now = time.perf_counter()
                projected = (now - start) + (now - loop_start) / done * (steps - done)
                if projected > max_seconds:
                    stopped_early = True
                    if losses:
                        record(done, losses)
                    break
        bar.close()
        model.eval()
        model.zero_grad(set_to_none=True)
        del opt, params
    _release_freed_memory()
    return TrainResult(
        model=model, cfg=dict(cfg), hyperparameters=hyper, log=log,
        seconds=time.perf_counter() - start, steps_done=done, stopped_early=stopped_early,
    )


def _release_freed_memory() -> None:
    """Hand the heap that training freed back to the OS (glibc only; a no-op elsewhere).

    The autograd graphs of a training run leave a few hundred MB of freed but fragmented heap
    that glibc keeps; in a notebook that already holds SmolLM2 this counts against the memory
    budget for the rest of the session.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def check_heads(
    model: Any, bos_token: int | None, seed: int = 12_345, half_len: int = 50, batch: int = 32
) -> dict[str, Any]:
    """Head scores on fresh repeated random tokens (a different seed from the held-out set)."""
    tokens = repeated_random_tokens(batch, half_len, model.cfg.d_vocab, seed, bos_token)
    return evaluate_heads(model, tokens, half_len)


def retrain(name: str, out_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Rebuild shipped model ``name`` from :data:`RECIPES` and write it to ``out_dir``.

    The files are written to a temporary folder and moved into place only if the model
    passes the recipe's head-score requirements; otherwise ``RuntimeError``.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown model {name!r}; known: {sorted(RECIPES)}")
    recipe = RECIPES[name]
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR / name
    result = train_attn_only(recipe["cfg"], recipe["train"], progress=progress)
    return write_trained_model(name, result, out_dir)


def write_trained_model(name: str, result: TrainResult, out_dir: Path | None = None
                        ) -> dict[str, Any]:
    """Check a trained model against its recipe's requirements and write it with its log.

    Used by :func:`retrain`; also lets a run of the same recipe made elsewhere (e.g. in a
    background job) be shipped exactly as ``--retrain`` would have written it.
    """
    recipe = RECIPES[name]
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR / name
    bos = recipe["train"].bos_token
    fresh = check_heads(result.model, bos)
    final = result.log[-1]
    summary = {
        "prev_token_score_layer0": fresh["prev_token_score_layer0"],
        "prev_token_head_layer0": fresh["prev_token_head_layer0"],
        "induction_score_layer1": fresh["induction_score_layer1"],
        "induction_head_layer1": fresh["induction_head_layer1"],
        "heldout_loss_first_half": final["heldout_loss_first_half"],
        "heldout_loss_second_half": final["heldout_loss_second_half"],
    }
    failures = [
        f"{key} = {fresh[key.replace('layer', 'score_layer')]:.3f} < {thr}"
        for key, thr in recipe["require"].items()
        if fresh[key.replace("layer", "score_layer")] < thr
    ]
    training_log = {
        "name": name,
        "command": f"python -m utils.training --retrain {name}",
        "cfg": result.cfg,
        "hyperparameters": result.hyperparameters,
        "seed": result.hyperparameters["seed"],
        "requirements": recipe["require"],
        "final_scores_fresh_tokens": summary,
        "training_seconds": round(result.seconds, 1),
        "log": result.log,
        "environment": environment(),
    }
    if failures:
        # Keep the evidence: write the failed model and its log somewhere temporary.
        failed = Path(tempfile.mkdtemp(prefix=f"{name}-failed-"))
        save_toy_model(result.model, result.cfg, failed,
                       extra_json_files={"training_log.json": training_log})
        raise RuntimeError(
            f"{name}: training did not form the required heads: {failures}. Nothing was "
            f"written to {out_dir}; the failed model and its log are in {failed}."
        )
    metadata = {
        "bos_token": bos,
        "trained_by": f"python -m utils.training --retrain {name}",
        "final_scores_fresh_tokens": summary,
    }
    with atomic_folder(out_dir) as tmp:
        save_toy_model(
            result.model, result.cfg, tmp, extra_metadata=metadata,
            extra_json_files={"training_log.json": training_log},
        )
    return training_log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", metavar="NAME", required=True, choices=sorted(RECIPES),
                        help="shipped model to rebuild from scratch")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: utils/weights/NAME)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    log = retrain(args.retrain, args.out, progress=not args.no_progress)
    print(json.dumps({k: log[k] for k in ("final_scores_fresh_tokens", "training_seconds")},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
