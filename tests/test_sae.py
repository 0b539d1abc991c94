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
