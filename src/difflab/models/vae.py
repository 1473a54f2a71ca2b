"""``VAEModel``: the variational autoencoder (Kingma & Welling 2014) and beta-VAE (Higgins et al. 2017).

A Gaussian posterior q(z | x) = N(m(x), diag s(x)^2), a standard normal prior p(z) and a
discretized logistic decoder p(x | z) of the quantized pixels (Salimans et al. 2017). Training
minimises, per example, in bits/dim (D = C H W pixels),

    L_beta(x) = ( -log p(x | z) + beta * KL[q(z | x) || p(z)] ) / (D ln 2),   z = m + s * xi,

which for beta = 1 is the negative ELBO (K&W Eq. 3, with the KL in closed form, App. B); beta > 1
trades reconstruction for a more factorised latent (Higgins et al. Eq. 4). The likelihood is
always scored with beta = 1: ``nll(x, "elbo")`` is -ELBO and ``nll(x, "iwae", k=k)`` the
importance-weighted bound of Burda et al. (2016, Eq. 8),

    -log p(x) <= -log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x),   z_i ~ q(z | x),

which tightens as k grows. Samples decode z ~ N(0, T^2 I); by default they show the decoder's
mean (``pixels="mean"``), as VAE papers do, or a draw of the pixels (``pixels="sample"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

from difflab.errors import ConfigError, check_choice
from difflab.likelihood.quantization import (
    bin_width,
    discretized_logistic_log_prob,
)
from difflab.models.base import Batch, OptionsModel, check_levels
from difflab.nn import ConvVAE
from difflab.processes.noise import Generator, PerSampleGenerator, standard_normal

Pixels = Literal["mean", "sample"]
PIXELS = ("mean", "sample")
NLL_CHUNK = 16  # importance samples decoded at once (memory)


@dataclass(frozen=True)
class VAEOptions:
    """The ``model`` section of a VAE run (besides ``family: vae``)."""

    beta: float = 1.0
    """Weight of the KL term: 1 is the ELBO (Kingma & Welling 2014); > 1 is a beta-VAE
    (Higgins et al. 2017 use 4 and more), sharper factors, blurrier reconstructions."""
    levels: int = 256
    """Quantization levels of the data the decoder's bins follow (256 for 8-bit images, 17 for digits)."""
    temperature: float = 1.0
    """Default std T of the prior draw z ~ N(0, T^2 I) when sampling (1 = the model's prior)."""
    pixels: Pixels = "mean"
    """What a sample shows: the decoder's mean ("mean", as VAE papers show) or a draw of the pixels."""

    def __post_init__(self) -> None:
        if not self.beta >= 0:
            raise ConfigError(f"model.beta={self.beta:g} must be >= 0 (1 = the ELBO, > 1 a beta-VAE)")
        if not self.temperature > 0:
            raise ConfigError(f"model.temperature={self.temperature:g} must be positive (1 = the prior)")
        bin_width(self.levels)
        check_choice("model.pixels", self.pixels, PIXELS)


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL[N(mean, exp(log_var)) || N(0, I)] per example (B,), in nats (Kingma & Welling, App. B)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).flatten(1).sum(1)


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag exp(log_var)) over the last dimension (...,), in nats."""
    return -0.5 * ((z - mean).pow(2) * torch.exp(-log_var) + log_var + math.log(2 * math.pi)).sum(-1)


class VAEModel(OptionsModel):
    """A ``ConvVAE`` trained with the beta-weighted ELBO (see the module docstring).

    Args:
        network: the encoder/decoder.
        image_shape: (C, H, W) of the images.
        beta, levels, temperature, pixels: as ``VAEOptions``.
    """

    family: ClassVar[str] = "vae"
    options_class: ClassVar[type | None] = VAEOptions
    network_kind: ClassVar[str] = "vae"
    has_likelihood: ClassVar[bool] = True
    nll_methods: ClassVar[tuple[str, ...]] = ("elbo", "iwae")

    def __init__(self, network: ConvVAE, image_shape: tuple[int, ...], *, beta: float = 1.0, levels: int = 256,
                 temperature: float = 1.0, pixels: Pixels = "mean") -> None:
        VAEOptions(beta, levels, temperature, pixels)  # validates
        super().__init__(network, image_shape)
        self.beta, self.levels, self.temperature, self.pixels = beta, levels, temperature, pixels

    # --- training ------------------------------------------------------------------------------
    def terms(self, x: torch.Tensor, generator: Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(-log p(x | z), KL[q(z | x) || p(z)]) per example (B,) in nats, one z ~ q(z | x) each."""
        mean, log_var = self.network.encode(x)  # (B, latent_dim) each
        z = mean + torch.exp(0.5 * log_var) * standard_normal(mean.shape, generator, device=x.device, dtype=mean.dtype)
        px_mean, px_log_scale = self.network(z)  # (B, C, H, W) each
        return -discretized_logistic_log_prob(x, px_mean, px_log_scale, self.levels), gaussian_kl(mean, log_var)

    def losses(self, batch: Batch, generator: Generator) -> dict[str, torch.Tensor]:
        """{"reconstruction", "kl"} in bits/dim (B,); their sum is L_beta (the module docstring)."""
        reconstruction, kl = self.terms(batch[0], generator)
        to_bpd = 1.0 / (self.dims * math.log(2))
        return {"reconstruction": reconstruction * to_bpd, "kl": self.beta * kl * to_bpd}

    def fit(self, batches: Iterable[torch.Tensor]) -> str | None:
        """Nothing is fitted; checks that the training images lie on the decoder's ``levels`` grid."""
        first = next(iter(batches), None)
        if first is not None:
            check_levels(first, self.levels, "the VAE's decoder discretizes", "model.levels")
        return None

    # --- sampling --------------------------------------------------------------------------------
    def sample_options(self) -> tuple[str, ...]:
        return ("temperature", "pixels")

    def draw(self, generator: PerSampleGenerator, cond: dict[str, torch.Tensor] | None,
             **options: Any) -> torch.Tensor:
        """Decode z ~ N(0, T^2 I): the decoder's mean, or a draw of the discretized logistic."""
        temperature, pixels = options.get("temperature", self.temperature), options.get("pixels", self.pixels)
        check_choice("pixels", pixels, PIXELS)
        z = temperature * generator.randn((len(generator), self.network.config.latent_dim), device=options.get("device"))
        mean, log_scale = self.network(z)
        if pixels == "mean":
            return mean.clamp(-1.0, 1.0)
        u = torch.special.ndtr(generator.randn(mean.shape, device=mean.device)).clamp(1e-6, 1 - 1e-6)  # Uniform(0, 1)
        x = mean + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))  # logistic(mean, s)
        delta = bin_width(self.levels)
        return (torch.round((x.clamp(-1.0, 1.0) + 1.0) / delta) * delta - 1.0).clamp(-1.0, 1.0)

    def sampling_protocol(self, **options: Any) -> dict[str, Any]:
        return {"sampler": f"decoder ({options.get('pixels') or self.pixels})", "steps": 1, "grid": "-", "nfe": 1}

    @torch.no_grad()
    def latent_traversal(self, x: torch.Tensor, *, dims: int = 8, span: float = 3.0, steps: int = 9) -> torch.Tensor:
        """Decoder means as one latent coordinate sweeps [-span, span] around the posterior mean of
        image ``x`` (1, C, H, W), the others held: (dims * steps, C, H, W), one row per coordinate,
        for the ``dims`` coordinates with the largest KL on ``x`` (the ones the model uses)."""
        mean, log_var = self.network.encode(x[:1])
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var)[0]  # (latent_dim,)
        chosen = kl.argsort(descending=True)[:dims]
        values = torch.linspace(-span, span, steps, device=x.device)
        z = mean.repeat(len(chosen) * steps, 1)  # (dims * steps, latent_dim)
        for row, d in enumerate(chosen.tolist()):
            z[row * steps : (row + 1) * steps, d] = values
        return self.network(z)[0].clamp(-1.0, 1.0)

    # --- likelihood ------------------------------------------------------------------------------
    @classmethod
    def nll_options(cls, method: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {"k": settings["k"]} if method == "iwae" else {}

    @torch.no_grad()
    def nll(self, x: torch.Tensor, method: str = "elbo", *, levels: int | None = None,
            generator: torch.Generator | None = None, k: int = 64, **options: Any) -> torch.Tensor:
        """Bits/dim per example (B,) of the discrete data: -ELBO (beta = 1, one z each) or the
        IWAE bound with ``k`` importance samples (Burda et al. 2016)."""
        check_choice("nll method", method, self.nll_methods)
        if options:
            raise ConfigError(f"VAE nll takes no option(s) {sorted(options)}; its options: k (iwae)")
        if levels is not None and levels != self.levels:
            raise ConfigError(f"the data has {levels} levels but this VAE's decoder discretizes {self.levels}")
        to_bpd = 1.0 / (self.dims * math.log(2))
        if method == "elbo":
            reconstruction, kl = self.terms(x, generator)
            return (reconstruction + kl) * to_bpd
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} importance samples must be a positive integer")
        return -self.iwae_log_likelihood(x, k, generator) * to_bpd

    def iwae_log_likelihood(self, x: torch.Tensor, k: int, generator: Generator) -> torch.Tensor:
        """log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), per example (B,), in nats."""
        mean, log_var = self.network.encode(x)  # (B, d)
        log_w = []
        for start in range(0, k, NLL_CHUNK):
            n = min(NLL_CHUNK, k - start)
            eps = standard_normal((n, *mean.shape), generator, device=x.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * log_var) * eps  # (n, B, d)
            px_mean, px_log_scale = self.network(z.flatten(0, 1))  # (n B, C, H, W)
            log_px = discretized_logistic_log_prob(x.repeat(n, 1, 1, 1), px_mean, px_log_scale, self.levels)
            log_prior = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))  # (n, B)
            log_w.append(log_px.view(n, -1) + log_prior - gaussian_log_density(z, mean, log_var))
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)
