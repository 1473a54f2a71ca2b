"""Likelihood of critically-damped Langevin diffusion by its probability-flow ODE (Dockhorn et al.
2022, Sec. 3.5 and App. B.7).

In phase space u = (x, v) the probability-flow ODE of ``CLD`` is

    dx/dt = M^-1 beta v,
    dv/dt = -beta x - Gamma M^-1 beta v - Gamma beta s(u, t),       s = grad_v log p_t(u),

and along a solution d log p_t(u_t)/dt = -div: so log p_{t_min}(x_0, v_0) = log N(u_1; 0, I x M I)
+ int_{t_min}^1 div(u_t, t) dt, with the divergence exact or Hutchinson's (the helpers of
``difflab.likelihood.flow``). The data density follows from the joint by Jensen's inequality
over v_0 ~ q = N(0, gamma M I) (the paper's NLL bound):

    -log p(x_0) <= E_q[-log p(x_0, v_0) + log q(v_0)],

estimated with one v_0 per example. For discrete data x_0 is uniformly dequantized first and the
bin volume is added back, the convention of every difflab likelihood (bits/dim of the 8-bit data).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from difflab.errors import ConfigError, check_choice
from difflab.likelihood.flow import (
    DIVERGENCES,
    Divergence,
    exact_divergence,
    hutchinson_divergence,
    rademacher,
    solve_to_one,
)
from difflab.likelihood.quantization import bin_width, check_on_grid, dequantize
from difflab.processes.cld import CLD

Score = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x, v, t (B,)) -> grad_v log p_t


def _gaussian_log_density(z: torch.Tensor, variance: float) -> torch.Tensor:
    """log N(z; 0, variance I) summed per example (B,)."""
    return (-0.5 * z**2 / variance - 0.5 * math.log(2 * math.pi * variance)).flatten(1).sum(1)


def joint_nll(score: Score, process: CLD, x: torch.Tensor, v: torch.Tensor, *, t_min: float,
              divergence: Divergence = "hutchinson", rtol: float = 1e-5, atol: float = 1e-5,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """-log p_{t_min}(x, v) in nats per example (B,) by the probability-flow ODE (RK45 in float64)."""
    check_choice("divergence", divergence, DIVERGENCES)
    shape, c = (x.shape[0], 2 * x.shape[1], *x.shape[2:]), x.shape[1]  # the state (B, 2C, H, W) = (x, v)
    b, m_inv, damping = process.beta, 1.0 / process.mass, process.damping
    probes = rademacher((1, *shape), generator, x.dtype, x.device) if divergence == "hutchinson" else None
    n_u = math.prod(shape)

    def dynamics(t: float, state: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(state[:n_u]).reshape(shape).to(device=x.device, dtype=x.dtype).requires_grad_(True)
        with torch.enable_grad():
            x_t, v_t = u[:, :c], u[:, c:]
            s = score(x_t, v_t, torch.full((shape[0],), t, dtype=torch.float64, device=x.device))
            velocity = torch.cat([b * m_inv * v_t, -b * x_t - damping * b * m_inv * v_t - damping * b * s], 1)
            div = exact_divergence(velocity, u)[:, None] if probes is None else hutchinson_divergence(velocity, u, probes)
        return torch.cat([velocity.detach().flatten(), div.detach().flatten()]).cpu().double().numpy()

    state0 = np.concatenate([torch.cat([x, v], 1).detach().cpu().double().flatten().numpy(), np.zeros(shape[0])])
    end, _ = solve_to_one(dynamics, state0, t_min, rtol, atol)
    u_1 = end[:n_u].reshape(shape)
    log_prior = _gaussian_log_density(u_1[:, :c], 1.0) + _gaussian_log_density(u_1[:, c:], process.mass)
    return -(log_prior + end[n_u:])


def cld_nll_bound(score: Score, process: CLD, x: torch.Tensor, *, t_min: float, levels: int | None = None,
                  generator: torch.Generator | None = None, **options: object) -> torch.Tensor:
    """The bound on -log p(x) of the module docstring, in bits/dim per example (B,): one draw of
    v_0 ~ N(0, gamma M I) (and of the dequantization noise) from ``generator``."""
    if process.gamma <= 0:
        raise ConfigError("the CLD likelihood bound needs gamma > 0 (v_0 ~ N(0, gamma M I) has a density)")
    dims = math.prod(x.shape[1:])
    if levels is not None:
        check_on_grid(x, levels)
        x = dequantize(x, levels, generator=generator)
    variance = process.gamma * process.mass
    v = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * math.sqrt(variance)
    nats = joint_nll(score, process, x, v, t_min=t_min, generator=generator, **options) \
        + _gaussian_log_density(v.double().cpu(), variance)  # type: ignore[arg-type]
    if levels is not None:
        nats = nats - dims * math.log(bin_width(levels))
    return nats / (dims * math.log(2.0))
