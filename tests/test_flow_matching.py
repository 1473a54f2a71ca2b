"""Flow matching inside the Gaussian core: the "flow" schedule is the linear interpolant
x_t = (1 - s) x_0 + s eps rescaled to variance-preserving, the "flow" prediction eps - x_0
converts exactly, and logit-normal times have their density; a rectified-flow run trains."""

from __future__ import annotations

import math

import pytest
import torch

import difflab
from difflab.cli.main import main
from difflab.objectives import sample_times
from difflab.processes import GaussianDiffusion, make_target, split_prediction, x0_error_factor
from difflab.processes.analytic import GaussianData
from difflab.processes.schedules import FlowLogSNR


@pytest.mark.parametrize("logsnr_range", [(-10.0, 10.0), (-40.0, 40.0)])
def test_flow_marginals_are_the_linear_interpolant_after_rescaling(logsnr_range):
    low, high = logsnr_range
    process = GaussianDiffusion("flow", logsnr_min=low, logsnr_max=high)
    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
    x0 = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    eps = torch.randn(6, 1, 4, 4, generator=gen, dtype=torch.float64)
    s = FlowLogSNR(low, high).interpolant_time(t).view(-1, 1, 1, 1)
    interpolant = (1 - s) * x0 + s * eps
    torch.testing.assert_close(process.diffuse(x0, t, eps) * ((1 - s) ** 2 + s**2).sqrt(), interpolant,
                               rtol=1e-12, atol=1e-12)
    lam = process.logsnr(t, (6, 1)).flatten()
    assert lam[0].item() == pytest.approx(high) and lam[-1].item() == pytest.approx(low)
    if high > 30:  # unclipped in effect: the interpolant's time is the process time
        torch.testing.assert_close(s.flatten(), t, rtol=0, atol=1e-8)


def test_the_flow_target_is_the_interpolants_velocity_and_its_x0_error_factor_is_exact():
    gen = torch.Generator().manual_seed(1)
    process = GaussianDiffusion("flow", logsnr_min=-40.0, logsnr_max=40.0)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    x0, eps = (torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    alpha, sigma = process.alpha_sigma(t, (2, 1, 3, 3))
    h = 1e-6  # d/ds of (1 - s) x0 + s eps at s = t
    velocity = (((1 - (t + h)).view(-1, 1, 1, 1) * x0 + (t + h).view(-1, 1, 1, 1) * eps)
                - ((1 - (t - h)).view(-1, 1, 1, 1) * x0 + (t - h).view(-1, 1, 1, 1) * eps)) / (2 * h)
    target = make_target("flow", x0, eps, alpha, sigma)
    torch.testing.assert_close(target, velocity, rtol=1e-6, atol=1e-6)
    u_t = alpha * x0 + sigma * eps
    wrong = target + 0.1 * torch.randn(target.shape, generator=gen, dtype=torch.float64)
    x0_wrong, _ = split_prediction("flow", wrong, u_t, alpha, sigma)
    torch.testing.assert_close((x0_wrong - x0).pow(2), x0_error_factor("flow", alpha, sigma) * (wrong - target).pow(2))


def test_the_default_solver_on_the_exact_flow_denoiser_reproduces_gaussian_data():
    gen = torch.Generator().manual_seed(2)
    data = GaussianData(0.5 * torch.randn(1, 6, 6, generator=gen, dtype=torch.float64),
                        0.1 + 0.4 * torch.rand(1, 6, 6, generator=gen, dtype=torch.float64))
    process = GaussianDiffusion("flow")
    x = difflab.sample(data.model(process, "flow"), process, (6000, 1, 6, 6), steps=20, prediction="flow",
                       generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert ((x.mean(0) - data.mean) / data.var.sqrt()).abs().max() < 0.06
    assert (x.var(0) / data.var - 1).abs().max() < 0.08  # the standard error is sqrt(2 / 6000) ~ 0.018


def test_logit_normal_times_have_a_standard_normal_logit():
    t = sample_times(20000, method="logit_normal", generator=torch.Generator().manual_seed(4))
    assert t.dtype == torch.float64 and 0 < t.min() and t.max() < 1
    logit = torch.log(t) - torch.log1p(-t)
    assert abs(logit.mean().item()) < 4 / math.sqrt(20000) and abs(logit.std().item() - 1) < 0.02


def test_a_rectified_flow_run_trains_and_samples(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", "digits-gauss", "process.schedule=flow", "objective.prediction=flow",
                 "objective.time_sampling=logit_normal", "network.base_channels=16", "optim.batch_size=16",
                 "optim.steps=2", "run.progress=false", "run.sample_every=0", "run.eval_every=0", "run.sample.num=2",
                 f"run.out_dir={out}"]) == 0
    model = difflab.load_model(out)
    assert model.process.schedule == "flow" and model.prediction == "flow"
    assert model.sample(2, steps=3).isfinite().all()
