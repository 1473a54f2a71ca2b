"""Samplers of critically-damped Langevin diffusion (Dockhorn, Vahdat & Kreis, ICLR 2022).

One signature, as the diagonal samplers: ``sampler(score, process, u, ts, *, generator)`` with
``score(x, v, t) -> grad_v log p_t(x, v)`` (each (B, C, H, W); t (B,) float64), a ``CLD`` process,
the initial state u = (x, v) (a draw of the prior, ``CLD.prior``) and a time grid ``ts`` from 1
down to t_min, then 0 (``difflab.samplers.grids``). Each returns x at t = 0; the noise of the
stochastic ones comes from ``generator``.
In reverse time, with f the forward drift and score s = grad_v log p_t:

- ``sample_cld_em``: Euler-Maruyama on the reverse SDE (Eq. 6),
  dx = -M^-1 beta v dt,  dv = (beta x + Gamma M^-1 beta v + 2 Gamma beta s) dt + sqrt(2 Gamma beta) dW;
- ``sample_cld_ode``: Heun on the probability-flow ODE (the same drift with Gamma beta s instead of
  2 Gamma beta s, no noise; Eq. 7), Euler on the last interval: 2 steps - 1 score calls;
- ``sample_cld_sscs``: symmetric splitting (SSCS, Sec. 3.4, Alg. 1): an exact half-step of the
  linear part (``CLD.reverse_linear``, mean and noise in closed form), an Euler step of the score
  part dv = 2 Gamma beta (s + M^-1 v) dt at the mid time, another exact half-step.

The last interval (t_min -> 0) is the denoising step of Song et al. 2021 that CLD also takes
(App. E.2): the same update without noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from difflab.processes.cld import CLD, cholesky_2x2
from difflab.processes.noise import Generator, standard_normal

Score = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, v, t (B,)) -> grad_v log p


def _times(t: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)


@torch.no_grad()
def sample_cld_em(score: Score, process: CLD, u: tuple[torch.Tensor, torch.Tensor], ts: torch.Tensor, *,
                  generator: Generator = None) -> torch.Tensor:
    """Euler-Maruyama on the reverse SDE; one score call per interval of ``ts``."""
    b, m_inv, g, q = process.beta, 1.0 / process.mass, process.damping, process.noise_rate
    x, v = u
    for i in range(len(ts) - 1):
        t, h = float(ts[i]), float(ts[i] - ts[i + 1])
        s = score(x, v, _times(t, x))
        x, v = x - h * b * m_inv * v, v + h * (b * x + g * b * m_inv * v + q * s)
        if ts[i + 1] > 0:
            v = v + math.sqrt(q * h) * standard_normal(x.shape, generator, device=x.device, dtype=x.dtype)
    return x


@torch.no_grad()
def sample_cld_ode(score: Score, process: CLD, u: tuple[torch.Tensor, torch.Tensor], ts: torch.Tensor, *,
                   generator: Generator = None) -> torch.Tensor:
    """Heun (2nd order) on the probability-flow ODE, Euler on the last interval."""
    b, m_inv, g, q = process.beta, 1.0 / process.mass, process.damping, process.noise_rate

    def velocity(x: torch.Tensor, v: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """d(x, v)/d(reverse time)."""
        return -b * m_inv * v, b * x + g * b * m_inv * v + 0.5 * q * score(x, v, _times(t, x))

    x, v = u
    for i in range(len(ts) - 1):
        t, t_next = float(ts[i]), float(ts[i + 1])
        h = t - t_next
        dx, dv = velocity(x, v, t)
        x_e, v_e = x + h * dx, v + h * dv  # Euler
        if t_next > 0:
            dx_e, dv_e = velocity(x_e, v_e, t_next)
            x_e, v_e = x + h * (dx + dx_e) / 2, v + h * (dv + dv_e) / 2  # trapezoidal correction
        x, v = x_e, v_e
    return x


@torch.no_grad()
def sample_cld_sscs(score: Score, process: CLD, u: tuple[torch.Tensor, torch.Tensor], ts: torch.Tensor, *,
                    generator: Generator = None) -> torch.Tensor:
    """Symmetric splitting CLD sampler (SSCS); one score call per interval of ``ts``."""
    linear, m_inv, q = process.reverse_linear, 1.0 / process.mass, process.noise_rate
    t_last = float(ts[-2])  # the score is not evaluated below the grid's last positive time

    def half_step(x: torch.Tensor, v: torch.Tensor, h: float, noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The linear part over h, exactly: mean exp(K h) u, plus N(0, Sigma(h)) with ``noise``."""
        (p_xx, p_xv), (p_vx, p_vv) = linear.transition(h).tolist()
        x, v = p_xx * x + p_xv * v, p_vx * x + p_vv * v
        if noise:
            l_xx, l_vx, l_vv = (float(c) for c in cholesky_2x2(linear.noise_covariance(h)))
            e_x = standard_normal(x.shape, generator, device=x.device, dtype=x.dtype)
            e_v = standard_normal(x.shape, generator, device=x.device, dtype=x.dtype)
            x, v = x + l_xx * e_x, v + l_vx * e_x + l_vv * e_v
        return x, v

    x, v = u
    for i in range(len(ts) - 1):
        t, h, noise = float(ts[i]), float(ts[i] - ts[i + 1]), bool(ts[i + 1] > 0)
        x, v = half_step(x, v, h / 2, noise)
        v = v + h * q * (score(x, v, _times(max(t - h / 2, t_last), x)) + m_inv * v)
        x, v = half_step(x, v, h / 2, noise)
    return x


CLD_SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "sscs": sample_cld_sscs,  # the paper's sampler for few steps
    "em": sample_cld_em,
    "ode": sample_cld_ode,
}


def cld_score_calls(sampler: str, steps: int) -> int:
    """Score (network) calls of ``sampler`` with ``steps`` intervals."""
    return 2 * steps - 1 if sampler == "ode" else steps
