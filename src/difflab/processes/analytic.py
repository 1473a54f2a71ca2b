"""Gaussian data with a closed-form denoiser: the ground truth for tests and benchmarks.

If the data is Gaussian and diagonal in the process basis, ``u_0 ~ N(m, diag(v))``, then
under ``u_t = alpha u_0 + sigma eps`` every coefficient is a scalar Gaussian problem:

- marginal:   u_t ~ N(alpha m, alpha^2 v + sigma^2)
- denoiser:   E[u_0 | u_t] = m + alpha v / (alpha^2 v + sigma^2) (u_t - alpha m)
- density:    log p(x) = sum_k log N(u_k; m_k, v_k)  (B is orthonormal, |det B| = 1)

so a sampler driven by ``GaussianData.model(process)`` must reproduce m and v, and a
likelihood estimator must reproduce ``log_prob``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from difflab.processes.diffusion import DiagonalGaussianProcess
from difflab.processes.predictions import Prediction, make_target


@dataclass
class GaussianData:
    """``u_0 ~ N(mean, diag(var))`` in basis coordinates; ``mean`` and ``var`` have the data shape (C, H, W)."""

    mean: torch.Tensor
    var: torch.Tensor

    def sample(
        self, n: int, process: DiagonalGaussianProcess, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """n draws of x_0 in pixel space, shape (n, C, H, W), float64."""
        noise = torch.randn((n, *self.mean.shape), generator=generator, dtype=torch.float64)
        return process.from_basis(self.mean.double() + self.var.double().sqrt() * noise)

    def posterior_mean(
        self, process: DiagonalGaussianProcess, u_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(E[u_0 | u_t], E[eps | u_t]) per coefficient, computed in float64."""
        alpha, sigma = process.alpha_sigma(t.to(u_t.device), tuple(u_t.shape))
        m, v, u = self.mean.to(u_t.device).double(), self.var.to(u_t.device).double(), u_t.double()
        resid = u - alpha * m
        total = alpha**2 * v + sigma**2
        return m + alpha * v / total * resid, sigma / total * resid

    def model(self, process: DiagonalGaussianProcess, prediction: Prediction = "eps") -> Callable[..., torch.Tensor]:
        """The exact denoiser as a ``model(z_t, t) -> prediction`` callable (pixel space in and out)."""

        def model(z_t: torch.Tensor, t: torch.Tensor, **cond: object) -> torch.Tensor:
            u_t = process.to_basis(z_t.double())
            u_0, eps = self.posterior_mean(process, u_t, t)
            alpha, sigma = process.alpha_sigma(t.to(z_t.device), tuple(z_t.shape))
            return process.from_basis(make_target(prediction, u_0, eps, alpha, sigma)).to(z_t.dtype)

        return model

    def marginal(self, process: DiagonalGaussianProcess, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of u_t per coefficient at times t (B,): shapes (B, C, H, W)."""
        shape = (t.shape[0], *self.mean.shape)
        alpha, sigma = process.alpha_sigma(t, shape)
        return alpha * self.mean.double(), alpha**2 * self.var.double() + sigma**2

    def log_prob(self, x: torch.Tensor, process: DiagonalGaussianProcess) -> torch.Tensor:
        """Exact log p(x) in nats per example, shape (B,)."""
        u = process.to_basis(x.double())
        m, v = self.mean.double(), self.var.double()
        per_coef = -0.5 * ((u - m) ** 2 / v + torch.log(2 * math.pi * v))
        return per_coef.flatten(1).sum(1)
