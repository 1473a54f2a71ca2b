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

Sampling one row at a time (``row_context`` + ``row_logits``): while row i is drawn, every
vertical-stack feature it reads (rows < i) is fixed, so it is computed once per row on the
``context_rows`` rows above i, and each of the W C sub-pixel steps runs only the horizontal stack
on row i. The logits are those of ``forward`` (a test checks it), for about 1/H of the work.
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

    def vertical(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the next vertical features, what each row of the horizontal stack receives from the rows
        above), both (B, ., H, W)."""
        v_pre = self.v(pad_vertical(v, self.k))  # (B, 2c, H, W)
        return self.gate(v_pre, self.groups), self.v_to_h(shift_down(v_pre))

    def horizontal(self, h: torch.Tensor, above: torch.Tensor) -> torch.Tensor:
        """The next horizontal features (B, c, H', W) of rows ``h`` given what they receive from above."""
        h_pre = self.h(F.pad(h, (self.k // 2, 0, 0, 0))) + above
        h_new = self.h_out(self.gate(h_pre, self.groups))
        return h_new if self.first else h + h_new

    def forward(self, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v, above = self.vertical(v)
        return v, self.horizontal(h, above)


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

    @property
    def context_rows(self) -> int:
        """Input rows above row i that its logits can depend on: the vertical stack reaches 7 // 2
        rows up in the first layer and k // 2 in each next one, and reaches row i shifted by one."""
        return 1 + 7 // 2 + self.config.layers * (self.config.kernel_size // 2)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The network's input: x itself, or (``embedding_dim`` > 0) its level indices' vectors (B, E, H, W)."""
        if self.embedding is None:
            return x
        k = ((x[:, 0] + 1.0) * (self.config.levels - 1) / 2).round().long().clamp(0, self.config.levels - 1)
        return self.embedding(k).movedim(-1, 1)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Output head: horizontal features (B, c, H', W) -> logits (B, C, L, H', W)."""
        logits = self.head[1](F.elu(self.head[0](F.elu(h))))  # (B, C * L, H', W), channel-major groups
        b, _, height, width = logits.shape
        return logits.view(b, self.config.in_channels, self.config.levels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = h = self.embed(x)
        for layer in self.layers:
            v, h = layer(v, h)
        return self.logits(h)

    def row_context(self, x: torch.Tensor, i: int) -> list[torch.Tensor]:
        """What row i of each layer's horizontal stack receives from the rows above, (B, 2c, 1, W)
        per layer; reads rows i - ``context_rows`` ... i - 1 of x only."""
        v = self.embed(x[:, :, max(0, i - self.context_rows):i + 1])  # row i itself is never read
        above = []
        for layer in self.layers:
            v, a = layer.vertical(v)
            above.append(a[:, :, -1:])
        return above

    def row_logits(self, x_row: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        """Logits (B, C, L, 1, W) of row i from that row of the input (B, C, 1, W) and
        ``row_context(x, i)``: equal to ``forward(x)[..., i:i + 1, :]``."""
        h = self.embed(x_row)
        for layer, above in zip(self.layers, context):
            h = layer.horizontal(h, above)
        return self.logits(h)
