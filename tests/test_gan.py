"""GAN: each player's update lowers its own loss, the two optimizers resume bit for bit, the log
carries D's accuracy and the diversity signal, and the family goes through ``difflab train``."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import (
    assert_every_optimizer_restored,
    assert_resume_is_bit_exact,
    assert_samples_but_has_no_likelihood,
    assert_train_refused,
)

from difflab.models import GANModel, load_model
from difflab.models.gan import mean_pairwise_distance
from difflab.nn import DCGAN, DCGANConfig
from difflab.training import Trainer
from difflab.training.config import load_config

DIGITS = ["data.name=digits", "network.resolution=8", "network.latent_dim=8", "network.generator_channels=16",
          "network.discriminator_channels=8", "optim.batch_size=16", "run.progress=false", "run.log_every=1",
          "run.sample_every=0", "run.eval_every=0", "run.sample.num=2", "run.deterministic=true"]


def tiny_gan(r1_gamma: float = 1.0) -> GANModel:
    net = DCGAN(DCGANConfig(in_channels=1, resolution=8, latent_dim=8, generator_channels=16,
                            discriminator_channels=8))
    return GANModel(net, (1, 8, 8), r1_gamma=r1_gamma)


def phase_loss(model: GANModel, x: torch.Tensor, phase: str, seed: int) -> torch.Tensor:
    return sum(v.mean() for v in model.losses((x, None), torch.Generator().manual_seed(seed), phase=phase).values())


@pytest.mark.parametrize("phase", ["discriminator", "generator"])
def test_one_update_of_a_player_lowers_its_loss_on_a_fixed_batch_and_leaves_the_other_alone(phase):
    torch.manual_seed(0)
    model = tiny_gan()
    with torch.no_grad():  # away from DCGAN's N(0, 0.02) start, where D is nearly constant
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    x = torch.rand(32, 1, 8, 8) * 2 - 1
    params = model.param_groups()[phase]
    other = [p.detach().clone() for name, group in model.param_groups().items() if name != phase for p in group]
    before = phase_loss(model, x, phase, seed=3)
    optimizer = torch.optim.Adam(params, lr=1e-3)  # the trainer's optimizer family: a step of ~lr per weight
    phase_loss(model, x, phase, seed=3).backward()
    optimizer.step()
    assert phase_loss(model, x, phase, seed=3) < before - 1e-4  # the same z: the update's own objective fell
    now = [p for name, group in model.param_groups().items() if name != phase for p in group]
    assert all(torch.equal(a, b) for a, b in zip(other, now, strict=True))


def test_r1_penalty_is_half_gamma_times_the_squared_input_gradient_of_d():
    torch.manual_seed(1)
    model = tiny_gan(r1_gamma=3.0)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    model.double()
    r1 = model.losses((x, None), torch.Generator().manual_seed(0), phase="discriminator")["r1"]
    eps = 1e-6  # central differences of D(x_i) along every pixel
    d = model.network.discriminator
    grad = torch.zeros_like(x)
    for k in range(64):
        e = torch.zeros(64, dtype=torch.float64)
        e[k] = eps
        e = e.view(1, 1, 8, 8)
        with torch.no_grad():
            grad.view(4, -1)[:, k] = (d(x + e) - d(x - e)) / (2 * eps)
    assert torch.allclose(r1, 1.5 * grad.flatten(1).pow(2).sum(1), rtol=1e-6)


def test_mean_pairwise_distance_matches_brute_force():
    x = torch.randn(5, 3)
    brute = sum((x[i] - x[j]).norm() for i in range(5) for j in range(5) if i != j) / 20
    assert abs(float(mean_pairwise_distance(x)) - float(brute)) < 1e-6


def test_two_steps_save_load_identical_samples_bit_exact_resume_and_logged_diagnostics(tmp_path):
    trainer = Trainer(load_config("mnist-gan", [*DIGITS, "optim.steps=2", f"run.out_dir={tmp_path / 'a'}"]))
    assert list(trainer.optimizers) == ["discriminator", "generator"]
    trainer.train()
    loaded = load_model(tmp_path / "a")
    assert loaded.family == "gan" and loaded.sampling_protocol()["nfe"] == 1
    x = loaded.sample(3, seed=2)
    assert torch.equal(x, trainer.ema.module.eval().sample(3, seed=2))
    assert torch.allclose(x, loaded.sample(3, seed=2, batch_size=1), atol=1e-6)  # the same z; BLAS may round apart
    assert x.abs().max() <= 1
    record = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["losses"]) == {"d_real", "d_fake", "r1", "g"}
    assert 0 <= record["d_real_accuracy"] <= 1 and 0 <= record["d_fake_accuracy"] <= 1 and record["diversity"] > 0

    assert_resume_is_bit_exact("mnist-gan", DIGITS, tmp_path, assert_every_optimizer_restored)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.r1_gamma=-1"], "model.r1_gamma=-1 must be >= 0"),
        (["network.resolution=6"], "DCGAN resolution=6 must be a multiple of 4"),
        (["network.kind=vae"], "unknown network option(s) ['discriminator_channels', 'generator_channels']"),
        (["model.beta=1"], "unknown model option(s) ['beta']"),
    ],
)
def test_bad_gan_options_exit_2_with_one_line_and_write_nothing(overrides, fragment, tmp_path, capsys):
    assert_train_refused(["--config", "mnist-gan", *DIGITS, "optim.steps=1", *overrides],
                         fragment, tmp_path / "run", capsys)


def test_gan_has_no_likelihood_and_evaluates_sample_metrics_through_the_cli(tmp_path, capsys):
    assert_samples_but_has_no_likelihood(["--config", "mnist-gan", *DIGITS, "optim.steps=2"], tmp_path, capsys)
