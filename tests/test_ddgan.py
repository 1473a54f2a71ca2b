"""Denoising diffusion GAN: T generator calls per sample, the step is the process's posterior
(DDPM's closed form, and the ancestral sampler's step), real pairs have the forward process's
joint law, and the family trains, saves, resumes and refuses bad options like the others."""

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

from difflab.errors import ConfigError
from difflab.models import DDGANModel, load_model
from difflab.nn import DDGANConfig, DDGANNetwork
from difflab.processes import GaussianDiffusion, HeatDissipation
from difflab.processes.noise import PerSampleGenerator
from difflab.samplers.ddpm import sample_ancestral
from difflab.training import Trainer
from difflab.training.config import load_config

DIGITS = ["data.name=digits", "network.resolution=8", "network.channel_mult=[1,2]", "network.base_channels=8",
          "network.norm_groups=4", "network.latent_dim=4", "network.discriminator_channels=4",
          "optim.batch_size=16", "run.progress=false", "run.log_every=1", "run.sample_every=0", "run.eval_every=0",
          "run.sample.num=2", "run.deterministic=true"]


def tiny_ddgan(steps: int = 4) -> DDGANModel:
    net = DDGANNetwork(DDGANConfig(resolution=8, latent_dim=4, base_channels=8, channel_mult=(1, 2), norm_groups=4,
                                   discriminator_channels=4))
    return DDGANModel(net, GaussianDiffusion(), (1, 8, 8), steps=steps).eval()


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_sampling_makes_exactly_t_generator_calls(steps):
    model = tiny_ddgan(steps)
    calls = []
    model.network.generator.register_forward_hook(lambda module, args, out: calls.append(args[1]))
    x = model.sample(5, seed=0)
    assert len(calls) == steps and model.sampling_protocol()["nfe"] == steps
    assert [float(t[0]) for t in calls] == pytest.approx([k / steps for k in range(steps, 0, -1)])
    assert x.shape == (5, 1, 8, 8) and x.abs().max() <= 1


def test_the_step_is_ddpms_posterior_and_the_ancestral_samplers_step():
    model, process = tiny_ddgan(), GaussianDiffusion()
    torch.manual_seed(0)
    x_t, x0 = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.rand(3, 1, 8, 8, dtype=torch.float64) * 2 - 1
    t, s = torch.tensor(0.75, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    step = model.posterior_draw(x_t, x0, t.expand(3), s.expand(3), torch.Generator().manual_seed(4))
    # DDPM Eq. 7 written out: mean = alpha_s sigma_ts^2 / sigma_t^2 x0 + alpha_ts sigma_s^2 / sigma_t^2 x_t
    (a_t, s_t), (a_s, s_s) = (process.alpha_sigma(time.reshape(1), (1, 1, 1, 1)) for time in (t, s))
    a_ts, s2_ts = a_t / a_s, s_t**2 - (a_t / a_s) ** 2 * s_s**2
    mean = a_s * s2_ts / s_t**2 * x0 + a_ts * s_s**2 / s_t**2 * x_t
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(step, mean + (s2_ts * s_s**2 / s_t**2).sqrt() * noise, rtol=1e-10, atol=1e-10)
    states = []  # the ancestral sampler with x0_hat fixed: its state after the step t -> s
    sample_ancestral(lambda u, time: (x0, u), process, x_t, torch.stack([t, s, torch.zeros_like(t)]),
                     generator=torch.Generator().manual_seed(4), callback=lambda i, time, u, u0: states.append(u))
    torch.testing.assert_close(step, states[1], rtol=0, atol=0)


def test_real_pairs_have_the_forward_marginal_at_the_earlier_time():
    """x_t ~ q(x_t | x0), then x_s ~ q(x_s | x_t, x0), is the forward process's joint: x_s | x0 is
    N(alpha_s x0, sigma_s^2), as DDGAN draws it (x_s first, then x_t)."""
    model = tiny_ddgan(steps=2)
    x0 = torch.full((40000, 1, 8, 8), 0.5, dtype=torch.float64)
    x_s, x_t, s, t = model.real_pair(x0, torch.Generator().manual_seed(1))
    assert set(torch.unique(t).tolist()) == {0.5, 1.0} and torch.equal(s, t - 0.5)
    for time in (0.0, 0.5):  # sigma_0 > 0 too: the cosine schedule's logSNR is clipped at t = 0
        at = s == time
        alpha_s, sigma_s = model.process.alpha_sigma(torch.tensor([time], dtype=torch.float64), (1, 1, 1, 1))
        assert abs(float(x_s[at].mean()) - 0.5 * float(alpha_s)) < 5e-3 * float(sigma_s)
        assert abs(float(x_s[at].std()) / float(sigma_s) - 1) < 5e-3


def test_samples_depend_on_the_seed_and_the_sample_index_only():
    model = tiny_ddgan()
    with torch.no_grad():
        for p in model.network.generator.head[-1].parameters():  # the UNet's head starts at zero
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    x = model.sample(5, seed=3)
    torch.testing.assert_close(x, model.sample(5, seed=3, batch_size=2), rtol=0, atol=1e-6)
    assert not torch.allclose(x[0], x[1])
    one = model.draw(PerSampleGenerator(3, range(4, 5), torch.device("cpu")), None)
    torch.testing.assert_close(one, x[4:], rtol=0, atol=1e-6)


def test_two_steps_save_load_identical_samples_bit_exact_resume_of_both_players(tmp_path):
    trainer = Trainer(load_config("mnist-ddgan", [*DIGITS, "optim.steps=2", f"run.out_dir={tmp_path / 'a'}"]))
    assert list(trainer.optimizers) == ["discriminator", "generator"]
    trainer.train()
    loaded = load_model(tmp_path / "a")
    assert isinstance(loaded, DDGANModel) and loaded.sampling_protocol()["nfe"] == 4
    x = loaded.sample(3, seed=2)
    assert torch.equal(x, trainer.ema.module.eval().sample(3, seed=2))
    record = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["losses"]) == {"d_real", "d_fake", "r1", "g"} and record["diversity"] > 0

    assert_resume_is_bit_exact("mnist-ddgan", DIGITS, tmp_path, assert_every_optimizer_restored)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.steps=0"], "model.steps=0 must be a positive integer"),
        (["model.r1_gamma=-1"], "model.r1_gamma=-1 must be >= 0"),
        (["network.latent_dim=0"], "DDGAN needs positive sizes"),
        (["network.resolution=6"], "DDGAN resolution=6 must be a multiple of 4"),
    ],
)
def test_bad_ddgan_options_exit_2_with_one_line_and_write_nothing(overrides, fragment, tmp_path, capsys):
    assert_train_refused(["--config", "mnist-ddgan", *DIGITS, "optim.steps=1", *overrides], fragment,
                         tmp_path / "run", capsys)


def test_a_process_without_a_denoising_posterior_is_refused():
    net = DDGANNetwork(DDGANConfig(resolution=8, channel_mult=(1, 2), norm_groups=4))
    with pytest.raises(ConfigError, match="a ddgan model steps by the posterior of a denoising process"):
        DDGANModel(net, HeatDissipation(), (1, 8, 8))


def test_ddgan_has_no_likelihood_and_samples_through_the_cli(tmp_path, capsys):
    assert_samples_but_has_no_likelihood(["--config", "mnist-ddgan", *DIGITS, "optim.steps=1"], tmp_path, capsys)
