"""Autoencoder / KL-VAE tokenizers: training lowers both loss terms, shapes, save/load."""

from __future__ import annotations

import pytest
import torch

from difflab.data import load_dataset
from difflab.errors import DataError
from difflab.nn.autoencoder import AutoencoderConfig, ConvAutoencoder, fit_autoencoder
from difflab.processes import GaussianDiffusion, LatentDiffusion
from difflab.tokenizers import load_tokenizer, save_tokenizer


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("digits").images  # (1438, 1, 8, 8) in [-1, 1]


def make_vae(kl_weight: float, seed: int = 0, variational: bool = True) -> ConvAutoencoder:
    torch.manual_seed(seed)
    return ConvAutoencoder(AutoencoderConfig(in_channels=1, latent_channels=2, base_channels=16, levels=1,
                                             variational=variational, kl_weight=kl_weight))


def evaluate(model: ConvAutoencoder, x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        return {k: float(v) for k, v in model.loss(x, torch.Generator().manual_seed(1)).items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_vae_training_lowers_reconstruction_and_kl(digits, seed):
    model = make_vae(kl_weight=1.0, seed=seed)
    before = evaluate(model, digits[:256])
    fit_autoencoder(model, digits, steps=60, batch_size=64, generator=torch.Generator().manual_seed(seed))
    after = evaluate(model, digits[:256])
    assert after["rec"] < 0.7 * before["rec"]
    assert after["kl"] < before["kl"]


def test_kl_weight_trades_kl_for_reconstruction(digits):
    results = {}
    for beta in (1e-3, 1.0):
        model = make_vae(kl_weight=beta)
        fit_autoencoder(model, digits, steps=60, batch_size=64, generator=torch.Generator().manual_seed(0))
        results[beta] = evaluate(model, digits[:256])
    assert results[1e-3]["kl"] > 10 * results[1.0]["kl"]
    assert results[1e-3]["rec"] < results[1.0]["rec"]


@pytest.mark.parametrize("variational", [True, False])
def test_encode_decode_shapes_and_unit_latent_scale(digits, variational):
    model = ConvAutoencoder(AutoencoderConfig(in_channels=1, latent_channels=3, base_channels=8, levels=2,
                                              variational=variational))
    x = torch.randn(2, 1, 8, 12)  # non-square
    u = model.encode(x)
    assert u.shape == model.latent_shape(tuple(x.shape)) == (2, 3, 2, 3)
    assert model.decode(u).shape == x.shape
    model.fit_latent_scale(digits[:512])
    with torch.no_grad():
        assert float(model.encode(digits[:512]).std()) == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(DataError, match="multiples of 4"):
        model.encode(torch.zeros(1, 1, 6, 8))


def test_saved_and_reloaded_vae_gives_identical_latents(digits, tmp_path):
    model = make_vae(kl_weight=1e-3)
    fit_autoencoder(model, digits, steps=5, batch_size=32, generator=torch.Generator().manual_seed(0))
    loaded = load_tokenizer(save_tokenizer(model, tmp_path))
    assert isinstance(loaded, ConvAutoencoder) and loaded.kind == "kl_vae"
    with torch.no_grad():
        assert torch.equal(loaded.encode(digits[:64]), model.encode(digits[:64]))
        assert torch.equal(loaded.decode(model.encode(digits[:8])), model.decode(model.encode(digits[:8])))
    # A latent process over VAE latents has the latent shape and decodes to images.
    latent = LatentDiffusion(GaussianDiffusion(), loaded)
    assert latent.latent_shape((4, 1, 8, 8)) == (4, 2, 4, 4)
