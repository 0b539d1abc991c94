"""utils.sae: the shipped SAE loads, verifies its checksums, and folding a scale is exact."""

import json
import shutil

import pytest
import torch

from utils import sae as sae_mod
from utils.reference import sparse_autoencoders as ref


def _toy_sae(d_in=6, d_sae=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(50, d_in, generator=gen)
    sae = ref.init_sae(acts, d_sae, gen)
    sae["b_enc"] = torch.randn(d_sae, generator=gen) * 0.1
    return acts, sae


@pytest.mark.parametrize("k", [None, 3])
def test_fold_input_scale_is_exact(k):
    acts, sae = _toy_sae()
    scale = 0.37
    folded = sae_mod.fold_input_scale(sae, scale)
    recon_scaled = ref.sae_decode(ref.sae_encode(acts * scale, sae, k), sae) / scale
    recon_folded = ref.sae_decode(ref.sae_encode(acts, folded, k), folded)
    assert torch.allclose(recon_scaled, recon_folded, atol=1e-5)
    assert torch.allclose(folded["W_dec"].norm(dim=-1), torch.ones(10))


def test_save_verify_and_detect_corruption(tmp_path):
    _, sae = _toy_sae()
    folder = tmp_path / "sae_test"
    sae_mod.save_sae(sae, {"k": 3}, {"loss": []}, folder)
    sae_mod.verify_checksums(folder)
    assert json.loads((folder / "config.json").read_text()) == {"k": 3}
    data = bytearray((folder / sae_mod.WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (folder / sae_mod.WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(sae_mod.WeightsChecksumError, match="sha256"):
        sae_mod.verify_checksums(folder)


def test_shipped_sae_loads():
    sae, config = sae_mod.load_pretrained_sae()
    assert config["hook_name"] == "blocks.12.hook_resid_pre"
    d_in, d_sae = config["d_in"], config["d_sae"]
    assert sae["W_enc"].shape == (d_in, d_sae) and sae["W_dec"].shape == (d_sae, d_in)
    assert sae["b_enc"].shape == (d_sae,) and sae["b_dec"].shape == (d_in,)
    assert all(t.dtype == torch.float32 for t in sae.values())
    assert torch.allclose(sae["W_dec"].norm(dim=-1), torch.ones(d_sae), atol=2e-3)
    assert config["metrics"]["ce_recovered"] > 0.85
    size = (sae_mod.sae_dir() / sae_mod.WEIGHTS_FILE).stat().st_size
    assert size < 6 * 2**20


def test_shipped_checksums_cover_every_file(tmp_path):
    copy = tmp_path / sae_mod.DEFAULT_NAME
    shutil.copytree(sae_mod.sae_dir(), copy)
    listed = {line.split()[1] for line in (copy / sae_mod.SUMS_FILE).read_text().splitlines()}
    assert listed == {p.name for p in copy.iterdir()} - {sae_mod.SUMS_FILE}


def test_shipped_config_is_readable_without_the_reference_code():
    """The chapter's setup cell reads LAYER and HOOK_NAME with shipped_sae_config(); it runs in
    the grading sandbox, where utils.reference cannot be imported."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'utils.reference' or name.startswith('utils.reference.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from utils.sae import shipped_sae_config\n"
        "c = shipped_sae_config()\n"
        "print(c['layer'], c['hook_name'])\n"
    )
    root = sae_mod.WEIGHTS_DIR.parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         check=True)
    config = sae_mod.load_pretrained_sae()[1]
    assert sae_mod.shipped_sae_config() == config
    assert out.stdout.split() == [str(config["layer"]), config["hook_name"]]
    assert config["hook_name"] == f"blocks.{config['layer']}.hook_resid_pre"


def test_chapter_heldout_topics_are_held_out_of_the_shipped_sae():
    """Chapter 06 evaluates on split_documents(pydoc_topics(), 0.1, seed=0)[1]: the shipped SAE's
    split (corpus_split) must hold those documents out too."""
    from utils import text_corpus

    chapter_train, chapter_heldout = text_corpus.split_documents(
        text_corpus.pydoc_topics(), test_fraction=0.1, seed=0)
    train, heldout = sae_mod.corpus_split()
    assert chapter_heldout and set(chapter_heldout) <= set(heldout)
    assert not set(chapter_heldout) & set(train)
    # pydoc topics come first, in the same order, on both sides.
    assert train[: len(chapter_train)] == chapter_train
    assert heldout[: len(chapter_heldout)] == chapter_heldout


def test_shipped_sae_trained_on_pydoc_topics_only():
    """The docs (utils.sae, chapter 06) say the 480 training rows are all pydoc topics."""
    from types import SimpleNamespace

    from utils import smollm2, text_corpus

    try:
        tokenizer = smollm2.load_smollm2_tokenizer()
    except Exception as exc:  # no offline SmolLM2 package on this machine
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")
    config = sae_mod.shipped_sae_config()
    fake_model = SimpleNamespace(tokenizer=tokenizer)
    train_rows, _ = sae_mod._corpus_tokens(fake_model, config)
    chapter_train, _ = text_corpus.split_documents(text_corpus.pydoc_topics(), 0.1, seed=0)
    pydoc_rows = text_corpus.token_sequences(tokenizer, chapter_train, config["seq_len"],
                                             bos_token_id=train_rows[0, 0].item())
    assert len(pydoc_rows) > config["train_sequences"]
    assert torch.equal(train_rows, pydoc_rows[: config["train_sequences"]])
    assert train_rows.shape[0] * (config["seq_len"] - 1) == config["train_tokens"]
