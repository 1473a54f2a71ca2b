"""``PixelCNNModel``: an autoregressive model of the quantized pixels (van den Oord et al. 2016).

p(x) = prod_k p(x_k | x_<k) over the sub-pixels in raster order (row, column, channel), each a
categorical over the L levels given by ``difflab.nn.GatedPixelCNN``. Training minimises the exact
negative log-likelihood of the discrete data, in bits/dim,

    L(x) = -sum_k log2 p(x_k | x_<k) / D,        (van den Oord et al. 2016, Eq. 1)

which is also what ``nll(x)`` returns: no bound, no dequantization (the data are discrete; the
same convention as every difflab likelihood). Sampling is ancestral, one sub-pixel at a time:
C H W network calls per image, the price of the exact likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from difflab.errors import ConfigError, check_choice
from difflab.likelihood.quantization import bin_width
from difflab.models.base import Batch, OptionsModel, check_levels
from difflab.nn import GatedPixelCNN
from difflab.processes.noise import Generator, PerSampleGenerator


def level_values(k: torch.Tensor, levels: int) -> torch.Tensor:
    """Level indices 0 ... L-1 -> their values 2k / (L - 1) - 1 on the L-level grid in [-1, 1]."""
    return k.float() * bin_width(levels) - 1.0


@torch.no_grad()
def ancestral_sample(network: GatedPixelCNN, shape: tuple[int, ...], generator: PerSampleGenerator,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Level indices (B, C, H, W) drawn from ``network`` one sub-pixel at a time in raster order
    (C H W steps, each a pass of the horizontal stack on one row; the rows above are summarised
    once per row by ``row_context``); the uniform of sub-pixel (c, i, j) of sample b comes from
    ``generator``'s stream b."""
    b, c, h, w = shape
    levels, dtype = network.config.levels, next(network.parameters()).dtype
    k = torch.zeros(shape, dtype=torch.long, device=device)
    for i in range(h):
        context = network.row_context(level_values(k, levels).to(dtype), i)
        for j in range(w):
            for channel in range(c):
                row = level_values(k[:, :, i:i + 1], levels).to(dtype)  # (B, C, 1, W)
                logits = network.row_logits(row, context)  # (B, C, L, 1, W)
                p = logits[:, channel, :, 0, j].float().softmax(1)  # (B, L)
                u = torch.special.ndtr(generator.randn((b, 1), device=k.device))  # Uniform(0, 1)
                k[:, channel, i, j] = (p.cumsum(1) < u).sum(1).clamp(max=levels - 1)  # inverse CDF
    return k


class PixelCNNModel(OptionsModel):
    """A ``GatedPixelCNN`` trained by maximum likelihood (see the module docstring)."""

    family: ClassVar[str] = "pixelcnn"
    has_likelihood: ClassVar[bool] = True
    nll_methods: ClassVar[tuple[str, ...]] = ("exact",)
    network_kind: ClassVar[str] = "pixelcnn"

    def __init__(self, network: GatedPixelCNN, image_shape: tuple[int, ...]) -> None:
        super().__init__(network, image_shape)
        self.levels = network.config.levels

    def indices(self, x: torch.Tensor) -> torch.Tensor:
        """Level indices 0 ... L-1 (B, C, H, W) of images on the L-level grid in [-1, 1]."""
        return ((x + 1.0) / bin_width(self.levels)).round().long().clamp(0, self.levels - 1)

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """-log2 p(x) / D per example (B,), exact."""
        logits = self.network(x)  # (B, C, L, H, W)
        nats = F.cross_entropy(logits.transpose(1, 2), self.indices(x), reduction="none")  # (B, C, H, W)
        return nats.flatten(1).sum(1) / (self.dims * math.log(2))

    def losses(self, batch: Batch, generator: Generator) -> dict[str, torch.Tensor]:
        """{"nll": exact bits/dim} (B,)."""
        return {"nll": self.bits_per_dim(batch[0])}

    def fit(self, batches: Iterable[torch.Tensor]) -> str | None:
        """Nothing is fitted; checks that the training images lie on the network's ``levels`` grid."""
        first = next(iter(batches), None)
        if first is not None:
            check_levels(first, self.levels, "the PixelCNN predicts", "network.levels")
        return None

    # --- sampling --------------------------------------------------------------------------------
    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        """Ancestral sampling, sub-pixel by sub-pixel in raster order (C H W network calls)."""
        k = ancestral_sample(self.network, (len(generator), *self.image_shape), generator, options.get("device"))
        return level_values(k, self.levels)

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        calls = self.dims
        return {"sampler": "ancestral, pixel by pixel", "steps": calls, "grid": "-", "nfe": calls}

    # --- likelihood ------------------------------------------------------------------------------
    @torch.no_grad()
    def nll(self, x: torch.Tensor, method: str = "exact", *, levels: int | None = None,
            generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """Exact bits/dim per example (B,) of data on the model's ``levels`` grid."""
        check_choice("nll method", method, self.nll_methods)
        if options:
            raise ConfigError(f"PixelCNN nll takes no option(s) {sorted(options)}")
        if levels is not None and levels != self.levels:
            raise ConfigError(f"the data has {levels} levels but this PixelCNN predicts {self.levels}")
        return self.bits_per_dim(x)
