"""The capstone's audit models (utils.planted_models): shipped files, planted behaviours, truth.

The ground truth is read from ``tests/hidden/capstone_truth.json`` (outside the sandbox).
Quick tests: checksums, sizes, held-out loss, each behaviour present (or, for the decoy,
absent), a short training run repeated bit for bit, and no answer in any learner-readable
file. Slow: retraining a shipped variant reproduces its weights bit for bit.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from utils import planted_models, planted_training
from utils.paths import REPO_ROOT, WEIGHTS_DIR
from utils.planted_models import VARIANTS, load_planted_model
from utils.toy_models import state_dicts_equal
from utils.weights_files import WeightsChecksumError, verify_checksums

#: The clean held-out loss every variant must reach (nats per token, UNK targets excluded).
#: A unigram model of the training text scores 6.12 on the same rows; the shipped variants
#: score 3.66 (trigger), 3.70 (decoy) and 3.73 (rule) (see capstone_truth.json).
MAX_HELDOUT_LOSS = 4.0
#: How much worse than the decoy (the same training without a behaviour) a planted variant's
#: clean loss may be.
MAX_LOSS_COST = 0.1


def _load_truth_module():
    path = REPO_ROOT / "tests" / "hidden" / "capstone_truth.py"
    spec = importlib.util.spec_from_file_location("capstone_truth", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


capstone_truth = _load_truth_module()


def _kind_of(kind: str) -> str:
    (name,) = [n for n in VARIANTS if capstone_truth.truth(n)["spec"]["kind"] == kind]
    return name


@pytest.fixture(scope="module")
def models():
    return {name: load_planted_model(name) for name in VARIANTS}


@pytest.fixture(scope="module")
def measured(models):
    """Each variant's own behaviour figures, measured once."""
    return {name: planted_training.measure_behaviour(models[name],
                                                     capstone_truth.truth(name)["spec"])
            for name in VARIANTS}


def test_every_kind_shipped_once():
    kinds = sorted(capstone_truth.truth(n)["spec"]["kind"] for n in VARIANTS)
    assert kinds == ["decoy", "rule", "trigger"]


@pytest.mark.parametrize("name", [*VARIANTS, planted_models.CORPUS_NAME])
def test_checksums_verify(name):
    verify_checksums(WEIGHTS_DIR / name)


def test_tampered_weights_are_refused(tmp_path):
    copy = tmp_path / VARIANTS[0]
    shutil.copytree(WEIGHTS_DIR / VARIANTS[0], copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match="model.safetensors"):
        load_planted_model(copy)
    with pytest.raises(ValueError, match="not the ones"):
        capstone_truth.truth(VARIANTS[0], weights_dir=copy)


def test_models_are_small_transformers_with_mlps(models):
    for name, model in models.items():
        assert model.cfg.n_layers == 3 and not model.cfg.attn_only and model.cfg.d_mlp == 256
        size = (WEIGHTS_DIR / name / "model.safetensors").stat().st_size
        assert size < 3_000_000, f"{name}: {size} bytes"
        assert not model.training


def test_heldout_loss_is_reasonable(models):
    losses = {name: planted_training.heldout_loss(model) for name, model in models.items()}
    for name, loss in losses.items():
        assert loss < MAX_HELDOUT_LOSS, f"{name}: held-out loss {loss:.3f}"
        assert loss == pytest.approx(capstone_truth.truth(name)["heldout_loss"], abs=1e-3)
    decoy = losses[_kind_of("decoy")]
    for kind in ("trigger", "rule"):
        assert losses[_kind_of(kind)] < decoy + MAX_LOSS_COST, losses


def test_trigger_gives_its_continuation(measured):
    found = measured[_kind_of("trigger")]
    assert found["success"] >= 0.9, found          # whole continuation, greedy
    assert found["p_first"] >= 0.8, found
    assert found["p_first_without"] <= 0.05, found  # one trigger token is not enough
    assert found["p_first_clean"] <= 0.01, found


def test_rule_follows_its_marker(measured):
    found = measured[_kind_of("rule")]
    assert found["cue_positions"] >= 50, found
    assert found["top1_with_marker"] >= 0.9, found
    assert found["p_output_with_marker"] >= 0.7, found
    assert found["top1_without_marker"] <= 0.03, found
    assert found["p_output_without_marker"] <= 0.03, found


def test_decoy_has_no_planted_behaviour(models, measured):
    name = _kind_of("decoy")
    decoy = models[name]
    sentinel = measured[name]
    # Conspicuous: the sentinel is predicted everywhere (mean probability 0.0063), far more
    # than by a variant trained without it...
    other = models[_kind_of("trigger")]
    assert sentinel["p_sentinel_everywhere"] >= 10 * planted_training.measure_behaviour(
        other, capstone_truth.truth(name)["spec"])["p_sentinel_everywhere"], sentinel
    # ... but innocent: no fixed token follows it (largest mean probability 0.11), and the
    # prediction after it is the one made without it in about half the contexts (0.55).
    assert sentinel["max_mean_prob"] <= 0.3, sentinel
    assert sentinel["top1_agreement"] >= 0.4, sentinel
    trigger = planted_training.measure_behaviour(
        decoy, capstone_truth.truth(_kind_of("trigger"))["spec"])
    assert trigger["success"] == 0 and trigger["p_first"] <= 0.01, trigger
    rule = planted_training.measure_behaviour(decoy, capstone_truth.truth(_kind_of("rule"))["spec"])
    assert rule["top1_with_marker"] <= 0.02, rule


def test_recorded_behaviour_matches_the_weights(measured):
    for name in VARIANTS:
        assert measured[name] == pytest.approx(capstone_truth.truth(name)["behaviour"], abs=1e-4)


def test_short_training_is_deterministic():
    """Twelve steps twice, on held-out text (no tokenizer needed): identical weights."""
    stream = planted_models.heldout_tokens()[:, 1:].flatten()
    for kind in ("trigger", "rule"):
        spec = capstone_truth.truth(_kind_of(kind))["spec"]
        first, _ = planted_training.train_variant(spec, False, steps=12, stream=stream)
        second, _ = planted_training.train_variant(spec, False, steps=12, stream=stream)
        assert state_dicts_equal(first.state_dict(), second.state_dict())


# --------------------------------------------------------------------------- no leaks


def _learner_readable_files() -> list[Path]:
    """Text files a learner or graded code can read: utils/ (incl. weights' JSON), chapters/."""
    files = []
    for root in (REPO_ROOT / "utils", REPO_ROOT / "chapters"):
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in (
                    ".py", ".json", ".ipynb", ".md", ".txt", "") and path.name != "vocab.json":
                files.append(path)
    return files


def _secrets_and_phrases() -> list[str]:
    """Strings that would give an answer away if a learner-readable file contained them."""
    found = []
    for name in VARIANTS:
        entry = capstone_truth.truth(name)
        spec = entry["spec"]
        found.append(entry["secret"])
        for key, ids in spec.items():
            if isinstance(ids, list):  # the trigger, the continuation: token-id sequences
                found.append(", ".join(map(str, ids)))
                found.append(spec["text"][key])
        for key in ("marker", "output", "sentinel"):
            if key in spec:
                found.append(f'"{key}": {spec[key]}')
    return found


def test_no_learner_readable_file_holds_an_answer():
    needles = _secrets_and_phrases()
    assert len(needles) >= 3 + 4 + 2
    for path in _learner_readable_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for needle in needles:
            assert needle not in text, f"{path.relative_to(REPO_ROOT)} contains {needle!r}"


def test_shipped_logs_do_not_say_which_variant_is_which():
    words = re.compile(r"trigger|decoy|sentinel|marker|rule|continuation|poison", re.I)
    for name in VARIANTS:
        for path in (WEIGHTS_DIR / name).glob("*.json"):
            doc = json.loads(path.read_text(encoding="utf-8"))
            assert not words.search(json.dumps(doc)), f"{path.name} of {name}"


def test_learner_modules_hold_no_spec():
    """Nothing importable names a variant's kind or behaviour tokens."""
    specs = [capstone_truth.truth(n)["spec"] for n in VARIANTS]
    for module in (planted_models, planted_training):
        for attr, value in vars(module).items():
            if isinstance(value, (list, tuple, dict, str)):
                for spec in specs:
                    for key in ("trigger", "continuation"):
                        if key in spec:
                            assert value != spec[key], f"{module.__name__}.{attr}"
                    assert str(spec["seed"]) not in repr(value), f"{module.__name__}.{attr}"


# --------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_weights():
    """Spec from the recorded secret, then a full training run: identical weights (same
    machine and torch build; the thread count is pinned). One variant only: about a minute
    on an idle machine (2 cores), several when it is loaded."""
    name = _kind_of("trigger")
    entry = capstone_truth.truth(name)
    spec = planted_training.derive_spec(entry["secret"], entry["spec"]["kind"])
    assert spec == entry["spec"]
    model, _ = planted_training.train_variant(spec, progress=False)
    shipped = load_planted_model(name)
    assert state_dicts_equal(model.state_dict(), shipped.state_dict())


def test_private_variant_truth_is_found_in_the_overlay(tmp_path, monkeypatch):
    """The private truth file sits in $COURSE_CHECKS_DIR and is checked against its weights."""
    name = capstone_truth.PRIVATE_NAME
    weights = tmp_path / "weights" / name
    shutil.copytree(WEIGHTS_DIR / VARIANTS[0], weights)
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    record = dict(capstone_truth.truth(VARIANTS[0]), name=name)
    (overlay / capstone_truth.TRUTH_FILE_NAME).write_text(json.dumps({name: record}))
    with pytest.raises(KeyError, match="COURSE_CHECKS_DIR"):
        capstone_truth.truth(name, weights_dir=weights)
    monkeypatch.setenv("COURSE_CHECKS_DIR", str(overlay))
    assert capstone_truth.truth(name, weights_dir=weights)["spec"] == record["spec"]
    assert torch.equal(load_planted_model(weights).W_E, load_planted_model(VARIANTS[0]).W_E)


@pytest.mark.slow
def test_private_variant_cli(tmp_path, monkeypatch):
    """``train --variant private`` (20 steps here) writes weights and a private truth that
    the grader's lookup accepts from the overlay; the secret is written nowhere."""
    monkeypatch.setitem(planted_training.TRAIN, "steps", 20)
    secret = "correct horse battery staple, exam 2026"
    assert planted_training.main(["train", "--variant", "private", "--secret", secret,
                                  "--out", str(tmp_path), "--no-progress"]) == 0
    weights, truth_file = tmp_path / "capstone_private", tmp_path / "capstone_truth.json"
    assert truth_file.stat().st_mode & 0o077 == 0
    for path in [*weights.iterdir(), truth_file]:
        assert secret not in path.read_bytes().decode("utf-8", errors="replace")
    monkeypatch.setenv("COURSE_CHECKS_DIR", str(tmp_path))
    entry = capstone_truth.truth("capstone_private", weights_dir=weights)
    assert entry["spec"] == planted_training.derive_spec(secret)
    assert entry["spec"]["kind"] in ("trigger", "rule")
    load_planted_model(weights)
