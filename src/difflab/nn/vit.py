"""DiT-style Vision Transformer encoder-decoder: ``ViT(config)(x, t, class_labels) -> x's shape``.

Architecture of DiT (Peebles & Xie 2023, Sec. 3.2) as used by l-DAE (Chen, Liu, Xie & He 2024,
App. A): the image is cut into p x p patches, each linearly embedded to a token (ViT, Dosovitskiy
et al. 2021) plus a fixed 2-D sin-cos position embedding; a stack of Transformer blocks follows,
each conditioned on the diffusion time through adaLN-Zero,

    h <- h + g_1 * Attn((1 + s_1) LN(h) + b_1),     h <- h + g_2 * MLP((1 + s_2) LN(h) + b_2),

with (b, s, g) regressed from the conditioning vector by a zero-initialised linear layer, so every
block starts as the identity. The conditioning MLP has width dim / 4 (l-DAE, App. A). The first
``encoder_depth`` blocks are the "encoder" whose tokens are probed; the remaining
``decoder_depth`` blocks and a final adaLN + linear layer map back to patches.
No class conditioning unless ``num_classes`` is set (for the DiT baseline).

Layouts: x (B, C, H, W) -> tokens (B, N, dim) with N = (H/p)(W/p), row-major over the patch
grid -> patches (B, C_out p^2, H/p, W/p) -> output (B, C_out, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import ConfigError
from difflab.nn.checks import check_common_fields
from difflab.nn.embeddings import ConditionEmbedding
from difflab.nn.unet import zero_init


@dataclass
class ViTConfig:
    """Hyper-parameters of ``ViT``; defaults are a small model for 28x28 or 32x32 images on a CPU."""

    in_channels: int = 1
    """Channels of x (image channels, or latent channels d for latent diffusion)."""
    out_channels: int | None = None
    """Channels of the output; None = in_channels."""
    patch_size: int = 4
    """Side p of a patch token (1 on a latent grid that is already tokenised)."""
    dim: int = 96
    """Token width."""
    encoder_depth: int = 3
    """Blocks of the encoder (its output tokens are the representation)."""
    decoder_depth: int = 3
    """Blocks of the decoder (l-DAE uses as many as the encoder)."""
    num_heads: int = 4
    """Attention heads; must divide dim."""
    mlp_ratio: float = 4.0
    """Hidden width of each block's MLP, in units of dim."""
    num_classes: int | None = None
    """Class conditioning (None = unconditional); label num_classes is the null label."""
    dropout: float = 0.0
    """Unused by DiT blocks (kept 0); validated for interface parity with the other networks."""

    def __post_init__(self) -> None:
        sizes = {"in_channels": self.in_channels, "patch_size": self.patch_size, "dim": self.dim,
                 "encoder_depth": self.encoder_depth, "num_heads": self.num_heads}
        check_common_fields("ViTConfig", sizes, self.dropout, self.num_classes)
        if self.decoder_depth < 0 or self.dim % self.num_heads or self.dim % 4 or self.mlp_ratio <= 0:
            raise ConfigError(
                f"ViTConfig needs decoder_depth >= 0, dim divisible by num_heads and by 4, and "
                f"mlp_ratio > 0; got decoder_depth={self.decoder_depth}, dim={self.dim}, "
                f"num_heads={self.num_heads}, mlp_ratio={self.mlp_ratio}"
            )

    @property
    def output_channels(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels


def sincos_position_embedding(height: int, width: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE / DiT), shape (height * width, dim), float32.

    Half of the channels encode the row, half the column, each as
    ``[sin(pos * omega), cos(pos * omega)]`` with ``omega_k = 10000^(-k / (dim / 4))``.
    """
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    rows = torch.arange(height, dtype=torch.float32, device=device)[:, None] * omega  # (H, dim/4)
    cols = torch.arange(width, dtype=torch.float32, device=device)[:, None] * omega  # (W, dim/4)
    row_emb = torch.cat([rows.sin(), rows.cos()], dim=1)[:, None, :].expand(height, width, 2 * quarter)
    col_emb = torch.cat([cols.sin(), cols.cos()], dim=1)[None, :, :].expand(height, width, 2 * quarter)
    return torch.cat([row_emb, col_emb], dim=2).reshape(height * width, 4 * quarter)


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: (1 + scale) * h + shift, with shift and scale (B, 1, dim) broadcast over tokens."""
    return h * (1.0 + scale) + shift


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (Peebles & Xie 2023, Fig. 3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, cond_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(cond_dim, 6 * dim)))

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention over tokens: (B, N, dim) -> (B, N, dim)."""
        b, n, dim = h.shape
        qkv = self.qkv(h).reshape(b, n, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, dim / heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, dim / heads)
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """h: tokens (B, N, dim); c: conditioning (B, cond_dim)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None, :].chunk(6, dim=-1)
        h = h + gate1 * self.attention(modulate(self.norm1(h), shift1, scale1))
        return h + gate2 * self.mlp(modulate(self.norm2(h), shift2, scale2))


class FinalLayer(nn.Module):
    """adaLN + zero-initialised linear map from tokens to patches (DiT's final layer)."""

    def __init__(self, dim: int, patch_dim: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(cond_dim, 2 * dim)))
        self.linear = zero_init(nn.Linear(dim, patch_dim))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)[:, None, :].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(h), shift, scale))


class ViT(nn.Module):
    """DiT-style encoder-decoder ``forward(x, t, class_labels=None) -> (B, C_out, H, W)``.

    ``blocks[:encoder_depth]`` form the encoder; ``encode(x, t)`` returns its tokens.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        cond_dim = config.dim // 4  # l-DAE App. A: conditioning MLP at 1/4 width
        self.embed = ConditionEmbedding(cond_dim, cond_dim, config.num_classes)
        self.patch_embed = nn.Conv2d(config.in_channels, config.dim, config.patch_size, stride=config.patch_size)
        depth = config.encoder_depth + config.decoder_depth
        self.blocks = nn.ModuleList(
            DiTBlock(config.dim, config.num_heads, config.mlp_ratio, cond_dim) for _ in range(depth)
        )
        self.final = FinalLayer(config.dim, config.output_channels * config.patch_size**2, cond_dim)

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch + position embedding: (B, C, H, W) -> ((B, N, dim), (H/p, W/p))."""
        self.check_input(x)
        grid = self.patch_embed(x)  # (B, dim, h, w)
        h, w = grid.shape[-2:]
        pos = sincos_position_embedding(h, w, self.config.dim, device=x.device).to(grid.dtype)
        return grid.flatten(2).transpose(1, 2) + pos, (h, w)  # (B, h w, dim)

    def encode(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None,
               depth: int | None = None) -> torch.Tensor:
        """Tokens after the first ``depth`` blocks (default: the encoder), shape (B, N, dim)."""
        depth = self.config.encoder_depth if depth is None else depth
        c = self.embed(t, class_labels, x.shape[0])  # (B, cond_dim)
        h, _ = self.tokens(x)
        for block in self.blocks[:depth]:
            h = block(h, c)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        c = self.embed(t, class_labels, x.shape[0])  # (B, cond_dim)
        h, (gh, gw) = self.tokens(x)
        for block in self.blocks:
            h = block(h, c)
        patches = self.final(h, c)  # (B, N, C_out p^2)
        grid = patches.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)  # (B, C_out p^2, h, w)
        return F.pixel_shuffle(grid, self.config.patch_size)  # (B, C_out, H, W)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ConfigError`` unless x is (B, in_channels, H, W) with H, W multiples of p."""
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels or x.shape[-2] % c.patch_size or x.shape[-1] % c.patch_size:
            raise ConfigError(
                f"ViT expects input (B, {c.in_channels}, H, W) with H and W multiples of patch_size="
                f"{c.patch_size}; got {tuple(x.shape)}"
            )

