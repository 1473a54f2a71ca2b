"""Likelihoods against closed forms: Gaussian data (continuous) and grid data (quantized).

For Gaussian data u_0 ~ N(m, diag(v)) in the process basis everything is known per coefficient k:

- the probability-flow map is affine, u_1 = m_1 + sqrt(V_1 / V_0) (u_0 - m_0) with
  m_t = alpha_t m, V_t = alpha_t^2 v + sigma_t^2, so the ODE model's density (prior
  N(0, sigma_1^2) pulled back) is closed form;
- with the exact denoiser E(eps - eps_hat)^2 = sigmoid(lambda + log v), so the expected
  continuous diffusion term is 1/2 [softplus(lambda(0) + log v) - softplus(lambda(1) + log v)],
  and each discrete step contributes 1/2 (SNR_s - SNR_t) v / (SNR_t v + 1).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import difflab
from difflab.errors import ConfigError, DataError
from difflab.likelihood.elbo import elbo_terms
from difflab.likelihood.quantization import (
    bin_width,
    discretized_gaussian_log_prob,
    log_normal_cdf_diff,
)
from difflab.processes import (
    BlurringDiffusion,
    DiagonalGaussianProcess,
    GaussianDiffusion,
)
from difflab.processes.analytic import GaussianData

SHAPE = (1, 2, 2)
LN2 = math.log(2.0)


def make_data(shape: tuple[int, ...] = SHAPE, seed: int = 0) -> GaussianData:
    g = torch.Generator().manual_seed(seed)
    mean = 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
    var = 0.05 + torch.rand(shape, generator=g, dtype=torch.float64)
    return GaussianData(mean=mean, var=var)


def process_pair(logsnr: float) -> list[DiagonalGaussianProcess]:
    return [
        GaussianDiffusion(logsnr_min=-logsnr, logsnr_max=logsnr),
        BlurringDiffusion(sigma_blur_max=2.0, logsnr_min=-logsnr, logsnr_max=logsnr),
    ]


def at(t: float) -> torch.Tensor:
    return torch.full((1,), t, dtype=torch.float64)


def flow_model_nll(data: GaussianData, process: DiagonalGaussianProcess, x: torch.Tensor) -> torch.Tensor:
    """-log p(x) in nats of the exact probability-flow model (prior N(0, sigma_1^2) at t = 1)."""
    u = process.to_basis(x.double())
    m0, v0 = data.marginal(process, at(0.0))
    m1, v1 = data.marginal(process, at(1.0))
    u1 = m1 + (v1 / v0).sqrt() * (u - m0)
    _, s1 = process.alpha_sigma(at(1.0), (1, *x.shape[1:]))
    log_p = -0.5 * (u1 / s1) ** 2 - torch.log(s1) - 0.5 * math.log(2 * math.pi) + 0.5 * torch.log(v1 / v0)
    return -log_p.flatten(1).sum(1)


def expected_elbo(data: GaussianData, process: DiagonalGaussianProcess, steps: int | None = None) -> float:
    """E_x[ELBO(x)] in nats for Gaussian data and the exact denoiser (continuous, or T = steps)."""
    shape = (1, *data.mean.shape)
    m, v = data.mean.double(), data.var.double()
    lam0, lam1 = process.logsnr(at(0.0), shape), process.logsnr(at(1.0), shape)
    prior = 0.5 * torch.exp(lam1) * (m**2 + v)
    decoder = 0.5 * (1 + math.log(2 * math.pi) - lam0)
    if steps is None:
        diffusion = 0.5 * (F.softplus(lam0 + torch.log(v)) - F.softplus(lam1 + torch.log(v)))
    else:
        ts = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        snr = torch.exp(process.logsnr(ts, (steps + 1, *shape[1:])))  # (T+1, 1, H, W) or (T+1, 1, 1, 1)
        diffusion = (0.5 * (snr[:-1] - snr[1:]) * v / (snr[1:] * v + 1)).sum(0, keepdim=True)
    return torch.broadcast_to(prior + decoder + diffusion, shape).sum().item()


def expected_nll(data: GaussianData) -> float:
    """E_x[-log p(x)] in nats: the entropy of N(m, diag(v))."""
    return (0.5 * (1 + torch.log(2 * math.pi * data.var.double()))).sum().item()


# --- probability-flow ODE ------------------------------------------------------------------


@pytest.mark.parametrize("process", process_pair(20.0), ids=["identity", "dct"])
def test_ode_exact_trace_matches_closed_form(process: DiagonalGaussianProcess) -> None:
    data = make_data()
    x = data.sample(8, process, generator=torch.Generator().manual_seed(1))
    dims = x[0].numel()
    bpd = difflab.nll(data.model(process), process, x, method="ode", divergence="exact", rtol=1e-7, atol=1e-7)
    flow_bpd = flow_model_nll(data, process, x) / (dims * LN2)
    exact_bpd = -data.log_prob(x, process) / (dims * LN2)
    # Solver tolerance: the ODE model's own density, to ~1e-6.
    assert (bpd - flow_bpd).abs().max() < 1e-5
    # The data density: the prior mismatch at logSNR -20 and the noise at +20 are ~1e-4 nats.
    assert (bpd - exact_bpd).abs().max() < 1e-4


def rotated_model(data: GaussianData, process: GaussianDiffusion, q: torch.Tensor):
    """The exact eps-denoiser of x = Q y, y ~ data (identity basis, scalar alpha: rotation-equivariant)."""
    base = data.model(process, "eps")

    def model(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        y = (z.flatten(1) @ q).reshape(z.shape)  # Q^T z per example
        return (base(y, t).flatten(1) @ q.T).reshape(z.shape)

    return model


def test_ode_hutchinson_is_unbiased_within_its_standard_error() -> None:
    shape = (1, 3, 3)
    data = make_data(shape, seed=2)
    process = GaussianDiffusion(logsnr_min=-20.0, logsnr_max=20.0)
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(9, 9, generator=g, dtype=torch.float64))  # dense Jacobian
    y = data.sample(8, process, generator=g)
    x = (y.flatten(1) @ q.T).reshape(y.shape)
    from difflab.likelihood.flow import flow_nll

    result = flow_nll(rotated_model(data, process, q), process, x, divergence="hutchinson", num_probes=8,
                      rtol=1e-6, atol=1e-6, generator=g)
    dev = result.nll_probes - flow_model_nll(data, process, y)[:, None]  # (B, P)
    se = dev.std() / math.sqrt(dev.numel())
    assert dev.std() > 1e-2  # the probes do vary (a dense Jacobian) ...
    assert dev.mean().abs() < 4 * se  # ... and average to the exact trace


def test_ode_dequantized_matches_bin_mass() -> None:
    """Quantized Gaussian: E[-log p(x + U)] - D log Delta = -log P(bin) up to a tiny Jensen gap."""
    levels, std = 17, 0.25
    data = GaussianData(mean=torch.zeros(SHAPE, dtype=torch.float64), var=torch.full(SHAPE, std**2, dtype=torch.float64))
    process = GaussianDiffusion(logsnr_min=-16.0, logsnr_max=16.0)
    g = torch.Generator().manual_seed(4)
    delta = bin_width(levels)
    x = torch.round((data.sample(48, process, generator=g).clamp(-1, 1) + 1) / delta) * delta - 1
    mass = torch.special.ndtr((x + delta / 2) / std) - torch.special.ndtr((x - delta / 2) / std)
    exact_bpd = -torch.log(mass).flatten(1).sum(1) / (4 * LN2)
    bpd = difflab.nll(data.model(process), process, x, method="ode", levels=levels, generator=g,
                      divergence="exact", rtol=1e-6, atol=1e-6)
    dev = bpd - exact_bpd
    assert dev.mean().abs() < 4 * dev.std() / math.sqrt(len(dev)) + 1e-3


def test_ode_same_for_every_prediction_parameterisation() -> None:
    data, process = make_data(), GaussianDiffusion()
    x = data.sample(4, process, generator=torch.Generator().manual_seed(5))
    results = [
        difflab.nll(data.model(process, p), process, x, method="ode", prediction=p, divergence="exact")
        for p in ("eps", "x0", "v")
    ]
    assert torch.allclose(results[0], results[1], atol=1e-6) and torch.allclose(results[0], results[2], atol=1e-6)


# --- variational bound ---------------------------------------------------------------------

ELBO_OPTIONS = [
    dict(time="continuous", num_t=8, t_sampling="uniform", importance=False),
    dict(time="continuous", num_t=8, t_sampling="antithetic", importance=False),
    dict(time="continuous", num_t=8, t_sampling="stratified", importance=True),
    dict(time="discrete", steps=50, num_t=50, t_sampling="stratified", importance=False),
    dict(time="discrete", steps=50, num_t=8, t_sampling="uniform", importance=True),
]


@pytest.mark.parametrize("process", process_pair(6.0), ids=["identity", "dct"])
@pytest.mark.parametrize("options", ELBO_OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_elbo_estimate_is_unbiased(process: DiagonalGaussianProcess, options: dict) -> None:
    """Mean over data of the Monte Carlo bound = its closed-form expectation (within 4 s.e.)."""
    data = make_data()
    g = torch.Generator().manual_seed(6)
    x = data.sample(4000, process, generator=g)
    terms = elbo_terms(data.model(process), process, x, generator=g, **options)
    total = terms["prior"] + terms["diffusion"] + terms["decoder"]
    expected = expected_elbo(data, process, options["steps"] if options["time"] == "discrete" else None)
    se = total.std().item() / math.sqrt(len(total))
    assert abs(total.mean().item() - expected) < 4 * se


@pytest.mark.parametrize("process_at", [lambda s: process_pair(s)[0], lambda s: process_pair(s)[1]], ids=["identity", "dct"])
def test_elbo_bounds_exact_nll_and_tightens(process_at) -> None:
    data = make_data()
    exact = expected_nll(data)
    # Continuous time: the gap shrinks to 0 as [logsnr_min, logsnr_max] widens.
    gaps = [expected_elbo(data, process_at(s)) - exact for s in (2.0, 4.0, 8.0, 16.0)]
    assert all(a > b > 0 for a, b in zip(gaps, gaps[1:])) and gaps[-1] < 1e-4
    # Discrete time: more steps, tighter, down to the continuous bound.
    process = process_at(6.0)
    continuous = expected_elbo(data, process) - exact
    gaps_t = [expected_elbo(data, process, steps=T) - exact for T in (10, 100, 1000)]
    assert all(a > b > continuous for a, b in zip(gaps_t, gaps_t[1:]))
    # The estimator per example: the mean gap is not negative beyond its standard error.
    g = torch.Generator().manual_seed(7)
    x = data.sample(2000, process, generator=g)
    bpd = difflab.nll(data.model(process), process, x, method="elbo", num_t=8, importance=True, generator=g)
    gap = bpd - (-data.log_prob(x, process) / (x[0].numel() * LN2))
    assert gap.mean() > -3 * gap.std() / math.sqrt(len(gap))


def grid_data_model(process: GaussianDiffusion, values: torch.Tensor, probs: torch.Tensor):
    """Exact eps-denoiser for i.i.d. pixels on a grid of ``values`` with probabilities ``probs``."""

    def model(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = process.alpha_sigma(t.double(), tuple(z.shape))
        zz = z.double()[..., None]
        logits = torch.log(probs) - (zz - alpha[..., None] * values) ** 2 / (2 * sigma[..., None] ** 2)
        x_hat = (torch.softmax(logits, -1) * values).sum(-1)
        return ((z.double() - alpha * x_hat) / sigma).to(z.dtype)

    return model


def test_elbo_with_discretized_decoder_bounds_grid_data() -> None:
    """Pixels on a 4-level grid: the discrete bound is >= -log P(x) and nearly tight."""
    levels = 4
    values = torch.linspace(-1, 1, levels, dtype=torch.float64)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    idx = torch.multinomial(probs, 3000 * 4, replacement=True, generator=g).reshape(3000, *SHAPE)
    x = values[idx]
    exact_bpd = -torch.log(probs)[idx].flatten(1).sum(1) / (4 * LN2)
    process = GaussianDiffusion(logsnr_min=-8.0, logsnr_max=8.0)
    bpd = difflab.nll(grid_data_model(process, values, probs), process, x, method="elbo", levels=levels,
                      num_t=8, importance=True, generator=g)
    gap = bpd - exact_bpd
    se = gap.std() / math.sqrt(len(gap))
    assert -4 * se < gap.mean() < 0.05 + 4 * se


# --- quantization pieces --------------------------------------------------------------------


def test_discretized_gaussian_sums_to_one_over_levels() -> None:
    levels = 17
    grid = torch.linspace(-1, 1, levels, dtype=torch.float64).reshape(levels, 1)
    for mean, scale in [(0.0, 0.01), (0.37, 0.2), (-0.99, 0.05), (3.0, 0.5)]:
        log_p = discretized_gaussian_log_prob(grid, torch.full_like(grid, mean), scale, levels)
        assert torch.exp(log_p).sum().item() == pytest.approx(1.0, abs=1e-12)


def test_log_normal_cdf_diff_is_accurate_in_both_tails() -> None:
    a = torch.tensor([-40.0, -1.0, 8.0, 30.0], dtype=torch.float64)
    b = a + 0.5
    # log(Phi(b) - Phi(a)) = log int_a^b phi, by the trapezoid rule in log space.
    n = 200_000
    s = torch.linspace(0, 0.5, n + 1, dtype=torch.float64)[:, None] + a  # (n+1, 4)
    log_w = torch.full((n + 1, 1), math.log(0.5 / n), dtype=torch.float64)
    log_w[[0, -1]] -= math.log(2.0)
    reference = torch.logsumexp(-0.5 * s**2 - 0.5 * math.log(2 * math.pi) + log_w, 0)
    assert torch.allclose(log_normal_cdf_diff(a, b), reference, rtol=1e-4)


def test_bad_input_is_reported() -> None:
    data, process = make_data(), GaussianDiffusion()
    x = data.sample(2, process, generator=torch.Generator().manual_seed(9))
    with pytest.raises(ConfigError, match="options are"):
        difflab.nll(data.model(process), process, x, method="ode", steps=10)
    with pytest.raises(ConfigError, match="method"):
        difflab.nll(data.model(process), process, x, method="exact")
    with pytest.raises(DataError, match="grid"):
        difflab.nll(data.model(process), process, x, method="elbo", levels=256)
    with pytest.raises(ConfigError, match="t_min"):
        difflab.nll(data.model(process), GaussianDiffusion(schedule="linear"), x, method="elbo")
    with pytest.raises(ConfigError, match="even"):
        difflab.nll(data.model(process), process, x, method="elbo", t_sampling="antithetic", num_t=3)
