"""Residual MLP denoiser for low-dimensional data: ``MLP(config)(x, t, class_labels) -> x's shape``.

For toy 2-D data or tiny flattened images. x of shape (B, D) or (B, C, H, W) is flattened to
(B, D) with ``D = in_features``. Each block is a pre-norm residual MLP whose normalised
input is modulated by the conditioning vector, ``(1 + s) * LayerNorm(h) + b`` (the fully
connected analogue of ADM's AdaGN, Dhariwal & Nichol 2021, Sec. 3); the time embedding is
DDPM's sinusoid + MLP (Ho et al. 2020, App. B). The output layer and each block's last
layer start at zero, so the initial network outputs zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import ConfigError
from difflab.nn.checks import check_common_fields
from difflab.nn.embeddings import ConditionEmbedding
from difflab.nn.unet import zero_init


@dataclass
class MLPConfig:
    """Hyper-parameters of ``MLP``; defaults suit 2-D toy data (two moons, Gaussian mixtures)."""

    in_features: int = 2
    """D, the number of values per sample (2 for points in the plane, C*H*W for images)."""
    hidden_features: int = 256
    """Width of every hidden layer; 256 fits 2-D toy distributions in minutes on a CPU."""
    num_blocks: int = 3
    """Residual blocks (two linear layers each); with the input and output layers, 3 blocks
    make 8 linear layers on the main path."""
    time_embed_dim: int = 128
    """Width of the sinusoidal time encoding before its MLP (maps to hidden_features)."""
    dropout: float = 0.0
    """Dropout probability inside blocks; toy data rarely overfits, so off by default."""
    num_classes: int | None = None
    """Number of classes for class conditioning; None = unconditional. Label index
    ``num_classes`` is reserved as the "null" (unconditional) label for classifier-free guidance."""

    def __post_init__(self) -> None:
        sizes = {
            "in_features": self.in_features,
            "hidden_features": self.hidden_features,
            "num_blocks": self.num_blocks,
            "time_embed_dim": self.time_embed_dim,
        }
        check_common_fields("MLPConfig", sizes, self.dropout, self.num_classes)


class MLPBlock(nn.Module):
    """``h + W2(dropout(SiLU(W1((1 + s) * LN(h) + b))))`` with ``(s, b) = Linear(SiLU(emb))``."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.emb_proj = nn.Linear(width, 2 * width)
        self.fc1 = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = zero_init(nn.Linear(width, width))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """h, emb: (B, width) -> (B, width)."""
        scale, shift = self.emb_proj(F.silu(emb)).chunk(2, dim=1)  # (B, width) each
        y = torch.addcmul(shift, self.norm(h), 1 + scale)
        return h + self.fc2(self.dropout(F.silu(self.fc1(y))))


class MLP(nn.Module):
    """Time- (and optionally class-) conditioned residual MLP.

    Args of forward:
        x: (B, D) or (B, ...) with ``prod(...) == in_features``.
        t: (B,) float in [0, 1] (a 0-d tensor is broadcast to the batch).
        class_labels: LongTensor (B,) in [0, num_classes] if ``num_classes`` is set;
            ``num_classes`` is the null label (unconditional), and None means all-null.
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        width = config.hidden_features
        self.embed = ConditionEmbedding(config.time_embed_dim, width, config.num_classes)
        self.stem = nn.Linear(config.in_features, width)
        self.blocks = nn.ModuleList(MLPBlock(width, config.dropout) for _ in range(config.num_blocks))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), zero_init(nn.Linear(width, config.in_features)))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict a tensor of x's shape from x and t (B,)."""
        B = x.shape[0]
        if math.prod(x.shape[1:]) != self.config.in_features:
            raise ConfigError(
                f"MLP expects {self.config.in_features} values per sample, got input of shape "
                f"{tuple(x.shape)}; set in_features to the product of the non-batch dimensions"
            )
        emb = self.embed(t, class_labels, B)  # (B, hidden)
        h = self.stem(x.reshape(B, -1))  # (B, D) -> (B, hidden)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h).reshape(x.shape)  # (B, D) -> x's shape
