"""IHDM's training objective: predict the less-blurred image (Rissanen et al., ICLR 2023, Eq. 6).

For a level k drawn uniformly from {1, ..., K} the network sees the noisy blurred image
``z_k = F(tau_k) x + sigma eps`` and the time t = k / K, and through a residual connection
predicts the noise-free, less-blurred image of the level below:

    hat u_{k-1} = z_k + net(z_k, k / K),      loss = mean over pixels of (hat u_{k-1} - F(tau_{k-1}) x)^2

(unweighted MSE; the paper's "u_{k-1}" target and its skip connection). Pixel space and DCT
space give the same loss because the DCT is orthonormal.
"""

from __future__ import annotations

from typing import Any

import torch

from difflab.errors import ConfigError
from difflab.processes import HeatDissipation


def predict_less_blurred(
    model: Any, z_k: torch.Tensor, t: torch.Tensor, cond: dict[str, Any] | None = None
) -> torch.Tensor:
    """hat u_{k-1} = z_k + model(z_k, t): the residual-connected IHDM prediction, pixel space."""
    return z_k + model(z_k, t.to(z_k.dtype), **(cond or {}))


def sample_levels(
    batch: int, K: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Training levels k ~ Uniform{1, ..., K}, shape (B,), int64."""
    return torch.randint(1, K + 1, (batch,), generator=generator, device=device)


def levels_from_times(t: torch.Tensor, K: int) -> torch.Tensor:
    """k = ceil(t K) in 1..K for t in (0, 1]: uniform t gives uniform levels. Shape (B,), int64."""
    return torch.ceil(t.double() * K).clamp(1, K).long()


def heat_loss(
    model: Any,
    process: HeatDissipation,
    x0: torch.Tensor,
    *,
    k: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    cond: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Per-example IHDM loss, shape (B,).

    ``k`` (B,) levels in 1..K, or times ``t`` (B,) in (0, 1] mapped to k = ceil(t K), and
    ``noise`` (like x0) are drawn with ``generator`` when not given.
    """
    if not isinstance(process, HeatDissipation):
        raise ConfigError(f"heat_loss trains IHDM and needs a 'heat' process; got '{process.kind}'")
    if k is not None and t is not None:
        raise ConfigError("heat_loss takes levels k or times t, not both")
    if t is not None:
        k = levels_from_times(t, process.K)
    if k is None:
        k = sample_levels(x0.shape[0], process.K, generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = k.to(x0.device, torch.float64) / process.K
    s = (k.to(x0.device, torch.float64) - 1) / process.K
    # 1. Blur to level k and add the training noise; the target is level k-1 without noise.
    z_k = process.diffuse(x0, t, noise)
    target = process.blur(x0, s)
    # 2. Residual prediction and unweighted squared error per example.
    pred = predict_less_blurred(model, z_k, t, cond)
    return ((pred - target) ** 2).flatten(1).mean(1)
