"""``GatedPixelCNN``: an autoregressive network over pixels (van den Oord et al. 2016, "Conditional
Image Generation with PixelCNN Decoders").

The network maps an image x (B, C, H, W) to logits (B, C, L, H, W) of a categorical over the L
levels of every sub-pixel, such that the logits of sub-pixel (c, i, j) depend only on the
sub-pixels before it in raster order: every channel of the pixels above and to the left, and the
channels c' < c of pixel (i, j) itself. So p(x) = prod p(x_cij | x_<cij) is exact (Eq. 1).

- **Two stacks** remove the blind spot of masked 3x3 convolutions (Sec. 2.2): a *vertical* stack
  sees every pixel in the rows above; a *horizontal* stack sees the pixels to the left in the
  current row and receives the vertical stack through a 1x1 convolution.
- **Gated activations** y = tanh(W_f * x) . sigmoid(W_g * x) (Eq. 2), and a residual connection
  on the horizontal stack.
- **Channel order** (PixelRNN, van den Oord et al. 2016a, Sec. 3.4): the feature channels are
  split into C groups; in the current pixel, group c sees input channels < c in the first layer
  (mask "A") and feature groups <= c afterwards (mask "B"); the output head of sub-pixel c
  reads group c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import ConfigError


@dataclass
class PixelCNNConfig:
    """Hyper-parameters of ``GatedPixelCNN``; defaults suit 28x28 MNIST on a CPU (~0.3M parameters)."""

    in_channels: int = 1
    """Image channels C (sub-pixels per pixel, generated in order)."""
    resolution: int = 28
    """Image side H = W in pixels (the network is convolutional; this is checked against the data)."""
    levels: int = 256
    """L, values per sub-pixel: one logit each (a 256-way softmax for 8-bit images)."""
    hidden_channels: int = 64
    """Feature channels of each stack; a multiple of in_channels (one group per channel)."""
    layers: int = 8
    """Gated layers after the first (7x7) one; the receptive field grows by one pixel per layer."""
    kernel_size: int = 3
    """Width of the gated layers' convolutions (odd)."""
    embedding_dim: int = 0
    """0: a sub-pixel enters the network as its value in [-1, 1]; E > 0 (one channel only): its
    level index enters as a learned E-vector, for levels without an order (a VQ-VAE's codes)."""

    def __post_init__(self) -> None:
        if min(self.in_channels, self.resolution, self.hidden_channels, self.layers) < 1 or self.levels < 2:
            raise ConfigError(f"PixelCNN needs positive sizes and levels >= 2; got {self}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"PixelCNN kernel_size={self.kernel_size} must be odd")
        if self.embedding_dim < 0 or (self.embedding_dim and self.in_channels != 1):
            raise ConfigError(f"PixelCNN embedding_dim={self.embedding_dim} must be 0, or > 0 with in_channels=1")
        if self.hidden_channels % self.in_channels:
            raise ConfigError(f"PixelCNN hidden_channels={self.hidden_channels} must be a multiple of "
                              f"in_channels={self.in_channels} (one feature group per channel)")


def channel_mask(out_channels: int, in_channels: int, groups: int, *, strict: bool) -> torch.Tensor:
    """(out, in) 0/1 mask: output group g may read input group g' if g' < g (``strict``, mask "A")
    or g' <= g (mask "B"); channels are split into ``groups`` equal consecutive groups."""
    g_out = torch.arange(out_channels) * groups // out_channels
    g_in = torch.arange(in_channels) * groups // in_channels
    allowed = g_in.view(1, -1) < g_out.view(-1, 1) if strict else g_in.view(1, -1) <= g_out.view(-1, 1)
    return allowed.float()


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 mask of its shape (out, in, kh, kw)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], mask: torch.Tensor) -> None:
        super().__init__(in_channels, out_channels, kernel_size)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias)


def vertical_conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
    """Sees rows i - k//2 ... i (all columns j - k//2 ... j + k//2); shifted down by one row before
    it reaches row i of the horizontal stack, so that only rows above are seen there."""
    return nn.Conv2d(c_in, c_out, (k // 2 + 1, k))


def horizontal_conv(c_in: int, c_out: int, k: int, groups: int, *, strict: bool) -> MaskedConv2d:
    """Sees pixels j - k//2 ... j of row i; at the current pixel (the last column) only the
    allowed channel groups (``channel_mask``)."""
    mask = torch.ones(c_out, c_in, 1, k // 2 + 1)
    mask[:, :, 0, -1] = channel_mask(c_out, c_in, groups, strict=strict)
    return MaskedConv2d(c_in, c_out, (1, k // 2 + 1), mask)


def pad_vertical(x: torch.Tensor, k: int) -> torch.Tensor:
    """Pad so a (k//2 + 1, k) convolution at row i covers rows i - k//2 ... i."""
    return F.pad(x, (k // 2, k // 2, k // 2, 0))


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Row i gets row i - 1 (row 0 gets zeros): vertical features of the rows strictly above."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


class GatedLayer(nn.Module):
    """One gated layer of both stacks (van den Oord et al. 2016, Fig. 2)."""

    def __init__(self, channels: int, k: int, groups: int, *, first: bool, in_channels: int) -> None:
        super().__init__()
        c_in = in_channels if first else channels
        self.k, self.first = k, first
        self.v = vertical_conv(c_in, 2 * channels, k)
        self.h = horizontal_conv(c_in, 2 * channels, k, groups, strict=first)
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)  # rows above only: fed shifted
        self.h_out = MaskedConv2d(channels, channels, (1, 1), channel_mask(channels, channels, groups, strict=False)
                                  .view(channels, channels, 1, 1))
        self.groups = groups

    @staticmethod
    def gate(a: torch.Tensor, groups: int) -> torch.Tensor:
        """tanh(f) * sigmoid(g), with f and g split within each channel group so groups stay apart."""
        b, c2, h, w = a.shape
        f, g = a.view(b, groups, 2, c2 // (2 * groups), h, w).unbind(2)
        return (torch.tanh(f) * torch.sigmoid(g)).reshape(b, c2 // 2, h, w)

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_pre = self.v(pad_vertical(v, self.k))  # (B, 2c, H, W)
        h_pre = self.h(F.pad(h, (self.k // 2, 0, 0, 0))) + self.v_to_h(shift_down(v_pre))
        h_new = self.h_out(self.gate(h_pre, self.groups))
        return self.gate(v_pre, self.groups), h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module):
    """``forward(x) -> logits (B, C, L, H, W)`` with the causal structure of the module docstring."""

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        self.config = config
        c, hidden, groups = config.in_channels, config.hidden_channels, config.in_channels
        self.embedding = nn.Embedding(config.levels, config.embedding_dim) if config.embedding_dim else None
        self.layers = nn.ModuleList(
            [GatedLayer(hidden, 7, groups, first=True, in_channels=config.embedding_dim or c)]
            + [GatedLayer(hidden, config.kernel_size, groups, first=False, in_channels=hidden)
               for _ in range(config.layers)]
        )
        head_mask = channel_mask(hidden, hidden, groups, strict=False).view(hidden, hidden, 1, 1)
        out_mask = channel_mask(c * config.levels, hidden, groups, strict=False).view(-1, hidden, 1, 1)
        self.head = nn.ModuleList([MaskedConv2d(hidden, hidden, (1, 1), head_mask),
                                   MaskedConv2d(hidden, c * config.levels, (1, 1), out_mask)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:  # level indices of the one channel -> (B, E, H, W)
            k = ((x[:, 0] + 1.0) * (self.config.levels - 1) / 2).round().long().clamp(0, self.config.levels - 1)
            x = self.embedding(k).movedim(-1, 1)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        logits = self.head[1](F.elu(self.head[0](F.elu(h))))  # (B, C * L, H, W), channel-major groups
        b, _, height, width = logits.shape
        return logits.view(b, self.config.in_channels, self.config.levels, height, width)
