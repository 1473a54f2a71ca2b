"""Ancestral (DDPM) and DDIM samplers, for any diagonal Gaussian process.

All samplers share one signature (as in k-diffusion)::

    sampler(denoise, process, u, ts, *, generator=None, callback=None, **options) -> u_0

``u`` holds the basis coefficients at time ``ts[0]``, ``ts`` is a decreasing float64 grid
ending at 0 (see ``grids``), ``denoise(u_t, t) -> (u_0_hat, eps_hat)`` (see ``denoiser``)
and ``callback(i, t, u_t, u_0_hat)`` sees every step. Each step s < t works per basis
coefficient, so the same code serves DDPM (scalar alpha) and blurring diffusion
(per-frequency alpha).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from difflab.errors import ConfigError
from difflab.processes import DiagonalGaussianProcess
from difflab.processes.noise import Generator, standard_normal
from difflab.samplers.denoiser import DenoiseFn

Callback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def _batch(t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A scalar time broadcast to the batch: shape (B,), float64."""
    return t.to(u.device, torch.float64).expand(u.shape[0])


def _noise_like(u: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Standard normal like ``u``: one stream per batch or per sample (``processes.noise``)."""
    return standard_normal(u.shape, generator, device=u.device, dtype=u.dtype)


@torch.no_grad()
def sample_ancestral(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral sampling: u_s ~ q(u_s | u_t, u_0 = u_0_hat) at every step.

    Ho et al. (2020), Alg. 2, for the identity basis; Hoogeboom & Salimans (2023), Alg. 2
    ("denoise"), for blurring diffusion. The last step returns u_0_hat.
    """
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        # 1. Estimate the clean coefficients at time t.
        u_0, _ = denoise(u, t)
        if callback is not None:
            callback(i, t, u, u_0)
        if s == 0:
            return u_0
        # 2. Draw from the Gaussian posterior q(u_s | u_t, u_0_hat).
        mean, var = process.posterior(u, u_0, _batch(t, u), _batch(s, u))
        u = mean + var.sqrt() * _noise_like(u, generator)
    return u


@torch.no_grad()
def sample_ddim(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12), per basis coefficient.

    ``u_s = alpha_s u_0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c xi`` with
    ``c = eta * sqrt(sigma^2_{t|s} sigma_s^2 / sigma_t^2)`` (the posterior standard deviation).
    eta = 0 is deterministic (a first-order solver of the probability-flow ODE); eta = 1
    matches ancestral sampling in distribution.
    """
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"eta={eta} must be in [0, 1] (0: deterministic DDIM, 1: ancestral)")
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        # 1. Estimate clean coefficients and noise at time t.
        u_0, eps = denoise(u, t)
        if callback is not None:
            callback(i, t, u, u_0)
        if s == 0:
            return u_0
        # 2. Noise level c of the fresh noise, per coefficient (float64 schedule).
        shape = tuple(u.shape)
        alpha_s, sigma_s = process.alpha_sigma(_batch(s, u), shape)
        _, sigma_t = process.alpha_sigma(_batch(t, u), shape)
        _, sigma2_ts = process.transition(_batch(t, u), _batch(s, u), shape)
        c2 = eta**2 * sigma2_ts * sigma_s**2 / sigma_t**2
        c2 = torch.broadcast_to(c2, torch.broadcast_shapes(c2.shape, alpha_s.shape))
        # 3. Step: deterministic part plus fresh noise.
        u = alpha_s.to(u.dtype) * u_0 + (sigma_s**2 - c2).clamp(min=0).sqrt().to(u.dtype) * eps
        if eta > 0:
            u = u + c2.sqrt().to(u.dtype) * _noise_like(u, generator)
    return u
