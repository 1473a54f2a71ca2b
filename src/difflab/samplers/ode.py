"""Fast solvers of the probability-flow ODE, per basis coefficient.

Every process here is ``u_t = alpha_t u_0 + sigma_t eps`` with alpha_t per coefficient, so
the probability-flow ODE (Song et al. 2021) decouples coefficient by coefficient except
through the denoiser. In ``lambda = log(alpha / sigma)`` (half the logSNR, Lu et al.'s lambda;
each coefficient has its own) its exact solution from t to s is (Lu et al. 2022b,
"DPM-Solver++", Eq. 9)::

    u_s = (sigma_s / sigma_t) u_t + sigma_s * int_{lambda_t}^{lambda_s} e^lambda x0_hat(lambda) dlambda

Every solver here approximates x0_hat(lambda) by a polynomial through clean estimates of the
model and integrates ``e^lambda`` times that polynomial exactly (phi-functions), with the
per-coefficient step ``h = lambda_s - lambda_t``; all of it is elementwise, so one code path
serves Gaussian diffusion (scalar alpha) and blurring diffusion (one logSNR per frequency):

===========  =========================================================  ============
solver       polynomial through                                         NFE
===========  =========================================================  ============
euler        the current estimate (= DDIM, eta = 0)                     steps
heun         the current one and one at the Euler-predicted end point   2 steps - 1
dpmpp_2m     the last two (Lu et al.'s midpoint weights)                steps
dpmpp_3m     the last three                                             steps
unipc        the last ``order``; corrected with the new one (UniC)      steps
===========  =========================================================  ============

Stochastic variants ("SDE", ``eta > 0``) use the same polynomial with the decay rate
``1 + eta`` in place of 1 and fresh noise that keeps the marginals exact: ``eta = 1`` is
SDE-DPM-Solver++ (Lu et al. 2022b, App.), whose first-order step is ancestral (DDPM) sampling.

All solvers share the signature of ``difflab.samplers.ddpm`` and, like ``sample_ddim``,
return the clean estimate ``u_0_hat`` at the last grid time before 0 as the final step.

Notation (paper symbol -> name here):

===================  ================  ===============================================
symbol               name              meaning
===================  ================  ===============================================
lambda_t             ``lam``           log(alpha_t / sigma_t) per coefficient (float64)
h                    ``h``             lambda_s - lambda_t, per coefficient
x_theta, D           ``m``             the model's clean estimate u_0_hat (basis)
phi_j(z)             ``_phi``          (e^z - sum_{i<j} z^i / i!) / z^j
eta                  ``eta``           0: ODE; 1: SDE-DPM-Solver++ (fresh noise)
===================  ================  ===============================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from difflab.errors import ConfigError, check_choice
from difflab.processes import DiagonalGaussianProcess
from difflab.processes.noise import Generator
from difflab.samplers.ddpm import Callback, _batch, _noise_like
from difflab.samplers.denoiser import DenoiseFn

Moments = Callable[[torch.Tensor, int, float], list[torch.Tensor]]
UNIPC_ORDERS: tuple[int, ...] = (1, 2, 3)


# --- schedule quantities of one step t -> s ------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """float64 alpha_s, sigma_t, sigma_s, lambda_t, lambda_s of a step t -> s, per coefficient."""

    alpha_s: torch.Tensor
    sigma_t: torch.Tensor
    sigma_s: torch.Tensor
    lam_t: torch.Tensor
    lam_s: torch.Tensor

    @property
    def h(self) -> torch.Tensor:
        return self.lam_s - self.lam_t


def interval(process: DiagonalGaussianProcess, t: torch.Tensor, s: torch.Tensor, u: torch.Tensor) -> Interval:
    """The schedule of the step t -> s (s > 0) for coefficients shaped like ``u``."""
    shape = tuple(u.shape)
    alpha_t, sigma_t = process.alpha_sigma(_batch(t, u), shape)
    alpha_s, sigma_s = process.alpha_sigma(_batch(s, u), shape)
    lam_t = torch.log(alpha_t) - torch.log(sigma_t)  # = process.logsnr(t, shape) / 2
    lam_s = torch.log(alpha_s) - torch.log(sigma_s)
    return Interval(alpha_s, sigma_t, sigma_s, lam_t, lam_s)


# --- exponential integrals of polynomials ----------------------------------------------------
def _phi(j: int, z: torch.Tensor) -> torch.Tensor:
    """phi_j(z) = (e^z - sum_{i<j} z^i / i!) / z^j, with phi_0 = e^z; a Taylor series for small |z|."""
    if j == 0:
        return torch.exp(z)
    series = sum(z**i / math.factorial(i + j) for i in range(16))  # error < 0.5^16 / 16! for |z| < 0.5
    partial = sum(z**i / math.factorial(i) for i in range(j))
    closed = (torch.exp(z) - partial) / z.where(z != 0, torch.ones_like(z)) ** j
    return torch.where(z.abs() < 0.5, series, closed)


def exact_moments(h: torch.Tensor, n: int, rate: float) -> list[torch.Tensor]:
    """W_j = int_0^h rate e^{-rate (h - x)} x^j / j! dx for j < n  (= rate^-j (rate h)^{j+1} phi_{j+1}(-rate h))."""
    z = rate * h
    return [rate ** (-j) * z ** (j + 1) * _phi(j + 1, -z) for j in range(n)]


def midpoint_moments(h: torch.Tensor, n: int, rate: float) -> list[torch.Tensor]:
    """DPM-Solver++(2M)'s approximation W_1 ~ W_0 h / 2 (Lu et al. 2022b, Alg. 2); exact W_0."""
    if n > 2:
        raise ConfigError("the midpoint approximation is defined for two points only (DPM-Solver++ 2M)")
    w0 = -torch.expm1(-rate * h)
    return [w0, w0 * h / 2][:n]


def lagrange_weights(nodes: Sequence[torch.Tensor], moments: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """w_k with ``sum_k w_k m_k = sum_j W_j j! p_j`` for the polynomial ``p(x) = sum_j p_j x^j``
    through the points (nodes[k], m_k): the integral of the weight against the interpolant."""
    weights = []
    for k, x_k in enumerate(nodes):
        coeffs = [torch.ones_like(x_k)]  # Lagrange basis L_k in powers of x, lowest first
        for j, x_j in enumerate(nodes):
            if j != k:
                times_x = [torch.zeros_like(x_k), *coeffs]
                minus_xj = [-x_j * c for c in coeffs] + [torch.zeros_like(x_k)]
                coeffs = [(a + b) / (x_k - x_j) for a, b in zip(times_x, minus_xj, strict=True)]
        weights.append(sum(c * math.factorial(j) * w for j, (c, w) in enumerate(zip(coeffs, moments, strict=True))))
    return weights


Point = tuple[torch.Tensor, torch.Tensor]  # (lambda, m): a clean estimate and where it was made
STEP_RATIO_LIMIT = 2.0  # use past points only while every gap between them is >= h / 2


def exp_integrator_step(
    u: torch.Tensor,
    step: Interval,
    points: Sequence[Point],
    *,
    moments: Moments = exact_moments,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One exponential-integrator step t -> s with x0_hat interpolated through ``points``.

    ``u_s = (sigma_s / sigma_t) e^{-eta h} u_t + alpha_s sum_k w_k m_k + sigma_s sqrt(1 - e^{-2 eta h}) xi``
    with w_k the exact integral of ``(1 + eta) e^{-(1 + eta)(lambda_s - lambda)}`` against the
    Lagrange basis (Lu et al. 2022b, Eq. 9 and App. B; eta = 0 is the ODE). One point: DDIM.
    ``noise`` (xi, standard normal like u) is required when eta > 0.
    """
    h = step.h
    nodes = [lam - step.lam_t for lam, _ in points]  # (B, 1, H, W) or (B, 1, 1, 1) each
    weights = lagrange_weights(nodes, moments(h, len(nodes), 1.0 + eta))
    decay = torch.exp(-eta * h)
    u_s = (step.sigma_s / step.sigma_t * decay).to(u.dtype) * u
    for w, (_, m) in zip(weights, points, strict=True):
        u_s = u_s + (step.alpha_s * w).to(u.dtype) * m
    if eta > 0:
        if noise is None:
            raise ValueError("exp_integrator_step with eta > 0 needs noise")
        u_s = u_s + (step.sigma_s * (-torch.expm1(-2.0 * eta * h)).sqrt()).to(u.dtype) * noise
    return u_s


def guarded_step(
    u: torch.Tensor,
    step: Interval,
    past: Sequence[Point],
    *,
    new: Point | None = None,
    moments: Moments = exact_moments,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """``exp_integrator_step`` through ``past[:k]`` (most recent first, past[0] at lambda_t) and ``new``,
    with k chosen per coefficient: the largest k whose gaps lambda_{j-1} - lambda_j are all at
    least h / ``STEP_RATIO_LIMIT``.

    Extrapolating the interpolant a step h beyond points a gap g apart multiplies the errors of
    their clean estimates by about (h / g)^order. Per-coefficient lambda makes h >> g happen in
    blurring diffusion: a frequency's lambda jumps by up to ~14 within a step or two while its
    blur lifts, after many small steps. There the still-blurred, poorly predicted clean
    estimates would be amplified (checkerboard samples from a trained model with dpmpp_2m), so
    those coefficients drop to lower order, down to DDIM. On smooth grids (gap ~ h) every
    coefficient keeps the full order.
    """
    extra = [] if new is None else [new]
    u_s = exp_integrator_step(u, step, [past[0], *extra], moments=moments, eta=eta, noise=noise)
    allowed = torch.ones_like(step.h, dtype=torch.bool)
    for k in range(2, len(past) + 1):
        allowed = allowed & ((past[k - 2][0] - past[k - 1][0]) * STEP_RATIO_LIMIT >= step.h)
        higher = exp_integrator_step(u, step, [*past[:k], *extra], moments=moments, eta=eta, noise=noise)
        u_s = torch.where(allowed, higher, u_s)
    return u_s


# --- solvers -------------------------------------------------------------------------------
def _check_eta(eta: float) -> None:
    if eta < 0:
        raise ConfigError(f"eta={eta} must be >= 0 (0: probability-flow ODE, 1: SDE-DPM-Solver++)")


def _multistep(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    points: int,
    moments: Moments,
    eta: float,
    generator: Generator,
    callback: Callback | None,
) -> torch.Tensor:
    """Multistep exponential integrator interpolating through the last ``points`` clean estimates.

    The first steps use the points available (lower order), as in Lu et al. (2022b), Alg. 2,
    and ``guarded_step`` lowers the order per coefficient where the step ratio is extreme.
    """
    _check_eta(eta)
    past: list[Point] = []  # most recent first
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        m, _ = denoise(u, t)
        if callback is not None:
            callback(i, t, u, m)
        if s == 0:
            return m
        step = interval(process, t, s, u)
        past = [(step.lam_t, m), *past][:points]
        noise = _noise_like(u, generator) if eta > 0 else None
        u = guarded_step(u, step, past, moments=moments, eta=eta, noise=noise)
    return u


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2), per coefficient; NFE = steps.

    ``u_s = (sigma_s/sigma_t) u_t + alpha_s (1 - e^{-h}) [(1 + 1/(2r)) m_t - 1/(2r) m_prev]``
    with ``r = h_prev / h`` per coefficient. ``eta > 0`` adds noise (eta = 1: SDE-DPM-Solver++(2M)
    with the midpoint correction).
    """
    return _multistep(denoise, process, u, ts, points=2, moments=midpoint_moments, eta=eta,
                      generator=generator, callback=callback)


@torch.no_grad()
def sample_dpmpp_2m_sde(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    eta: float = 1.0,
) -> torch.Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, App.): ``sample_dpmpp_2m`` with ``eta = 1``."""
    return sample_dpmpp_2m(denoise, process, u, ts, generator=generator, callback=callback, eta=eta)


@torch.no_grad()
def sample_dpmpp_3m(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """Third-order multistep DPM-Solver++ (Lu et al. 2022a/b), per coefficient; NFE = steps.

    x0_hat(lambda) is the quadratic through the last three clean estimates, integrated exactly
    against e^lambda (phi_1, phi_2, phi_3): the exponential Adams-Bashforth 3 step.
    """
    return _multistep(denoise, process, u, ts, points=3, moments=exact_moments, eta=eta,
                      generator=generator, callback=callback)


@torch.no_grad()
def sample_unipc(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
    order: int = 2,
) -> torch.Tensor:
    """UniPC (Zhao et al. 2023) in data-prediction form, per coefficient; NFE = steps.

    UniP: an exponential Adams-Bashforth step through the last ``order`` clean estimates.
    UniC: once the model has been evaluated at the new point (which the next step needs
    anyway), redo the step with that estimate added to the interpolant, raising the order by
    one at no extra NFE; the model output is not re-evaluated at the corrected point.
    The coefficients solve UniPC's order conditions exactly at every order (its B(h) then
    cancels), so ``order=2`` gives a 3rd-order method.
    """
    check_choice("order", order, UNIPC_ORDERS)
    past: list[Point] = []  # most recent first
    last: tuple[torch.Tensor, Interval, list[Point]] | None = None  # state, step and points of the last UniP
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        m, _ = denoise(u, t)
        if callback is not None:
            callback(i, t, u, m)
        if s == 0:
            return m
        if last is not None:  # UniC: redo the previous step with (lambda_t, m) in the interpolant
            u_prev, prev_step, prev_past = last
            u = guarded_step(u_prev, prev_step, prev_past, new=(prev_step.lam_s, m))
        step = interval(process, t, s, u)
        past = [(step.lam_t, m), *past][:order]
        last = (u, step, past)
        u = guarded_step(u, step, past)  # UniP
    return u


@torch.no_grad()
def sample_euler(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Exponential Euler per coefficient, ``u_s = alpha_s u_0_hat + sigma_s eps_hat``; NFE = steps.

    This is DDIM with eta = 0 (Song et al. 2021), and also Euler's method on
    ``d(u/alpha) / d(sigma/alpha) = eps_hat`` (Karras et al. 2022): the same step in both
    parameterisations.
    """
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        m, _ = denoise(u, t)
        if callback is not None:
            callback(i, t, u, m)
        if s == 0:
            return m
        step = interval(process, t, s, u)
        u = exp_integrator_step(u, step, [(step.lam_t, m)])
    return u


@torch.no_grad()
def sample_heun(
    denoise: DenoiseFn,
    process: DiagonalGaussianProcess,
    u: torch.Tensor,
    ts: torch.Tensor,
    *,
    generator: Generator = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Heun's method in (x0 prediction, lambda) per coefficient: the exponential trapezoid rule.

    Predict with the exponential Euler (DDIM) step, evaluate the clean estimate there, then
    integrate the straight line between the two clean estimates exactly (Lu et al. 2022a,
    DPM-Solver-2 with r = 1). Two evaluations per step except the last (which returns
    u_0_hat): NFE = 2 steps - 1. Unlike Heun in (u/alpha, sigma/alpha) (Karras et al. 2022,
    Alg. 1), whose correction grows with the step ratio of sigma/alpha, the weights here stay
    in [0, 1], which keeps blurring diffusion (sigma/alpha spanning 1e3 per frequency) stable.
    """
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        m, _ = denoise(u, t)
        if callback is not None:
            callback(i, t, u, m)
        if s == 0:
            return m
        step = interval(process, t, s, u)
        m_s, _ = denoise(exp_integrator_step(u, step, [(step.lam_t, m)]), s)  # at the Euler (DDIM) prediction
        u = exp_integrator_step(u, step, [(step.lam_t, m), (step.lam_s, m_s)])
    return u
