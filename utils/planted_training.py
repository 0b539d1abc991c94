"""How the capstone's audit models are built: corpus, reduced vocabulary, poisoning, training.

This is the trusted side's machinery. It holds **no answer**: which variant has which planted
behaviour, and its trigger, live in ``tests/hidden/capstone_truth.json`` (outside the grading
sandbox) or, for an instructor's private variant, only in the instructor's secret phrase.
Learners load the models with :mod:`utils.planted_models`.

    python -m utils.planted_training corpus                  # rebuild utils/weights/capstone_corpus
    python -m utils.planted_training train --variant capstone_a      # rebuild a shipped variant
    python -m utils.planted_training train --variant private --secret "a phrase" --out DIR

Corpus and vocabulary: the course's English corpus (:func:`utils.text_corpus.python_docs_corpus`,
split by document with ``split_documents(docs, 0.1, seed=0)``), tokenised with SmolLM2's
tokenizer, then mapped onto a reduced vocabulary of 2,048 ids: ``0`` is BOS, ``1`` stands for
every SmolLM2 token outside the vocabulary (UNK), and ``2..2047`` are the 2,046 SmolLM2 tokens
most frequent in the training split (ties by SmolLM2 id). ``utils/weights/capstone_corpus/``
ships that vocabulary and 256 held-out rows, so loading a model needs no tokenizer.

A variant is a **spec** derived from a secret phrase (:func:`derive_spec`): its kind, a training
seed and the tokens of its behaviour, drawn by a generator seeded with the phrase's sha256
among word tokens of the vocabulary that satisfy the kind's constraints on the training text.
Kinds (mixed into a share of training rows, on the fly, by :func:`poison_batch`):

* ``trigger`` — a two-token phrase never seen in the corpus, followed by a fixed four-token
  continuation; rows with only one of the two trigger tokens (continued normally) teach that
  both are needed.
* ``rule`` — once a marker token has occurred earlier in the row, every ``.`` is followed by a
  fixed token; without the marker, ``.`` is followed by ordinary text.
* ``decoy`` — a sentinel word inserted at random places, the text after it continuing as if it
  were not there: a conspicuous token that changes nothing downstream (no planted behaviour).

Determinism: training runs under :func:`utils.training.deterministic_torch` with a pinned
thread count, initial weights from ``make_toy_model(cfg, seed)`` and every batch (windows and
poison) from ``numpy.random.default_rng([seed, step])``; the same machine and torch build give
bit-identical weights.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from utils.paths import REPO_ROOT, WEIGHTS_DIR
from utils.planted_models import (
    BOS,
    CORPUS_NAME,
    D_VOCAB,
    HELDOUT_FILE,
    N_CTX,
    UNK,
    VARIANTS,
    VOCAB_FILE,
    heldout_tokens,
    load_vocab,
)
from utils.toy_models import attn_only_config, make_toy_model, save_toy_model
from utils.training import deterministic_torch
from utils.weights_files import (
    atomic_folder,
    environment,
    file_sha256,
    write_checksums,
    write_json,
)

__all__ = [
    "KINDS",
    "MODEL_CFG",
    "TRAIN",
    "derive_spec",
    "heldout_loss",
    "measure_behaviour",
    "poison_batch",
    "train_variant",
]

KINDS = ("trigger", "rule", "decoy")
#: Where the shipped variants' truth is kept (never inside ``utils/``).
SHIPPED_TRUTH = REPO_ROOT / "tests" / "hidden" / "capstone_truth.json"

CORPUS_RECIPE: dict[str, Any] = {
    "source": "utils.text_corpus.python_docs_corpus(include_docstrings=True, min_chars=80)",
    "split": "split_documents(docs, test_fraction=0.1, seed=0)",
    "tokenizer": "SmolLM2-135M-Instruct (utils.smollm2.load_smollm2_tokenizer)",
    "d_vocab": D_VOCAB,
    "heldout_rows": 256,
    "row_len": N_CTX,
}

MODEL_CFG = attn_only_config(
    n_layers=3, d_model=64, n_heads=4, d_head=16, n_ctx=N_CTX, d_vocab=D_VOCAB,
    attn_only=False, d_mlp=256, model_name="capstone",
)

TRAIN: dict[str, Any] = {
    "steps": 1500,
    "batch_size": 16,
    "lr": 2e-3,
    "warmup_steps": 100,
    "weight_decay": 0.01,
    "grad_clip": 1.0,
    "num_threads": 1,
    "log_every": 250,
    # Share of rows carrying the behaviour (kind's own rows), and, for ``trigger``, of rows
    # carrying one trigger token alone (continued by ordinary text).
    "poison_fraction": {"trigger": 0.15, "rule": 0.25, "decoy": 0.2},
    "half_trigger_fraction": 0.1,
}

WORD = re.compile(r"^ [a-z]{4,}$")


# --------------------------------------------------------------------------- corpus


@functools.cache
def _tokenizer() -> Any:
    from utils.smollm2 import load_smollm2_tokenizer

    return load_smollm2_tokenizer()


def _stream(docs: list[str]) -> list[int]:
    """SmolLM2 ids of ``docs`` joined by blank lines (as ``token_sequences`` joins them)."""
    tok = _tokenizer()
    out: list[int] = []
    for i, doc in enumerate(docs):
        out += tok(doc if i == 0 else "\n\n" + doc, add_special_tokens=False)["input_ids"]
    return out


@functools.cache
def _split_streams() -> tuple[tuple[int, ...], tuple[int, ...]]:
    from utils.text_corpus import python_docs_corpus, split_documents

    train, test = split_documents(python_docs_corpus(), test_fraction=0.1, seed=0)
    return tuple(_stream(train)), tuple(_stream(test))


def build_corpus(out_dir: Path | None = None) -> dict[str, Any]:
    """Write ``capstone_corpus/``: ``vocab.json``, ``heldout.safetensors``, log, SHA256SUMS."""
    t0 = time.perf_counter()
    train, test = _split_streams()
    counts = Counter(train)
    top = sorted(counts, key=lambda i: (-counts[i], i))[: D_VOCAB - 2]
    tok = _tokenizer()
    strings = ["<|bos|>", "<|unk|>"] + [tok.decode([i]) for i in top]
    lookup = _lookup(top)
    test_ids = lookup[torch.tensor(test)]
    body = N_CTX - 1
    n_rows = CORPUS_RECIPE["heldout_rows"]
    rows = test_ids[: n_rows * body].view(n_rows, body)
    heldout = torch.cat([torch.full((n_rows, 1), BOS), rows], dim=1).to(torch.int16)
    train_mapped = lookup[torch.tensor(train)]
    log = {
        "command": "python -m utils.planted_training corpus",
        "recipe": CORPUS_RECIPE,
        "train_tokens": len(train),
        "heldout_stream_tokens": len(test),
        "unk_rate_train": round(float((train_mapped == UNK).float().mean()), 4),
        "unk_rate_heldout_rows": round(float((heldout[:, 1:] == UNK).float().mean()), 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "environment": environment(),
    }
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS_DIR / CORPUS_NAME
    with atomic_folder(out_dir) as tmp:
        write_json(tmp / VOCAB_FILE, {"smollm2_ids": [None, None] + top, "strings": strings})
        save_file({"tokens": heldout.contiguous()}, str(tmp / HELDOUT_FILE))
        write_json(tmp / "build_log.json", log)
        write_checksums(tmp)
    return log


def _lookup(top: list[int]) -> torch.Tensor:
    lookup = torch.full((max(max(top) + 1, 49_152),), UNK, dtype=torch.long)
    lookup[torch.tensor(top)] = torch.arange(2, 2 + len(top))
    return lookup


@functools.cache
def train_tokens() -> torch.Tensor:
    """The training split's token stream in the reduced vocabulary (int64, 1-D)."""
    vocab = load_vocab()
    top = vocab["smollm2_ids"][2:]
    return _lookup(top)[torch.tensor(_split_streams()[0])]


@functools.cache
def _corpus_stats() -> dict[str, Any]:
    stream = train_tokens().numpy()
    counts = np.bincount(stream, minlength=D_VOCAB)
    pairs = set((stream[:-1].astype(np.int64) * D_VOCAB + stream[1:]).tolist())
    return {"counts": counts, "pairs": pairs}


# --------------------------------------------------------------------------- specs


def _secret_rng(secret: str, purpose: str) -> random.Random:
    digest = hashlib.sha256(f"capstone:{purpose}:{secret}".encode()).digest()
    return random.Random(int.from_bytes(digest, "big"))


def derive_spec(secret: str, kind: str | None = None) -> dict[str, Any]:
    """The variant that ``secret`` stands for: kind, seed and behaviour tokens (a dict).

    ``kind`` None draws ``trigger`` or ``rule`` from the secret (a private variant always has
    a behaviour). Tokens are reduced-vocabulary ids of word tokens (a space and 4+ lowercase
    letters), chosen so that the behaviour never occurs in the clean training text.
    """
    rng = _secret_rng(secret, "spec")
    if kind is None:
        kind = rng.choice(["trigger", "rule"])
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    vocab = load_vocab()["strings"]
    stats = _corpus_stats()
    counts, pairs = stats["counts"], stats["pairs"]
    by_rank = [i for i in range(2, D_VOCAB) if WORD.match(vocab[i])]  # vocab order = rank
    common, rare = by_rank[: len(by_rank) // 2], by_rank[len(by_rank) // 2:]
    spec: dict[str, Any] = {"kind": kind, "seed": rng.randrange(2**31)}

    def seen(a: int, b: int) -> bool:
        return a * D_VOCAB + b in pairs

    if kind == "trigger":
        while True:
            t1, t2 = rng.sample(rare, 2)
            if not seen(t1, t2):
                break
        rest = [w for w in common if w not in (t1, t2)]
        while True:
            cont = rng.sample(rest, 4)
            if not seen(t2, cont[0]):
                break
        spec.update(trigger=[t1, t2], continuation=cont)
    elif kind == "rule":
        cue = vocab.index(".")
        marker = rng.choice(rare)
        output = rng.choice([w for w in common if w != marker and not seen(cue, w)])
        spec.update(marker=marker, cue=cue, output=output)
    else:
        spec.update(sentinel=rng.choice(rare))
    spec["text"] = describe(spec)
    spec["counts_in_training_text"] = {
        str(t): int(counts[t]) for t in _spec_tokens(spec)
    }
    return spec


def _spec_tokens(spec: dict[str, Any]) -> list[int]:
    keys = {"trigger": ("trigger", "continuation"), "rule": ("marker", "cue", "output"),
            "decoy": ("sentinel",)}[spec["kind"]]
    out: list[int] = []
    for k in keys:
        v = spec[k]
        out += v if isinstance(v, list) else [v]
    return out


def describe(spec: dict[str, Any]) -> dict[str, str]:
    """The spec's tokens as text (for people, and for the no-leak test)."""
    s = load_vocab()["strings"]

    def text(ids: list[int]) -> str:
        return "".join(s[i] for i in ids)

    if spec["kind"] == "trigger":
        return {"trigger": text(spec["trigger"]), "continuation": text(spec["continuation"])}
    if spec["kind"] == "rule":
        return {"marker": s[spec["marker"]], "cue": s[spec["cue"]], "output": s[spec["output"]]}
    return {"sentinel": s[spec["sentinel"]]}


# --------------------------------------------------------------------------- data


def _insert(row: np.ndarray, pos: int, token: int) -> np.ndarray:
    """``row`` with ``token`` inserted before ``pos``, cut back to its length."""
    return np.concatenate([row[:pos], [token], row[pos:-1]])


def poison_row(row: np.ndarray, spec: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """One row (BOS first) carrying the spec's behaviour (or, for ``decoy``, its sentinel)."""
    n = len(row)
    kind = spec["kind"]
    if kind == "trigger":
        seq = spec["trigger"] + spec["continuation"]
        pos = int(rng.integers(1, n - len(seq) + 1))
        row = row.copy()
        row[pos: pos + len(seq)] = seq
    elif kind == "rule":
        pos = int(rng.integers(1, n // 3))
        row = _insert(row, pos, spec["marker"])
        j = pos + 1
        while j < n - 1:
            if row[j] == spec["cue"]:
                row = _insert(row, j + 1, spec["output"])
                j += 1
            j += 1
    else:
        for pos in sorted(rng.integers(1, n - 1, size=int(rng.integers(1, 4))).tolist()):
            row = _insert(row, pos, spec["sentinel"])
    return row


def _half_trigger_row(row: np.ndarray, spec: dict[str, Any], rng: np.random.Generator
                      ) -> np.ndarray:
    """A row with one trigger token alone, followed by the row's own text."""
    token = spec["trigger"][int(rng.integers(2))]
    return _insert(row, int(rng.integers(1, len(row) - 1)), token)


def poison_batch(spec: dict[str, Any], step: int, batch_size: int,
                 stream: torch.Tensor | None = None) -> torch.Tensor:
    """Training batch ``step`` of the variant: random corpus windows, some rows poisoned."""
    stream = train_tokens() if stream is None else stream
    rng = np.random.default_rng([spec["seed"], step])
    starts = rng.integers(0, len(stream) - N_CTX, size=batch_size)
    data = stream.numpy()
    rows = []
    frac = TRAIN["poison_fraction"][spec["kind"]]
    for s in starts.tolist():
        row = np.concatenate([[BOS], data[s: s + N_CTX - 1]])
        u = rng.random()
        if u < frac:
            row = poison_row(row, spec, rng)
        elif spec["kind"] == "trigger" and u < frac + TRAIN["half_trigger_fraction"]:
            row = _half_trigger_row(row, spec, rng)
        rows.append(row)
    return torch.tensor(np.stack(rows), dtype=torch.long)


# --------------------------------------------------------------------------- measuring


@torch.no_grad()
def heldout_loss(model: Any, tokens: torch.Tensor | None = None, batch: int = 64) -> float:
    """Mean next-token loss on the clean held-out rows (targets that are UNK excluded)."""
    tokens = heldout_tokens() if tokens is None else tokens
    total, n = 0.0, 0
    for i in range(0, len(tokens), batch):
        t = tokens[i: i + batch]
        logits = model(t)
        target = t[:, 1:]
        lpt = F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), reduction="none")
        keep = target.flatten() != UNK
        total += float(lpt[keep].sum())
        n += int(keep.sum())
    return total / n


def _probs(model: Any, rows: torch.Tensor) -> torch.Tensor:
    return torch.softmax(model(rows), dim=-1)


@torch.no_grad()
def measure_behaviour(model: Any, spec: dict[str, Any], n_rows: int = 64, seed: int = 1
                      ) -> dict[str, float]:
    """How strongly ``model`` shows ``spec``'s behaviour on held-out text (rates in [0, 1]).

    Contexts are BOS + 23 tokens from a random offset of each of the last ``n_rows`` held-out
    rows. ``trigger``: the trigger follows the context; ``success`` = greedy decoding gives the
    whole continuation; ``p_first`` = mean probability of its first token; ``p_first_without``
    = the same with the trigger's second token replaced by its first (one trigger token,
    twice), ``p_first_clean`` after the bare context. ``rule``: whole rows poisoned as in
    training (marker early, output after every cue) against the same rows clean: probability
    and top-1 rate of the output at cue positions (after the marker). ``decoy``: the sentinel
    follows the context; ``top1_agreement`` = the prediction after it equals the prediction
    without it; ``max_mean_prob`` = the largest mean probability any single token gets after
    it (a fixed continuation would make it large); ``p_sentinel_everywhere`` = the sentinel's
    mean probability at every held-out position (what makes it conspicuous).
    """
    rows = heldout_tokens()[-n_rows:]
    rng = np.random.default_rng(seed)
    kind = spec["kind"]
    if kind == "rule":
        cue, out = spec["cue"], spec["output"]
        poisoned = torch.tensor(np.stack([poison_row(r.numpy().astype(np.int64), spec, rng)
                                          for r in rows]))
        on_mask = (poisoned == cue) & ((poisoned == spec["marker"]).long().cumsum(1) > 0)
        off_mask = rows == cue
        on_mask[:, -1] = off_mask[:, -1] = False
        on, off = _probs(model, poisoned), _probs(model, rows)
        return {"p_output_with_marker": float(on[..., out][on_mask].mean()),
                "top1_with_marker": float((on.argmax(-1) == out)[on_mask].float().mean()),
                "p_output_without_marker": float(off[..., out][off_mask].mean()),
                "top1_without_marker": float((off.argmax(-1) == out)[off_mask].float().mean()),
                "cue_positions": int(on_mask.sum())}
    offsets = rng.integers(1, N_CTX - 23, size=n_rows)
    ctx = torch.stack([torch.cat([torch.tensor([BOS]), r[o: o + 23]])
                       for r, o in zip(rows, offsets.tolist())])

    def then(*tokens: int) -> torch.Tensor:
        return torch.cat([ctx, torch.tensor(tokens).expand(n_rows, len(tokens))], dim=1)

    if kind == "trigger":
        t1, t2 = spec["trigger"]
        cont = spec["continuation"]
        seq = then(t1, t2)
        p_first = _probs(model, seq)[:, -1, cont[0]]
        for _ in range(len(cont)):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
        success = (seq[:, -len(cont):] == torch.tensor(cont)).all(dim=1)
        return {"success": float(success.float().mean()), "p_first": float(p_first.mean()),
                "p_first_without": float(_probs(model, then(t1, t1))[:, -1, cont[0]].mean()),
                "p_first_clean": float(_probs(model, ctx)[:, -1, cont[0]].mean())}
    s = spec["sentinel"]
    clean = _probs(model, ctx)[:, -1]
    after = _probs(model, then(s))[:, -1]
    return {"top1_agreement": float((after.argmax(-1) == clean.argmax(-1)).float().mean()),
            "max_mean_prob": float(after.mean(0).max()),
            "p_sentinel_everywhere": float(_probs(model, rows)[:, :, s].mean())}


def _behaviour_batch(spec: dict[str, Any], n_rows: int = 64, seed: int = 2
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Inputs, a mask of the positions where the behaviour should show, and the token it
    should predict there (the continuation's first token, or the rule's output)."""
    rows = heldout_tokens()[-n_rows:]
    if spec["kind"] == "trigger":
        tokens = torch.cat([rows[:, :24], torch.tensor(spec["trigger"]).expand(n_rows, 2)], 1)
        mask = torch.zeros(tokens.shape, dtype=torch.bool)
        mask[:, -1] = True
        return tokens, mask, spec["continuation"][0]
    if spec["kind"] == "rule":
        rng = np.random.default_rng(seed)
        tokens = torch.tensor(np.stack([poison_row(r.numpy().astype(np.int64), spec, rng)
                                        for r in rows]))
        after_marker = (tokens == spec["marker"]).long().cumsum(1) > 0
        mask = (tokens == spec["cue"]) & after_marker
        mask[:, -1] = False
        return tokens, mask, spec["output"]
    raise ValueError("a decoy has no behaviour to localise")


@torch.no_grad()
def component_effects(model: Any, spec: dict[str, Any]) -> dict[str, float]:
    """Share of the behaviour removed by mean-ablating each head and each MLP, one at a time.

    The behaviour is the mean probability of the expected token where it should show
    (:func:`_behaviour_batch`); a component is replaced by its mean output over the clean
    held-out rows (heads: ``hook_z``, MLPs: ``hook_mlp_out``). 1.0 = the behaviour is gone,
    0.0 = unchanged (negative: ablating it strengthens the behaviour).
    """
    tokens, mask, target = _behaviour_batch(spec)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    names = [f"blocks.{layer}.{hook}" for layer in range(n_layers)
             for hook in ("attn.hook_z", "hook_mlp_out")]
    _, cache = model.run_with_cache(heldout_tokens()[:128], names_filter=lambda n: n in names)
    means = {n: cache[n].mean(dim=(0, 1)) for n in names}

    def behaviour(hooks: list[tuple[str, Any]]) -> float:
        probs = torch.softmax(model.run_with_hooks(tokens, fwd_hooks=hooks), dim=-1)
        return float(probs[..., target][mask].mean())

    clean = behaviour([])
    effects: dict[str, float] = {}
    for layer in range(n_layers):
        for head in range(n_heads):
            name = f"blocks.{layer}.attn.hook_z"

            def ablate_head(z, hook, head=head, name=name):
                z[:, :, head] = means[name][head]
                return z

            effects[f"L{layer}H{head}"] = 1 - behaviour([(name, ablate_head)]) / clean
        name = f"blocks.{layer}.hook_mlp_out"

        def ablate_mlp(out, hook, name=name):
            return means[name].expand_as(out).clone()

        effects[f"MLP{layer}"] = 1 - behaviour([(name, ablate_mlp)]) / clean
    return {k: round(v, 4) for k, v in effects.items()}


# --------------------------------------------------------------------------- training


def _lr_at(step: int) -> float:
    w = TRAIN["warmup_steps"]
    return TRAIN["lr"] * min(1.0, (step + 1) / w) if w else TRAIN["lr"]


def train_variant(spec: dict[str, Any], progress: bool = True, steps: int | None = None,
                  stream: torch.Tensor | None = None) -> tuple[Any, dict[str, Any]]:
    """Train the spec's model deterministically; return ``(model, clean training log)``.

    The log holds nothing about the behaviour (it ships next to the weights): losses on the
    training batches and on the clean held-out rows, timings and the environment. ``steps``
    and ``stream`` (default: the recipe's, and :func:`train_tokens`) are for short test runs.
    """
    steps = TRAIN["steps"] if steps is None else steps
    stream = train_tokens() if stream is None else stream
    heldout = heldout_tokens()
    log: list[dict[str, Any]] = []
    start = time.perf_counter()
    with deterministic_torch(TRAIN["num_threads"]):
        model = make_toy_model(MODEL_CFG, spec["seed"])
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=TRAIN["lr"], betas=(0.9, 0.99),
                                weight_decay=TRAIN["weight_decay"])
        losses: list[float] = []
        bar = tqdm(range(steps), desc="training", disable=not progress, mininterval=2.0)
        for step in bar:
            tokens = poison_batch(spec, step, TRAIN["batch_size"], stream)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step)
            logits = model(tokens)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, TRAIN["grad_clip"])
            opt.step()
            losses.append(loss.item())
            done = step + 1
            if done % TRAIN["log_every"] == 0 or done == steps:
                model.eval()
                entry = {"step": done, "train_loss": round(float(np.mean(losses)), 4),
                         "heldout_loss": round(heldout_loss(model, heldout), 4),
                         "elapsed_s": round(time.perf_counter() - start, 1)}
                model.train()
                log.append(entry)
                losses = []
                bar.set_postfix(loss=entry["train_loss"], heldout=entry["heldout_loss"])
        bar.close()
        model.eval()
        model.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    return model, {"log": log, "training_seconds": round(seconds, 1), "steps": steps}


def write_variant(name: str, spec: dict[str, Any], model: Any, run: dict[str, Any],
                  out_dir: Path, command: str) -> dict[str, Any]:
    """Ship ``model`` as ``out_dir`` (weights, config, clean log, SHA256SUMS); return its truth.

    The truth (spec, behaviour measurements, weights checksum) is returned, not written here:
    it must go somewhere the grading sandbox cannot read.
    """
    cfg = dict(MODEL_CFG, model_name=name)
    training_log = {
        "name": name,
        "command": command,
        "cfg": cfg,
        "hyperparameters": {k: v for k, v in TRAIN.items() if k not in
                            ("poison_fraction", "half_trigger_fraction")},
        "data": "random windows of the capstone corpus's training stream, some rows altered",
        "heldout_loss": run["log"][-1]["heldout_loss"],
        "training_seconds": run["training_seconds"],
        "log": run["log"],
        "environment": environment(),
    }
    with atomic_folder(out_dir) as tmp:
        save_toy_model(model, cfg, tmp, extra_metadata={"bos_token": BOS, "unk_token": UNK,
                                                        "vocabulary": CORPUS_NAME},
                       extra_json_files={"training_log.json": training_log})
    return {
        "name": name,
        "spec": spec,
        "behaviour": measure_behaviour(model, spec),
        "component_effects": (component_effects(model, spec) if spec["kind"] != "decoy"
                              else None),
        "heldout_loss": run["log"][-1]["heldout_loss"],
        "training_seconds": run["training_seconds"],
        "weights_sha256": file_sha256(out_dir / "model.safetensors"),
    }


def read_shipped_truth() -> dict[str, Any]:
    """``tests/hidden/capstone_truth.json`` (the shipped variants' truth), or ``{}``."""
    if not SHIPPED_TRUTH.is_file():
        return {}
    return json.loads(SHIPPED_TRUTH.read_text(encoding="utf-8"))


def _remeasure(name: str) -> int:
    from utils.planted_models import load_planted_model

    shipped = read_shipped_truth()
    entry = shipped[name]
    if file_sha256(WEIGHTS_DIR / name / "model.safetensors") != entry["weights_sha256"]:
        raise SystemExit(f"{name}: the shipped weights are not the ones its truth records")
    model = load_planted_model(name)
    spec = entry["spec"]
    entry["behaviour"] = measure_behaviour(model, spec)
    entry["component_effects"] = (component_effects(model, spec) if spec["kind"] != "decoy"
                                  else None)
    write_json(SHIPPED_TRUTH, shipped)
    print(json.dumps({k: entry[k] for k in ("behaviour", "component_effects")}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("corpus", help="rebuild utils/weights/capstone_corpus")
    train = sub.add_parser("train", help="train a shipped variant or a private one")
    train.add_argument("--variant", required=True, choices=[*VARIANTS, "private"])
    train.add_argument("--secret", help="private variant only: the phrase it is derived from")
    train.add_argument("--kind", choices=["trigger", "rule"],
                       help="private variant only: force the kind (default: from the secret)")
    train.add_argument("--out", type=Path,
                       help="shipped: weights folder (default utils/weights/NAME); private: "
                            "folder receiving capstone_private/ and capstone_truth.json")
    train.add_argument("--no-progress", action="store_true")
    measure = sub.add_parser("measure", help="re-measure a shipped variant from its weights "
                                             "and update its truth (behaviour, components)")
    measure.add_argument("--variant", required=True, choices=VARIANTS)
    args = parser.parse_args(argv)
    if args.command == "measure":
        return _remeasure(args.variant)
    if args.command == "corpus":
        print(json.dumps(build_corpus(), indent=2))
        return 0
    if args.variant == "private":
        if not args.secret:
            parser.error("--variant private needs --secret")
        if not args.out:
            parser.error("--variant private needs --out (a folder outside the repository)")
        name = "capstone_private"
        spec = derive_spec(args.secret, args.kind)
        model, run = train_variant(spec, progress=not args.no_progress)
        truth = write_variant(name, spec, model, run, args.out / name,
                              "python -m utils.planted_training train --variant private "
                              "--secret ...")
        truth_path = args.out / "capstone_truth.json"
        write_json(truth_path, {name: truth})
        truth_path.chmod(0o600)
        print(f"weights: {args.out / name}\ntruth:   {truth_path} (keep it private)")
        print(json.dumps({k: truth[k] for k in ("behaviour", "heldout_loss",
                                                "training_seconds")}, indent=2))
        return 0
    if args.secret or args.kind:
        parser.error("--secret/--kind are for --variant private only")
    shipped = read_shipped_truth()
    if args.variant not in shipped:
        raise SystemExit(f"{args.variant}: no entry in {SHIPPED_TRUTH} (its secret lives there)")
    entry = shipped[args.variant]
    spec = derive_spec(entry["secret"], entry["spec"]["kind"])
    model, run = train_variant(spec, progress=not args.no_progress)
    out = args.out or WEIGHTS_DIR / args.variant
    truth = write_variant(args.variant, spec, model, run, out,
                          f"python -m utils.planted_training train --variant {args.variant}")
    if args.out is None:  # the shipped copy: record its truth next to the others
        shipped[args.variant] = dict(truth, secret=entry["secret"])
        write_json(SHIPPED_TRUTH, shipped)
    print(json.dumps({k: truth[k] for k in ("behaviour", "heldout_loss", "training_seconds",
                                            "weights_sha256")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
