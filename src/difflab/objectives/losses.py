"""Denoising losses: a weighting lambda(t) times the error of the chosen prediction.

Every weighting is stated as a weight omega on the x0 error per basis coefficient,
``|u_0 - hat u_0|^2 = c_p |p - hat p|^2`` (see ``x0_error_factor``), following Kingma &
Gao (2023), "Understanding diffusion objectives":

===========  ===========================  ============================================
weighting    omega (weight on x0 error)   equals
===========  ===========================  ============================================
uniform      1 / c_p                      plain MSE on the chosen prediction (DDPM's
                                          L_simple when prediction = eps)
snr          1                            MSE on x0: the eps loss weighted by 1/SNR
                                          ("x0-equivalent")
min_snr      min(SNR, gamma)              Min-SNR-gamma (Hang et al. 2023, Eq. 6)
===========  ===========================  ============================================

For blurring diffusion SNR differs per frequency, so non-uniform weightings are applied in
the DCT basis; the uniform one needs no change of basis (B is orthonormal).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from difflab.errors import ConfigError, check_choice
from difflab.processes import PREDICTIONS, DiagonalGaussianProcess, Prediction, make_target, x0_error_factor

Weighting = Literal["uniform", "snr", "min_snr"]
WEIGHTINGS: tuple[str, ...] = ("uniform", "snr", "min_snr")
TimeSampling = Literal["uniform", "stratified", "logit_normal"]
TIME_SAMPLINGS: tuple[str, ...] = ("uniform", "stratified", "logit_normal")


def sample_times(
    batch: int,
    *,
    method: TimeSampling = "uniform",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training times t in (0, 1], shape (B,), float64.

    "stratified" is the low-discrepancy sampler of Kingma et al. (2021, App. I.1):
    ``t_i = (u + i / B) mod 1`` with one shared uniform u, which lowers the loss variance.
    "logit_normal" draws t = sigmoid(n), n ~ N(0, 1): more weight on the middle times, the
    density of rectified-flow training in Esser et al. (2024, Sec. 3.1, m = 0, s = 1).
    """
    check_choice("time_sampling", method, TIME_SAMPLINGS)
    if method == "logit_normal":
        return torch.sigmoid(torch.randn(batch, generator=generator, dtype=torch.float64, device=device))
    if method == "uniform":
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
    else:
        u0 = torch.rand(1, generator=generator, dtype=torch.float64, device=device)
        u = torch.remainder(u0 + torch.arange(batch, dtype=torch.float64, device=device) / batch, 1.0)
    return 1.0 - u  # (0, 1]: avoids t = 0, where sigma may be 0


def loss_weight(
    weighting: Weighting, prediction: Prediction, alpha: torch.Tensor, sigma: torch.Tensor, gamma: float = 5.0
) -> torch.Tensor:
    """Weight on the squared error of ``prediction`` per coefficient: omega * c_p (float64)."""
    check_choice("weighting", weighting, WEIGHTINGS)
    if weighting == "uniform":
        return torch.ones_like(alpha * sigma)
    c_p = x0_error_factor(prediction, alpha, sigma)
    if weighting == "snr":
        return c_p
    if gamma <= 0:
        raise ConfigError(f"min_snr gamma={gamma} must be positive (Hang et al. use 5)")
    return torch.clamp(alpha**2 / sigma**2, max=gamma) * c_p


def diffusion_loss(
    model: Any,
    process: DiagonalGaussianProcess,
    x0: torch.Tensor,
    *,
    prediction: Prediction = "eps",
    weighting: Weighting = "uniform",
    gamma: float = 5.0,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    cond: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Per-example loss, shape (B,): mean over coefficients of weight * (p - hat p)^2.

    ``t`` (B,) and ``noise`` (like x0) are drawn with ``generator`` when not given.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    if t is None:
        t = sample_times(x0.shape[0], generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    # 1. Diffuse and predict (pixel space).
    z_t = process.diffuse(x0, t, noise)
    pred = model(z_t, t.to(x0.dtype), **(cond or {}))
    # 2. The target in the basis, from the known (u_0, eps).
    alpha, sigma = process.coefficients(t, x0)
    target = make_target(prediction, process.to_basis(x0), process.to_basis(noise), alpha, sigma)
    # 3. Weighted squared error per coefficient, averaged per example.
    err2 = (process.to_basis(pred) - target) ** 2
    if weighting != "uniform":
        a64, s64 = process.alpha_sigma(t.to(x0.device), tuple(x0.shape))
        err2 = loss_weight(weighting, prediction, a64, s64, gamma).to(x0.dtype) * err2
    return err2.flatten(1).mean(1)
