"""Quantized data: the level grid, uniform dequantization and the discretized Gaussian decoder.

Images with ``L`` levels are stored as ``x = 2 v / (L - 1) - 1`` for ``v in {0, ..., L-1}``
(the data layer's convention), so neighbouring levels are ``Delta = 2 / (L - 1)`` apart and
every level owns the bin ``[x - Delta/2, x + Delta/2]`` (the two end bins extend to +-inf in
the decoder). Two ways turn a density model into a probability of the discrete data:

- uniform dequantization (Theis et al. 2016; Ho et al. 2019): ``y = x + Delta (U - 1/2)``,
  ``-log P(x) <= E_U[-log p(y)] - D log Delta``;
- a discretized Gaussian decoder (Ho et al. 2020, Eq. 13; Kingma et al. 2021, App. C): the
  mass a Gaussian ``N(mean, scale^2)`` puts on the bin of each pixel.
"""

from __future__ import annotations

import math

import torch

from difflab.errors import ConfigError, DataError


def bin_width(levels: int) -> float:
    """Delta = 2 / (L - 1): the spacing of ``levels`` values spread over [-1, 1]."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ConfigError(f"levels={levels!r} must be an integer >= 2 (256 for 8-bit images, 17 for digits)")
    return 2.0 / (levels - 1)


def check_on_grid(x: torch.Tensor, levels: int) -> None:
    """DataError unless every value of ``x`` is one of the ``levels`` values in [-1, 1]."""
    v = (x.double() + 1.0) / bin_width(levels)
    off = (v - v.round()).abs().max().item() if x.numel() else 0.0
    if off > 1e-3 or v.min().item() < -1e-3 or v.max().item() > levels - 1 + 1e-3:
        raise DataError(
            f"data is not on the {levels}-level grid 2 v / ({levels} - 1) - 1 in [-1, 1]; "
            "pass the data's own number of levels, or levels=None for continuous data"
        )


def dequantize(x: torch.Tensor, levels: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """y = x + Delta (U - 1/2) with U ~ Uniform[0, 1)^D: a point drawn uniformly in x's bin."""
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x + bin_width(levels) * (u - 0.5)


def log_normal_cdf_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, accurate in both tails.

    Uses Phi(b) - Phi(a) = Phi(-a) - Phi(-b) to stay in the lower tail, where ``log_ndtr``
    is accurate, and ``log(-expm1(.))`` for the difference of two nearby logs.
    """
    flip = a > 0
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-300)))


def discretized_gaussian_log_prob(
    x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor | float, levels: int
) -> torch.Tensor:
    """log P(x) per example (B,) of the discretized Gaussian decoder, in nats.

    Each pixel gets ``Phi((x + Delta/2 - mean) / scale) - Phi((x - Delta/2 - mean) / scale)``,
    with the lowest bin extended to -inf and the highest to +inf (Ho et al. 2020, Eq. 13).
    """
    half = 0.5 * bin_width(levels)
    scale = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    upper = torch.where(x > 1.0 - half, torch.full_like(x, math.inf), (x + half - mean) / scale)
    lower = torch.where(x < -1.0 + half, torch.full_like(x, -math.inf), (x - half - mean) / scale)
    return log_normal_cdf_diff(lower, upper).flatten(1).sum(1)


def log_sigmoid_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(b) - sigmoid(a)) for a < b, accurate in both tails (as ``log_normal_cdf_diff``)."""
    flip = a > 0
    lo = torch.where(flip, -b, a)
    hi = torch.where(flip, -a, b)
    log_hi, log_lo = torch.nn.functional.logsigmoid(hi), torch.nn.functional.logsigmoid(lo)
    return log_hi + torch.log(-torch.expm1((log_lo - log_hi).clamp(max=-1e-30)))


def discretized_logistic_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, levels: int
) -> torch.Tensor:
    """log P(x) per example (B,) of the discretized logistic decoder, in nats.

    Each pixel gets ``sigmoid((x + Delta/2 - mean) / s) - sigmoid((x - Delta/2 - mean) / s)``
    with s = exp(log_scale), the lowest bin extended to -inf and the highest to +inf
    (Salimans et al. 2017, PixelCNN++, Sec. 2.1; Kingma et al. 2016, IAF, App. C).
    """
    half = 0.5 * bin_width(levels)
    inv_s = torch.exp(-log_scale)
    upper = torch.where(x > 1.0 - half, torch.full_like(x, math.inf), (x + half - mean) * inv_s)
    lower = torch.where(x < -1.0 + half, torch.full_like(x, -math.inf), (x - half - mean) * inv_s)
    return log_sigmoid_diff(lower, upper).flatten(1).sum(1)
