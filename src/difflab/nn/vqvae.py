"""``VQVAE``: a vector-quantized autoencoder and a PixelCNN prior over its code grid (van den Oord,
Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning", Sec. 3).

- ``autoencoder``: a ``ConvAutoencoder`` with a codebook (``codebook_size`` > 0): x (B, C, H, W)
  -> codes k (B, H/f, W/f) -> a reconstruction (B, C, H, W), f = 2^levels;
- ``prior``: a ``GatedPixelCNN`` over the code grid, one channel whose ``codebook_size`` levels
  are the code indices; a code enters the network as a learned vector (codes have no order).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from difflab.errors import ConfigError
from difflab.nn.autoencoder import AutoencoderConfig, ConvAutoencoder
from difflab.nn.pixelcnn import GatedPixelCNN, PixelCNNConfig


@dataclass
class VQVAEConfig:
    """Hyper-parameters of ``VQVAE``; defaults suit 28x28 MNIST on a CPU (a 7x7 grid of 32 codes)."""

    in_channels: int = 1
    """Image channels C."""
    resolution: int = 28
    """Image side H = W in pixels; a multiple of 2^levels."""
    latent_channels: int = 16
    """Size d of a code vector."""
    base_channels: int = 16
    """Autoencoder channels at full resolution, doubled per level."""
    levels: int = 2
    """Stride-2 downsamplings: the code grid is H / 2^levels (2: 7x7 on MNIST)."""
    codebook_size: int = 32
    """K codes (van den Oord et al. use 512 for ImageNet; MNIST used ~35 effective codes of 64)."""
    commitment: float = 0.25
    """beta of the commitment loss (van den Oord et al. 2017, Eq. 3)."""
    prior_hidden_channels: int = 32
    """Feature channels (and code embedding size) of the PixelCNN prior; 64 costs 2.7x the time."""
    prior_layers: int = 6
    """Gated layers of the prior after its first; the 7x7 grid is covered by 6."""

    def __post_init__(self) -> None:
        if self.codebook_size < 2:
            raise ConfigError(f"VQ-VAE codebook_size={self.codebook_size} must be >= 2")
        if self.resolution % 2**self.levels:
            raise ConfigError(f"VQ-VAE resolution={self.resolution} must be a multiple of 2^levels = {2**self.levels}")

    def autoencoder(self) -> AutoencoderConfig:
        return AutoencoderConfig(in_channels=self.in_channels, latent_channels=self.latent_channels,
                                 base_channels=self.base_channels, levels=self.levels,
                                 codebook_size=self.codebook_size, commitment=self.commitment)

    def prior(self) -> PixelCNNConfig:
        return PixelCNNConfig(in_channels=1, resolution=self.resolution // 2**self.levels, levels=self.codebook_size,
                              hidden_channels=self.prior_hidden_channels, layers=self.prior_layers,
                              embedding_dim=self.prior_hidden_channels)


class VQVAE(nn.Module):
    """The VQ autoencoder (``autoencoder``) and the prior over its codes (``prior``)."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.autoencoder = ConvAutoencoder(config.autoencoder())
        self.prior = GatedPixelCNN(config.prior())
