"""Loss weightings are a property of the objective, not of the parameterisation."""

import pytest
import torch

from difflab.errors import ConfigError
from difflab.objectives import diffusion_loss, sample_times
from difflab.processes import (
    BlurringDiffusion,
    GaussianDiffusion,
    make_target,
    split_prediction,
)


def _views(process, kind):
    """A fixed (arbitrary) eps-model, re-expressed exactly as a `kind`-prediction model."""
    weight = torch.randn(1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def eps_model(z, t):
        return torch.tanh(weight * z) + 0.1 * t.view(-1, 1, 1, 1)

    def model(z, t):
        alpha, sigma = process.alpha_sigma(t, tuple(z.shape))
        u_t = process.to_basis(z)
        u_0, eps = split_prediction("eps", process.to_basis(eps_model(z, t)), u_t, alpha, sigma)
        return process.from_basis(make_target(kind, u_0, eps, alpha, sigma))

    return model


@pytest.mark.parametrize("process", [GaussianDiffusion(), BlurringDiffusion(sigma_blur_max=2.0)], ids=["gauss", "blur"])
@pytest.mark.parametrize("weighting", ["snr", "min_snr"])
def test_weighted_losses_agree_across_parameterisations(process, weighting):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(6, 1, 8, 8, generator=gen, dtype=torch.float64)
    t = torch.tensor([0.1, 0.3, 0.45, 0.6, 0.8, 0.95], dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    losses = {
        kind: diffusion_loss(_views(process, kind), process, x0, prediction=kind, weighting=weighting, t=t, noise=noise)
        for kind in ("eps", "x0", "v", "flow")
    }
    for kind in ("x0", "v", "flow"):
        assert torch.allclose(losses["eps"], losses[kind], rtol=1e-6), kind


def test_uniform_eps_loss_is_plain_mse_and_zero_for_the_oracle():
    process = BlurringDiffusion(sigma_blur_max=2.0)
    x0 = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    oracle = diffusion_loss(lambda z, tt: noise, process, x0, t=t, noise=noise)
    assert torch.allclose(oracle, torch.zeros(4, dtype=torch.float64))
    zero = diffusion_loss(lambda z, tt: torch.zeros_like(z), process, x0, t=t, noise=noise)
    assert torch.allclose(zero, noise.pow(2).flatten(1).mean(1))


def test_snr_weighting_is_the_x0_error():
    process = GaussianDiffusion()
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x0)
    t = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)
    eps_hat = torch.zeros_like(x0)
    loss = diffusion_loss(lambda z, tt: eps_hat, process, x0, weighting="snr", t=t, noise=noise)
    alpha, sigma = process.alpha_sigma(t, x0.shape)
    z = alpha * x0 + sigma * noise
    x0_hat = (z - sigma * eps_hat) / alpha
    assert torch.allclose(loss, (x0 - x0_hat).pow(2).flatten(1).mean(1))


def test_stratified_times_cover_every_stratum():
    t = sample_times(16, method="stratified", generator=torch.Generator().manual_seed(0))
    assert ((t > 0) & (t <= 1)).all()
    strata = torch.floor((1 - t) * 16).long()
    assert sorted(strata.tolist()) == list(range(16))
    with pytest.raises(ConfigError, match="choose one of"):
        sample_times(4, method="sobol")
