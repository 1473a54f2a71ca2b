"""Samplers against the closed-form denoiser of Gaussian data diagonal in the basis."""

import pytest
import torch

import difflab
from difflab.errors import ConfigError
from difflab.processes import BlurringDiffusion, GaussianDiffusion
from difflab.processes.analytic import GaussianData

SHAPE = (1, 6, 6)
N = 6000


def _data(seed: int = 0) -> GaussianData:
    gen = torch.Generator().manual_seed(seed)
    mean = 0.5 * torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    var = 0.1 + 0.4 * torch.rand(SHAPE, generator=gen, dtype=torch.float64)
    return GaussianData(mean, var)


def _moment_errors(process, sampler, steps, prediction="eps", **opts):
    data = _data()
    x = difflab.sample(
        data.model(process, prediction), process, (N, *SHAPE), sampler=sampler, steps=steps,
        prediction=prediction, generator=torch.Generator().manual_seed(1), dtype=torch.float64, **opts,
    )
    u = process.to_basis(x)
    mean_err = ((u.mean(0) - data.mean) / data.var.sqrt()).abs().max().item()
    var_err = (u.var(0) / data.var - 1).abs().max().item()
    return mean_err, var_err


PROCESSES = [GaussianDiffusion(), BlurringDiffusion(sigma_blur_max=3.0)]


@pytest.mark.parametrize("process", PROCESSES, ids=["gauss", "blur"])
@pytest.mark.parametrize("sampler,steps,opts", [("ancestral", 400, {}), ("ddim", 300, {}), ("ddim", 300, {"eta": 0.5})])
def test_samplers_reproduce_data_moments(process, sampler, steps, opts):
    mean_err, var_err = _moment_errors(process, sampler, steps, **opts)
    # Monte Carlo: the standard error of the variance ratio is sqrt(2/N) ~ 0.018 per coefficient.
    assert mean_err < 0.06
    assert var_err < 0.08


@pytest.mark.parametrize("prediction", ["x0", "v", "flow"])
def test_sampling_does_not_depend_on_the_parameterisation(prediction):
    process = BlurringDiffusion(sigma_blur_max=3.0)
    data = _data()
    noise = torch.randn((8, *SHAPE), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = difflab.sample(data.model(process, "eps"), process, noise.shape, steps=20, noise=noise, dtype=torch.float64)
    out = difflab.sample(data.model(process, prediction), process, noise.shape, steps=20, noise=noise,
                         prediction=prediction, dtype=torch.float64)
    assert torch.allclose(out, ref, atol=1e-8)


@pytest.mark.parametrize("process", PROCESSES, ids=["gauss", "blur"])
def test_ddim_error_shrinks_with_steps(process):
    errors = [_moment_errors(process, "ddim", steps)[1] for steps in (5, 20, 100)]
    assert errors[0] > errors[1] > errors[2]


def test_ddim_eta0_is_deterministic_given_noise():
    process = BlurringDiffusion(sigma_blur_max=3.0)
    model = _data().model(process)
    noise = torch.randn(4, *SHAPE)
    a = difflab.sample(model, process, noise.shape, "ddim", steps=10, noise=noise, generator=torch.Generator().manual_seed(0))
    b = difflab.sample(model, process, noise.shape, "ddim", steps=10, noise=noise, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    c = difflab.sample(model, process, noise.shape, "ddim", steps=10, noise=noise, eta=1.0,
                       generator=torch.Generator().manual_seed(0))
    assert not torch.equal(a, c)


def test_ddim_eta1_equals_ancestral_step_distribution():
    """With eta = 1, DDIM's update has the ancestral posterior's mean and variance."""
    process = GaussianDiffusion()
    model = _data().model(process)
    noise = torch.randn(4, *SHAPE, dtype=torch.float64)
    a = difflab.sample(model, process, noise.shape, "ddim", steps=10, noise=noise, eta=1.0,
                       generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    b = difflab.sample(model, process, noise.shape, "ancestral", steps=10, noise=noise,
                       generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(a, b, atol=1e-10)


def test_trajectory_and_errors():
    process = GaussianDiffusion()
    model = _data().model(process)
    x, traj = difflab.sample(model, process, (2, *SHAPE), steps=7, return_trajectory=True)
    assert len(traj) == 8 and torch.equal(traj[-1], x)
    with pytest.raises(ConfigError, match="choose one of"):
        difflab.sample(model, process, (2, *SHAPE), sampler="euler_a")
    with pytest.raises(ConfigError, match="no option"):
        difflab.sample(model, process, (2, *SHAPE), sampler="ancestral", eta=0.5)
    with pytest.raises(ConfigError, match="shape"):
        difflab.sample(model, process, (2, *SHAPE), noise=torch.randn(3, *SHAPE))
    with pytest.raises(ConfigError, match="eta"):
        difflab.sample(model, process, (2, *SHAPE), sampler="ddim", eta=2.0)


@pytest.mark.parametrize("sampler", ["ddim", "ancestral", "heun", "dpmpp_2m", "unipc"])
def test_network_evaluations_counts_model_calls(sampler):
    from difflab.samplers.api import network_evaluations

    process = GaussianDiffusion()
    exact = _data().model(process)
    calls = []

    def model(z, t, **cond):
        calls.append(1)
        return exact(z, t)

    difflab.sample(model, process, (2, *SHAPE), sampler=sampler, steps=7)
    assert len(calls) == network_evaluations(sampler, 7)
