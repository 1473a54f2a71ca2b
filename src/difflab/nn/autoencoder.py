"""Convolutional autoencoder and KL-regularised VAE tokenizers for latent diffusion.

The "KL-reg" first stage of latent diffusion (Rombach et al. 2022, Sec. 3.1 and App. G): an
encoder E maps x (B, C, H, W) to a Gaussian posterior q(z | x) = N(m, diag(s^2)) on a latent
grid (B, d, H/f, W/f) with f = 2^levels, a decoder D maps z back, and the loss is

    L = ||x - D(z)||^2 + beta * KL[q(z | x) || N(0, I)],     z = m + s * xi,  xi ~ N(0, I)

with a small beta so the latent stays detailed but not arbitrarily scaled. The plain
autoencoder (``variational=False``) drops the KL term and the sampling (Chen et al. 2024,
Sec. 4.2, "patch-wise AE" without patches). The "VQ-reg" stage (``codebook_size`` > 0) quantizes
the latent to a codebook instead (van den Oord et al. 2017; ``difflab.nn.quantize``), with the
loss ||x - D(z_q)||^2 + codebook loss + commitment * commitment loss; as LDM does, diffusion runs
on the latent before quantization and ``decode`` quantizes first ("the quantization layer
absorbed by the decoder", Rombach et al. Sec. 3.1). Like LDM's ``scale_factor``, ``encode``
multiplies the latent by a fitted ``latent_scale`` so latents have unit variance before diffusion.

Both expose the tokenizer interface of ``difflab.processes.Tokenizer`` (encode, decode,
latent_shape, config, tensors) and are saved with ``save_tokenizer`` as safetensors + JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import CheckpointError, ConfigError, DataError
from difflab.nn.checks import check_divisible
from difflab.nn.quantize import VectorQuantizer


@dataclass
class AutoencoderConfig:
    """Hyper-parameters of ``ConvAutoencoder``."""

    in_channels: int = 1
    """Image channels C."""
    latent_channels: int = 4
    """Latent channels d (LDM's KL-f4 uses 3, KL-f8 uses 4)."""
    base_channels: int = 32
    """Channels at full resolution; doubled at each downsampling."""
    levels: int = 2
    """Number of stride-2 downsamplings; the latent grid is H / 2^levels x W / 2^levels."""
    variational: bool = False
    """True: KL-regularised VAE (LDM "KL-reg"); False: plain autoencoder."""
    kl_weight: float = 1e-3
    """beta, the weight of the KL term (VAE only)."""
    codebook_size: int = 0
    """K codes of a VQ-reg latent (LDM's VQ-f4 uses 8192; MNIST needs far fewer); 0 = continuous."""
    commitment: float = 0.25
    """beta of the commitment loss (VQ only; van den Oord et al. 2017 use 0.25)."""

    def __post_init__(self) -> None:
        sizes = (self.in_channels, self.latent_channels, self.base_channels)
        if min(sizes) < 1 or self.levels < 0 or self.kl_weight < 0 or self.codebook_size < 0 or self.commitment < 0:
            raise ConfigError(f"autoencoder needs positive channel counts, levels >= 0 and kl_weight, "
                              f"codebook_size, commitment >= 0; got {self}")
        if self.variational and self.codebook_size:
            raise ConfigError("an autoencoder is variational (KL-reg) or quantized (codebook_size > 0, VQ-reg), "
                              "not both")

    @property
    def factor(self) -> int:
        """Downsampling factor f = 2^levels."""
        return 2**self.levels


def _encoder(cfg: AutoencoderConfig) -> nn.Sequential:
    """(B, C, H, W) -> (B, k d, H/f, W/f) with k = 2 (mean, log-variance) for a VAE, else 1."""
    layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)]
    ch = cfg.base_channels
    for _ in range(cfg.levels):
        layers += [nn.SiLU(), nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1)]
        ch *= 2
    out = cfg.latent_channels * (2 if cfg.variational else 1)
    layers += [nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(), nn.Conv2d(ch, out, 1)]
    return nn.Sequential(*layers)


def _decoder(cfg: AutoencoderConfig) -> nn.Sequential:
    """(B, d, h, w) -> (B, C, h f, w f)."""
    ch = cfg.base_channels * cfg.factor
    layers: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, ch, 3, padding=1), nn.SiLU(),
                               nn.Conv2d(ch, ch, 3, padding=1)]
    for _ in range(cfg.levels):
        layers += [nn.SiLU(), nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1)]
        ch //= 2
    layers += [nn.SiLU(), nn.Conv2d(ch, cfg.in_channels, 3, padding=1)]
    return nn.Sequential(*layers)


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder or KL-VAE: ``encode`` (B, C, H, W) -> (B, d, H/f, W/f), ``decode`` back."""

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.cfg = config
        self.encoder = _encoder(config)
        self.decoder = _decoder(config)
        self.quantizer = VectorQuantizer(config.codebook_size, config.latent_channels) if config.codebook_size \
            else None
        self.register_buffer("latent_scale", torch.ones(()))

    @property
    def kind(self) -> str:
        """Tokenizer kind: "kl_vae", "vq_vae" or "autoencoder"."""
        return "kl_vae" if self.cfg.variational else "vq_vae" if self.quantizer is not None else "autoencoder"

    # --- posterior ----------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance) of q(z | x), each (B, d, h, w); log-variance None for a plain AE."""
        check_divisible(tuple(x.shape), self.cfg.factor, f"{self.kind} tokenizer")
        if x.shape[1] != self.cfg.in_channels:
            raise DataError(f"{self.kind} expects {self.cfg.in_channels}-channel images; got shape {tuple(x.shape)}")
        h = self.encoder(x)
        if not self.cfg.variational:
            return h, None
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, regularizer per example (B,)): the KL with z sampled from q(z | x) for a
        VAE, codebook + commitment * commitment loss for a VQ autoencoder, 0 for a plain one."""
        if self.quantizer is not None:
            reconstruction, _, codebook_loss, commitment_loss = self.quantized(x)
            return reconstruction, codebook_loss + self.cfg.commitment * commitment_loss
        mean, logvar = self.posterior(x)
        if logvar is None:
            return self.decoder(mean), torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        xi = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * logvar) * xi
        kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar)  # KL[N(m, s^2) || N(0, 1)] per element
        return self.decoder(z), kl.flatten(1).sum(1)

    def quantized(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A VQ autoencoder's pass: (D(z_q) (B, C, H, W), codes k (B, h, w), codebook loss (B,),
        commitment loss (B,)), with straight-through gradients (``VectorQuantizer.forward``)."""
        z_q, k, codebook_loss, commitment_loss = self.quantizer(self.posterior(x)[0])
        return self.decoder(z_q), k, codebook_loss, commitment_loss

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """{"rec": mean squared error per pixel, "kl": KL per latent element, "total": rec + beta kl},
        or for a VQ autoencoder {"rec", "vq": codebook + commitment losses per element, "total"}."""
        recon, kl = self(x, generator)
        rec = F.mse_loss(recon, x)
        if self.quantizer is not None:
            return {"rec": rec, "vq": kl.mean(), "total": rec + kl.mean()}
        kl_per_element = kl.mean() / (self.cfg.latent_channels * (x.shape[-2] // self.cfg.factor)
                                      * (x.shape[-1] // self.cfg.factor))
        return {"rec": rec, "kl": kl_per_element, "total": rec + self.cfg.kl_weight * kl_per_element}

    # --- tokenizer interface ------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled posterior mean: (B, C, H, W) -> (B, d, H/f, W/f)."""
        return self.posterior(x)[0] * self.latent_scale

    def decode(self, u: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) -> (B, C, h f, w f); a VQ autoencoder decodes the nearest codes."""
        z = u / self.latent_scale
        if self.quantizer is not None:
            z = self.quantizer.embed(self.quantizer.indices(z))
        return self.decoder(z)

    def after_step(self) -> None:
        """After an optimizer step: restart a VQ codebook's dead codes (nothing otherwise)."""
        if self.quantizer is not None:
            self.quantizer.after_step()

    def latent_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        check_divisible(tuple(shape), self.cfg.factor, f"{self.kind} tokenizer")
        f = self.cfg.factor
        return (shape[0], self.cfg.latent_channels, shape[2] // f, shape[3] // f)

    @torch.no_grad()
    def fit_latent_scale(self, images: torch.Tensor) -> float:
        """Set ``latent_scale`` = 1 / std of the unscaled latents of ``images`` (LDM's scale_factor)."""
        mean = self.posterior(images)[0]
        self.latent_scale.fill_(1.0 / float(mean.std().clamp(min=1e-8)))
        return float(self.latent_scale)

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg)

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.state_dict())

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ConvAutoencoder:
        try:
            model = cls(AutoencoderConfig(**config))
        except TypeError as err:
            raise CheckpointError(f"autoencoder config {config} does not match this difflab ({err})") from err
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"autoencoder weights do not match its config: missing {missing}, unexpected {unexpected}"
            )
        return model.eval()

    @classmethod
    def unfitted(cls, config: dict[str, Any], channels: int) -> ConvAutoencoder:
        """A randomly initialised autoencoder of ``config`` (``config()``) for ``channels``-channel images."""
        if config.get("in_channels", channels) != channels:
            raise ConfigError(f"the autoencoder config has in_channels={config['in_channels']} but the images "
                              f"have {channels} channels")
        return cls(AutoencoderConfig(**{**config, "in_channels": channels}))

    def fit_to(self, images: torch.Tensor, generator: torch.Generator | None = None, *, steps: int,
               batch_size: int = 64, lr: float = 2e-3) -> ConvAutoencoder:
        """This autoencoder trained on ``images`` (``fit_autoencoder``), frozen (no gradients)."""
        self.to(images.device)
        fit_autoencoder(self, images, steps=steps, batch_size=batch_size, lr=lr, generator=generator)
        return self.requires_grad_(False)


def fit_autoencoder(
    model: ConvAutoencoder,
    images: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    generator: torch.Generator | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on ``images`` (N, C, H, W) with Adam for ``steps`` minibatches, then fit its
    latent scale. Returns the per-step losses {"rec", "kl", "total"}."""
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps={steps} and batch_size={batch_size} must be positive")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=generator,
                            device=generator.device if generator is not None else images.device)
        losses = model.loss(images[idx], generator)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        model.after_step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    model.eval()
    model.fit_latent_scale(images[: min(len(images), 2048)])
    return history
