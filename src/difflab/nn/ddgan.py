"""``DDGANNetwork``: the generator and the time-conditional discriminator of a denoising
diffusion GAN (Xiao, Kreis & Vahdat 2022, "Tackling the Generative Learning Trilemma with
Denoising Diffusion GANs", Sec. 3 and App. C).

- **Generator** G(x_t, z, t) -> x0_hat: a ``UNet`` on x_t and t whose conditioning vector also
  receives the latent z ~ N(0, I) through a mapping network (an MLP, as DDGAN's and StyleGAN's),
  so z steers every residual block's scale and shift (AdaGN); tanh keeps x0_hat in [-1, 1]
  (as DDGAN's generator). Without z the denoiser would be
  the unimodal posterior mean; with it G can draw from the multimodal q(x0 | x_t) of large steps.
- **Discriminator** D(x_{t-1}, x_t, t) -> logit: the pair concatenated along the channels
  (B, 2C, H, W), two 4x4 stride-2 convolutions with leaky ReLU(0.2), doubling the channels, each
  with t's embedding added as a per-channel bias (DDGAN's discriminator adds it the same way),
  then a linear layer to one logit. No normalisation: R1 regularises it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from difflab.errors import ConfigError
from difflab.nn.embeddings import TimeEmbedding
from difflab.nn.unet import UNet, UNetConfig


@dataclass
class DDGANConfig:
    """Hyper-parameters of ``DDGANNetwork``; defaults suit 28x28 MNIST on a CPU (~1.1M parameters)."""

    in_channels: int = 1
    """Image channels C."""
    resolution: int = 28
    """Image side H = W in pixels; a multiple of 4 (the discriminator's two stride-2 layers, and
    the generator's ``channel_mult`` levels)."""
    latent_dim: int = 32
    """Size of z ~ N(0, I). DDGAN uses 100 on CIFAR-10; MNIST's few modes per x_t need fewer."""
    base_channels: int = 32
    """The generator UNet's channels at full resolution (its conditioning vector is 4x this)."""
    channel_mult: tuple[int, ...] = (1, 2, 2)
    """The generator UNet's channel multiplier per level (28 -> 14 -> 7)."""
    num_res_blocks: int = 1
    """The generator UNet's residual blocks per level; 1 keeps a CPU step short."""
    norm_groups: int = 8
    """GroupNorm groups of the generator UNet; must divide every level's channels."""
    discriminator_channels: int = 32
    """Channels of the discriminator's first layer; doubled by each of its two downsamplings."""

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        sizes = (self.in_channels, self.resolution, self.latent_dim, self.base_channels, self.num_res_blocks,
                 self.norm_groups, self.discriminator_channels)
        if min(sizes) < 1:
            raise ConfigError(f"DDGAN needs positive sizes; got {self}")
        if self.resolution % 4:
            raise ConfigError(f"DDGAN resolution={self.resolution} must be a multiple of 4 "
                              "(the discriminator's two stride-2 layers)")
        self.generator_config()  # validates the UNet's fields

    def generator_config(self) -> UNetConfig:
        """The generator's UNet: no attention below the middle block, no dropout."""
        return UNetConfig(in_channels=self.in_channels, base_channels=self.base_channels,
                          channel_mult=self.channel_mult, num_res_blocks=self.num_res_blocks,
                          attention_resolutions=(), dropout=0.0, head_channels=None, num_heads=1,
                          resolution=self.resolution, norm_groups=self.norm_groups)


class TimeDiscriminator(nn.Module):
    """D(x_s, x_t, t) -> logits (B,): see the module docstring."""

    def __init__(self, in_channels: int, channels: int, resolution: int) -> None:
        super().__init__()
        d, side = channels, resolution // 4
        self.time = TimeEmbedding(d, 4 * d)
        self.stem = nn.Conv2d(2 * in_channels, d, 3, padding=1)
        self.down = nn.ModuleList([nn.Conv2d(d, 2 * d, 4, stride=2, padding=1),  # (B, 2d, H/2, W/2)
                                   nn.Conv2d(2 * d, 4 * d, 4, stride=2, padding=1)])  # (B, 4d, H/4, W/4)
        self.time_bias = nn.ModuleList([nn.Linear(4 * d, 2 * d), nn.Linear(4 * d, 4 * d)])
        self.head = nn.Linear(4 * d * side * side, 1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x_s: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time(t)  # (B, 4d)
        h = self.act(self.stem(torch.cat([x_s, x_t], dim=1)))  # (B, d, H, W)
        for conv, bias in zip(self.down, self.time_bias, strict=True):
            h = self.act(conv(h) + bias(emb)[:, :, None, None])
        return self.head(h.flatten(1)).squeeze(1)  # (B,)


class DDGANNetwork(nn.Module):
    """``forward(x_t, t, z)`` = G: x0_hat (B, C, H, W); ``discriminator(x_s, x_t, t)`` = D: logits (B,)."""

    def __init__(self, config: DDGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = UNet(config.generator_config())
        emb_dim = 4 * config.base_channels
        self.mapping = nn.Sequential(nn.Linear(config.latent_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.discriminator = TimeDiscriminator(config.in_channels, config.discriminator_channels, config.resolution)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x0_hat = G(x_t, z, t) from x_t (B, C, H, W), t (B,) in [0, 1] and z (B, latent_dim)."""
        return torch.tanh(self.generator(x_t, t, embedding=self.mapping(z.to(self.mapping[0].weight.dtype))))

    def generator_parameters(self) -> list[nn.Parameter]:
        """G's parameters: the UNet and the mapping network."""
        return [*self.generator.parameters(), *self.mapping.parameters()]
