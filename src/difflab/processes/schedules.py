"""Noise schedules as log signal-to-noise ratios, in float64.

A schedule maps continuous time t in [0, 1] to lambda(t) = log(alpha_t^2 / sigma_t^2),
decreasing in t. Variance-preserving processes then have
``alpha_t^2 = sigmoid(lambda)`` and ``sigma_t^2 = sigmoid(-lambda)``.

Notation (paper symbol -> name here):

=================  ==================  ==========================================
symbol             name                meaning
=================  ==================  ==========================================
lambda(t)          ``logsnr``          log(alpha_t^2 / sigma_t^2)
alpha_t            ``alpha``           signal scale, sqrt(sigmoid(lambda))
sigma_t            ``sigma``           noise scale, sqrt(sigmoid(-lambda))
beta_i             ``betas``           DDPM's per-step variances (Ho et al. 2020)
bar-alpha_i        ``alpha_bar``       prod_{j<=i} (1 - beta_j) = alpha_t^2 at t=i/T
=================  ==================  ==========================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from difflab.errors import ConfigError, check_choice

ScheduleName = Literal["cosine", "linear", "flow"]
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "flow")


class Schedule(Protocol):
    """A decreasing map t -> lambda(t) with its inverse. Inputs and outputs are float64."""

    def logsnr(self, t: torch.Tensor) -> torch.Tensor: ...

    def t_from_logsnr(self, logsnr: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class CosineLogSNR:
    """The logSNR-clipped cosine schedule (Hoogeboom & Salimans 2023, App. A; Kingma et al. 2021).

    ``lambda(t) = -2 log tan(u_min + t (u_max - u_min))`` with
    ``u_min = arctan(exp(-logsnr_max / 2))`` and ``u_max = arctan(exp(-logsnr_min / 2))``,
    so lambda(0) = logsnr_max and lambda(1) = logsnr_min. Without clipping
    (logsnr limits +-inf) this is alpha_t = cos(pi t / 2) (Nichol & Dhariwal 2021).
    """

    logsnr_min: float = -10.0  # lambda(1): sigma_1^2 = sigmoid(10) ~ 0.99995, prior ~ N(0, I)
    logsnr_max: float = 10.0  # lambda(0): alpha_0^2 ~ 0.99995, near-clean data at t=0

    def __post_init__(self) -> None:
        if not self.logsnr_min < self.logsnr_max:
            raise ConfigError(
                f"logsnr_min={self.logsnr_min} must be below logsnr_max={self.logsnr_max}"
            )

    def _u_range(self) -> tuple[float, float]:
        u_min = math.atan(math.exp(-0.5 * self.logsnr_max))
        u_max = math.atan(math.exp(-0.5 * self.logsnr_min))
        return u_min, u_max

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        u_min, u_max = self._u_range()
        return -2.0 * torch.log(torch.tan(u_min + t.double() * (u_max - u_min)))

    def t_from_logsnr(self, logsnr: torch.Tensor) -> torch.Tensor:
        u_min, u_max = self._u_range()
        return (torch.atan(torch.exp(-0.5 * logsnr.double())) - u_min) / (u_max - u_min)


@dataclass(frozen=True)
class LinearDDPM:
    """DDPM's linear betas (Ho et al. 2020, Sec. 4) as a continuous-time schedule.

    ``beta_i = beta_1 + (beta_T - beta_1) (i - 1) / (T - 1)`` for i = 1..T and
    ``alpha_bar_i = prod_{j<=i} (1 - beta_j)``. log alpha_bar is interpolated linearly
    between the grid points t = i / T, so alpha_t^2 equals DDPM's alpha_bar_i exactly at
    t = i/T, with alpha_bar(0) = 1 (lambda(0) = +inf: no noise at t = 0).
    """

    beta_1: float = 1e-4  # Ho et al. (2020), Sec. 4
    beta_T: float = 0.02
    T: int = 1000  # number of discrete steps in DDPM

    def __post_init__(self) -> None:
        if not (0 < self.beta_1 <= self.beta_T < 1) or self.T < 2:
            raise ConfigError(
                f"LinearDDPM needs 0 < beta_1 <= beta_T < 1 and T >= 2; got "
                f"beta_1={self.beta_1}, beta_T={self.beta_T}, T={self.T}"
            )

    def log_alpha_bar_grid(self) -> torch.Tensor:
        """log alpha_bar_i for i = 0..T (float64, shape (T+1,)), with alpha_bar_0 = 1."""
        betas = torch.linspace(self.beta_1, self.beta_T, self.T, dtype=torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])

    def log_alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        grid = self.log_alpha_bar_grid().to(t.device)
        pos = t.double().clamp(0.0, 1.0) * self.T
        i = pos.floor().clamp(max=self.T - 1).long()
        w = pos - i
        return (1 - w) * grid[i] + w * grid[i + 1]

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        log_ab = self.log_alpha_bar(t)
        return log_ab - torch.log(-torch.expm1(log_ab))

    def t_from_logsnr(self, logsnr: torch.Tensor) -> torch.Tensor:
        # lambda is piecewise smooth and decreasing: invert by interpolating on a fine grid.
        t_grid = torch.linspace(0.0, 1.0, 64 * self.T + 1, dtype=torch.float64, device=logsnr.device)
        lam = self.logsnr(t_grid).flip(0)  # increasing
        t_inc = t_grid.flip(0)
        x = logsnr.double().clamp(lam[0].item(), lam[-2].item())  # lam[-1] = +inf at t = 0
        j = torch.searchsorted(lam, x).clamp(1, len(lam) - 1)
        w = (x - lam[j - 1]) / (lam[j] - lam[j - 1])
        return t_inc[j - 1] + w * (t_inc[j] - t_inc[j - 1])


@dataclass(frozen=True)
class FlowLogSNR:
    """The linear interpolant of flow matching / rectified flow as a VP schedule, logSNR-clipped.

    x_t = (1 - s) x_0 + s eps (Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024) is not
    variance-preserving, but x_t / sqrt((1 - s)^2 + s^2) is the VP marginal with
    ``lambda = 2 log((1 - s) / s)``. Time is mapped linearly, s = s_min + t (s_max - s_min) with
    ``s_min = sigmoid(-logsnr_max / 2)`` and ``s_max = sigmoid(-logsnr_min / 2)``, so lambda(0) =
    logsnr_max and lambda(1) = logsnr_min, as the clipped cosine. Unclipped, s = t.
    """

    logsnr_min: float = -10.0
    logsnr_max: float = 10.0

    def __post_init__(self) -> None:
        if not self.logsnr_min < self.logsnr_max:
            raise ConfigError(f"logsnr_min={self.logsnr_min} must be below logsnr_max={self.logsnr_max}")

    def _s_range(self) -> tuple[float, float]:
        return 1.0 / (1.0 + math.exp(0.5 * self.logsnr_max)), 1.0 / (1.0 + math.exp(0.5 * self.logsnr_min))

    def interpolant_time(self, t: torch.Tensor) -> torch.Tensor:
        """s in [s_min, s_max]: the time of the linear interpolant at process time t (float64)."""
        s_min, s_max = self._s_range()
        return s_min + t.double() * (s_max - s_min)

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        s = self.interpolant_time(t)
        return 2.0 * (torch.log1p(-s) - torch.log(s))

    def t_from_logsnr(self, logsnr: torch.Tensor) -> torch.Tensor:
        s_min, s_max = self._s_range()
        return (torch.sigmoid(-0.5 * logsnr.double()) - s_min) / (s_max - s_min)


def make_schedule(name: ScheduleName, *, logsnr_min: float = -10.0, logsnr_max: float = 10.0) -> Schedule:
    """Build a schedule by name: "cosine" (clipped cosine logSNR), "linear" (DDPM betas) or
    "flow" (the flow-matching interpolant, clipped)."""
    check_choice("schedule", name, SCHEDULES)
    if name == "cosine":
        return CosineLogSNR(logsnr_min=logsnr_min, logsnr_max=logsnr_max)
    if name == "flow":
        return FlowLogSNR(logsnr_min=logsnr_min, logsnr_max=logsnr_max)
    return LinearDDPM()


def alpha_sigma_from_logsnr(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Variance-preserving alpha = sqrt(sigmoid(lambda)), sigma = sqrt(sigmoid(-lambda))."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()
