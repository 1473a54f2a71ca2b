"""Critically-damped Langevin diffusion: the closed-form kernel against matrix exponentials and a
simulation, the hybrid score matching target, the samplers with the exact score of Gaussian data,
and the family through ``difflab train`` (save, load, identical samples, resume, bad input)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_resume_is_bit_exact, assert_train_refused
from scipy.linalg import expm

from difflab.cli.main import main
from difflab.models import CLDModel, load_model
from difflab.processes.cld import CLD, cholesky_2x2
from difflab.samplers.cld import CLD_SAMPLERS
from difflab.samplers.grids import quadratic_grid
from difflab.training import Trainer
from difflab.training.config import load_config

TIMES = [1e-4, 3e-3, 0.05, 0.3, 1.0]


def reference(k: np.ndarray, q: float, h: float) -> tuple[np.ndarray, np.ndarray]:
    """(exp(K h), int_0^h exp(K s) Q exp(K s)^T ds) by scipy's expm and adaptive quadrature."""
    from scipy.integrate import quad_vec

    big_q = np.diag([0.0, q])
    integral, _ = quad_vec(lambda s: expm(k * s) @ big_q @ expm(k * s).T, 0.0, h, epsabs=1e-13, epsrel=1e-12)
    return expm(k * h), integral


@pytest.mark.parametrize("direction", ["forward_sde", "reverse_linear"])
@pytest.mark.parametrize("process", [CLD(), CLD(mass=1.0, beta=2.0, gamma=0.5)])
def test_closed_form_transition_and_noise_covariance_equal_the_matrix_exponential(process, direction):
    sde = getattr(process, direction)
    for h in TIMES:
        phi, noise = reference(np.array(sde.K), sde.q, h)
        assert np.allclose(sde.transition(h).numpy(), phi, atol=1e-8, rtol=0), h
        assert np.allclose(sde.noise_covariance(h).numpy(), noise, atol=1e-8, rtol=1e-8), h


def test_kernel_matches_a_fine_euler_maruyama_simulation():
    process, x0, n = CLD(), 0.7, 100_000
    g = torch.Generator().manual_seed(0)
    x = torch.full((n,), x0, dtype=torch.float64)
    v = torch.randn(n, generator=g, dtype=torch.float64) * math.sqrt(process.gamma * process.mass)
    b, m_inv, damping, dt = process.beta, 1 / process.mass, process.damping, 1e-3
    for step in range(1, 501):
        x, v = x + dt * b * m_inv * v, v + dt * (-b * x - damping * b * m_inv * v) + \
            math.sqrt(process.noise_rate * dt) * torch.randn(n, generator=g, dtype=torch.float64)
        if step in (50, 200, 500):
            a, sigma = process.marginal(step * dt)
            u = torch.stack([x, v])  # (2, n)
            assert torch.allclose(u.mean(1), a * x0, atol=0.01), step
            assert torch.allclose(torch.cov(u), sigma, atol=0.01, rtol=0.03), step


def test_covariance_is_positive_definite_and_relaxes_to_the_prior():
    process = CLD()
    _, sigma = process.marginal(torch.linspace(1e-5, 1.0, 400, dtype=torch.float64))
    assert (sigma[:, 0, 0] > 0).all() and (torch.linalg.det(sigma) > 0).all()
    _, late = process.marginal(6.0)
    assert torch.allclose(late, torch.diag(torch.tensor([1.0, process.mass], dtype=torch.float64)), atol=1e-6)


def test_velocity_score_of_the_kernel_is_minus_ell_eps_v():
    process, t = CLD(), torch.tensor([0.01, 0.2, 0.9], dtype=torch.float64)
    x0 = torch.tensor([0.5, -0.3, 0.9], dtype=torch.float64)
    eps_x, eps_v = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    x_t, v_t = process.perturb(x0, t, eps_x, eps_v)
    a, sigma = process.marginal(t)
    u = torch.stack([x_t, v_t], 1).requires_grad_(True)  # (3, 2)
    r = u - a * x0[:, None]
    log_p = -0.5 * torch.einsum("bi,bij,bj->b", r, torch.linalg.inv(sigma), r)
    (grad,) = torch.autograd.grad(log_p.sum(), u)
    assert torch.allclose(grad[:, 1], -process.ell(t) * eps_v, atol=1e-9)
    l_xx, l_vx, l_vv = cholesky_2x2(sigma)
    assert torch.allclose(process.ell(t), torch.sqrt(sigma[:, 0, 0] / torch.linalg.det(sigma)))


def gaussian_score(process: CLD, variance: float):
    """The exact grad_v log p_t(x, v) for data x_0 ~ N(0, variance)."""
    def score(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        precision = torch.linalg.inv(process.marginal(t, data_variance=variance)[1])  # (B, 2, 2)
        p_vx, p_vv = (precision[:, 1, k].to(x.dtype).view(-1, *[1] * (x.dim() - 1)) for k in range(2))
        return -(p_vx * x + p_vv * v)
    return score


@pytest.mark.parametrize(("sampler", "steps"), [("sscs", 200), ("em", 400), ("ode", 50)])
def test_samplers_with_the_exact_score_reproduce_the_data_variance(sampler, steps):
    """Discretization error shrinks with the steps (SSCS on this grid: variance 0.216 at 20 steps,
    0.235 at 50, 0.245 at 200); the tolerance is the Monte Carlo one plus a few percent."""
    process, variance = CLD(), 0.25
    generator = torch.Generator().manual_seed(0)
    u = process.prior((4000, 1, 2, 2), generator, dtype=torch.float64)
    x = CLD_SAMPLERS[sampler](gaussian_score(process, variance), process, u, quadratic_grid(steps, t_min=1e-3),
                              generator=generator)
    assert abs(float(x.var()) / variance - 1) < 0.05, float(x.var())
    assert abs(float(x.mean())) < 0.02


def test_probability_flow_ode_with_the_exact_score_gives_the_closed_form_joint_density():
    from difflab.likelihood.cld import joint_nll

    process, variance, t_min = CLD(), 0.25, 1e-3
    _, sigma = process.marginal(t_min, data_variance=variance)  # the Gaussian data's marginal at t_min
    u = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) @ \
        torch.linalg.cholesky(sigma).T  # (B, D, 2) per-pixel (x, v) pairs
    x, v = u[..., 0].view(3, 1, 2, 2), u[..., 1].view(3, 1, 2, 2)
    expected = -torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64), sigma).log_prob(u).sum(1)
    nats = joint_nll(gaussian_score(process, variance), process, x, v, t_min=t_min, divergence="exact",
                     rtol=1e-8, atol=1e-8)
    assert torch.allclose(nats, expected, atol=0.01 * 4 * math.log(2)), (nats, expected)  # 0.01 bits/dim, D = 4


DIGITS = ["data.name=digits", "network.resolution=8", "network.base_channels=8", "network.channel_mult=[1]",
          "network.num_res_blocks=1", "network.attention_resolutions=[]", "network.head_channels=null",
          "network.norm_groups=4", "optim.batch_size=8", "optim.warmup_steps=1", "run.progress=false",
          "run.sample_every=0", "run.eval_every=0", "run.sample.num=2", "run.sample.steps=4", "run.deterministic=true"]


def test_two_steps_save_load_identical_samples_and_bit_exact_resume(tmp_path):
    trainer = Trainer(load_config("mnist-cld", [*DIGITS, "optim.steps=2", f"run.out_dir={tmp_path / 'a'}"]))
    trainer.train()
    loaded = load_model(tmp_path / "a")
    assert isinstance(loaded, CLDModel) and loaded.sampling_protocol() == \
        {"sampler": "sscs", "steps": 4, "grid": "quadratic", "nfe": 4}
    assert loaded.sampling_protocol(sampler="ode")["nfe"] == 7
    x = loaded.sample(3, seed=2)
    assert x.shape == (3, 1, 8, 8) and torch.equal(x, trainer.ema.module.eval().sample(3, seed=2))
    assert torch.allclose(x, loaded.sample(3, seed=2, batch_size=1), atol=1e-5)  # the same draws; BLAS may round apart
    for sampler in ("em", "ode"):
        assert torch.isfinite(loaded.sample(2, seed=0, sampler=sampler)).all()
    assert_resume_is_bit_exact("mnist-cld", DIGITS, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["model.mass=0"], "CLD mass M=0.0 must be > 0"),
        (["model.gamma=-0.1"], "CLD gamma=-0.1 must be >= 0"),
        (["model.weighting=snr"], "model.weighting"),
        (["network.in_channels=1"], "set network.in_channels: 2 and network.out_channels: 1"),
        (["run.sample.sampler=ddim"], "run.sample.sampler"),
    ],
)
def test_bad_cld_options_exit_2_with_one_line_and_write_nothing(overrides, fragment, tmp_path, capsys):
    assert_train_refused(["--config", "mnist-cld", *DIGITS, "optim.steps=1", *overrides],
                         fragment, tmp_path / "run", capsys)


def test_cld_trains_and_samples_through_the_cli(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--config", "mnist-cld", *DIGITS, "optim.steps=2", f"run.out_dir={out}"]) == 0
    assert main(["sample", "--checkpoint", str(out), "--sampler", "em", "--steps", "3", "--num", "2",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()
