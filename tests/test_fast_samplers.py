"""Fast ODE samplers and time grids, checked against closed forms on Gaussian data."""

from __future__ import annotations

import math

import pytest
import torch

import difflab
from difflab.errors import ConfigError
from difflab.processes import (
    BlurringDiffusion,
    DiagonalGaussianProcess,
    GaussianDiffusion,
)
from difflab.processes.analytic import GaussianData
from difflab.samplers import SAMPLERS, auto_grid, auto_sampler, make_denoiser, time_grid
from difflab.samplers.grids import KARRAS_RHO, scalar_logsnr, time_from_logsnr
from difflab.samplers.ode import Interval, exp_integrator_step, guarded_step, interval

DETERMINISTIC = ("ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc")
PROCESSES = {
    "linear": GaussianDiffusion("linear"),
    "cosine": GaussianDiffusion("cosine"),
    "blurring": BlurringDiffusion(),
}
SIZE = 8


def _spectrum(low: float, high: float) -> torch.Tensor:
    """Variances (1, SIZE, SIZE) falling with frequency from ``high`` to ``low`` (float64)."""
    i = torch.arange(SIZE, dtype=torch.float64)
    f = torch.sqrt(i[:, None] ** 2 + i[None, :] ** 2)
    return (high * (low / high) ** (f / f.max()))[None]


def _run(name: str, process: DiagonalGaussianProcess, data: GaussianData, ts: torch.Tensor, u: torch.Tensor,
         callback=None, prediction: str = "eps", **options) -> torch.Tensor:
    denoise = make_denoiser(data.model(process, prediction), process, prediction)
    return SAMPLERS[name](denoise, process, u, ts, callback=callback, **options)


def _initial(process: DiagonalGaussianProcess, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """u_1 = sigma_1 n in the basis, float64 (B, 1, SIZE, SIZE)."""
    n = torch.randn(batch, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    _, sigma_1 = process.alpha_sigma(torch.ones(batch, dtype=torch.float64), tuple(n.shape))
    return sigma_1 * n


def _exact_flow(process: DiagonalGaussianProcess, data: GaussianData, u_1: torch.Tensor, t: float) -> torch.Tensor:
    """The probability-flow ODE from t = 1 to t, exactly: y - m ~ sqrt(v + s^2), y = u/alpha, s = sigma/alpha."""
    shape = tuple(u_1.shape)
    ones, tt = torch.ones(shape[0], dtype=torch.float64), torch.full((shape[0],), t, dtype=torch.float64)
    (a1, s1), (a0, s0) = process.alpha_sigma(ones, shape), process.alpha_sigma(tt, shape)
    m, v = data.mean, data.var
    y0 = m + (u_1 / a1 - m) * ((v + (s0 / a0) ** 2) / (v + (s1 / a1) ** 2)).sqrt()
    return a0 * y0


# --- Dirac data: every deterministic solver is exact -----------------------------------------
@pytest.mark.parametrize("process", PROCESSES.values(), ids=PROCESSES.keys())
@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("steps", [2, 3, 7])
def test_dirac_data_is_integrated_exactly(process, name, steps):
    # With a Dirac data distribution the clean estimate is constant, the ODE keeps eps fixed,
    # u_t = alpha_t c + sigma_t eps, and every solver here must follow it at any step count.
    c = torch.linspace(-1, 1, SIZE * SIZE, dtype=torch.float64).reshape(1, SIZE, SIZE)
    data = GaussianData(c, torch.zeros_like(c))
    u_1 = _initial(process)
    shape = tuple(u_1.shape)
    a1, s1 = process.alpha_sigma(torch.ones(2, dtype=torch.float64), shape)
    eps = (u_1 - a1 * c) / s1
    seen = []

    def check(i, t, u_t, u_0):
        a, s = process.alpha_sigma(t.expand(2), shape)
        seen.append(t.item())
        torch.testing.assert_close(u_t, a * c + s * eps, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(u_0, c.expand_as(u_0), rtol=1e-10, atol=1e-10)

    ts = time_grid("logsnr", steps, process=process)
    out = _run(name, process, data, ts, u_1, callback=check, prediction="x0")  # x0: no eps -> x0 round-off
    torch.testing.assert_close(out, c.expand_as(out), rtol=1e-10, atol=1e-10)
    assert seen == ts[:-1].tolist()


# --- convergence order on Gaussian data ------------------------------------------------------
def _order(name: str, process: DiagonalGaussianProcess, steps=(16, 32, 64, 128)) -> float:
    """Slope of log(max error) against log(steps), error vs the exact ODE + final clean estimate."""
    data = GaussianData(0.3 * _spectrum(1e-2, 1.0).sqrt(), _spectrum(1e-2, 1.0))
    t_min = 0.01
    u_1 = _initial(process, batch=1)
    t = torch.full((1,), t_min, dtype=torch.float64)
    reference, _ = data.posterior_mean(process, _exact_flow(process, data, u_1, t_min), t)
    errors = []
    for n in steps:
        out = _run(name, process, data, time_grid("logsnr", n, process=process, t_min=t_min), u_1)
        errors.append((out - reference).abs().max().item())
    xs, ys = [math.log(n) for n in steps], [math.log(e) for e in errors]
    x_bar, y_bar = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - x_bar) * (y - y_bar) for x, y in zip(xs, ys)) / sum((x - x_bar) ** 2 for x in xs)
    return -slope


@pytest.mark.parametrize("process", [PROCESSES["cosine"], PROCESSES["blurring"]], ids=["cosine", "blurring"])
@pytest.mark.parametrize(("name", "order"), [("ddim", 1), ("euler", 1), ("heun", 2), ("dpmpp_2m", 2)])
def test_convergence_order(process, name, order):
    # Blurring needs finer grids to reach the asymptotic regime: each frequency's logSNR
    # drops by up to 2 log(1/min_d) ~ 14 while its blur lifts, within t in about [0, 0.3].
    steps = (64, 128, 256, 512) if isinstance(process, BlurringDiffusion) else (16, 32, 64, 128)
    assert _order(name, process, steps) == pytest.approx(order, abs=0.3)


@pytest.mark.parametrize("name", ["dpmpp_3m", "unipc"])
def test_third_order_solvers_converge_faster_than_second(name):
    assert _order(name, PROCESSES["cosine"]) > 2.7


# --- blurring: per-frequency variance -------------------------------------------------------
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_blurring_reproduces_per_frequency_variance(name):
    # The sampler is an affine map per DCT coefficient: push n = 0 and n = 1 through it.
    process = PROCESSES["blurring"]
    var = _spectrum(0.05, 1.0)
    data = GaussianData(0.5 * var.sqrt(), var)
    n = torch.stack([torch.zeros_like(var), torch.ones_like(var)])
    _, sigma_1 = process.alpha_sigma(torch.ones(2, dtype=torch.float64), tuple(n.shape))
    steps = 100 if name == "heun" else 200  # 200 NFE
    out = _run(name, process, data, time_grid("quadratic", steps), sigma_1 * n)
    offset, gain = out[0], out[1] - out[0]
    torch.testing.assert_close(gain**2, var, rtol=0.1 if name in ("ddim", "euler") else 0.015, atol=0)
    # The offset misses alpha_1 m ~ 0.7% of the mean: the prior N(0, sigma_1^2) has mean 0.
    torch.testing.assert_close(offset, data.mean, rtol=0.01, atol=0)


def test_euler_is_ddim():
    process = PROCESSES["blurring"]
    data = GaussianData(torch.zeros(1, SIZE, SIZE, dtype=torch.float64), _spectrum(1e-3, 1.0))
    ts = time_grid("quadratic", 9)
    u_1 = _initial(process)
    torch.testing.assert_close(_run("euler", process, data, ts, u_1), _run("ddim", process, data, ts, u_1),
                               rtol=1e-12, atol=1e-12)


# --- the extrapolation guard ---------------------------------------------------------------------
def test_guard_lowers_the_order_only_where_the_step_ratio_is_extreme():
    # Two coefficients with h = 1 and a previous point 1 back (kept) or 0.3 back (h > 2 gap: dropped).
    one = torch.ones(1, 1, 1, 2, dtype=torch.float64)
    step = Interval(alpha_s=0.8 * one, sigma_t=0.9 * one, sigma_s=0.6 * one, lam_t=0 * one, lam_s=one)
    u = torch.tensor([[[[0.3, -1.2]]]], dtype=torch.float64)
    now = (step.lam_t, torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64))
    before = (torch.tensor([[[[-1.0, -0.3]]]], dtype=torch.float64),
              torch.tensor([[[[-2.0, 5.0]]]], dtype=torch.float64))
    got = guarded_step(u, step, [now, before])
    second, first = exp_integrator_step(u, step, [now, before]), exp_integrator_step(u, step, [now])
    torch.testing.assert_close(got, torch.cat([second[..., :1], first[..., 1:]], -1))
    assert not torch.allclose(second, first)


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_3m", "unipc"])
def test_multistep_beats_ddim_with_an_imperfect_v_model_on_blurring(name):
    # A v-model with a small smooth error. The high frequencies' logSNR jumps while their blur
    # lifts; without the step-ratio guard dpmpp_3m here was 2x worse than DDIM (eps-models: 20-300x).
    process = PROCESSES["blurring"]
    var = _spectrum(0.01, 1.0)
    exact = GaussianData(torch.zeros_like(var), var).model(process, "v")
    error = 0.02 * torch.randn(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def model(z, t):
        return exact(z, t) + error * torch.cos(7 * t)[:, None, None, None]

    noise = torch.randn(64, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    kw = {"noise": noise, "dtype": torch.float64, "grid": "quadratic", "prediction": "v"}
    reference = difflab.sample(exact, process, noise.shape, sampler="dpmpp_2m", steps=500, **kw)

    def rmse(sampler: str) -> float:
        x = difflab.sample(model, process, noise.shape, sampler=sampler, steps=10, **kw)
        return ((x - reference) ** 2).mean().sqrt().item()

    assert rmse(name) < 0.8 * rmse("ddim")


# --- stochastic variants ---------------------------------------------------------------------
def test_sde_first_order_step_is_the_ancestral_step():
    # eta = 1 with one point: u_s = posterior mean + posterior std * xi of q(u_s | u_t, u_0_hat).
    process = PROCESSES["blurring"]
    u = _initial(process)
    m = torch.randn(u.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    step = interval(process, t, s, u)
    xi = torch.randn(u.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    got = exp_integrator_step(u, step, [(step.lam_t, m)], eta=1.0, noise=xi)
    mean, var = process.posterior(u, m, t.expand(2), s.expand(2))
    torch.testing.assert_close(got, mean + var.sqrt() * xi, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("name", "options"), [("dpmpp_2m_sde", {}), ("dpmpp_3m", {"eta": 1.0})])
def test_sde_samplers_reproduce_variance(name, options):
    process = PROCESSES["cosine"]
    var = _spectrum(0.1, 1.0)
    data = GaussianData(torch.zeros_like(var), var)
    x = difflab.sample(data.model(process), process, (2000, 1, SIZE, SIZE), sampler=name, steps=100,
                       generator=torch.Generator().manual_seed(0), dtype=torch.float64, **options)
    ratio = x.var(0) / var  # per-coefficient sampling error ~ sqrt(2 / 2000) = 3%
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.02)
    assert (ratio - 1).abs().max().item() < 0.15


# --- grids -----------------------------------------------------------------------------------
@pytest.mark.parametrize("grid", ["uniform", "quadratic", "logsnr", "karras"])
@pytest.mark.parametrize("process", PROCESSES.values(), ids=PROCESSES.keys())
@pytest.mark.parametrize("steps", [1, 2, 10])
def test_grids_decrease_from_one_to_zero(grid, process, steps):
    ts = time_grid(grid, steps, process=process)
    assert ts.dtype == torch.float64 and ts.shape == (steps + 1,)
    assert ts[0].item() == 1.0 and ts[-1].item() == 0.0
    assert bool((ts[1:] < ts[:-1]).all())


def test_logsnr_and_karras_grids_have_their_spacing():
    process = PROCESSES["linear"]
    lam = scalar_logsnr(process, time_grid("logsnr", 12, process=process)[:-1])
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(11), rtol=1e-9, atol=1e-9)
    s_root = torch.exp(-0.5 * scalar_logsnr(process, time_grid("karras", 12, process=process)[:-1])) ** (1 / KARRAS_RHO)
    torch.testing.assert_close(s_root.diff(), s_root.diff().mean().expand(11), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("process", PROCESSES.values(), ids=PROCESSES.keys())
def test_time_from_logsnr_inverts_the_schedule(process):
    t = torch.tensor([0.999, 0.5, 0.1, 1e-3], dtype=torch.float64)
    torch.testing.assert_close(time_from_logsnr(process, scalar_logsnr(process, t)), t, rtol=1e-9, atol=1e-12)


def test_grid_errors():
    assert time_grid("uniform", 4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]  # no process needed
    with pytest.raises(ConfigError, match="needs the process"):
        time_grid("logsnr", 4)
    with pytest.raises(ConfigError, match="karras"):
        time_grid("nope", 4)
    with pytest.raises(ConfigError, match="positive integer"):
        time_grid("uniform", 0)
    with pytest.raises(ConfigError, match="t_min"):
        time_grid("quadratic", 4, t_min=0.0)


# --- the public entry point ------------------------------------------------------------------
def test_auto_sampler_and_grid_depend_on_the_process():
    assert (auto_sampler(PROCESSES["cosine"]), auto_grid(PROCESSES["cosine"])) == ("dpmpp_2m", "logsnr")
    assert (auto_sampler(PROCESSES["blurring"]), auto_grid(PROCESSES["blurring"])) == ("unipc", "quadratic")
    noise = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    data = GaussianData(torch.zeros(1, SIZE, SIZE), torch.full((1, SIZE, SIZE), 0.5))
    process = PROCESSES["blurring"]
    auto = difflab.sample(data.model(process), process, noise.shape, steps=6, noise=noise)
    explicit = difflab.sample(data.model(process), process, noise.shape, steps=6, noise=noise, sampler="unipc",
                              grid="quadratic")
    assert torch.equal(auto, explicit)


def test_sample_validates_options():
    process = PROCESSES["cosine"]
    data = GaussianData(torch.zeros(1, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ConfigError, match="order"):
        difflab.sample(data.model(process), process, (1, 1, 4, 4), sampler="unipc", order=5)
    with pytest.raises(ConfigError, match="no option"):
        difflab.sample(data.model(process), process, (1, 1, 4, 4), sampler="heun", eta=0.5)
    with pytest.raises(ConfigError, match="eta"):
        difflab.sample(data.model(process), process, (1, 1, 4, 4), sampler="dpmpp_2m", eta=-1.0)
    with pytest.raises(ConfigError, match="grid"):
        difflab.sample(data.model(process), process, (1, 1, 4, 4), grid="nope")


# --- agreement with diffusers on the DDPM linear schedule ---------------------------------------
def test_matches_diffusers_on_the_same_timesteps():
    diffusers = pytest.importorskip("diffusers")
    process = PROCESSES["linear"]
    data = GaussianData(0.1 * torch.ones(1, 4, 4, dtype=torch.float64), _spectrum(1e-3, 1.0)[:, :4, :4])
    model = data.model(process, "eps")
    x_1 = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    js = [999, 886, 757, 603, 410, 202, 73, 22, 5, 0]  # logSNR-uniform; diffusers timestep j is difflab t = (j+1)/1000
    ts = torch.tensor([(j + 1) / 1000 for j in js] + [0.0], dtype=torch.float64)
    kw = {"beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
    for name, scheduler in [("ddim", None),
                            ("dpmpp_2m", diffusers.DPMSolverMultistepScheduler(lower_order_final=False, **kw))]:
        if name == "ddim":  # DDIM takes no timestep list; "trailing" spacing gives js's t = 1, 0.9, ..., 0.1
            scheduler = diffusers.DDIMScheduler(clip_sample=False, timestep_spacing="trailing", **kw)
            scheduler.set_timesteps(10)
            ts_name = torch.cat([torch.linspace(1.0, 0.1, 10, dtype=torch.float64),
                                 torch.zeros(1, dtype=torch.float64)])
        else:
            scheduler.set_timesteps(timesteps=js)
            ts_name = ts
        x = x_1.clone()
        for j in scheduler.timesteps:
            x = scheduler.step(model(x, ((j.double() + 1) / 1000).expand(2)), j, x).prev_sample
        ours = _run(name, process, data, ts_name, x_1)
        torch.testing.assert_close(ours, x.double(), rtol=1e-4, atol=1e-4)  # diffusers keeps float32 schedules
