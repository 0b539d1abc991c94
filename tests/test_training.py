"""Head-score reference functions, deterministic training, and (slow) the full retrain."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from utils.head_scores import induction_score, previous_token_score
from utils.toy_models import attn_only_config, state_dicts_equal
from utils.training import (
    RECIPES,
    TrainingConfig,
    check_heads,
    deterministic_torch,
    retrain,
    train_attn_only,
)

TINY = attn_only_config(n_layers=2, d_model=32, n_heads=2, d_head=16, n_ctx=48, d_vocab=64)
TINY_TRAINING = TrainingConfig(steps=15, seed=11, lr=1e-3, batch_size=8, log_every=15,
                               heldout_batch=4, heldout_half_len=20, max_period=16)


def _train_tiny(callback=None, max_seconds=None, guard_steps=20, **changes):
    """The tiny model trained with ``TINY_TRAINING`` (``changes`` replace its settings)."""
    return train_attn_only(TINY, replace(TINY_TRAINING, **changes), progress=False,
                           callback=callback, max_seconds=max_seconds, guard_steps=guard_steps)


# ----------------------------------------------------------------------------- hand-made patterns


def _causal_uniform(seq: int) -> torch.Tensor:
    return torch.tril(torch.ones(seq, seq)) / torch.arange(1, seq + 1)[:, None]


def _prev_token(seq: int) -> torch.Tensor:
    p = torch.zeros(seq, seq)
    p[0, 0] = 1.0
    p[torch.arange(1, seq), torch.arange(seq - 1)] = 1.0
    return p


def _stripe(seq: int, half_len: int, offset: int) -> torch.Tensor:
    """Second-half destinations attend to ``dest - half_len + offset``; the rest to position 0."""
    p = torch.zeros(seq, seq)
    p[:, 0] = 1.0
    for dest in range(seq - half_len, seq):
        p[dest, 0] = 0.0
        p[dest, dest - half_len + offset] = 1.0
    return p


def _brute_force(pattern: torch.Tensor, half_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop implementations of both definitions, for a cross-check."""
    batch, heads, seq, _ = pattern.shape
    prev, ind = torch.zeros(heads), torch.zeros(heads)
    for h in range(heads):
        prev[h] = sum(
            pattern[b, h, d, d - 1] for b in range(batch) for d in range(1, seq)
        ) / (batch * (seq - 1))
        ind[h] = sum(
            pattern[b, h, d, d - half_len + 1]
            for b in range(batch) for d in range(seq - half_len, seq)
        ) / (batch * half_len)
    return prev, ind


def test_previous_token_score_on_hand_made_patterns():
    seq = 30
    pattern = torch.stack([_prev_token(seq), _causal_uniform(seq), torch.eye(seq)])[None]
    scores = previous_token_score(pattern.repeat(3, 1, 1, 1))
    assert scores.shape == (3,)
    torch.testing.assert_close(scores[0], torch.tensor(1.0))
    assert scores[1] < 0.15
    assert scores[2] == 0.0
    # a [head, dest, src] pattern is accepted too
    torch.testing.assert_close(previous_token_score(pattern[0]), scores)


@pytest.mark.parametrize("prefix", [0, 1])  # without / with a BOS
def test_induction_score_on_hand_made_patterns(prefix):
    half_len = 12
    seq = prefix + 2 * half_len
    pattern = torch.stack([
        _stripe(seq, half_len, offset=1),   # perfect induction head
        _stripe(seq, half_len, offset=0),   # attends to the previous occurrence itself
        _stripe(seq, half_len, offset=2),   # one too far
        _prev_token(seq),
        _causal_uniform(seq),
    ])[None].repeat(2, 1, 1, 1)
    scores = induction_score(pattern, half_len)
    assert scores.shape == (5,)
    torch.testing.assert_close(scores[0], torch.tensor(1.0))
    assert scores[1] == 0.0 and scores[2] == 0.0 and scores[3] == 0.0
    assert scores[4] < 0.1
    with pytest.raises(ValueError):
        induction_score(pattern, half_len=seq)


def test_scores_match_brute_force_on_random_patterns():
    gen = torch.Generator().manual_seed(0)
    half_len, seq = 7, 15
    scores = torch.randn(3, 4, seq, seq, generator=gen)
    scores = scores.masked_fill(torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1), -1e9)
    pattern = scores.softmax(-1)
    prev, ind = _brute_force(pattern, half_len)
    torch.testing.assert_close(previous_token_score(pattern), prev)
    torch.testing.assert_close(induction_score(pattern, half_len), ind)


# ----------------------------------------------------------------------------- determinism


def test_deterministic_torch_restores_settings():
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    with pytest.raises(RuntimeError, match="boom"):
        with deterministic_torch(num_threads=1):
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()) == before


def test_training_is_bit_identical_for_a_seed():
    state = torch.get_rng_state()
    a = _train_tiny()
    b = _train_tiny()
    c = _train_tiny(seed=12)
    assert torch.equal(state, torch.get_rng_state())
    assert not a.model.training
    assert state_dicts_equal(a.model.state_dict(), b.model.state_dict())
    assert not state_dicts_equal(a.model.state_dict(), c.model.state_dict())
    assert a.log == [
        {**entry, "elapsed_s": a.log[i]["elapsed_s"]} for i, entry in enumerate(b.log)
    ]
    # log layout: step 0 and every log_every steps
    assert [e["step"] for e in a.log] == [0, 15]
    keys = {
        "step", "train_loss", "heldout_loss_first_half", "heldout_loss_second_half",
        "induction_score_layer1", "prev_token_score_layer0",
    }
    assert keys <= a.log[-1].keys()
    assert a.hyperparameters["seed"] == 11


def test_callback_is_logged_and_time_guard_stops_at_a_prefix():
    calls = []

    def callback(model):
        assert not model.training and not torch.is_grad_enabled()
        calls.append(1)
        return {"extra_metric": 1.5}

    full = _train_tiny(callback=callback)
    assert len(calls) == len(full.log) == 2
    assert all(entry["extra_metric"] == 1.5 for entry in full.log)
    assert full.steps_done == 15 and not full.stopped_early

    # max_seconds=0: the projection exceeds the budget as soon as the guard looks (step 3).
    stopped = _train_tiny(max_seconds=0.0, guard_steps=3)
    assert stopped.stopped_early and stopped.steps_done == 3
    assert [entry["step"] for entry in stopped.log] == [0, 3]
    short = _train_tiny(steps=3)
    assert state_dicts_equal(stopped.model.state_dict(), short.model.state_dict())
    assert not stopped.model.training

    # a generous budget changes nothing
    roomy = _train_tiny(max_seconds=1e6, guard_steps=3)
    assert not roomy.stopped_early
    assert state_dicts_equal(roomy.model.state_dict(), full.model.state_dict())

    with pytest.raises(ValueError, match="clash"):
        _train_tiny(steps=1, callback=lambda model: {"step": 0})
    with pytest.raises(TypeError, match="dict"):
        _train_tiny(steps=1, callback=lambda model: 1.0)


def test_write_trained_model_replaces_the_folder_only_when_the_heads_formed(
        tmp_path, monkeypatch):
    import re
    import shutil
    import stat

    from utils.toy_models import load_toy_model, verify_checksums
    from utils.training import write_trained_model

    cfg = attn_only_config(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=128, d_vocab=64)
    training = TrainingConfig(steps=1, seed=0, heldout_batch=2)
    result = train_attn_only(cfg, training, progress=False)
    recipe = {"cfg": cfg, "train": training, "require": {"induction_layer1": 0.0}}
    monkeypatch.setitem(RECIPES, "tiny", recipe)
    out = tmp_path / "weights" / "tiny"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier run")

    log = write_trained_model("tiny", result, out)
    verify_checksums(out)
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS", "config.json", "model.safetensors", "training_log.json"]
    assert all(p.stat().st_mode & stat.S_IROTH for p in out.iterdir())  # sandbox reads them
    assert [p.name for p in out.parent.iterdir()] == ["tiny"]  # no temporary folder left
    assert log["hyperparameters"] == result.hyperparameters
    with torch.no_grad():
        tokens = torch.randint(1, 64, (1, 10))
        assert torch.equal(load_toy_model(out)(tokens), result.model(tokens))

    monkeypatch.setitem(recipe, "require", {"induction_layer1": 2.0})  # cannot be met
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(RuntimeError, match="did not form the required heads") as err:
        write_trained_model("tiny", result, out)
    shutil.rmtree(re.search(r"are in (\S+)\.$", str(err.value)).group(1))
    assert (out / "model.safetensors").read_bytes() == before


def test_recipe_is_json_friendly():
    import json
    from dataclasses import asdict

    for recipe in RECIPES.values():
        json.dumps({**recipe, "train": asdict(recipe["train"])})


# ----------------------------------------------------------------------------- full retrain


@pytest.mark.slow
def test_full_retrain_forms_the_heads(tmp_path):
    from utils.toy_models import load_toy_model, verify_checksums

    log = retrain("attn_only_2l", tmp_path / "attn_only_2l", progress=False)
    verify_checksums(tmp_path / "attn_only_2l")
    model = load_toy_model(tmp_path / "attn_only_2l")
    fresh = check_heads(model, bos_token=RECIPES["attn_only_2l"]["train"].bos_token, seed=99)
    assert fresh["prev_token_score_layer0"] >= 0.4
    assert fresh["induction_score_layer1"] >= 0.6
    assert log["training_seconds"] < 600


def test_the_recipe_in_code_is_the_one_the_shipped_model_was_trained_with():
    import json
    from dataclasses import asdict

    from utils.paths import WEIGHTS_DIR

    shipped = json.loads((WEIGHTS_DIR / "attn_only_2l" / "training_log.json").read_text())
    recipe = asdict(RECIPES["attn_only_2l"]["train"])
    recipe["heldout_half_len"] = shipped["hyperparameters"]["heldout_half_len"]  # resolved
    assert {k: shipped["hyperparameters"][k] for k in recipe} == recipe
