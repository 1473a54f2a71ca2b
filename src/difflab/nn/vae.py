"""``ConvVAE``: the encoder and decoder of a convolutional VAE (Kingma & Welling 2014).

The encoder maps an image x (B, C, H, W) to the mean and log-variance of a Gaussian posterior
q(z | x) over a vector latent z (B, latent_dim); the decoder maps z to the parameters of a
per-pixel discretized logistic p(x | z) (Salimans et al. 2017): a mean and a log-scale per pixel,
each (B, C, H, W). What the loss does with them (the ELBO, beta, IWAE) is the model family's
business (``difflab.models.vae``); this module is only the two networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from difflab.errors import ConfigError


@dataclass
class ConvVAEConfig:
    """Hyper-parameters of ``ConvVAE``; defaults suit 28x28 MNIST on a CPU (~0.6M parameters)."""

    in_channels: int = 1
    """Image channels C."""
    resolution: int = 28
    """Image side H = W in pixels; must be divisible by 2^len(channel_mult)."""
    base_channels: int = 32
    """Channels of the first convolution; level i has base_channels * channel_mult[i]."""
    channel_mult: tuple[int, ...] = (1, 2)
    """One stride-2 level per entry: (1, 2) maps 28x28 to 7x7 before the dense layer."""
    latent_dim: int = 32
    """Dimensions of z; 32 keeps MNIST digits recognisable without posterior collapse."""
    min_log_scale: float = -7.0
    """Floor of the decoder's log-scale (PixelCNN++ uses -7), so a bin's mass stays finite."""

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        if min(self.in_channels, self.resolution, self.base_channels, self.latent_dim, *self.channel_mult) < 1:
            raise ConfigError(f"ConvVAE needs positive sizes; got {self}")
        if self.resolution % 2 ** len(self.channel_mult):
            raise ConfigError(f"ConvVAE resolution={self.resolution} must be a multiple of 2^len(channel_mult) = "
                              f"{2 ** len(self.channel_mult)}; change network.channel_mult or network.resolution")

    @property
    def latent_grid(self) -> int:
        """Side of the feature map before the dense layer: resolution / 2^levels."""
        return self.resolution // 2 ** len(self.channel_mult)


def conv_pair(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """conv3x3 (stride) -> SiLU -> conv3x3 -> SiLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, 1, 1), nn.SiLU())


class ConvVAE(nn.Module):
    """Encoder q(z | x) and decoder p(x | z) (see the module docstring); ``forward`` decodes."""

    def __init__(self, config: ConvVAEConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.base_channels * m for m in config.channel_mult]
        g, top = config.latent_grid, widths[-1]
        self.stem = nn.Conv2d(config.in_channels, config.base_channels, 3, 1, 1)
        self.down = nn.Sequential(*(conv_pair(c_in, c_out, 2) for c_in, c_out
                                    in zip([config.base_channels, *widths[:-1]], widths, strict=True)))
        self.to_posterior = nn.Linear(top * g * g, 2 * config.latent_dim)
        self.from_latent = nn.Linear(config.latent_dim, top * g * g)
        self.up = nn.Sequential(*(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv_pair(c_in, c_out))
                                  for c_in, c_out in zip(widths[::-1], [*widths[-2::-1], config.base_channels],
                                                         strict=True)))
        self.to_pixels = nn.Conv2d(config.base_channels, 2 * config.in_channels, 3, 1, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z | x), each (B, latent_dim), of images x (B, C, H, W)."""
        if x.shape[1:] != (self.config.in_channels, self.config.resolution, self.config.resolution):
            raise ConfigError(f"ConvVAE expects images (C, H, W) = ({self.config.in_channels}, "
                              f"{self.config.resolution}, {self.config.resolution}), got {tuple(x.shape[1:])}")
        h = self.down(self.stem(x)).flatten(1)  # (B, top * g * g)
        mean, log_var = self.to_posterior(h).chunk(2, dim=1)
        return mean, log_var

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-scale) of p(x | z), each (B, C, H, W), of latents z (B, latent_dim)."""
        g = self.config.latent_grid
        h = self.from_latent(z).view(len(z), -1, g, g)  # (B, top, g, g)
        mean, log_scale = self.to_pixels(self.up(h)).chunk(2, dim=1)
        return mean, log_scale.clamp(min=self.config.min_log_scale)

    decode = forward
