"""Indirect-object-identification (IOI) prompts for SmolLM2, as aligned token tensors.

An IOI prompt names two people, then repeats one of them (the *subject*, S) as the giver:
``"When Mary and John went to the store, John gave the drink to"``. The model should answer
with the other name, the *indirect object* (IO): ``" Mary"``. The course measures this with the
logit difference ``logit(IO) - logit(S)`` at the last position.

Everything here is built so that patching experiments can index positions across a batch:

* every name is checked to be **one token with a leading space** in SmolLM2's tokenizer
  (``" Mary"`` is one token, ``"Mary"`` is a different one);
* every template has the same token layout, so all prompts have the same length and each role
  sits at a fixed position: with the BOS token at 0, the two names of the first clause at 2
  and 4 (IO first in "ABBA" prompts, S first in "BABA" prompts), the second mention of the
  subject (S2) at 10 and the final token (END) at 14;
* the corrupted prompt differs from the clean one only where the corruption says:
  ``"abc"`` replaces S2 by a third name C (no name is repeated, so nothing tells the model
  which of IO and S to pick), ``"flip"`` replaces S2 by the IO (the correct answer becomes S).

Sampling is seeded: the same ``(n_prompts, seed)`` gives the same dataset.

The one public entry point is :func:`make_ioi_dataset`; :func:`single_token_names` and
:func:`name_token_id` are the checks it uses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = [
    "CANDIDATE_NAMES",
    "CORRUPTIONS",
    "IOIDataset",
    "OBJECTS",
    "PLACES",
    "TEMPLATES",
    "make_ioi_dataset",
    "name_token_id",
    "single_token_names",
]

# Candidate first names. A few are split into several tokens by SmolLM2's tokenizer and are
# filtered out by ``single_token_names`` (kept here on purpose: the filter is part of the
# contract, not an assumption about the list).
CANDIDATE_NAMES: tuple[str, ...] = (
    "Mary", "John", "Tom", "James", "Dan", "Sid", "Martin", "Amy", "Alice", "Bob", "Sarah",
    "Paul", "Kate", "Mike", "Anna", "Peter", "Lisa", "Mark", "Emma", "David", "Laura", "Chris",
    "Jane", "Steve", "Rose", "Jack", "Lucy", "Sam", "Ben", "Max", "Ryan", "Adam", "Eric",
    "Nick", "Helen", "Susan", "Karen", "Henry", "Grace", "Kevin", "George", "Frank",
    "Xavier", "Beatrice", "Ingrid", "Priya",
)
PLACES: tuple[str, ...] = ("store", "park", "beach", "school", "office", "market", "garden",
                           "station", "library", "restaurant")
OBJECTS: tuple[str, ...] = ("drink", "book", "ball", "gift", "letter", "key", "bag", "ring",
                            "bottle", "phone")
# Placeholders: {IO}, {S1} (first mention of the subject), {S2} (second mention), {PLACE},
# {OBJECT}. Each template is given in its ABBA form (IO named first); the BABA form swaps
# {IO} and {S1}. Every template tokenises to the same 14 tokens (15 with BOS).
TEMPLATES: tuple[str, ...] = (
    "When {IO} and {S1} went to the {PLACE}, {S2} gave the {OBJECT} to",
    "After {IO} and {S1} went to the {PLACE}, {S2} handed the {OBJECT} to",
    "While {IO} and {S1} were at the {PLACE}, {S2} passed the {OBJECT} to",
    "When {IO} and {S1} arrived at the {PLACE}, {S2} showed the {OBJECT} to",
)
CORRUPTIONS = ("abc", "flip")
SEQ_LEN = 15  # with the BOS token
POSITIONS = {"S2": 10, "END": 14}


def _tokenizer(model_or_tokenizer: Any) -> Any:
    return getattr(model_or_tokenizer, "tokenizer", None) or model_or_tokenizer


def name_token_id(model_or_tokenizer: Any, name: str) -> int:
    """The single token id of ``" " + name``; ``ValueError`` if it is not exactly one token."""
    ids = _tokenizer(model_or_tokenizer)(" " + name, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{name!r} is {len(ids)} tokens with a leading space, not 1")
    return int(ids[0])


def single_token_names(model_or_tokenizer: Any, names: tuple[str, ...] | list[str] = CANDIDATE_NAMES
                       ) -> list[str]:
    """The names (in order) that are a single token when preceded by a space."""
    keep = []
    for name in names:
        try:
            name_token_id(model_or_tokenizer, name)
        except ValueError:
            continue
        keep.append(name)
    return keep


def _to_tokens(model_or_tokenizer: Any, prompts: list[str]) -> Tensor:
    """BOS + tokens of each prompt; every prompt must have the same length."""
    tok = _tokenizer(model_or_tokenizer)
    rows = [[tok.bos_token_id] + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"prompts tokenise to different lengths {sorted(lengths)}; "
                         "check the templates, places and objects are single tokens")
    return torch.tensor(rows, dtype=torch.long)


@dataclass
class IOIDataset:
    """Aligned clean/corrupted IOI prompts (see the module docstring for the layout)."""

    prompts: list[str]
    corrupted_prompts: list[str]
    clean_tokens: Int[Tensor, "batch pos"]
    corrupted_tokens: Int[Tensor, "batch pos"]
    answer_tokens: Int[Tensor, "batch 2"]  # [:, 0] the IO (correct), [:, 1] the S (wrong)
    io_names: list[str]
    s_names: list[str]
    corrupt_names: list[str]
    io_first: list[bool]  # True for ABBA prompts (IO named first)
    corruption: str
    positions: dict[str, Int[Tensor, " batch"]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)


def make_ioi_dataset(model_or_tokenizer: Any, n_prompts: int = 8, seed: int = 0,
                     corruption: str = "abc", names: list[str] | None = None) -> IOIDataset:
    """``n_prompts`` seeded IOI prompts with their corrupted twins, half ABBA and half BABA.

    ``model_or_tokenizer``: SmolLM2 (anything with a ``.tokenizer``) or its tokenizer.
    ``corruption``: ``"abc"`` (S2 becomes a third name) or ``"flip"`` (S2 becomes the IO).
    ``names``: candidate names (default :data:`CANDIDATE_NAMES`); multi-token ones are dropped.
    Prompts alternate ABBA / BABA and cycle through :data:`TEMPLATES`.
    """
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {corruption!r}")
    pool = single_token_names(model_or_tokenizer, names or CANDIDATE_NAMES)
    if len(pool) < 3:
        raise ValueError("need at least three single-token names")
    rng = random.Random(seed)
    prompts, corrupted, ios, ss, cs, io_first = [], [], [], [], [], []
    for i in range(n_prompts):
        template = TEMPLATES[(i // 2) % len(TEMPLATES)]
        abba = i % 2 == 0
        if not abba:  # BABA: the subject is named first
            template = template.replace("{IO}", "{TMP}").replace("{S1}", "{IO}")
            template = template.replace("{TMP}", "{S1}")
        io, s, c = rng.sample(pool, 3)
        fill = {"PLACE": rng.choice(PLACES), "OBJECT": rng.choice(OBJECTS), "IO": io, "S1": s}
        second = {"abc": c, "flip": io}[corruption]
        prompts.append(template.format(S2=s, **fill))
        corrupted.append(template.format(S2=second, **fill))
        ios.append(io)
        ss.append(s)
        cs.append(second)
        io_first.append(abba)
    clean_tokens = _to_tokens(model_or_tokenizer, prompts)
    corrupted_tokens = _to_tokens(model_or_tokenizer, corrupted)
    answers = torch.tensor([[name_token_id(model_or_tokenizer, io),
                             name_token_id(model_or_tokenizer, s)] for io, s in zip(ios, ss)])
    first = torch.tensor(io_first)
    positions = {
        "IO": torch.where(first, 2, 4),
        "S1": torch.where(first, 4, 2),
        "S2": torch.full((n_prompts,), POSITIONS["S2"]),
        "END": torch.full((n_prompts,), clean_tokens.shape[1] - 1),
    }
    data = IOIDataset(prompts, corrupted, clean_tokens, corrupted_tokens, answers, ios, ss, cs,
                      io_first, corruption, positions)
    _check_layout(data)
    return data


def _check_layout(data: IOIDataset) -> None:
    """Every role token sits where ``positions`` says (guards template edits)."""
    rows = torch.arange(len(data))
    for role, answer_col in (("IO", 0), ("S1", 1), ("S2", 1)):
        got = data.clean_tokens[rows, data.positions[role]]
        if not torch.equal(got, data.answer_tokens[:, answer_col]):
            raise AssertionError(f"template layout broken: {role} is not where expected")


# ------------------------------------------------------------------------------ toy circuits
# Three two-component circuits small enough to reason about by hand, for chapter 5's
# comparison of denoising and noising. Each takes an input x (one float per prompt; "clean"
# inputs near 1, "corrupted" near 0), computes two components A and B and an output, and lets
# any component be overridden by a given value (everything downstream then recomputes).
# Which one is the serial chain, which the AND and which the OR is for the learner to find.
TOY_COMPONENTS: tuple[str, ...] = ("A", "B")
TOY_CIRCUITS: tuple[str, ...] = ("P", "Q", "R")


def run_toy_circuit(circuit: str, x: Tensor, override: dict[str, Tensor] | None = None
                    ) -> dict[str, Tensor]:
    """Run toy circuit ``circuit`` ("P", "Q" or "R") on ``x`` (shape [batch]).

    ``override`` maps a component name ("A" or "B") to the value [batch] it takes instead of
    the one it would compute. Returns ``{"A": ..., "B": ..., "out": ...}``, each [batch].
    """
    override = override or {}

    def component(name: str, value: Tensor) -> Tensor:
        return override[name] if name in override else value

    x = x.float()
    if circuit == "P":
        a = component("A", 2 * x)
        b = component("B", x + 0.5 * x ** 2)
        out = a * b
    elif circuit == "Q":
        a = component("A", 3 * x - 0.5)
        b = component("B", 0.5 * a + 0.25)
        out = 2 * b
    elif circuit == "R":
        a = component("A", 2 * x)
        b = component("B", 1.5 * x + 0.5 * x ** 2)
        out = torch.maximum(a, b)
    else:
        raise ValueError(f"circuit must be one of {TOY_CIRCUITS}, got {circuit!r}")
    return {"A": a, "B": b, "out": out}
