"""Toy models: config, deterministic init, save/load with checksums, the shipped model."""

from __future__ import annotations

import json

import pytest
import torch

from utils.data import random_tokens, repeated_random_tokens, training_mixture
from utils.head_scores import induction_score, previous_token_score
from utils.paths import WEIGHTS_DIR
from utils.toy_models import (
    WeightsChecksumError,
    attn_only_config,
    load_toy_model,
    make_toy_model,
    read_toy_model_info,
    save_toy_model,
    state_dicts_equal,
    verify_checksums,
)

SMALL = attn_only_config(n_layers=2, d_model=32, n_heads=2, d_head=16, n_ctx=32, d_vocab=64)
SHIPPED = WEIGHTS_DIR / "attn_only_2l"


@pytest.fixture(scope="module")
def shipped():
    return load_toy_model("attn_only_2l")


# ----------------------------------------------------------------------------- config / init


def test_config_is_plain_json():
    cfg = attn_only_config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["positional_embedding_type"] == "standard"
    assert cfg["normalization_type"] == "LN"
    assert cfg["attn_only"] is True
    mlp = attn_only_config(attn_only=False, d_mlp=64)
    assert mlp["d_mlp"] == 64 and mlp["attn_only"] is False
    with pytest.raises(ValueError):
        attn_only_config(d_mlp=64)  # an MLP width on an attention-only model


def test_make_toy_model_is_seeded_eval_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = make_toy_model(SMALL, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    torch.manual_seed(1234)  # must not matter
    b = make_toy_model(SMALL, seed=3)
    c = make_toy_model(SMALL, seed=4)
    assert not a.training and not b.training
    assert state_dicts_equal(a.state_dict(), b.state_dict())
    assert not state_dicts_equal(a.state_dict(), c.state_dict())


def test_unknown_config_key_is_an_error():
    with pytest.raises(ValueError, match="n_head"):
        make_toy_model(dict(SMALL, n_head=2), seed=0)


def test_model_with_mlps():
    cfg = attn_only_config(
        n_layers=1, d_model=32, n_heads=2, d_head=16, n_ctx=16, d_vocab=64,
        attn_only=False, d_mlp=48,
    )
    model = make_toy_model(cfg, seed=0)
    _, cache = model.run_with_cache(random_tokens(2, 8, 64, seed=0))
    assert cache["blocks.0.hook_mlp_out"].shape == (2, 8, 32)
    assert model.state_dict()["blocks.0.mlp.in.weight"].shape[0] == 48 or any(
        v.shape == (48, 32) for v in model.state_dict().values()
    )


def test_familiar_hook_names_and_weights():
    model = make_toy_model(SMALL, seed=0)
    toks = random_tokens(2, 10, 64, seed=1)
    logits, cache = model.run_with_cache(toks)
    assert logits.shape == (2, 10, 64)
    assert cache["pattern", 0].shape == (2, 2, 10, 10)
    assert torch.equal(cache["pattern", 0], cache["blocks.0.attn.hook_pattern"])
    for name in ("hook_z", "hook_q", "hook_k", "hook_v"):
        assert cache[f"blocks.1.attn.{name}"].shape == (2, 10, 2, 16)
    assert cache["blocks.0.hook_resid_pre"].shape == (2, 10, 32)
    assert model.W_Q.shape == (2, 2, 32, 16) and model.W_O.shape == (2, 2, 16, 32)
    assert model.W_E.shape == (64, 32) and model.W_pos.shape == (32, 32)
    assert model.W_U.shape == (32, 64)
    assert model.OV.shape == (2, 2, 32, 32) and model.QK.shape == (2, 2, 32, 32)
    # hook_q really is ln1-normalised residual @ W_Q + b_Q
    q = torch.einsum("bpd,hde->bphe", cache["blocks.0.ln1.hook_normalized"], model.W_Q[0])
    torch.testing.assert_close(q + model.b_Q[0], cache["blocks.0.attn.hook_q"])


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path):
    model = make_toy_model(SMALL, seed=5)
    save_toy_model(model, SMALL, tmp_path / "m", extra_metadata={"note": "hi"})
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["SHA256SUMS", "config.json", "model.safetensors"]
    sums = (tmp_path / "m" / "SHA256SUMS").read_text()
    assert "config.json" in sums and "model.safetensors" in sums
    loaded = load_toy_model(tmp_path / "m")
    assert not loaded.training
    toks = random_tokens(3, 20, 64, seed=2)
    with torch.no_grad():
        assert torch.equal(model(toks), loaded(toks))
    info = read_toy_model_info(tmp_path / "m")
    assert info["config"] == SMALL and info["metadata"] == {"note": "hi"}


@pytest.mark.parametrize("victim", ["model.safetensors", "config.json"])
def test_checksum_mismatch_names_the_file(tmp_path, victim):
    directory = save_toy_model(make_toy_model(SMALL, seed=0), SMALL, tmp_path / "m")
    path = directory / victim
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsChecksumError, match=victim) as info:
        load_toy_model(directory)
    assert "git checkout --" in str(info.value)


@pytest.mark.parametrize("log", [{"command": "python -m utils.planted_training train"}, None])
def test_a_shipped_model_names_the_command_that_rebuilds_it(tmp_path, monkeypatch, log):
    from utils import toy_models

    monkeypatch.setattr(toy_models, "WEIGHTS_DIR", tmp_path)
    extra = {"training_log.json": log} if log else None
    directory = save_toy_model(make_toy_model(SMALL, seed=0), SMALL, tmp_path / "shipped",
                               extra_json_files=extra)
    (directory / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(WeightsChecksumError) as info:
        load_toy_model(directory)
    expected = log["command"] if log else "python -m utils.training --retrain shipped"
    assert expected in str(info.value), str(info.value)


def test_missing_checksum_file(tmp_path):
    directory = save_toy_model(make_toy_model(SMALL, seed=0), SMALL, tmp_path / "m")
    (directory / "SHA256SUMS").unlink()
    with pytest.raises(WeightsChecksumError, match="SHA256SUMS"):
        load_toy_model(directory)


def test_unknown_model_name():
    with pytest.raises(FileNotFoundError, match="attn_only_2l"):
        load_toy_model("no_such_model")


# ----------------------------------------------------------------------------- data


def test_data_generators_are_seeded_and_structured():
    state = torch.get_rng_state()
    a = repeated_random_tokens(4, 10, 50, seed=7, bos_token=0)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a, repeated_random_tokens(4, 10, 50, seed=7, bos_token=0))
    assert not torch.equal(a, repeated_random_tokens(4, 10, 50, seed=8, bos_token=0))
    assert a.shape == (4, 21) and (a[:, 0] == 0).all() and (a[:, 1:] != 0).all()
    assert torch.equal(a[:, 1:11], a[:, 11:])
    b = repeated_random_tokens(2, 5, 50, seed=0)
    assert b.shape == (2, 10) and torch.equal(b[:, :5], b[:, 5:])
    mix = training_mixture(8, 32, 50, seed=1, bos_token=0, min_period=3, max_period=8)
    assert mix.shape == (8, 32) and (mix[:, 0] == 0).all() and (mix[:, 1:] != 0).all()
    periodic = [
        any(torch.equal(row[1 + p :], row[1 : 32 - p]) for p in range(3, 9)) for row in mix
    ]
    assert sum(periodic) == 4


# ----------------------------------------------------------------------------- shipped model


def test_shipped_model_checksums_verify():
    verify_checksums(SHIPPED)
    for name in ("model.safetensors", "config.json", "training_log.json", "SHA256SUMS"):
        assert (SHIPPED / name).is_file()
    assert (SHIPPED / "model.safetensors").stat().st_size <= 2 * 1024 * 1024


def test_shipped_model_has_induction_and_previous_token_heads(shipped):
    assert not shipped.training
    bos = read_toy_model_info("attn_only_2l")["metadata"]["bos_token"]
    half_len = 40
    toks = repeated_random_tokens(16, half_len, shipped.cfg.d_vocab, seed=987_654, bos_token=bos)
    with torch.no_grad():
        _, cache = shipped.run_with_cache(
            toks, names_filter=lambda n: n.endswith("hook_pattern")
        )
    prev0 = previous_token_score(cache["pattern", 0])
    ind1 = induction_score(cache["pattern", 1], half_len)
    assert prev0.max() >= 0.4, prev0
    assert ind1.max() >= 0.6, ind1
    # and it actually predicts the repeated half
    loss = shipped(toks, return_type="loss", loss_per_token=True)
    assert loss[:, half_len + 1 :].mean() < 1.0
    assert loss[:, 1:half_len].mean() > 4.0
