"""``DCGAN``: a generator and a discriminator (Radford, Metz & Chintala 2016, "Unsupervised
Representation Learning with Deep Convolutional Generative Adversarial Networks").

- **Generator** G(z): z (B, latent_dim) -> a linear layer to a (base, H/4, W/4) grid -> two
  4x4 transposed convolutions of stride 2, halving the channels -> a 3x3 convolution to C
  channels and tanh, so images lie in [-1, 1]. DCGAN normalises with batch norm; here every
  feature vector is normalised per pixel instead (PixelNorm, Karras et al. 2018, Sec. 4.2), so
  a sample does not depend on the rest of its batch (difflab's per-sample seeds) and eval mode
  has no running statistics to go stale.
- **Discriminator** D(x): two 4x4 convolutions of stride 2 with leaky ReLU(0.2), doubling the
  channels, then a linear layer to one logit (B,). No normalisation: the R1 gradient penalty
  of the GAN family (``difflab.models.gan``) regularises it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from difflab.errors import ConfigError


@dataclass
class DCGANConfig:
    """Hyper-parameters of ``DCGAN``; defaults suit 28x28 MNIST on a CPU (~0.3M parameters)."""

    in_channels: int = 1
    """Image channels C."""
    resolution: int = 28
    """Image side H = W in pixels; a multiple of 4 (two stride-2 layers)."""
    latent_dim: int = 64
    """Size of the generator's input z ~ N(0, I)."""
    generator_channels: int = 64
    """Channels of the generator's H/4 grid; halved by each upsampling (DCGAN Fig. 1 shape). 64
    (not 128) runs 2.4x as many steps per CPU-minute, which counts more in minutes of training."""
    discriminator_channels: int = 32
    """Channels of the discriminator's first layer; doubled by the second."""

    def __post_init__(self) -> None:
        sizes = (self.in_channels, self.resolution, self.latent_dim, self.generator_channels,
                 self.discriminator_channels)
        if min(sizes) < 1:
            raise ConfigError(f"DCGAN needs positive sizes; got {self}")
        if self.resolution % 4:
            raise ConfigError(f"DCGAN resolution={self.resolution} must be a multiple of 4 (two stride-2 layers)")
        if self.generator_channels % 4:
            raise ConfigError(f"DCGAN generator_channels={self.generator_channels} must be a multiple of 4 "
                              "(halved twice)")


class PixelNorm(nn.Module):
    """a / sqrt(mean_c a^2 + eps) over the channels of every pixel (Karras et al. 2018, Eq. in Sec. 4.2)."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a * torch.rsqrt(a.pow(2).mean(1, keepdim=True) + 1e-8)


class DCGAN(nn.Module):
    """``generator(z)`` -> images (B, C, H, W) in [-1, 1]; ``discriminator(x)`` -> logits (B,)."""

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = config
        c, g, d, side = config.in_channels, config.generator_channels, config.discriminator_channels, \
            config.resolution // 4
        self.generator = nn.Sequential(
            nn.Linear(config.latent_dim, g * side * side),
            nn.Unflatten(1, (g, side, side)),  # (B, g, H/4, W/4)
            PixelNorm(), nn.ReLU(),
            nn.ConvTranspose2d(g, g // 2, 4, stride=2, padding=1), PixelNorm(), nn.ReLU(),  # (B, g/2, H/2, W/2)
            nn.ConvTranspose2d(g // 2, g // 4, 4, stride=2, padding=1), PixelNorm(), nn.ReLU(),  # (B, g/4, H, W)
            nn.Conv2d(g // 4, c, 3, padding=1), nn.Tanh(),
        )
        self.discriminator = nn.Sequential(
            nn.Conv2d(c, d, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, d, H/2, W/2)
            nn.Conv2d(d, 2 * d, 4, stride=2, padding=1), nn.LeakyReLU(0.2),  # (B, 2d, H/4, W/4)
            nn.Flatten(), nn.Linear(2 * d * side * side, 1), nn.Flatten(0),  # (B,)
        )
        for module in self.modules():  # DCGAN Sec. 4: weights from N(0, 0.02)
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): images (B, C, H, W) from latents (B, latent_dim)."""
        return self.generator(z)
