"""``Glow``: a multi-scale normalizing flow (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018).

A bijection f from images x (B, C, H, W) to latents z with a tractable log-determinant, so
log p(x) = log N(f(x); 0, I) + log |det df/dx| (RealNVP Eq. 3). The layers, each with
``forward(x) -> (y, logdet (B,))`` and ``inverse(y) -> x``:

- ``ActNorm``: per-channel affine y = (x + b) * exp(s), initialised from data so the first batch
  has zero mean and unit variance per channel (Glow Sec. 3.1);
- ``InvConv1x1``: y = W x per pixel, W a learned C x C matrix, log-det H W log|det W| (Glow Sec. 3.2);
- ``AffineCoupling``: y_b = x_b * exp(log s(x_a)) + t(x_a), y_a = x_a, with a checkerboard or a
  channel mask (RealNVP Sec. 3.3-3.4); log s = scale * tanh(raw) keeps the Jacobian bounded;
- ``squeeze``: (C, H, W) -> (4C, H/2, W/2), and factor-out: half the channels leave as z_l after
  each level but the last (RealNVP Sec. 3.6).

Every coupling's last convolution starts at zero and ActNorm at the identity, so a fresh flow
is an orthogonal map (the random rotations of ``InvConv1x1``) until ``initialize`` fits ActNorm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from difflab.errors import ConfigError

Mask = Literal["checkerboard", "channel"]


@dataclass
class GlowConfig:
    """Hyper-parameters of ``Glow``; defaults suit 28x28 MNIST on a CPU (~0.9M parameters)."""

    in_channels: int = 1
    """Image channels C."""
    resolution: int = 28
    """Image side H = W in pixels; must be divisible by 2^levels."""
    levels: int = 2
    """Squeeze levels; half the channels are factored out after each but the last (28 -> 14 -> 7)."""
    steps_per_level: int = 6
    """Glow steps (ActNorm, 1x1 convolution, channel-mask coupling) per level."""
    checkerboard_steps: int = 2
    """RealNVP checkerboard couplings (with ActNorm) at full resolution, before the first squeeze."""
    hidden_channels: int = 64
    """Width of each coupling's conv net (Glow uses 512 on CIFAR; 64 trains in minutes on a CPU)."""

    def __post_init__(self) -> None:
        if min(self.in_channels, self.resolution, self.levels, self.steps_per_level, self.hidden_channels) < 1 \
                or self.checkerboard_steps < 0:
            raise ConfigError(f"Glow needs positive sizes and levels, checkerboard_steps >= 0; got {self}")
        if self.resolution % 2**self.levels:
            raise ConfigError(f"Glow resolution={self.resolution} must be a multiple of 2^levels = {2**self.levels}; "
                              "lower network.levels")


class ActNorm(nn.Module):
    """y = (x + b) * exp(s) per channel; ``pending`` layers fit b, s to their next input (Glow Sec. 3.1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.pending = False  # set by ``Glow.initialize``

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pending:
            with torch.no_grad():
                self.bias.copy_(-x.mean(dim=(0, 2, 3), keepdim=True))
                self.log_scale.copy_(-torch.log(x.std(dim=(0, 2, 3), keepdim=True) + 1e-6))
            self.pending = False
        logdet = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return (x + self.bias) * torch.exp(self.log_scale), logdet.expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvConv1x1(nn.Module):
    """y = W x at every pixel; W starts as a random rotation (Glow Sec. 3.2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        self.weight = nn.Parameter(q.contiguous())  # QR gives a column-major Q; optimizer states are row-major

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.linalg.slogdet(self.weight.double())[1].to(x.dtype) * x.shape[2] * x.shape[3]
        return torch.einsum("ij,bjhw->bihw", self.weight, x), logdet.expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.weight.double()).to(y.dtype), y)


def checkerboard(h: int, w: int, parity: int, device: torch.device) -> torch.Tensor:
    """(1, 1, H, W) mask: 1 where (i + j) % 2 == parity (the pixels a coupling keeps)."""
    i, j = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return ((i + j) % 2 == parity).float().view(1, 1, h, w)


class AffineCoupling(nn.Module):
    """y_b = x_b * exp(log s) + t, (log s, t) = NN(x_a); x_a, x_b split by ``mask`` (RealNVP Sec. 3.3-3.4).

    ``parity`` picks which half is kept, so consecutive couplings alternate.
    """

    def __init__(self, channels: int, hidden: int, mask: Mask, parity: int) -> None:
        super().__init__()
        if mask == "channel" and channels < 2:
            raise ConfigError("a channel-mask coupling needs at least 2 channels (squeeze first)")
        self.mask, self.parity = mask, parity
        self.kept = channels if mask == "checkerboard" else channels // 2
        changed = channels if mask == "checkerboard" else channels - self.kept
        self.net = nn.Sequential(nn.Conv2d(self.kept, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, hidden, 1),
                                 nn.ReLU(), nn.Conv2d(hidden, 2 * changed, 3, 1, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale = nn.Parameter(torch.ones(1, changed, 1, 1))

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "checkerboard":
            b = checkerboard(x.shape[2], x.shape[3], self.parity, x.device)
            return x * b, x
        a, rest = x[:, : self.kept], x[:, self.kept :]
        return (a, rest) if self.parity == 0 else (x[:, -self.kept :], x[:, : -self.kept])

    def _join(self, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.mask == "checkerboard":
            return b  # a is x * mask; b already holds the kept pixels unchanged
        return torch.cat([a, b], 1) if self.parity == 0 else torch.cat([b, a], 1)

    def _affine(self, a: torch.Tensor, shape: tuple[int, ...], device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
        raw_log_s, t = self.net(a).chunk(2, dim=1)
        log_s = self.scale * torch.tanh(raw_log_s)
        if self.mask == "checkerboard":  # only the pixels outside the mask change
            free = 1.0 - checkerboard(shape[2], shape[3], self.parity, device)
            log_s, t = log_s * free, t * free
        return log_s, t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self._split(x)
        log_s, t = self._affine(a, x.shape, x.device)
        return self._join(a, b * torch.exp(log_s) + t, x), log_s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b = self._split(y)
        log_s, t = self._affine(a, y.shape, y.device)
        return self._join(a, (b - t) * torch.exp(-log_s), y)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block becomes 4 channels (RealNVP Sec. 3.6)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``squeeze``."""
    b, c, h, w = x.shape
    return x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


class Glow(nn.Module):
    """The multi-scale flow of the module docstring; ``forward(x) -> (zs, logdet)``, ``inverse(zs) -> x``."""

    def __init__(self, config: GlowConfig) -> None:
        super().__init__()
        self.config = config
        c = config.in_channels
        self.pre = nn.ModuleList()
        for k in range(config.checkerboard_steps):
            self.pre.extend([ActNorm(c), AffineCoupling(c, config.hidden_channels, "checkerboard", k % 2)])
        self.levels = nn.ModuleList()
        for level in range(config.levels):
            c *= 4
            steps = nn.ModuleList()
            for k in range(config.steps_per_level):
                steps.extend([ActNorm(c), InvConv1x1(c), AffineCoupling(c, config.hidden_channels, "channel", k % 2)])
            self.levels.append(steps)
            if level < config.levels - 1:
                c -= c // 2  # factored out

    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(C, H, W) of each z_l, in the order ``forward`` returns them (their sizes sum to C*H*W)."""
        c, s, shapes = self.config.in_channels, self.config.resolution, []
        for level in range(self.config.levels):
            c, s = c * 4, s // 2
            out = c // 2 if level < self.config.levels - 1 else c
            shapes.append((out, s, s))
            c -= out
        return shapes

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(latents z_l, log|det df/dx| (B,)) of images x (B, C, H, W)."""
        logdet = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        h, zs = x, []
        for layer in self.pre:
            h, ld = layer(h)
            logdet = logdet + ld
        for level, steps in enumerate(self.levels):
            h = squeeze(h)
            for layer in steps:
                h, ld = layer(h)
                logdet = logdet + ld
            if level < len(self.levels) - 1:
                z, h = h.split([h.shape[1] // 2, h.shape[1] - h.shape[1] // 2], dim=1)
                zs.append(z)
        zs.append(h)
        return zs, logdet

    def inverse(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """Images x of latents ``zs`` (as ``forward`` returns them)."""
        h = zs[-1]
        for level in range(len(self.levels) - 1, -1, -1):
            if level < len(self.levels) - 1:
                h = torch.cat([zs[level], h], dim=1)
            for layer in reversed(self.levels[level]):
                h = layer.inverse(h)
            h = unsqueeze(h)
        for layer in reversed(self.pre):
            h = layer.inverse(h)
        return h

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per example (B,): standard normal latents + log-det (RealNVP Eq. 3)."""
        zs, logdet = self(x)
        log_pz = sum(-0.5 * (z.pow(2) + math.log(2 * math.pi)).flatten(1).sum(1) for z in zs)
        return log_pz + logdet

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Data-dependent ActNorm init (Glow Sec. 3.1): each ActNorm fits its input on batch ``x``."""
        for module in self.modules():
            if isinstance(module, ActNorm):
                module.pending = True
        self(x)
