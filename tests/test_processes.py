"""Closed-form checks of the forward processes: bases, schedules, marginals, posteriors."""

import math

import numpy as np
import pytest
import scipy.fft
import torch

from difflab.errors import ConfigError
from difflab.processes import (
    BlurringDiffusion,
    DCTBasis,
    GaussianDiffusion,
    LinearDDPM,
    build_process,
    make_target,
    split_prediction,
)
from difflab.processes.analytic import GaussianData

SHAPES = [(2, 3, 8, 8), (2, 1, 6, 10), (1, 2, 28, 28)]


@pytest.mark.parametrize("shape", SHAPES)
def test_dct_round_trip_is_exact_in_float32(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    basis = DCTBasis()
    assert torch.allclose(basis.inverse(basis.forward(x)), x, atol=1e-6)
    # Orthonormal: the norm is preserved.
    assert torch.allclose(basis.forward(x).norm(), x.norm(), rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_dct_equals_scipy_dctn_ortho(shape):
    x = np.random.default_rng(1).standard_normal(shape)
    ours = DCTBasis().forward(torch.from_numpy(x)).numpy()
    ref = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def _paper_blur_alpha_sigma(t, h, w, sigma_blur_max=20.0, min_d=0.001, lmin=-10.0, lmax=10.0):
    """The paper's formulas, written independently in numpy float64."""
    b = math.atan(math.exp(-lmax / 2))
    a = math.atan(math.exp(-lmin / 2)) - b
    logsnr = -2 * np.log(np.tan(a * t + b))
    alpha_cos, sigma = np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))
    sigma_blur = sigma_blur_max * np.sin(t * np.pi / 2) ** 2
    freqs_h = np.pi * np.arange(h) / h
    freqs_w = np.pi * np.arange(w) / w
    lam = freqs_h[:, None] ** 2 + freqs_w[None, :] ** 2
    d = (1 - min_d) * np.exp(-lam * sigma_blur**2 / 2) + min_d
    return alpha_cos * d, sigma


@pytest.mark.parametrize("t", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_blurring_schedule_matches_paper(t):
    process = BlurringDiffusion()
    alpha, sigma = process.alpha_sigma(torch.tensor([t], dtype=torch.float64), (1, 1, 8, 12))
    ref_alpha, ref_sigma = _paper_blur_alpha_sigma(t, 8, 12)
    assert alpha.dtype == torch.float64
    np.testing.assert_allclose(alpha[0, 0].numpy(), ref_alpha, rtol=1e-12)
    np.testing.assert_allclose(sigma.item(), ref_sigma, rtol=1e-12)


def test_blurring_frequency_scaling_is_one_at_t0():
    d = BlurringDiffusion().frequency_scaling(torch.zeros(1, dtype=torch.float64), 8, 8)
    assert torch.allclose(d, torch.ones_like(d))


def test_no_blur_reproduces_gaussian_cosine():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    a_blur, s_blur = BlurringDiffusion(sigma_blur_max=0.0).alpha_sigma(t, (11, 1, 8, 8))
    a_gauss, s_gauss = GaussianDiffusion("cosine").alpha_sigma(t, (11, 1, 8, 8))
    assert torch.allclose(a_blur, a_gauss.expand_as(a_blur), rtol=1e-14)
    assert torch.allclose(s_blur, s_gauss, rtol=1e-14)


def test_cosine_endpoints_are_the_clipped_logsnr():
    process = GaussianDiffusion("cosine", logsnr_min=-10, logsnr_max=10)
    lam = process.logsnr(torch.tensor([0.0, 1.0], dtype=torch.float64), (2, 1))
    assert torch.allclose(lam.flatten(), torch.tensor([10.0, -10.0], dtype=torch.float64), atol=1e-9)


def test_linear_schedule_equals_ddpm_alpha_bar_on_the_grid():
    betas = np.linspace(1e-4, 0.02, 1000)
    alpha_bar = np.cumprod(1 - betas)
    i = np.array([1, 2, 10, 250, 500, 999, 1000])
    alpha, _ = GaussianDiffusion("linear").alpha_sigma(torch.tensor(i / 1000), (len(i), 1, 1, 1))
    np.testing.assert_allclose(alpha.flatten().numpy() ** 2, alpha_bar[i - 1], rtol=1e-10)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "flow"])
def test_schedule_inverse(schedule):
    proc = GaussianDiffusion(schedule)
    t = torch.linspace(0.01, 0.99, 21, dtype=torch.float64)
    lam = proc.logsnr(t, (21, 1)).flatten()
    assert torch.allclose(proc._schedule.t_from_logsnr(lam), t, atol=1e-6)
    assert (lam[1:] < lam[:-1]).all(), "logSNR must decrease in t"
    assert LinearDDPM().t_from_logsnr(torch.tensor([50.0])).item() < 1e-3


def test_dlogsnr_dt_matches_finite_differences():
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    for process in [GaussianDiffusion(), BlurringDiffusion(sigma_blur_max=4.0)]:
        shape = (3, 1, 6, 6)
        h = 1e-6
        fd = (process.logsnr(t + h, shape) - process.logsnr(t - h, shape)) / (2 * h)
        assert torch.allclose(process.dlogsnr_dt(t, shape), fd.expand_as(process.dlogsnr_dt(t, shape)), rtol=1e-6)


@pytest.mark.parametrize("process", [GaussianDiffusion(), BlurringDiffusion(sigma_blur_max=4.0)])
def test_diffuse_marginals_per_coefficient(process):
    """Empirical mean and variance of u_t match alpha * u_0 and sigma^2 (Monte Carlo)."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 1, 6, 8, generator=gen, dtype=torch.float64)
    n = 20000
    t = torch.full((n,), 0.4, dtype=torch.float64)
    noise = torch.randn(n, 1, 6, 8, generator=gen, dtype=torch.float64)
    u_t = process.to_basis(process.diffuse(x0.expand(n, -1, -1, -1), t, noise))
    alpha, sigma = process.alpha_sigma(t[:1], (1, 1, 6, 8))
    expected_mean = (alpha * process.to_basis(x0))[0]
    se = sigma.item() / math.sqrt(n)
    assert (u_t.mean(0) - expected_mean).abs().max() < 5 * se
    rel_var_err = (u_t.var(0) / sigma.item() ** 2 - 1).abs().max()
    assert rel_var_err < 5 * math.sqrt(2 / n)


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "flow"])
def test_prediction_views_are_exact_inverses(kind):
    gen = torch.Generator().manual_seed(3)
    process = BlurringDiffusion(sigma_blur_max=4.0)
    shape = (4, 1, 8, 8)
    t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
    alpha, sigma = process.alpha_sigma(t, shape)
    u_0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    eps = torch.randn(shape, generator=gen, dtype=torch.float64)
    u_t = alpha * u_0 + sigma * eps
    pred = make_target(kind, u_0, eps, alpha, sigma)
    u_0_back, eps_back = split_prediction(kind, pred, u_t, alpha, sigma)
    assert torch.allclose(eps_back, eps, atol=1e-8)
    # x0 from eps divides by alpha, which is ~1e-5 at high frequencies: compare alpha * u_0.
    assert torch.allclose(alpha * u_0_back, alpha * u_0, atol=1e-8)


@pytest.mark.parametrize("process", [GaussianDiffusion(), GaussianDiffusion("linear"), BlurringDiffusion(sigma_blur_max=3.0)])
def test_posterior_is_the_gaussian_conditional(process):
    """Mean/variance of q(u_s | u_t, u_0) equal the conditional of the joint (u_s, u_t | u_0)."""
    shape = (1, 1, 4, 4)
    t, s = torch.tensor([0.7], dtype=torch.float64), torch.tensor([0.4], dtype=torch.float64)
    u_0 = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u_t = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean, var = process.posterior(u_t, u_0, t, s)
    a_s, s_s = process.alpha_sigma(s, shape)
    a_t, s_t = process.alpha_sigma(t, shape)
    # Joint: u_s = a_s u0 + s_s e1, u_t = a_ts u_s + noise => cov(u_s, u_t) = a_ts s_s^2.
    a_ts = a_t / a_s
    cov = a_ts * s_s**2
    ref_mean = a_s * u_0 + cov / s_t**2 * (u_t - a_t * u_0)
    ref_var = s_s**2 - cov**2 / s_t**2
    assert torch.allclose(mean, ref_mean, rtol=1e-6, atol=1e-9)
    assert torch.allclose(var, ref_var.expand_as(var), rtol=1e-6)


def test_gaussian_data_log_prob_is_basis_invariant():
    """log p(x) of N(m, diag v) in the DCT basis equals the pixel-space Gaussian density."""
    mean = torch.randn(1, 4, 4, dtype=torch.float64)
    var = torch.rand(1, 4, 4, dtype=torch.float64) + 0.1
    process = BlurringDiffusion()
    data = GaussianData(mean, var)
    x = data.sample(5, process, generator=torch.Generator().manual_seed(0))
    c = torch.kron(*(torch.from_numpy(scipy.fft.dct(np.eye(4), norm="ortho", axis=0)),) * 2)
    cov = c.T @ torch.diag(var.flatten()) @ c  # pixel-space covariance of vec(x)
    mvn = torch.distributions.MultivariateNormal(process.from_basis(mean).flatten(), covariance_matrix=cov)
    assert torch.allclose(data.log_prob(x, process), mvn.log_prob(x.flatten(1)), rtol=1e-9)


def test_config_round_trip_and_errors():
    for process in [GaussianDiffusion("linear"), BlurringDiffusion(sigma_blur_max=4.0, min_d=0.01)]:
        assert build_process(process.config()) == process
    with pytest.raises(ConfigError, match="allowed"):
        build_process({"kind": "blurring", "sigma_max": 3})
    with pytest.raises(ConfigError, match="'blurring'"):
        build_process({"kind": "bluring"})
    with pytest.raises(ConfigError, match="choose one of"):
        GaussianDiffusion("quadratic")
    with pytest.raises(ConfigError):
        BlurringDiffusion(sigma_blur_max=-1)
