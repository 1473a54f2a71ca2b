"""Where to evaluate the diffusion term of the bound: time draws and their densities.

The diffusion term is an integral over t (continuous time) or a sum over T steps (discrete
time); it is estimated from K draws per example. Two independent choices lower its variance:

- how the K uniforms u in [0, 1) are drawn (``t_sampling``): "uniform" (i.i.d.),
  "antithetic" (pairs u, 1 - u) or "stratified" (u_j = (u_0 + j / K) mod 1, the
  low-discrepancy sampler of Kingma et al. 2021, App. I.1);
- where they are mapped (``importance``): uniformly in t, or with density proportional to
  the decrease of the mean logSNR, i.e. uniform in logSNR, the parameterisation in which
  Kingma et al. (2021, Eq. 17) write the continuous bound.

The proposal is piecewise constant on a grid of cells (T cells in discrete time), so its
density at the returned points is exact and the estimate unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from difflab.errors import ConfigError, check_choice
from difflab.processes import DiagonalGaussianProcess

TSampling = Literal["uniform", "antithetic", "stratified"]
T_SAMPLINGS: tuple[str, ...] = ("uniform", "antithetic", "stratified")
IMPORTANCE_CELLS = 1024  # cells of the continuous-time importance proposal


def draw_uniforms(
    batch: int,
    k: int,
    method: TSampling,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """K uniforms in [0, 1) per example, shape (B, K), float64, with the chosen coupling."""
    check_choice("t_sampling", method, T_SAMPLINGS)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"num_t={k!r} must be a positive number of time draws per example")
    draw = dict(generator=generator, dtype=torch.float64, device=device)
    if method == "uniform":
        return torch.rand(batch, k, **draw)
    if method == "antithetic":
        if k % 2:
            raise ConfigError(f"antithetic time sampling needs an even num_t; got {k}")
        half = torch.rand(batch, k // 2, **draw)
        return torch.cat([half, 1.0 - half], dim=1)
    u0 = torch.rand(batch, 1, **draw)
    return torch.remainder(u0 + torch.arange(k, dtype=torch.float64, device=u0.device) / k, 1.0)


def check_t_min(process: DiagonalGaussianProcess, t_min: float, shape: tuple[int, ...]) -> None:
    """ConfigError unless 0 <= t_min < 1 and the logSNR is finite there."""
    if not 0.0 <= t_min < 1.0:
        raise ConfigError(f"t_min={t_min} must be in [0, 1)")
    lam = process.logsnr(torch.full((1,), float(t_min), dtype=torch.float64), (1, *shape[1:]))
    if not torch.isfinite(lam).all():
        raise ConfigError(
            f"the logSNR is infinite at t_min={t_min} for this schedule (no noise); "
            "pass t_min > 0, e.g. t_min=0.001 for the linear DDPM schedule"
        )


def mean_logsnr(process: DiagonalGaussianProcess, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Lambda(t): the logSNR averaged over coefficients, shape (N,) for times t (N,)."""
    lam = process.logsnr(t, (t.shape[0], *shape[1:]))
    return torch.broadcast_to(lam, (t.shape[0], *lam.shape[1:])).flatten(1).mean(1)


@dataclass(frozen=True)
class TimeProposal:
    """A piecewise-constant density on the cells ``[edges[i], edges[i+1]]`` with masses ``mass``."""

    edges: torch.Tensor  # (N+1,) float64, increasing from t_min to 1
    mass: torch.Tensor  # (N,) float64, sums to 1

    @classmethod
    def build(
        cls, process: DiagonalGaussianProcess, shape: tuple[int, ...], *, cells: int, t_min: float, importance: bool
    ) -> TimeProposal:
        """Equal masses (uniform), or masses proportional to the drop of the mean logSNR per cell."""
        edges = torch.linspace(t_min, 1.0, cells + 1, dtype=torch.float64)
        if not importance:
            return cls(edges, torch.full((cells,), 1.0 / cells, dtype=torch.float64))
        drop = -torch.diff(mean_logsnr(process, edges, shape))
        if not torch.isfinite(drop).all() or (drop <= 0).any():
            raise ConfigError("importance sampling needs a finite, strictly decreasing logSNR on [t_min, 1]")
        return cls(edges, drop / drop.sum())

    def cell(self, u: torch.Tensor) -> torch.Tensor:
        """Index of the cell each uniform u (any shape) falls in, by the proposal's CDF."""
        cdf = torch.cumsum(self.mass, 0)
        return torch.searchsorted(cdf, u.contiguous(), right=True).clamp(max=len(self.mass) - 1)

    def continuous(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, density p(t)) for uniforms u: position within the cell by the CDF's linear piece."""
        i = self.cell(u)
        cdf_lo = torch.cumsum(self.mass, 0) - self.mass
        width = self.edges[1:] - self.edges[:-1]
        frac = ((u - cdf_lo[i]) / self.mass[i]).clamp(0.0, 1.0)
        return self.edges[i] + frac * width[i], self.mass[i] / width[i]
