"""Exact conversions between eps, x0, v and flow predictions, per basis coefficient.

With ``u_t = alpha * u_0 + sigma * eps`` (alpha, sigma per coefficient),
``v = alpha * eps - sigma * u_0`` (Salimans & Ho 2022, App. D) and the flow-matching velocity
``f = eps - u_0`` (d x_t / dt of the interpolant x_t = (1 - t) x_0 + t eps; Lipman et al. 2023,
Liu et al. 2023), the pair (u_t, p) for any prediction p in {eps, x0, v, flow} determines (u_0, eps):

========  ==============================================  ==============================================
given     u_0                                             eps
========  ==============================================  ==============================================
eps       (u_t - sigma eps) / alpha                        eps
x0        u_0                                             (u_t - alpha u_0) / sigma
v         (alpha u_t - sigma v) / (alpha^2 + sigma^2)      (sigma u_t + alpha v) / (alpha^2 + sigma^2)
flow      (u_t - sigma f) / (alpha + sigma)                (u_t + alpha f) / (alpha + sigma)
========  ==============================================  ==============================================

The v and flow rows hold for any alpha, sigma (not only alpha^2 + sigma^2 = 1), so they also
serve blurring diffusion, whose per-frequency alpha = a_t d_t breaks variance preservation. The
flow target does not depend on the schedule; "flow" with ``schedule="flow"`` is rectified flow.
"""

from __future__ import annotations

from typing import Literal

import torch

from difflab.errors import check_choice

Prediction = Literal["eps", "x0", "v", "flow"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v", "flow")


def split_prediction(
    kind: Prediction, pred: torch.Tensor, u_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u_0, eps) implied by a prediction of the given kind (all tensors in basis coordinates)."""
    check_choice("prediction", kind, PREDICTIONS)
    if kind == "eps":
        return (u_t - sigma * pred) / alpha, pred
    if kind == "x0":
        return pred, (u_t - alpha * pred) / sigma
    if kind == "flow":
        return (u_t - sigma * pred) / (alpha + sigma), (u_t + alpha * pred) / (alpha + sigma)
    norm = alpha**2 + sigma**2
    return (alpha * u_t - sigma * pred) / norm, (sigma * u_t + alpha * pred) / norm


def make_target(
    kind: Prediction, u_0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """The prediction of the given kind for known (u_0, eps): eps, u_0, v = alpha eps - sigma u_0
    or f = eps - u_0."""
    check_choice("prediction", kind, PREDICTIONS)
    if kind == "eps":
        return eps
    if kind == "x0":
        return u_0
    if kind == "flow":
        return eps - u_0
    return alpha * eps - sigma * u_0


def x0_error_factor(kind: Prediction, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """c_p with ``|u_0 - hat u_0|^2 = c_p |p - hat p|^2`` at fixed u_t, per coefficient.

    eps: sigma^2 / alpha^2 (= 1/SNR); x0: 1; v: sigma^2 / (alpha^2 + sigma^2)^2;
    flow: sigma^2 / (alpha + sigma)^2.
    Used to express any loss weighting as a weight on the x0 error (Kingma & Gao 2023).
    """
    check_choice("prediction", kind, PREDICTIONS)
    if kind == "eps":
        return sigma**2 / alpha**2
    if kind == "x0":
        return torch.ones_like(alpha * sigma)
    if kind == "flow":
        return sigma**2 / (alpha + sigma) ** 2
    return sigma**2 / (alpha**2 + sigma**2) ** 2
