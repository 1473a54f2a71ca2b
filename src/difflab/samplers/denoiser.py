"""Turn any ``model(z_t, t, **cond) -> prediction`` into a denoiser in basis coordinates.

Samplers never see the network's parameterisation: they call ``denoise(u_t, t)`` and get
``(u_0_hat, eps_hat)``, both in the process basis, whatever the model predicts (eps, x0 or v).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from difflab.errors import check_choice
from difflab.processes import PREDICTIONS, DiagonalGaussianProcess, Prediction, split_prediction

ModelFn = Callable[..., torch.Tensor]
DenoiseFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_denoiser(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    prediction: Prediction = "eps",
    cond: dict[str, Any] | None = None,
    clip_x0: float | None = None,
) -> DenoiseFn:
    """``denoise(u_t, t) -> (u_0_hat, eps_hat)`` in the basis; ``t`` is a scalar tensor.

    ``clip_x0``: if set, the clean estimate is clipped to [-clip_x0, clip_x0] in pixel space
    and eps_hat recomputed from it (DDPM's "clipped denoising" for images in [-1, 1]).
    """
    check_choice("prediction", prediction, PREDICTIONS)
    cond = cond or {}

    def denoise(u_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_batch = t.to(u_t.device, torch.float64).expand(u_t.shape[0])
        z_t = process.from_basis(u_t)
        pred = model(z_t, t_batch.to(u_t.dtype), **cond)
        alpha, sigma = process.coefficients(t_batch, u_t)
        u_0, eps = split_prediction(prediction, process.to_basis(pred.to(u_t.dtype)), u_t, alpha, sigma)
        if clip_x0 is not None:
            u_0 = process.to_basis(process.from_basis(u_0).clamp(-clip_x0, clip_x0))
            eps = (u_t - alpha * u_0) / sigma
        return u_0, eps

    return denoise
