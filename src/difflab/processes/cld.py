"""Critically-damped Langevin diffusion (CLD; Dockhorn, Vahdat & Kreis, ICLR 2022).

Every pixel x gets a velocity v, and noise enters through v only. With u = (x, v) per pixel and a
constant beta, the forward SDE (Eq. 5) is

    dx = M^-1 beta v dt
    dv = (-beta x - Gamma M^-1 beta v) dt + sqrt(2 Gamma beta) dW,

i.e. du = K u dt + G dW with K = beta [[0, M^-1], [-1, -Gamma M^-1]] and G G^T = diag(0, 2 Gamma beta):
a 2x2 block per pixel, the same block for every pixel. Its equilibrium is N(0, I) x N(0, M I), the
prior. v_0 ~ N(0, gamma M I) (the paper's gamma = 0.04). With critical damping Gamma^2 = 4M the two
eigenvalues of K coincide, lambda = -beta Gamma / (2M), so N = K - lambda I is nilpotent (N^2 = 0
by Cayley-Hamilton) and everything is closed form (``CriticallyDamped``):

    exp(K h) = e^(lambda h) (I + N h),
    int_0^h exp(K s) Q exp(K s)^T ds = Q I_0 + (N Q + Q N^T) I_1 + N Q N^T I_2,   I_k = int_0^h s^k e^(2 lambda s) ds,

which gives the perturbation kernel p(u_t | x_0) = N(mu_t, Sigma_t) with v_0 integrated out
(Sec. 3.3, App. B): mu_t = exp(K t) (x_0, 0), Sigma_t = exp(K t) diag(0, gamma M) exp(K t)^T + the
integral (float64). A draw is u_t = mu_t + L_t eps with the 2x2 Cholesky factor L_t, and the
velocity score is grad_v log p(u_t | x_0) = -ell_t eps_v with ell_t = 1 / L_t^vv (Eq. 9).

The reverse-time linear part that SSCS integrates exactly (Sec. 3.4), dx = -M^-1 beta v dt,
dv = (beta x - Gamma M^-1 beta v) dt + sqrt(2 Gamma beta) dW, is critically damped too
(``CLD.reverse_linear``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from difflab.errors import ConfigError
from difflab.processes.noise import Generator, standard_normal

SERIES_BELOW = 0.05  # |2 lambda h| below which I_k uses its Taylor series (no cancellation)


def _moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """J_k(z) = int_0^1 s^k e^(z s) ds for k = 0, 1, 2 (float64), stable at z -> 0."""
    small = z.abs() < SERIES_BELOW
    zs = torch.where(small, torch.ones_like(z), z)  # no division by ~0 in the closed forms
    e = torch.exp(zs)
    closed = (torch.expm1(zs) / zs, (e * (zs - 1) + 1) / zs**2, (e * (zs**2 - 2 * zs + 2) - 2) / zs**3)
    series = []
    for k in range(3):  # sum_n z^n / (n! (n + k + 1))
        term, total = torch.ones_like(z), torch.zeros_like(z)
        for n in range(12):
            total = total + term / (n + k + 1)
            term = term * z / (n + 1)
        series.append(total)
    return tuple(torch.where(small, s, c) for s, c in zip(series, closed))  # type: ignore[return-value]


@dataclass(frozen=True)
class CriticallyDamped:
    """The linear SDE du = K u dt + G dW on R^2 with G G^T = diag(0, q) and a repeated eigenvalue of K.

    ``transition(h)`` is exp(K h) and ``noise_covariance(h)`` the covariance that the noise adds over
    a step h (see the module docstring); both (..., 2, 2) float64 for times h of any shape.
    """

    K: tuple[tuple[float, float], tuple[float, float]]
    q: float

    def __post_init__(self) -> None:
        n = self.nilpotent
        if float((n @ n).abs().max()) > 1e-9 * max(1.0, float(n.abs().max()) ** 2):
            raise ConfigError(f"K = {self.K} is not critically damped (its eigenvalues differ)")

    @property
    def eigenvalue(self) -> float:
        """lambda = trace(K) / 2, the repeated eigenvalue."""
        return (self.K[0][0] + self.K[1][1]) / 2

    @property
    def nilpotent(self) -> torch.Tensor:
        """N = K - lambda I (2, 2), N^2 = 0."""
        return torch.tensor(self.K, dtype=torch.float64) - self.eigenvalue * torch.eye(2, dtype=torch.float64)

    def transition(self, h: torch.Tensor | float) -> torch.Tensor:
        """exp(K h) = e^(lambda h) (I + N h): (..., 2, 2)."""
        h = torch.as_tensor(h, dtype=torch.float64)[..., None, None]
        eye = torch.eye(2, dtype=torch.float64, device=h.device)
        return torch.exp(self.eigenvalue * h) * (eye + self.nilpotent.to(h.device) * h)

    def noise_covariance(self, h: torch.Tensor | float) -> torch.Tensor:
        """int_0^h exp(K s) Q exp(K s)^T ds with Q = diag(0, q): (..., 2, 2)."""
        h = torch.as_tensor(h, dtype=torch.float64)
        n = self.nilpotent.to(h.device)
        q = torch.zeros(2, 2, dtype=torch.float64, device=h.device)
        q[1, 1] = self.q
        j0, j1, j2 = _moments(2 * self.eigenvalue * h)
        i0, i1, i2 = (h * j0)[..., None, None], (h**2 * j1)[..., None, None], (h**3 * j2)[..., None, None]
        return q * i0 + (n @ q + q @ n.T) * i1 + (n @ q @ n.T) * i2


def cholesky_2x2(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_xx, L_vx, L_vv) of Sigma = L L^T for (..., 2, 2) covariances."""
    l_xx = sigma[..., 0, 0].sqrt()
    l_vx = sigma[..., 1, 0] / l_xx
    l_vv = (sigma[..., 1, 1] - l_vx**2).sqrt()
    return l_xx, l_vx, l_vv


def _per_example(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 -> (B, 1, ..., 1) in ``like``'s dtype, to scale a batch of images."""
    return value.to(like.dtype).view(-1, *[1] * (like.dim() - 1))


@dataclass(frozen=True)
class CLD:
    """Critically-damped Langevin diffusion (see the module docstring) on t in [0, 1].

    The defaults are the paper's CIFAR-10 setting (App. E.2.1): M^-1 = 4, beta = 4, gamma = 0.04,
    Gamma = 2 sqrt(M) = 1 (critical damping).
    """

    mass: float = 0.25
    """M, the velocity's mass: the prior is v ~ N(0, M I)."""
    beta: float = 4.0
    """beta, the time scale of the SDE (constant in t): larger mixes faster."""
    gamma: float = 0.04
    """gamma: v_0 ~ N(0, gamma M I); > 0 keeps Sigma_t positive definite at every t > 0."""

    def __post_init__(self) -> None:
        if not (self.mass > 0 and math.isfinite(self.mass)):
            raise ConfigError(f"CLD mass M={self.mass} must be > 0 (the paper uses 0.25, i.e. M^-1 = 4)")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ConfigError(f"CLD beta={self.beta} must be > 0 (the paper uses 4)")
        if not (self.gamma >= 0 and math.isfinite(self.gamma)):
            raise ConfigError(f"CLD gamma={self.gamma} must be >= 0 (v_0 ~ N(0, gamma M); the paper uses 0.04)")

    @property
    def damping(self) -> float:
        """Gamma = 2 sqrt(M): critical damping, Gamma^2 = 4 M."""
        return 2.0 * math.sqrt(self.mass)

    @property
    def noise_rate(self) -> float:
        """2 Gamma beta: the variance per unit time that the noise adds to v."""
        return 2.0 * self.damping * self.beta

    @property
    def forward_sde(self) -> CriticallyDamped:
        """du = K u dt + G dW, K = beta [[0, M^-1], [-1, -Gamma M^-1]] (Eq. 5)."""
        b, m_inv = self.beta, 1.0 / self.mass
        return CriticallyDamped(((0.0, b * m_inv), (-b, -self.damping * b * m_inv)), self.noise_rate)

    @property
    def reverse_linear(self) -> CriticallyDamped:
        """The linear part of the reverse SDE in reverse time (SSCS's exact half-steps, Sec. 3.4):
        K = beta [[0, -M^-1], [1, -Gamma M^-1]]."""
        b, m_inv = self.beta, 1.0 / self.mass
        return CriticallyDamped(((0.0, -b * m_inv), (b, -self.damping * b * m_inv)), self.noise_rate)

    # --- the perturbation kernel ------------------------------------------------------------
    def marginal(self, t: torch.Tensor | float, data_variance: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t (..., 2), Sigma_t (..., 2, 2)) of u_t = a_t x_0 + N(0, Sigma_t), v_0 ~ N(0, gamma M)
        integrated out; ``data_variance`` s^2 > 0 also integrates out x_0 ~ N(0, s^2) (then a_t
        is still the coefficient of the mean, and Sigma_t is the Gaussian data's marginal)."""
        sde = self.forward_sde
        phi = sde.transition(t)  # (..., 2, 2)
        sigma_0 = torch.diag(torch.tensor([data_variance, self.gamma * self.mass], dtype=torch.float64))
        return phi[..., 0], phi @ sigma_0.to(phi.device) @ phi.transpose(-1, -2) + sde.noise_covariance(t)

    def ell(self, t: torch.Tensor) -> torch.Tensor:
        """ell_t = 1 / L_t^vv = sqrt(Sigma_xx / det Sigma_t): grad_v log p(u_t | x_0) = -ell_t eps_v."""
        return 1.0 / cholesky_2x2(self.marginal(t)[1])[2]

    def perturb(self, x0: torch.Tensor, t: torch.Tensor, eps_x: torch.Tensor,
                eps_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u_t = a_t x_0 + L_t eps for images x0 (B, ...) at times t (B,): (x_t, v_t), each like x0."""
        a, sigma = self.marginal(t.double())
        l_xx, l_vx, l_vv = (_per_example(c, x0) for c in cholesky_2x2(sigma))
        x_t = _per_example(a[:, 0], x0) * x0 + l_xx * eps_x
        v_t = _per_example(a[:, 1], x0) * x0 + l_vx * eps_x + l_vv * eps_v
        return x_t, v_t

    def prior(self, shape: tuple[int, ...], generator: Generator = None, *, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, v) ~ N(0, I) x N(0, M I), each of ``shape`` (x drawn first)."""
        x = standard_normal(shape, generator, device=device, dtype=dtype)
        v = standard_normal(shape, generator, device=device, dtype=dtype) * math.sqrt(self.mass)
        return x, v

    def config(self) -> dict[str, Any]:
        return {"mass": self.mass, "beta": self.beta, "gamma": self.gamma}
