"""Each TL 4.3 quirk: the raw call still misbehaves, and the workaround is right.

If one of the "raw TL" assertions starts failing, TL has fixed the quirk: check whether the
workaround in ``utils.tl_compat`` is still needed.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformer_lens import patching
from transformer_lens.model_bridge import TransformerBridge

from utils import smollm2, tl_compat

TINY = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, n_ctx=16, d_vocab=50, attn_only=True,
            normalization_type="LN", positional_embedding_type="standard", act_fn=None)


def _boot(**overrides):
    torch.manual_seed(0)
    return TransformerBridge.boot_native({**TINY, **overrides}, tokenizer=None)


@pytest.fixture
def attn_only():
    return _boot()


@pytest.fixture
def with_mlp():
    return _boot(attn_only=False, act_fn="gelu", d_mlp=64)


@pytest.fixture
def tokens():
    return torch.randint(0, TINY["d_vocab"], (2, 10), generator=torch.Generator().manual_seed(1))


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 3].mean()


def test_boot_native_training_mode_blocks_patching(attn_only, tokens):
    assert attn_only.training  # raw TL: boot_native returns a training-mode model
    _, cache = attn_only.run_with_cache(tokens)
    with pytest.raises(ValueError, match="evaluation mode"):
        patching.get_act_patch_resid_pre(attn_only, tokens, cache, metric)
    assert tl_compat.ensure_eval(attn_only) is attn_only
    assert not any(m.training for m in attn_only.modules())
    with torch.no_grad():
        logits, cache = attn_only.run_with_cache(tokens)
        result = patching.get_act_patch_resid_pre(attn_only, tokens, cache, metric)
    # Patching a run with its own activations changes nothing.
    assert result.shape == (TINY["n_layers"], tokens.shape[1])
    assert torch.allclose(result, metric(logits).expand_as(result), atol=1e-5)


def test_accumulated_resid_attn_only(attn_only, tokens):
    attn_only.eval()
    with torch.no_grad():
        _, cache = attn_only.run_with_cache(tokens)
    with pytest.raises(KeyError, match="resid_mid"):  # raw TL
        cache.accumulated_resid(incl_mid=True)
    stack, labels = tl_compat.accumulated_resid(cache, attn_only, incl_mid=True,
                                                return_labels=True)
    n = TINY["n_layers"]
    assert stack.shape == (n + 1, *tokens.shape, TINY["d_model"])
    assert len(labels) == n + 1
    for layer in range(n):
        assert torch.equal(stack[layer], cache[f"blocks.{layer}.hook_resid_pre"])
    assert torch.equal(stack[-1], cache[f"blocks.{n - 1}.hook_resid_post"])
    with_ln = tl_compat.accumulated_resid(cache, attn_only, incl_mid=True, apply_ln=True)
    assert torch.allclose(with_ln, cache.apply_ln_to_stack(stack, n, recompute_ln=True), atol=1e-6)


def test_accumulated_resid_normal_model_passthrough(with_mlp, tokens):
    with_mlp.eval()
    with torch.no_grad():
        _, cache = with_mlp.run_with_cache(tokens)
    ours = tl_compat.accumulated_resid(cache, with_mlp, incl_mid=True)
    assert ours.shape[0] == 2 * TINY["n_layers"] + 1
    assert torch.equal(ours, cache.accumulated_resid(incl_mid=True))
    assert torch.equal(ours[1], cache["blocks.0.hook_resid_mid"])


def test_block_every_attn_only(attn_only, tokens):
    attn_only.eval()
    with torch.no_grad():
        logits, cache = attn_only.run_with_cache(tokens)
        with pytest.raises(KeyError, match="mlp_out"):  # raw TL
            patching.get_act_patch_block_every(attn_only, tokens, cache, metric)
        corrupted = tokens.flip(-1)
        ours = tl_compat.get_act_patch_block_every(attn_only, corrupted, cache, metric)
        assert ours.shape == (2, TINY["n_layers"], tokens.shape[1])
        assert torch.allclose(ours[0], patching.get_act_patch_resid_pre(
            attn_only, corrupted, cache, metric))
        assert torch.allclose(ours[1], patching.get_act_patch_attn_out(
            attn_only, corrupted, cache, metric))
        # Patching every position of resid_pre at layer 0 is impossible per position, but
        # patching with the run's own cache must give back the clean metric everywhere.
        same = tl_compat.get_act_patch_block_every(attn_only, tokens, cache, metric)
        assert torch.allclose(same, metric(logits).expand_as(same), atol=1e-5)


def test_block_every_normal_model_passthrough(with_mlp, tokens):
    with torch.no_grad():
        _, cache = with_mlp.eval().run_with_cache(tokens)
        ours = tl_compat.get_act_patch_block_every(with_mlp, tokens.flip(-1), cache, metric)
        raw = patching.get_act_patch_block_every(with_mlp, tokens.flip(-1), cache, metric)
    assert ours.shape == (3, TINY["n_layers"], tokens.shape[1])
    assert torch.allclose(ours, raw)


def test_use_attn_result_unsupported_but_stack_head_results_works(attn_only, tokens):
    """Quirk without a wrapper: use ``cache.stack_head_results()`` for per-head outputs."""
    with pytest.raises(NotImplementedError):  # raw TL: no hook_result on native attention
        attn_only.set_use_attn_result(True)
    with torch.no_grad():
        _, cache = attn_only.eval().run_with_cache(tokens)
    heads = cache.stack_head_results(layer=1)  # [layers*heads, batch, pos, d_model]
    attn_out = cache["blocks.0.hook_attn_out"]
    b_O = attn_only.blocks[0].attn.b_O
    assert torch.allclose(heads[: TINY["n_heads"]].sum(0) + b_O, attn_out, atol=1e-5)


def test_expand_kv_heads_layout():
    kv = torch.arange(3).float().reshape(3, 1, 1)
    assert tl_compat.expand_kv_heads(kv).flatten().tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    acts = torch.zeros(2, 5, 3, 64)
    assert tl_compat.expand_kv_heads(acts, dim=-2).shape == (2, 5, 9, 64)
    with pytest.raises(ValueError):
        tl_compat.expand_kv_heads(torch.zeros(4, 1, 1))


@pytest.fixture(scope="session")
def smol():
    try:
        smollm2.gguf_path()
    except smollm2.ModelPackageMissing:
        pytest.skip(f"SmolLM2 weights missing: {smollm2.INSTALL_FIX}")
    return smollm2.load_smollm2()


def test_expand_kv_heads_matches_smollm2_grouping(smol):
    assert smol.W_K.shape[1] == 3 and smol.W_V.shape[1] == 3  # raw TL: not expanded
    layer = 5

    def zero_kv_head_0(k, hook):
        k = k.clone()
        k[:, :, 0] = 0.0  # pre-rotary keys of KV head 0 -> all scores 0 -> uniform pattern
        return k

    tokens = smol.to_tokens(smollm2.IOI_PROMPT)
    n = tokens.shape[1]
    store = {}
    with torch.no_grad():
        smol.run_with_hooks(tokens, fwd_hooks=[
            (f"blocks.{layer}.attn.hook_k", zero_kv_head_0),
            (f"blocks.{layer}.attn.hook_pattern", lambda p, hook: store.update(p=p.clone())),
        ])
    uniform = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    is_uniform = [bool(torch.allclose(store["p"][0, h], uniform, atol=1e-5)) for h in range(9)]
    readers = tl_compat.expand_kv_heads(torch.arange(3).reshape(3, 1, 1)).flatten() == 0
    assert is_uniform == readers.tolist() == [True] * 3 + [False] * 6
    # TL's own QK circuit expands the same way.
    W_K = tl_compat.expand_kv_heads(smol.W_K)
    assert W_K.shape == smol.W_Q.shape
    assert torch.allclose(smol.QK.B[layer], W_K[layer].transpose(-1, -2))


@pytest.mark.parametrize("attn_only_model", [True, False])
def test_stop_at_layer_n_layers_returns_the_final_residual(attn_only_model, tokens):
    overrides = {} if attn_only_model else dict(attn_only=False, act_fn="gelu", d_mlp=64)
    model = _boot(**overrides).eval()
    n = TINY["n_layers"]
    last = f"blocks.{n - 1}.hook_resid_post"
    with torch.no_grad():
        # Raw TL: stop_at_layer=n_layers is ignored and the logits come back.
        assert model(tokens, stop_at_layer=n).shape[-1] == TINY["d_vocab"]
        _, cache = model.run_with_cache(tokens, names_filter=[last])
        tl_compat.stop_after_last_block(model)
        assert torch.equal(model(tokens, stop_at_layer=n), cache[last])
        out, cache2 = model.run_with_cache(tokens, names_filter=[last], stop_at_layer=n)
        assert torch.equal(out, cache[last]) and torch.equal(cache2[last], cache[last])
        assert torch.equal(model.run_with_hooks(tokens, stop_at_layer=n), cache[last])
        # Everything else is untouched: full logits, earlier stops, negative stops.
        assert model(tokens).shape[-1] == TINY["d_vocab"]
        early = model(tokens, stop_at_layer=1)
        assert early.shape[-1] == TINY["d_model"] and torch.equal(
            early, model.run_with_cache(tokens, names_filter=["blocks.0.hook_resid_post"])[1][
                "blocks.0.hook_resid_post"])
        assert torch.equal(model(tokens, stop_at_layer=-1), early)
        # A deep copy stops on its own hooks, not the original's.
        twin = copy.deepcopy(model)
        assert torch.equal(twin(tokens, stop_at_layer=n), cache[last])
        assert not any(hp.fwd_hooks for hp in model.hook_dict.values())


def test_course_models_stop_after_last_block(tokens):
    from utils.toy_models import make_toy_model

    model = make_toy_model(dict(TINY), seed=0)
    with torch.no_grad():
        assert model(tokens, stop_at_layer=TINY["n_layers"]).shape[-1] == TINY["d_model"]


def _block_calls(model):
    """Counts forward calls of each block (a list, reset by the caller)."""
    calls = [0] * len(model.blocks)
    handles = [block.register_forward_pre_hook(lambda m, a, i=i: calls.__setitem__(i, calls[i] + 1))
               for i, block in enumerate(model.blocks)]
    return calls, handles


def _resid_entering(cache, layer):
    return cache["blocks.0.hook_resid_pre"] if layer == 0 else cache[
        f"blocks.{layer - 1}.hook_resid_post"]


@pytest.mark.parametrize("attn_only_model", [True, False])
def test_run_from_layer_runs_only_the_blocks_above(attn_only_model, tokens):
    overrides = {} if attn_only_model else dict(attn_only=False, act_fn="gelu", d_mlp=64)
    model = _boot(**overrides).eval()
    n = TINY["n_layers"]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        calls, handles = _block_calls(model)
        # Raw TL: start_at_layer=1 gives the right logits but still runs block 0.
        assert torch.allclose(model(_resid_entering(cache, 1), start_at_layer=1), logits,
                              atol=1e-5)
        assert calls == [1, 1]
        for layer in range(n + 1):
            calls[:] = [0] * n
            out = tl_compat.run_from_layer(model, _resid_entering(cache, layer), layer)
            assert torch.allclose(out, logits, atol=1e-5), layer
            assert calls == [0] * layer + [1] * (n - layer)
            at = torch.tensor([3, 9])
            picked = tl_compat.run_from_layer(model, _resid_entering(cache, layer), layer, at)
            assert torch.allclose(picked, logits[torch.arange(2), at], atol=1e-5), layer
        for h in handles:
            h.remove()
        # The model's own blocks are back, and a full forward pass is unchanged.
        owner, attr = tl_compat._block_list(model)
        assert len(getattr(owner, attr)) == n
        assert torch.allclose(model(tokens), logits, atol=1e-6)
        with pytest.raises(ValueError, match=r"expected resid \[batch, pos, d_model=32\]"):
            tl_compat.run_from_layer(model, torch.zeros(2, 32), 1)
        with pytest.raises(ValueError, match="layer must be in 0..2"):
            tl_compat.run_from_layer(model, cache["blocks.0.hook_resid_pre"], 3)


def test_run_from_layer_matches_a_hooked_smollm2_run(smol):
    """An edit after block 26 of SmolLM2: the hooked full pass and the shortcut agree."""
    tokens = smol.to_tokens(smollm2.IOI_PROMPT)
    layer, push = 26, torch.randn(smol.cfg.d_model, generator=torch.Generator().manual_seed(0))

    def edit(resid, hook):
        resid = resid.clone()
        resid[:, -1] += 10 * push
        return resid

    with torch.no_grad():
        full = smol.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post", edit)])
        _, cache = smol.run_with_cache(tokens, names_filter=f"blocks.{layer}.hook_resid_post")
        resid = edit(cache[f"blocks.{layer}.hook_resid_post"], None)
        last = torch.tensor([tokens.shape[1] - 1])
        out = tl_compat.run_from_layer(smol, resid, layer + 1, positions=last)
    assert torch.allclose(out, full[:, -1], atol=1e-3)
    assert not torch.allclose(full[:, -1], smol(tokens)[:, -1], atol=1e-1)  # the edit mattered
