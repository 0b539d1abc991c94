"""Chapter 8's grading bounds hold for the shipped variants (quick: no notebook, no sandbox).

The hidden checks ask for an edit that leaves at most 5% of the behaviour and costs at most
0.1 nats on clean held-out text. The chapter's worked edit (the top head's mean-ablation,
folded into the weights) must meet both for every planted variant (the cruder edits the checks
call mistakes are rejected in tests/test_chapters.py); the variant a name draws is spread over
the shipped ones.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from utils import planted_training
from utils.paths import HIDDEN_CHECKS_DIR
from utils.planted_models import VARIANTS, heldout_tokens, load_planted_model, variant_for
from utils.reference import capstone as ref


def _checks():
    spec = importlib.util.spec_from_file_location("_checks_08",
                                                  HIDDEN_CHECKS_DIR / "test_08_capstone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = _checks()
PLANTED = [n for n in VARIANTS if checks._truth(n)["spec"]["kind"] != "decoy"]


def _top_head(name: str) -> tuple[int, int]:
    effects = checks._truth(name)["component_effects"]
    head = max((n for n in effects if n.startswith("L")), key=effects.get)
    layer, index = head[1:].split("H")
    return int(layer), int(index)


@torch.no_grad()
def _mean_z(model, layer: int, head: int) -> torch.Tensor:
    name = f"blocks.{layer}.attn.hook_z"
    _, cache = model.run_with_cache(heldout_tokens()[:128], names_filter=lambda n: n == name)
    return cache[name][:, :, head].mean(dim=(0, 1))


@pytest.mark.slow  # ~5 s per variant (held-out loss and behaviour, measured twice)
@pytest.mark.parametrize("name", PLANTED)
def test_folded_mean_ablation_meets_the_removal_bounds(name):
    shared = load_planted_model(name)
    layer, head = _top_head(name)
    edited = load_planted_model(name, fresh=True)
    assert ref.apply_edit(edited, ref.fold_head_ablation(shared, layer, head,
                                                         _mean_z(shared, layer, head))) == []
    rise = planted_training.heldout_loss(edited) - checks._clean_loss(name)
    left, measured = checks._behaviour_left(name, edited)
    assert rise <= checks.MAX_LOSS_RISE / 2, rise  # with a margin: 0.042 and 0.029 measured
    assert left <= checks.MAX_BEHAVIOUR_LEFT, measured


def test_apply_edit_refuses_unknown_keys_and_shapes():
    model = load_planted_model(VARIANTS[0], fresh=True)
    problems = ref.apply_edit(model, {"blocks.9.attn.o.weight": torch.zeros(2),
                                      "blocks.0.attn.o.bias": torch.zeros(3)})
    assert len(problems) == 2 and "not a weight" in problems[0] and "[64]" in problems[1]
    assert ref.apply_edit(model, [1, 2]) != []


def test_shared_and_fresh_copies():
    assert load_planted_model(VARIANTS[0]) is load_planted_model(VARIANTS[0])
    assert load_planted_model(VARIANTS[0], fresh=True) is not load_planted_model(VARIANTS[0])


def test_variant_for_spreads_names_over_the_variants():
    drawn = {variant_for(f"learner {i}") for i in range(30)}
    assert drawn == set(VARIANTS)
    assert variant_for(" Ada Lovelace ") == variant_for("ada lovelace")
