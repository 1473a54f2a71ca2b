"""Exact log-likelihood by the probability-flow ODE, per basis coefficient, in nats per example.

Song et al. (2021), "Score-based generative modeling through SDEs", Sec. 4.3 and App. D.2.
Per coefficient k the marginals ``u_t = alpha_k(t) u_0 + sigma(t) eps`` are those of the
linear SDE ``du = f_k u dt + g_k dw`` with

    f_k = d log alpha_k / dt,
    g_k^2 = d sigma^2 / dt - 2 f_k sigma^2 = -sigma^2 d lambda_k / dt   (>= 0: lambda_k decreases),

so the probability-flow ODE ``du/dt = f u - 1/2 g^2 grad log p_t(u)`` with
``grad log p_t = -eps_hat / sigma`` reads

    du_k/dt = (d log alpha_k / dt) u_k - 1/2 sigma (d lambda_k / dt) eps_hat_k(u, t).

(Check: with the true eps and u = alpha u_0 + sigma eps this is alpha' u_0 + sigma' eps.)
Along a solution, ``d log p_t(u_t) / dt = -div v(u_t, t)``, hence

    log p_0(u(t_min)) = log N(u(1); 0, sigma_1^2 I) + int_{t_min}^1 div v(u_t, t) dt.

The divergence is exact (one backward pass per coefficient, for small D) or Hutchinson's
estimate ``w^T (dv/du) w`` with Rademacher probes w held fixed over the solve (Grathwohl et al.
2019, FFJORD). The ODE is solved by ``scipy.integrate.solve_ivp`` (RK45, Dormand-Prince, with
the caller's rtol/atol) on the flattened batch in float64. B is orthonormal, so log p(x) =
log p(u).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from difflab.errors import ConfigError, check_choice
from difflab.likelihood.time_proposal import check_t_min
from difflab.processes import DiagonalGaussianProcess, Prediction
from difflab.samplers import make_denoiser
from difflab.samplers.denoiser import DenoiseFn, ModelFn

Divergence = Literal["exact", "hutchinson"]
DIVERGENCES: tuple[str, ...] = ("exact", "hutchinson")


@dataclass(frozen=True)
class FlowResult:
    """Negative log-likelihood of each example by the probability-flow ODE.

    Attributes:
        nll: -log p(x) in nats, mean over probes, shape (B,) float64.
        nll_probes: one estimate per Rademacher probe, (B, P) (P = 1 for the exact trace).
        nfe: function evaluations of the ODE solver.
    """

    nll: torch.Tensor
    nll_probes: torch.Tensor
    nfe: int


def dlog_alpha_dt(process: DiagonalGaussianProcess, t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """f(t) = d log alpha(t) / dt per coefficient (float64), by forward-mode autodiff."""
    t = t.double()
    _, tangent = torch.func.jvp(
        lambda tt: torch.log(process.alpha_sigma(tt, shape)[0]), (t,), (torch.ones_like(t),)
    )
    return tangent


def drift_coefficients(
    process: DiagonalGaussianProcess, t: float, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, c) with ``v = f u + c eps_hat`` at time t: f = d log alpha/dt, c = -sigma lambda'/2 (float64)."""
    tt = torch.full((1,), t, dtype=torch.float64)
    shape1 = (1, *shape[1:])
    _, sigma = process.alpha_sigma(tt, shape1)
    return dlog_alpha_dt(process, tt, shape1), -0.5 * sigma * process.dlogsnr_dt(tt, shape1)


def exact_divergence(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """sum_k dv_k/du_k per example (B,), one backward pass per coefficient."""
    v_flat = v.flatten(1)
    div = torch.zeros(u.shape[0], dtype=v.dtype, device=v.device)
    for k in range(v_flat.shape[1]):
        (grad,) = torch.autograd.grad(v_flat[:, k].sum(), u, retain_graph=True)
        div = div + grad.flatten(1)[:, k]
    return div


def hutchinson_divergence(v: torch.Tensor, u: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """w^T (dv/du) w per example and probe, (B, P); ``probes`` are (P, *u.shape)."""
    estimates = []
    for w in probes:
        (vjp,) = torch.autograd.grad(v, u, grad_outputs=w, retain_graph=True)  # w^T dv/du
        estimates.append((vjp * w).flatten(1).sum(1))
    return torch.stack(estimates, dim=1)


def make_dynamics(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    probes: torch.Tensor | None,
    device: torch.device,
) -> Callable[[float, np.ndarray], np.ndarray]:
    """The right-hand side for ``solve_ivp`` on the state [u (B*D), int div v (B*P)].

    ``probes`` (P, *shape) selects Hutchinson's estimate; None the exact divergence.
    """
    n_u = math.prod(shape)

    def dynamics(t: float, state: np.ndarray) -> np.ndarray:
        f, c = (a.to(device=device, dtype=dtype) for a in drift_coefficients(process, t, shape))
        u = torch.from_numpy(state[:n_u]).reshape(shape).to(device=device, dtype=dtype).requires_grad_(True)
        with torch.enable_grad():
            _, eps_hat = denoise(u, torch.tensor(t, dtype=torch.float64))
            v = f * u + c * eps_hat
            div = exact_divergence(v, u)[:, None] if probes is None else hutchinson_divergence(v, u, probes)
        return torch.cat([v.detach().flatten(), div.detach().flatten()]).cpu().double().numpy()

    return dynamics


def solve_to_one(dynamics: Callable[[float, np.ndarray], np.ndarray], state0: np.ndarray, t_min: float,
                 rtol: float, atol: float) -> tuple[torch.Tensor, int]:
    """Integrate ``dynamics`` from t_min to 1 with RK45 (float64): (the state at t = 1, the
    solver's function evaluations); ``ConfigError`` for non-positive tolerances or a failed solve."""
    from scipy.integrate import (
        solve_ivp,  # imported here: it costs a second at `import difflab`
    )

    if not (rtol > 0 and atol > 0):
        raise ConfigError(f"rtol={rtol} and atol={atol} must be positive")
    sol = solve_ivp(dynamics, (t_min, 1.0), state0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise ConfigError(f"the probability-flow ODE solver failed: {sol.message}; try looser rtol/atol")
    return torch.from_numpy(sol.y[:, -1]), int(sol.nfev)


def rademacher(
    shape: tuple[int, ...], generator: torch.Generator | None, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """+-1 with probability 1/2 each."""
    return torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1


def flow_nll(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    x: torch.Tensor,
    *,
    prediction: Prediction = "eps",
    divergence: Divergence = "hutchinson",
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float = 0.0,
    cond: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> FlowResult:
    """-log p(x) in nats per example by integrating the probability-flow ODE from t_min to 1.

    Args:
        model: ``model(z_t, t, **cond) -> prediction`` in pixel space; called in x's dtype.
        x: continuous data (B, C, H, W) (dequantize discrete data first).
        divergence: "exact" (D backward passes per step) or "hutchinson" (``num_probes``
            Rademacher probes, each fixed for the whole solve, one backward pass each).
        rtol, atol: tolerances of the RK45 solver on the state [u, log-density change].
        t_min: the time the data sits at (the density is that of q(z_{t_min})).
        generator: RNG for the probes, on x's device.
    """
    check_choice("divergence", divergence, DIVERGENCES)
    if divergence == "hutchinson" and (isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1):
        raise ConfigError(f"num_probes={num_probes!r} must be a positive integer")
    shape = tuple(x.shape)
    check_t_min(process, t_min, shape)
    denoise = make_denoiser(model, process, prediction, cond=cond)
    n_probes = num_probes if divergence == "hutchinson" else 1
    probes = None
    if divergence == "hutchinson":
        probes = rademacher((n_probes, *shape), generator, x.dtype, x.device)
    # 1. Integrate [u, int div] from t_min to 1 (state flattened, float64).
    u_0 = process.to_basis(x.detach()).cpu().double().flatten().numpy()
    state0 = np.concatenate([u_0, np.zeros(shape[0] * n_probes)])
    dynamics = make_dynamics(denoise, process, shape, x.dtype, probes, x.device)
    end, nfe = solve_to_one(dynamics, state0, t_min, rtol, atol)
    u_1 = end[: math.prod(shape)].reshape(shape)
    integral = end[math.prod(shape):].reshape(shape[0], n_probes)  # (B, P)
    # 2. Prior log-density N(0, sigma_1^2) per example, plus the accumulated divergence.
    _, sigma_1 = process.alpha_sigma(torch.ones(1, dtype=torch.float64), (1, *shape[1:]))
    log_prior = (-0.5 * (u_1 / sigma_1) ** 2 - torch.log(sigma_1) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    nll_probes = -(log_prior[:, None] + integral)
    return FlowResult(nll=nll_probes.mean(1), nll_probes=nll_probes, nfe=nfe)
