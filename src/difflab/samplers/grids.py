"""Time grids, built apart from the solvers (as in k-diffusion's ``get_sigmas_*``).

A grid is a float64 tensor ``ts`` of ``steps + 1`` times, decreasing from ``t_max`` (usually
1) to exactly 0. A sampler takes one step per interval, so NFE = ``steps`` for first-order
and multistep solvers; the last step (to t = 0) returns the model's clean estimate at
``ts[-2]``.

=========  ==================================================  ===========================
grid       spacing of ts[0 .. steps-1]                         reference
=========  ==================================================  ===========================
uniform    uniform in t on [t_max, 0], last point set to 0     Ho et al. 2020; Song et al.
           (so the last evaluation is at t_max / steps)        2021 (DDIM "uniform")
quadratic  t = t_min + (t_max - t_min) (1 - i/(steps-1))^2     Song et al. 2021 (DDIM, App.)
logsnr     uniform in the scalar logSNR lambda                 Lu et al. 2022 (DPM-Solver)
karras     uniform in (sigma/alpha)^(1/rho), rho = 7           Karras et al. 2022, Eq. 5
=========  ==================================================  ===========================

The last three end at ``t_min`` (the last time the model is evaluated, default 1e-3, i.e.
DDPM's first timestep 1/T) and then append t = 0. ``logsnr`` and ``karras`` need the process:
they use the logSNR of its scalar noise schedule, ``lambda = log((1 - sigma_t^2) / sigma_t^2)``
(for blurring diffusion this is the ``a_t / sigma_t`` logSNR, not a per-frequency one), and
invert it by bisection, so they work for any process whose sigma_t increases with t.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from difflab.errors import ConfigError, check_choice
from difflab.processes import DiagonalGaussianProcess

GridName = Literal["uniform", "quadratic", "logsnr", "karras"]
GridFn = Callable[..., torch.Tensor]
GRIDS: dict[str, GridFn] = {}
PROCESS_GRIDS: frozenset[str] = frozenset({"logsnr", "karras"})  # grids that need the process
T_MIN = 1e-3  # default last evaluated time: DDPM's first timestep 1 / T with T = 1000
KARRAS_RHO = 7.0  # Karras et al. (2022), Sec. 3: rho = 7 balances errors at both ends


def _append_zero(ts: torch.Tensor) -> torch.Tensor:
    return torch.cat([ts, torch.zeros(1, dtype=torch.float64)])


def _fix_ends(ts: torch.Tensor, t_max: float, t_min: float) -> torch.Tensor:
    """Set the exact end points (bisection is accurate to ~1e-19) and append t = 0."""
    ts[0] = t_max
    if len(ts) > 1:
        ts[-1] = t_min
    return _append_zero(ts)


def _check_range(t_max: float, t_min: float) -> None:
    if not 0.0 < t_min < t_max <= 1.0:
        raise ConfigError(f"grid needs 0 < t_min < t_max <= 1; got t_min={t_min}, t_max={t_max}")


# --- grids in t alone ----------------------------------------------------------------------
def uniform_grid(steps: int, *, t_max: float = 1.0, t_min: float = 0.0) -> torch.Tensor:
    """t_i = t_max - (t_max - t_min) i / steps for i = 0..steps, then 0 (DDPM/DDIM spacing)."""
    ts = torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)
    ts[-1] = 0.0
    return ts


def quadratic_grid(steps: int, *, t_max: float = 1.0, t_min: float = T_MIN) -> torch.Tensor:
    """DDIM's quadratic spacing (Song et al. 2021, App. D.2): dense near t_min, then 0."""
    _check_range(t_max, t_min)
    frac = torch.linspace(1.0, 0.0, steps, dtype=torch.float64)  # (steps,): 1 -> 0
    return _append_zero(t_min + (t_max - t_min) * frac**2)


# --- grids in the scalar logSNR of the process ---------------------------------------------
def scalar_logsnr(process: DiagonalGaussianProcess, t: torch.Tensor) -> torch.Tensor:
    """lambda(t) = log((1 - sigma_t^2) / sigma_t^2) of the scalar noise schedule, float64, shape of t.

    For variance-preserving processes this is log(a_t^2 / sigma_t^2) with a_t^2 = 1 - sigma_t^2
    (the blurring-diffusion a_t, i.e. alpha_t before the per-frequency scaling d_t).
    """
    t = t.double().reshape(-1)
    _, sigma = process.alpha_sigma(t, (t.shape[0], 1, 1, 1))
    sigma2 = sigma.reshape(-1) ** 2
    return torch.log1p(-sigma2) - torch.log(sigma2)


def time_from_logsnr(process: DiagonalGaussianProcess, logsnr: torch.Tensor, iters: int = 64) -> torch.Tensor:
    """t in [0, 1] with ``scalar_logsnr(process, t) = logsnr``, by bisection (lambda decreases in t)."""
    lo = torch.zeros_like(logsnr, dtype=torch.float64)
    hi = torch.ones_like(logsnr, dtype=torch.float64)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = scalar_logsnr(process, mid) > logsnr  # still too clean: move later
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def _logsnr_range(process: DiagonalGaussianProcess, t_max: float, t_min: float) -> tuple[float, float]:
    lam = scalar_logsnr(process, torch.tensor([t_max, t_min], dtype=torch.float64))
    if not bool(lam[0] < lam[1]):
        raise ConfigError(
            f"grid needs a process whose logSNR decreases in t; lambda({t_max})={lam[0].item():.3g} "
            f">= lambda({t_min})={lam[1].item():.3g}"
        )
    return lam[0].item(), lam[1].item()


def logsnr_grid(
    steps: int, *, process: DiagonalGaussianProcess, t_max: float = 1.0, t_min: float = T_MIN
) -> torch.Tensor:
    """Uniform steps in the scalar logSNR from lambda(t_max) to lambda(t_min), then 0 (Lu et al. 2022)."""
    _check_range(t_max, t_min)
    lam_hi_t, lam_lo_t = _logsnr_range(process, t_max, t_min)
    lam = torch.linspace(lam_hi_t, lam_lo_t, steps, dtype=torch.float64)
    return _fix_ends(time_from_logsnr(process, lam), t_max, t_min)


def karras_grid(
    steps: int,
    *,
    process: DiagonalGaussianProcess,
    t_max: float = 1.0,
    t_min: float = T_MIN,
    rho: float = KARRAS_RHO,
) -> torch.Tensor:
    """Karras et al. (2022), Eq. 5, in s = sigma/alpha = exp(-lambda/2) of the scalar schedule, then 0.

    ``s_i = (s_max^(1/rho) + i/(steps-1) (s_min^(1/rho) - s_max^(1/rho)))^rho``.
    """
    _check_range(t_max, t_min)
    if rho <= 0:
        raise ConfigError(f"karras grid needs rho > 0 (Karras et al. use 7); got rho={rho}")
    lam_first, lam_last = _logsnr_range(process, t_max, t_min)
    s_max, s_min = torch.tensor([-0.5 * lam_first, -0.5 * lam_last], dtype=torch.float64).exp()
    frac = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    s = (s_max ** (1 / rho) + frac * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _fix_ends(time_from_logsnr(process, -2.0 * torch.log(s)), t_max, t_min)


GRIDS.update(uniform=uniform_grid, quadratic=quadratic_grid, logsnr=logsnr_grid, karras=karras_grid)


def grid_choices() -> list[str]:
    """The grid names a user may pass where a grid is chosen: "auto" and the ``GRIDS``."""
    return ["auto", *sorted(GRIDS)]


def time_grid(
    name: str, steps: int, process: DiagonalGaussianProcess | None = None, **options: float
) -> torch.Tensor:
    """The named grid with ``steps`` intervals; see ``GRIDS`` for the available names.

    ``process`` is required by the process-aware grids ("logsnr", "karras") and ignored by
    the others; ``options`` are the grid's keyword arguments (``t_max``, ``t_min``, ``rho``).
    """
    check_choice("grid", name, sorted(GRIDS))
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"steps={steps!r} must be a positive integer (the number of sampler steps)")
    if name in PROCESS_GRIDS:
        if process is None:
            raise ConfigError(f"grid '{name}' needs the process (time_grid('{name}', steps, process=...))")
        return GRIDS[name](steps, process=process, **options)
    return GRIDS[name](steps, **options)
