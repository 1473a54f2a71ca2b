"""LSGM: the joint bound equals its closed form for a fixed Gaussian encoder under the N(0, I)
end of the mixed score, the mixed score interpolates the two denoisers, and the family trains,
saves, resumes, scores and refuses bad options like the others."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_resume_is_bit_exact, assert_train_refused

from difflab.cli.main import main
from difflab.errors import ConfigError
from difflab.models import LSGMModel, load_model
from difflab.models.lsgm import MixedScore
from difflab.nn import LSGMConfig, LSGMNetwork
from difflab.processes import BlurringDiffusion, GaussianDiffusion
from difflab.training import Trainer
from difflab.training.config import load_config

DIGITS = ["data.name=digits", "model.levels=17", "network.resolution=8", "network.channel_mult=[1,2]",
          "network.base_channels=8", "network.latent_dim=4", "network.prior_hidden=16", "network.prior_blocks=1",
          "network.prior_time_embed_dim=8", "optim.batch_size=16", "run.progress=false", "run.log_every=1",
          "run.sample_every=0", "run.eval_every=0", "run.sample.num=2", "run.sample.steps=4",
          "run.deterministic=true"]


def tiny_lsgm(latent_dim: int = 4) -> LSGMModel:
    net = LSGMNetwork(LSGMConfig(resolution=8, base_channels=8, latent_dim=latent_dim, prior_hidden=16,
                                 prior_blocks=1, prior_time_embed_dim=8))
    return LSGMModel(net, GaussianDiffusion(), (1, 8, 8)).eval()


def closed_form_cross_entropy(sq_norm: float, d: int, logsnr_min: float, logsnr_max: float) -> float:
    """The continuous VDM bound on -log p(z) (prior + diffusion + decoder terms) for the exact N(0, I)
    denoiser eps_hat = sigma_t z_t of a VP process, integrated in lambda by hand:
    d/2 [softplus - sigmoid] + |z|^2/2 [sigmoid] over [lambda_min, lambda_max], plus
    1/2 SNR(1) |z|^2 and d/2 (1 + log 2 pi - lambda_max)."""
    lo, hi = torch.tensor(logsnr_min, dtype=torch.float64), torch.tensor(logsnr_max, dtype=torch.float64)
    diffusion = d / 2 * ((F.softplus(hi) - torch.sigmoid(hi)) - (F.softplus(lo) - torch.sigmoid(lo))) \
        + sq_norm / 2 * (torch.sigmoid(hi) - torch.sigmoid(lo))
    return float(diffusion + 0.5 * torch.exp(lo) * sq_norm + d / 2 * (1 + math.log(2 * math.pi) - hi))


def discretized_logistic_nats(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                              levels: int) -> torch.Tensor:
    """-log P(x) per example of independent discretized logistics, the edge bins open (written out)."""
    half, s = 1.0 / (levels - 1), torch.exp(log_scale)
    cdf_hi = torch.where(x > 1 - half, torch.ones_like(x), torch.sigmoid((x + half - mean) / s))
    cdf_lo = torch.where(x < -1 + half, torch.zeros_like(x), torch.sigmoid((x - half - mean) / s))
    return -torch.log(cdf_hi - cdf_lo).flatten(1).sum(1)


def test_joint_bound_of_a_fixed_gaussian_encoder_on_gaussian_data_equals_the_closed_form():
    """q(z | x) = N(m, v I) fixed, a decoder that ignores z, mixing a = 0 (the N(0, I) prior's
    denoiser, whatever the MLP says): the bound is -log p(x) - H[q] + E_q[CE closed form], and
    both the training losses and ``nll`` estimate it without bias."""
    d, v = 4, 0.3
    model = tiny_lsgm(d)
    m = torch.tensor([0.5, -1.0, 0.0, 2.0])
    with torch.no_grad():
        vae = model.network.vae
        vae.to_posterior.weight.zero_()
        vae.to_posterior.bias.copy_(torch.cat([m, torch.full((d,), math.log(v))]))
        vae.from_latent.weight.zero_()  # p(x | z) = p(x)
        model.network.mixing_logit.fill_(-80.0)  # a = 0
        model.network.prior.head[-1].weight.normal_(0, 1, generator=torch.Generator().manual_seed(1))  # eps' != 0
    gauss = torch.randn(8000, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.4
    x = torch.round((gauss.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1  # Gaussian data on the 256 levels
    with torch.no_grad():
        px_mean, px_log_scale = vae(torch.zeros(1, d))
    exact = discretized_logistic_nats(x.double(), px_mean.double(), px_log_scale.double(), 256) \
        - d / 2 * (1 + math.log(2 * math.pi * v)) \
        + closed_form_cross_entropy(float(m.pow(2).sum()) + d * v, d, -10.0, 10.0)  # (B,) nats
    to_nats = 64 * math.log(2)
    with torch.no_grad():  # the training draw: one z and one t per example; 16 batches of them
        losses = [model.losses((x, None), torch.Generator().manual_seed(seed)) for seed in range(16)]
    estimates = {"nll": model.nll(x, generator=torch.Generator().manual_seed(99), num_t=16).double() * to_nats,
                 "losses": torch.stack([sum(draw.values()) for draw in losses]).mean(0).double() * to_nats}
    for name, estimate in estimates.items():
        error = estimate - exact
        standard_error = float(error.std()) / math.sqrt(len(x))
        assert abs(float(error.mean())) < 4 * standard_error, (name, float(error.mean()), standard_error)
        assert standard_error < 0.1  # so a term off by half a nat would fail
    assert float(exact.mean() - discretized_logistic_nats(x.double(), px_mean.double(), px_log_scale.double(),
                                                          256).mean()) == pytest.approx(
        0.5 * (float(m.pow(2).sum()) + d * v - d - d * math.log(v)), abs=0.02)  # = KL(q || N(0, I)) nearly


def test_the_mixed_score_runs_from_the_normal_priors_denoiser_to_the_networks():
    model = tiny_lsgm()
    with torch.no_grad():
        model.network.prior.head[-1].weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    z_t, t = torch.randn(5, 4), torch.rand(5)
    _, sigma = model.process.alpha_sigma(t.double(), (5, 4))
    eps_net = model.network(z_t, t)
    for logit, expected in [(-80.0, sigma.float() * z_t), (80.0, eps_net)]:
        with torch.no_grad():
            model.network.mixing_logit.fill_(logit)
        torch.testing.assert_close(MixedScore(model.network, model.process)(z_t, t), expected)


def test_the_cross_entropy_trains_the_encoder_the_prior_and_the_mixing_logits_together():
    model = tiny_lsgm().train()
    with torch.no_grad():
        model.network.prior.head[-1].weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    model.losses((x, None), torch.Generator().manual_seed(2))["cross_entropy"].mean().backward()
    net = model.network
    for name, grad in [("encoder", net.vae.to_posterior.weight.grad), ("prior", net.prior.stem.weight.grad),
                       ("mixing", net.mixing_logit.grad)]:
        assert grad is not None and grad.abs().sum() > 0, name
    assert net.vae.from_latent.weight.grad is None  # the decoder has no part in the cross-entropy


def test_the_training_proposal_is_uniform_in_log_sigma_squared():
    model = tiny_lsgm()
    u = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    t, _ = model.proposal.continuous(u)
    _, sigma = model.process.alpha_sigma(t, (50, 1))
    log_var, (_, sigma_0), (_, sigma_1) = 2 * sigma.flatten().log(), *(
        model.process.alpha_sigma(torch.tensor([v], dtype=torch.float64), (1, 1)) for v in (0.0, 1.0))
    expected = 2 * sigma_0.log() + u * (2 * sigma_1.log() - 2 * sigma_0.log())
    torch.testing.assert_close(log_var, expected.flatten(), rtol=0, atol=1e-2)  # linear in t within each cell


def test_samples_take_the_latent_samplers_calls_and_do_not_depend_on_the_batch():
    model = tiny_lsgm()
    calls = []
    model.network.prior.register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    x = model.sample(5, seed=1, steps=6, sampler="ddim")
    assert len(calls) == 6 and model.sampling_protocol(steps=6, sampler="ddim")["nfe"] == 6
    assert x.shape == (5, 1, 8, 8) and x.abs().max() <= 1
    torch.testing.assert_close(x, model.sample(5, seed=1, steps=6, sampler="ddim", batch_size=2), rtol=0, atol=1e-6)


def test_two_steps_save_load_identical_samples_nll_through_the_cli_and_bit_exact_resume(tmp_path):
    trainer = Trainer(load_config("mnist-lsgm", [*DIGITS, "optim.steps=2", f"run.out_dir={tmp_path / 'a'}"]))
    trainer.train()
    loaded = load_model(tmp_path / "a")
    assert isinstance(loaded, LSGMModel) and loaded.sampling_protocol()["nfe"] == 4
    assert torch.equal(loaded.sample(3, seed=2), trainer.ema.module.eval().sample(3, seed=2))
    record = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["losses"]) == {"reconstruction", "negative_entropy", "cross_entropy"}
    assert 0 < record["mixing"] < 1
    assert main(["eval", "--checkpoint", str(tmp_path / "a"), "--metrics", "nll", "--nll-examples", "8",
                 "--nll-num-t", "2", "--out", str(tmp_path / "ev")]) == 0
    (row,) = json.loads((tmp_path / "ev" / "eval.json").read_text())["rows"]
    assert 0 < row["nll"] < 16, row

    assert_resume_is_bit_exact("mnist-lsgm", DIGITS, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.levels=1"], "levels=1 must be an integer >= 2"),
        (["network.prior_blocks=0"], "LSGM needs positive prior sizes"),
        (["network.latent_dim=0"], "ConvVAE needs positive sizes"),
        (["process.schedule=linear"], "has no noise; set process.schedule: cosine"),
    ],
)
def test_bad_lsgm_options_exit_2_with_one_line_and_write_nothing(overrides, fragment, tmp_path, capsys):
    assert_train_refused(["--config", "mnist-lsgm", *DIGITS, "optim.steps=1", *overrides], fragment,
                         tmp_path / "run", capsys)


def test_a_process_that_is_not_diagonal_in_the_identity_basis_is_refused():
    with pytest.raises(ConfigError, match="an lsgm model diffuses a vector latent with a variance-preserving"):
        LSGMModel.check_process(BlurringDiffusion())
