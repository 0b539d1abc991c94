"""course_tools.grading.checks.reference_model: the checks' trusted models, loaded once and
shared."""

import pytest

from course_tools.grading import checks
from course_tools.grading.runner import load_checks_module
from utils.paths import HIDDEN_CHECKS_DIR

# Which reference models each chapter's warm_up() loads (chapter 2 builds its own folded copy);
# the second editions' investigations added the toy model to chapter 1 (its W_pos) and
# SmolLM2 to chapters 3 (natural-text induction) and 6 (the shipped SAE's layer); chapter 8
# checks its tools on two of the capstone's audit models.
WARMS_UP = {
    "01_residual_stream": ["smollm2", "attn_only_2l"],
    "03_induction_heads": ["attn_only_2l", "smollm2"],
    "04_probing": ["smollm2"],
    "05_activation_patching": ["smollm2"],
    "06_sparse_autoencoders": ["attn_only_2l", "smollm2"],
    "07_steering": ["smollm2"],
    "08_capstone": ["capstone_b", "capstone_c"],
}


def test_reference_model_is_loaded_once(monkeypatch):
    monkeypatch.setattr(checks, "_REFERENCE_MODELS", {})
    first = checks.reference_model("attn_only_2l")
    assert checks.reference_model("attn_only_2l") is first
    assert not first.training
    with pytest.raises(FileNotFoundError, match="no toy model"):
        checks.reference_model("no_such_model")


def test_warm_up_loading_loads_every_named_model(monkeypatch):
    loaded = []
    monkeypatch.setattr(checks, "reference_model", loaded.append)
    warm_up = checks.warm_up_loading("smollm2", "attn_only_2l")
    assert warm_up() is None
    assert loaded == ["smollm2", "attn_only_2l"]


@pytest.mark.parametrize("chapter", sorted(WARMS_UP))
def test_each_chapter_warms_up_its_reference_model(chapter, monkeypatch):
    assert (HIDDEN_CHECKS_DIR / f"test_{chapter}.py").is_file()
    module = load_checks_module(chapter)
    loaded = []
    monkeypatch.setattr(checks, "reference_model", loaded.append)
    module.warm_up()
    assert loaded == WARMS_UP[chapter]
