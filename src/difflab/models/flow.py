"""``FlowModel``: a normalizing flow (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018).

An invertible network f (``difflab.nn.Glow``) with standard normal latents gives the exact
density log p(y) = log N(f(y); 0, I) + log |det df/dy|. Quantized images get the same
convention as every difflab likelihood (``difflab.likelihood.quantization``): uniform
dequantization y = x + Delta (U - 1/2) turns the density into a bound on the probability of
the discrete bin (Theis et al. 2016; Ho et al. 2019, Eq. 1),

    -log P(x) <= E_U[ -log p(y) ] - D log Delta,

which is what training minimises (one U per image per step) and ``nll`` reports, in bits/dim.
``nll(x, levels=None)`` scores continuous data with the exact density, no dequantization.
``fit`` initialises every ActNorm from a batch of data (Glow Sec. 3.1) before training.
Samples are f^{-1}(z) with z ~ N(0, T^2 I); T < 1 trades diversity for cleaner images (Glow Sec. 5.2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from difflab.errors import ConfigError, DataError, check_choice
from difflab.likelihood.quantization import bin_width, dequantize
from difflab.models.base import Batch, OptionsModel, check_levels, first_images
from difflab.nn import Glow
from difflab.processes.noise import Generator, PerSampleGenerator

INIT_IMAGES = 512  # images the ActNorm layers are initialised on


@dataclass(frozen=True)
class FlowOptions:
    """The ``model`` section of a flow run (besides ``family: flow``)."""

    levels: int = 256
    """Quantization levels of the data: the dequantization noise spans one bin, Delta = 2 / (levels - 1)."""
    temperature: float = 1.0
    """Default std T of the latent draw when sampling (Glow shows T = 0.7; 1 = the model's density)."""

    def __post_init__(self) -> None:
        bin_width(self.levels)
        if not self.temperature > 0:
            raise ConfigError(f"model.temperature={self.temperature:g} must be positive (1 = the model's density)")


class FlowModel(OptionsModel):
    """A ``Glow`` flow trained by maximum likelihood on dequantized images (see the module docstring)."""

    family: ClassVar[str] = "flow"
    options_class: ClassVar[type | None] = FlowOptions
    network_kind: ClassVar[str] = "glow"
    fitted_description: ClassVar[str] = "ActNorm layers initialised on the data"
    has_likelihood: ClassVar[bool] = True
    nll_methods: ClassVar[tuple[str, ...]] = ("exact",)

    def __init__(self, network: Glow, image_shape: tuple[int, ...], *, levels: int = 256,
                 temperature: float = 1.0) -> None:
        FlowOptions(levels, temperature)  # validates
        super().__init__(network, image_shape)
        self.levels, self.temperature = levels, temperature

    # --- training ------------------------------------------------------------------------------
    def bits_per_dim(self, x: torch.Tensor, generator: Generator, levels: int | None) -> torch.Tensor:
        """-log P(x) bound in bits/dim per example (B,): dequantized with ``levels``, or the exact
        continuous density for ``levels=None``."""
        if levels is None:
            return -self.network.log_prob(x) / (self.dims * math.log(2))
        y = dequantize(x, levels, generator=generator)
        nats = -self.network.log_prob(y) - self.dims * math.log(bin_width(levels))
        return nats / (self.dims * math.log(2))

    def losses(self, batch: Batch, generator: Generator) -> dict[str, torch.Tensor]:
        """{"nll": bits/dim of the dequantized batch} (B,)."""
        return {"nll": self.bits_per_dim(batch[0], generator, self.levels)}

    def fit(self, batches: Iterable[torch.Tensor]) -> str:
        """Data-dependent ActNorm init on the first ``INIT_IMAGES`` dequantized training images."""
        x = first_images(batches, INIT_IMAGES, DataError(
            "a flow's ActNorm layers are initialised on training images, but none were given"))
        check_levels(x, self.levels, "the flow dequantizes", "model.levels")
        generator = torch.Generator(device=x.device).manual_seed(0)
        self.network.initialize(dequantize(x, self.levels, generator=generator))
        return f"ActNorm layers initialised on {len(x)} dequantized training images"

    # --- sampling --------------------------------------------------------------------------------
    def sample_options(self) -> tuple[str, ...]:
        return ("temperature",)

    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        """x = f^{-1}(z), z_l ~ N(0, T^2 I) for every factored-out level."""
        temperature = options.get("temperature", self.temperature)
        zs = [temperature * generator.randn((len(generator), *shape), device=options.get("device"))
              for shape in self.network.latent_shapes()]
        return self.network.inverse(zs).clamp(-1.0, 1.0)

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        temperature = options.get("temperature") or self.temperature
        return {"sampler": f"inverse flow (T={temperature:g})", "steps": 1, "grid": "-", "nfe": 1}

    # --- likelihood ------------------------------------------------------------------------------
    @torch.no_grad()
    def nll(self, x: torch.Tensor, method: str = "exact", *, levels: int | None = None,
            generator: torch.Generator | None = None, **options: Any) -> torch.Tensor:
        """Bits/dim per example (B,): the dequantized bound for data of ``levels`` levels (one U per
        image), or the exact density of continuous data (``levels=None``)."""
        check_choice("nll method", method, self.nll_methods)
        if options:
            raise ConfigError(f"flow nll takes no option(s) {sorted(options)}")
        return self.bits_per_dim(x, generator, levels)
