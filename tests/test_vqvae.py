"""VQ-VAE: exact decoding of codes, dead codes found and restarted, the family through
``difflab train`` (save, load, identical samples, bad input), and the VQ tokenizer for latent diffusion."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_resume_is_bit_exact, assert_train_refused

from difflab.cli.main import main
from difflab.data import load_dataset
from difflab.models import load_model
from difflab.models.vqvae import perplexity
from difflab.nn import AutoencoderConfig, ConvAutoencoder
from difflab.nn.quantize import DEAD_AFTER, VectorQuantizer
from difflab.tokenizers import load_tokenizer, save_tokenizer
from difflab.training import Trainer
from difflab.training.config import load_config

DIGITS = ["data.name=digits", "network.resolution=8", "network.latent_channels=4", "network.base_channels=8",
          "network.levels=1", "network.codebook_size=16", "network.prior_hidden_channels=8", "network.prior_layers=2",
          "optim.batch_size=32", "optim.warmup_steps=1", "run.progress=false", "run.sample_every=0",
          "run.eval_every=0", "run.sample.num=2", "run.deterministic=true"]


def vq_autoencoder(codebook_size: int = 8) -> ConvAutoencoder:
    torch.manual_seed(0)
    return ConvAutoencoder(AutoencoderConfig(in_channels=1, latent_channels=3, base_channels=8, levels=1,
                                             codebook_size=codebook_size))


def test_decoding_a_code_is_exact_and_the_nearest_code_of_a_code_is_itself():
    model = vq_autoencoder().eval()
    model.latent_scale.fill_(2.5)
    quantizer = model.quantizer
    k = torch.randint(0, 8, (4, 3, 5), generator=torch.Generator().manual_seed(0))
    e_k = quantizer.embed(k)  # (4, 3, 3, 5)
    assert e_k.shape == (4, 3, 3, 5) and torch.equal(e_k[1, :, 2, 4], quantizer.codebook[k[1, 2, 4]])
    assert torch.equal(quantizer.indices(e_k), k)
    with torch.no_grad():
        assert torch.equal(model.decode(2.5 * e_k), model.decoder(e_k))
        noisy = 2.5 * (e_k + 1e-4 * torch.randn(e_k.shape))  # a latent near a code decodes as that code
        assert torch.equal(model.decode(noisy), model.decoder(e_k))


def test_quantizer_losses_and_straight_through_gradient_match_van_den_oord_eq_3():
    quantizer = VectorQuantizer(4, 2)
    z_e = torch.randn(3, 2, 2, 2, requires_grad=True)
    z_q, k, codebook_loss, commitment_loss = quantizer(z_e)
    e = quantizer.embed(k)
    brute = torch.stack([((z_e[b] - e[b]) ** 2).mean() for b in range(3)])
    assert torch.allclose(codebook_loss, brute) and torch.allclose(commitment_loss, brute)
    assert torch.allclose(z_q, e)
    (z_q * torch.arange(24.0).view(3, 2, 2, 2)).sum().backward()
    assert torch.equal(z_e.grad, torch.arange(24.0).view(3, 2, 2, 2))  # copied straight through


def test_an_unused_code_is_found_dead_and_restarted_on_the_worst_served_latent():
    quantizer = VectorQuantizer(3, 2).train()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [100.0, 100.0]]))
        quantizer.idle.zero_()
    z_e = torch.tensor([[0.1, 0.0], [0.9, 0.0], [5.0, 5.0], [0.0, 0.2]]).T.reshape(1, 2, 1, 4)  # (1, d, 1, 4)
    for step in range(1, DEAD_AFTER + 1):  # code 2 is never picked: dead after DEAD_AFTER steps
        quantizer(z_e)
        restarted = quantizer.after_step()
        assert restarted == (1 if step == DEAD_AFTER else 0)
    assert int(quantizer.restarts) == 1
    assert torch.equal(quantizer.codebook[2], torch.tensor([5.0, 5.0]))  # the latent farthest from its code
    assert int(quantizer.idle[2]) == 0 and not quantizer.dead.any()
    assert quantizer.indices(z_e)[0, 0, 2] == 2  # and now it is used


def test_two_steps_save_load_identical_samples_and_bit_exact_resume(tmp_path):
    trainer = Trainer(load_config("mnist-vqvae", [*DIGITS, "optim.steps=2", f"run.out_dir={tmp_path / 'a'}"]))
    trainer.train()
    loaded = load_model(tmp_path / "a")
    assert loaded.family == "vqvae" and loaded.sampling_protocol()["nfe"] == 17  # 4x4 codes + the decoder
    x = loaded.sample(3, seed=2)
    assert torch.equal(x, trainer.ema.module.eval().sample(3, seed=2))
    assert torch.allclose(x, loaded.sample(3, seed=2, batch_size=1), atol=1e-6)  # same codes; BLAS may round apart
    assert_resume_is_bit_exact("mnist-vqvae", DIGITS, tmp_path)


def test_after_training_on_digits_every_code_is_used_or_was_just_restarted(tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(load_config("mnist-vqvae", [*DIGITS, "optim.steps=80", "run.log_every=1", f"run.out_dir={out}"]))
    trainer.train()
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"codes_unpicked", "codes_restarted", "code_perplexity"} <= set(log[-1])
    assert log[0]["codes_restarted"] >= 8  # the first step restarts the codes its batch did not pick
    model = trainer.unwrapped_model.eval()  # the trained codebook (the EMA one lags behind restarts)
    with torch.no_grad():
        k = model.codes(load_dataset("digits").images)
    used = int((torch.bincount(k.flatten(), minlength=16) > 0).sum())
    recent = log[-1]["codes_restarted"] - log[-1 - DEAD_AFTER]["codes_restarted"]
    assert used + recent >= 16, (used, recent)  # a code not restarted lately was picked lately
    assert 1 < perplexity(k, 16) <= used


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["network.codebook_size=1"], "VQ-VAE codebook_size=1 must be >= 2"),
        (["network.resolution=6", "network.levels=2"], "VQ-VAE resolution=6 must be a multiple of 2^levels = 4"),
        (["network.kind=vae"], "unknown network option(s) ['codebook_size', 'commitment'"),
        (["model.beta=1"], "unknown model option(s) ['beta']"),
    ],
)
def test_bad_vqvae_options_exit_2_with_one_line_and_write_nothing(overrides, fragment, tmp_path, capsys):
    assert_train_refused(["--config", "mnist-vqvae", *DIGITS, "optim.steps=1", *overrides],
                         fragment, tmp_path / "run", capsys)


def test_vq_tokenizer_saves_reloads_and_serves_latent_diffusion(tmp_path, capsys):
    model = vq_autoencoder()
    digits = load_dataset("digits").images
    model.fit_to(digits, torch.Generator().manual_seed(0), steps=5, batch_size=32)
    loaded = load_tokenizer(save_tokenizer(model, tmp_path / "tok"))
    assert loaded.kind == "vq_vae"
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(digits[:16])), model.decode(model.encode(digits[:16])))
    out = tmp_path / "run"
    assert main(["train", "--config", "mnist-latent-vq", "data.name=digits", "tokenizer.levels=1",
                 "tokenizer.base_channels=8", "tokenizer.codebook_size=16", "tokenizer.steps=3",
                 "network.dim=16", "network.encoder_depth=1", "network.decoder_depth=1", "network.num_heads=2",
                 "optim.steps=2", "optim.batch_size=8", "optim.warmup_steps=1", "run.progress=false",
                 "run.sample_every=0", "run.sample.num=2", "run.sample.steps=2", f"run.out_dir={out}"]) == 0
    assert "tokenizer vq_vae" in capsys.readouterr().out
    latent = load_model(out)
    assert latent.family == "latent" and latent.tokenizer.kind == "vq_vae"
    x = latent.sample(2, seed=0, steps=2)
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()


def test_code_prior_is_causal_over_the_code_grid():
    """Changing the codes at and after cell i in raster order leaves the logits of cell i unchanged,
    changing an earlier code changes them (the prior embeds codes, so this is checked by value)."""
    from difflab.models.autoregressive import level_values
    from difflab.nn import VQVAE, VQVAEConfig

    torch.manual_seed(0)
    prior = VQVAE(VQVAEConfig(resolution=16, levels=2, codebook_size=8, prior_hidden_channels=8,
                              prior_layers=2)).prior  # a 4x4 grid of 8 codes
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 8, (1, 1, 4, 4), generator=g)
    base = prior(level_values(k, 8))  # (1, 1, 8, 4, 4)
    for i, j in [(0, 0), (1, 2), (3, 3)]:
        later = k.clone().view(-1)
        later[i * 4 + j:] = torch.randint(0, 8, (16 - i * 4 - j,), generator=g)
        assert torch.equal(prior(level_values(later.view(1, 1, 4, 4), 8))[..., i, j], base[..., i, j])
        if i or j:
            earlier = k.clone().view(-1)
            earlier[i * 4 + j - 1] = (earlier[i * 4 + j - 1] + 1) % 8
            assert not torch.equal(prior(level_values(earlier.view(1, 1, 4, 4), 8))[..., i, j], base[..., i, j])
