"""Inverse heat dissipation (IHDM): forward process, core special case, prior, objective, sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch

import difflab
from difflab.errors import CheckpointError, ConfigError, DataError
from difflab.models import IHDMModel
from difflab.objectives import heat_loss, levels_from_times
from difflab.processes import HeatDissipation, HeatPrior, build_process, fit_heat_prior
from difflab.samplers import sample_heat

H, W = 12, 17  # non-square on purpose


def smooth_images(n: int, seed: int, channels: int = 1) -> torch.Tensor:
    """Random images with a decaying spectrum, (n, C, H, W) float64, roughly in [-1, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, channels, H, W))
    x = scipy.ndimage.gaussian_filter(x, sigma=(0, 0, 1.0, 1.0), mode="reflect")
    return torch.from_numpy(x / x.std() * 0.5 + rng.standard_normal((n, channels, 1, 1)) * 0.3)


def heat_solution_numpy(x: np.ndarray, tau: float) -> np.ndarray:
    """The heat equation with Neumann boundaries, solved by scipy's orthonormal DCT-II."""
    h, w = x.shape[-2:]
    lam = (np.pi * np.arange(h) / h)[:, None] ** 2 + (np.pi * np.arange(w) / w)[None, :] ** 2
    u = scipy.fft.dctn(x, axes=(-2, -1), norm="ortho")
    return scipy.fft.idctn(np.exp(-lam * tau) * u, axes=(-2, -1), norm="ortho")


# --- forward process ---------------------------------------------------------------------------


def test_forward_equals_dct_heat_solution_per_frequency() -> None:
    process = HeatDissipation(K=20, sigma_blur_max=6.0)
    x = smooth_images(3, seed=0, channels=2)
    t = torch.tensor([0.05, 0.4, 1.0], dtype=torch.float64)
    tau = process.dissipation_time(t)
    got = process.blur(x, t)
    for b in range(3):
        want = heat_solution_numpy(x[b].numpy(), float(tau[b]))
        np.testing.assert_allclose(got[b].numpy(), want, atol=1e-12)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(process.diffuse(x, t, noise), got + 0.01 * noise, atol=1e-12, rtol=0)


def test_identity_at_time_zero() -> None:
    process = HeatDissipation(K=10)
    x = smooth_images(2, seed=1)
    zero = torch.zeros(2, dtype=torch.float64)
    alpha, sigma = process.alpha_sigma(zero, tuple(x.shape))
    assert torch.equal(alpha, torch.ones_like(alpha))
    assert torch.equal(sigma, torch.full_like(sigma, 0.01))
    torch.testing.assert_close(process.blur(x, zero), x, atol=1e-13, rtol=0)


@pytest.mark.parametrize("sigma_b", [1.5, 2.5])
def test_forward_equals_reflecting_gaussian_blur(sigma_b: float) -> None:
    # Heat flow for time sigma_B^2 / 2 is a Gaussian blur of width sigma_B; Neumann boundaries are
    # the half-sample mirror extension (scipy's mode="reflect"), an independent implementation.
    process = HeatDissipation(K=2, sigma_blur_min=sigma_b, sigma_blur_max=sigma_b)
    x = smooth_images(2, seed=2)
    got = process.blur(x, torch.full((2,), 0.5, dtype=torch.float64)).numpy()
    want = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma_b, sigma_b), mode="reflect", truncate=12.0)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_blur_schedule_geometric_levels() -> None:
    process = HeatDissipation(K=100, sigma_blur_min=0.5, sigma_blur_max=20.0)
    width = process.blur_width(process.level_times())
    assert width[0] == 0.0
    assert math.isclose(width[1], 0.5, rel_tol=1e-12) and math.isclose(width[-1], 20.0, rel_tol=1e-12)
    ratios = width[2:] / width[1:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 40.0 ** (1 / 99)), atol=1e-12, rtol=0)
    # tau is continuous and increasing between levels, linear on [0, 1/K].
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    tau = process.dissipation_time(t)
    assert torch.all(tau[1:] > tau[:-1])
    assert math.isclose(process.dissipation_time(torch.tensor([0.005], dtype=torch.float64))[0].item(), 0.5 * 0.125, rel_tol=1e-12)


def test_config_round_trip_and_validation() -> None:
    process = HeatDissipation(K=200, sigma_blur_max=24.0)
    assert build_process(process.config()) == process
    with pytest.raises(ConfigError, match="K >= 2"):
        HeatDissipation(K=1)
    with pytest.raises(ConfigError, match="sigma_blur_min"):
        HeatDissipation(sigma_blur_min=2.0, sigma_blur_max=1.0)
    with pytest.raises(ConfigError, match=r"no prior fitted to data: use process.fit\(images\)"):
        process.prior_sample((1, 1, 8, 8))
    fitted = process.fit(smooth_images(20, seed=1))
    assert fitted == process and fitted.prior is not None and process.prior is None  # a copy: state, not config
    assert fitted.prior_sample((3, 1, H, W), generator=torch.Generator().manual_seed(0)).shape == (3, 1, H, W)
    restored = process.with_fitted_state(fitted.fitted_state())
    assert torch.equal(restored.prior.mean, fitted.prior.mean) and restored.config() == process.config()


# --- IHDM as a special case of the core --------------------------------------------------------


@pytest.mark.parametrize("k", [1, 7, 20])
def test_shared_posterior_reproduces_ihdm_one_step_mean(k: int) -> None:
    # IHDM's one-step target is q(u_{k-1} | u_0) = N(F_{k-1} u_0, sigma^2). Its alpha, sigma in the
    # shared Markov posterior q(u_{k-1} | u_k, u_0), averaged over u_k ~ q(u_k | u_0), must give
    # the same mean and variance (the posterior is linear in u_k, so the average is exact).
    process = HeatDissipation(K=20, sigma_blur_max=8.0)
    x0 = smooth_images(2, seed=3)
    u_0 = process.to_basis(x0)
    t = torch.full((2,), k / 20, dtype=torch.float64)
    s = torch.full((2,), (k - 1) / 20, dtype=torch.float64)
    alpha_t, sigma = process.alpha_sigma(t, tuple(x0.shape))
    mean_at_clean, var = process.posterior(alpha_t * u_0, u_0, t, s)
    coef_t = process.posterior(torch.ones_like(u_0), torch.zeros_like(u_0), t, s)[0]
    one_step_mean = process.to_basis(process.blur(x0, s))
    torch.testing.assert_close(mean_at_clean, one_step_mean, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(var + coef_t**2 * sigma**2, torch.full_like(var, 1e-4), atol=0, rtol=2e-4)
    # The closed form for constant sigma: mean = alpha_ts u_k + (1 - alpha_ts^2) alpha_s u_0.
    alpha_s, _ = process.alpha_sigma(s, tuple(x0.shape))
    u_k = alpha_t * u_0 + 0.01 * torch.randn(u_0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a_ts = alpha_t / alpha_s
    mean, _ = process.posterior(u_k, u_0, t, s)
    # (up to the delta clip at DC, where alpha_ts = 1: a 1e-4 relative pull towards u_0)
    torch.testing.assert_close(mean, a_ts * u_k + (1 - a_ts**2) * alpha_s * u_0, atol=1e-4 * 0.01 * 5, rtol=0)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()


# --- prior -------------------------------------------------------------------------------------


def test_prior_moments_match_blurred_data(tmp_path) -> None:
    process = HeatDissipation(K=10, sigma_blur_max=4.0)
    x = smooth_images(300, seed=5, channels=3)
    prior = fit_heat_prior(process, x)
    u_K = process.to_basis(process.blur(x, torch.ones(300, dtype=torch.float64)))
    torch.testing.assert_close(prior.mean, u_K.mean(0), atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(prior.var, u_K.var(0), atol=1e-14, rtol=1e-8)
    low = prior.low_index
    assert 3 <= low.numel() < 3 * H * W  # the surviving low frequencies, all channels
    flat = u_K.flatten(1)[:, low]
    torch.testing.assert_close(prior.low_cov, torch.cov(flat.T), atol=1e-12, rtol=1e-9)
    # Streaming over batches gives the same moments; save/load round-trips.
    streamed = fit_heat_prior(process, (x[i : i + 70] for i in range(0, 300, 70)))
    torch.testing.assert_close(streamed.var, prior.var, atol=1e-14, rtol=1e-9)
    prior.save(tmp_path / "prior.safetensors")
    loaded = HeatPrior.load(tmp_path / "prior.safetensors")
    assert loaded.process == process and torch.equal(loaded.low_cov, prior.low_cov)


def test_prior_samples_have_fitted_moments_plus_noise() -> None:
    process = HeatDissipation(K=10, sigma_blur_max=4.0)
    prior = fit_heat_prior(process, smooth_images(300, seed=6, channels=2))
    n = 20000
    u = process.to_basis(prior.sample(n, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    se = (prior.var + 1e-4).sqrt() / math.sqrt(n)
    assert ((u.mean(0) - prior.mean).abs() < 5 * se).all()
    torch.testing.assert_close(u.var(0), prior.var + 1e-4, atol=0, rtol=0.06)
    low_cov = torch.cov(u.flatten(1)[:, prior.low_index].T)
    want = prior.low_cov + 1e-4 * torch.eye(prior.low_index.numel(), dtype=torch.float64)
    torch.testing.assert_close(low_cov, want, atol=0.05 * want.diagonal().max().item(), rtol=0)


def test_prior_bad_inputs(tmp_path) -> None:
    process = HeatDissipation(K=10)
    with pytest.raises(DataError, match="at least 2"):
        fit_heat_prior(process, smooth_images(1, seed=0))
    with pytest.raises(DataError, match="one shape"):
        fit_heat_prior(process, [smooth_images(2, seed=0), torch.zeros(2, 1, 5, 5)])
    with pytest.raises(CheckpointError, match="does not exist"):
        HeatPrior.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        HeatPrior.load(tmp_path / "junk.safetensors")


# --- objective ---------------------------------------------------------------------------------


def test_heat_loss_target_and_levels() -> None:
    process = HeatDissipation(K=8, sigma_blur_max=3.0)
    x0 = smooth_images(64, seed=8)
    seen: list[torch.Tensor] = []

    def oracle(z_k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # The noise-free less-blurred image at level k-1, minus the input (residual connection).
        seen.append(t)
        return process.blur(x0, t.double() - 1 / 8) - z_k

    loss = heat_loss(oracle, process, x0, generator=torch.Generator().manual_seed(9))
    assert loss.shape == (64,) and loss.abs().max() < 1e-20
    levels = seen[0].double() * 8
    torch.testing.assert_close(levels, levels.round())
    assert levels.min() >= 1 and levels.max() <= 8 and len(set(levels.tolist())) > 4
    # A zero residual predicts u_{k-1} by z_k: the loss is the gap between the two levels.
    k = torch.full((64,), 3)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    loss0 = heat_loss(lambda z, t: torch.zeros_like(z), process, x0, k=k, noise=noise)
    t3, t2 = torch.full((64,), 3 / 8, dtype=torch.float64), torch.full((64,), 2 / 8, dtype=torch.float64)
    gap = process.blur(x0, t3) + 0.01 * noise - process.blur(x0, t2)
    torch.testing.assert_close(loss0, (gap**2).flatten(1).mean(1))
    # Times map to levels k = ceil(t K): uniform t in (0, 1] gives uniform k in 1..K.
    t = torch.tensor([1e-9, 0.125, 0.13, 1.0], dtype=torch.float64)
    torch.testing.assert_close(levels_from_times(t, 8), torch.tensor([1, 1, 2, 8]))
    zero = lambda z, t: torch.zeros_like(z)
    torch.testing.assert_close(heat_loss(zero, process, x0[:4], t=t, noise=noise[:4]),
                               heat_loss(zero, process, x0[:4], k=torch.tensor([1, 1, 2, 8]), noise=noise[:4]))
    with pytest.raises(ConfigError, match="'heat' process"):
        heat_loss(oracle, difflab.GaussianDiffusion(), x0)


# --- sampler through the public entry point ----------------------------------------------------


def unblur_one_level(process: HeatDissipation):
    """The exact inverse heat step F(tau_{k-1}) F(tau_k)^{-1} as a residual network."""

    def model(z_k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.double()
        a_t, _ = process.alpha_sigma(t, tuple(z_k.shape))
        a_s, _ = process.alpha_sigma(t - 1 / process.K, tuple(z_k.shape))
        return process.from_basis(a_s / a_t * process.to_basis(z_k)) - z_k

    return model


def test_ihdm_sampler_inverts_heat_flow() -> None:
    process = HeatDissipation(K=4, sigma_blur_min=0.5, sigma_blur_max=1.0)
    prior = fit_heat_prior(process, smooth_images(50, seed=11))
    noise = torch.randn((3, 1, H, W), generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    x, traj = sample_heat(
        unblur_one_level(process), process.with_prior(prior), (3, 1, H, W), steps=4, noise=noise,
        return_trajectory=True, dtype=torch.float64, delta=0.0,
    )
    u_K = prior.sample(3, noise=noise)
    assert len(traj) == 5 and torch.equal(traj[0], u_K)
    for j, u in enumerate(traj):  # trajectory[j] is level K - j: F(tau_{K-j}) F(tau_K)^{-1} u_K
        t_level = torch.full((3,), (4 - j) / 4, dtype=torch.float64)
        a_level, _ = process.alpha_sigma(t_level, tuple(u.shape))
        a_K, _ = process.alpha_sigma(torch.ones(3, dtype=torch.float64), tuple(u.shape))
        want = process.from_basis(a_level / a_K * process.to_basis(u_K))
        torch.testing.assert_close(u, want, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(x, traj[-1])


def test_ihdm_sampler_noise_and_errors() -> None:
    process = HeatDissipation(K=5, sigma_blur_max=2.0)
    prior = fit_heat_prior(process, smooth_images(20, seed=13))
    identity = lambda z, t: torch.zeros_like(z)
    shape = (2, 1, H, W)
    g = torch.Generator().manual_seed(14)
    x = sample_heat(identity, process, shape, steps=5, generator=g, prior=prior, delta=0.1, dtype=torch.float64)
    g = torch.Generator().manual_seed(14)
    u_K = prior.sample(2, generator=g, dtype=torch.float64)
    # Identity network: u_0 = u_K plus delta noise at K - 1 steps (none after the last).
    resid = (x - u_K).flatten()
    assert math.isclose(resid.std().item(), 0.1 * math.sqrt(4), rel_tol=0.2)
    with pytest.raises(ConfigError, match="steps=5"):
        sample_heat(identity, process, shape, steps=50, prior=prior)
    with pytest.raises(ConfigError, match="needs prior"):
        sample_heat(identity, process, shape, steps=5)
    with pytest.raises(ConfigError, match="'heat' process"):
        sample_heat(identity, difflab.GaussianDiffusion(), shape, steps=5, prior=prior)
    with pytest.raises(ConfigError, match="shape"):
        sample_heat(identity, process, (2, 1, 8, 8), steps=5, prior=prior)
    model = IHDMModel(identity, process.with_prior(prior), shape[1:])
    with pytest.raises(ConfigError, match="no option"):
        model.sample(2, steps=5, eta=1.0)
    with pytest.raises(ConfigError, match="own model family"):  # the denoiser samplers do not apply to IHDM
        difflab.sample(identity, process, shape, steps=5)
    # through the model: the same draw as the sampler with sample i's own generator
    from difflab.processes.noise import PerSampleGenerator

    direct = sample_heat(identity, process.with_prior(prior), shape, generator=PerSampleGenerator(4, range(2)))
    assert torch.equal(model.sample(2, seed=4), direct)


# --- training and sampling through the CLI -----------------------------------------------------


def test_shipped_ihdm_configs_have_the_papers_schedules() -> None:
    from difflab.training.config import load_config

    mnist, cifar = load_config("mnist-ihdm"), load_config("cifar10-ihdm")
    assert mnist.process == HeatDissipation(K=100, sigma_blur_min=0.5, sigma_blur_max=20.0, sigma=0.01)
    assert cifar.process == HeatDissipation(K=200, sigma_blur_min=0.5, sigma_blur_max=24.0, sigma=0.01)
    assert (mnist.run.sample.sampler, mnist.run.sample.steps) == ("ihdm", 100)
    assert (cifar.run.sample.sampler, cifar.run.sample.steps) == ("ihdm", 200)


def test_train_ihdm_then_sample_from_its_saved_prior(tmp_path) -> None:
    from difflab.cli.main import main
    from difflab.training.config import load_config
    from difflab.training.trainer import Trainer

    out = tmp_path / "run"
    overrides = [
        "data.name=digits", "process.K=4", "process.sigma_blur_max=3.0", f"run.out_dir={out}",
        "network.in_channels=1", "network.resolution=8", "network.channel_mult=[1,2]", "network.base_channels=16",
        "network.attention_resolutions=[]", "network.norm_groups=8", "network.head_channels=null",
        "optim.batch_size=8", "optim.steps=2", "run.progress=false", "run.sample.steps=4", "run.sample.num=4",
    ]
    trainer = Trainer(load_config("mnist-ihdm", overrides))
    trainer.train()
    prior = difflab.load_model(out).process.prior  # saved inside the model artefact
    assert prior.process == HeatDissipation(K=4, sigma_blur_max=3.0) and prior.mean.shape == (1, 8, 8)
    assert torch.equal(prior.mean, fit_heat_prior(prior.process, trainer.dataset.images.split(1024)).mean)
    assert not (out / "prior.safetensors").exists()
    # The trainer's loss is IHDM's (a small level-to-level gap), not the eps-MSE (~1 at init).
    import json

    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0 < losses[0] < 0.2
    assert (out / "samples").is_dir() and any((out / "samples").iterdir())
    grid = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(out), "--num", "4", "--out", str(grid)]) == 0
    assert grid.stat().st_size > 0
    assert main(["sample", "--checkpoint", str(out), "--num", "4", "--steps", "3", "--out", str(grid)]) == 2
