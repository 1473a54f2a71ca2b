"""ADM/DDPM-style UNet denoiser: ``UNet(config)(x, t, class_labels) -> tensor of x's shape``.

Architecture of Ho et al. 2020 (DDPM, Appendix B) with the improvements of Dhariwal & Nichol
2021 (ADM, Sec. 3): residual blocks of GroupNorm + SiLU + 3x3 conv, the conditioning vector
injected by adaptive group normalisation ``AdaGN(h, y) = y_s * GroupNorm(h) + y_b`` (ADM
Sec. 3, written here as ``(1 + s) * GroupNorm(h) + b`` so a zero projection is the identity),
multi-head self-attention at chosen resolutions (with ``scaled_dot_product_attention``),
strided-conv downsampling, nearest + conv upsampling, concatenated skip connections, and the
residual branches' last layers and the output conv initialised to zero.

The network knows nothing about diffusion processes: t is a float in [0, 1] per sample and
the output has x's shape (what it predicts, eps or x or v, is the objective's business).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import ConfigError
from difflab.nn.checks import check_common_fields
from difflab.nn.embeddings import ConditionEmbedding


@dataclass
class UNetConfig:
    """Hyper-parameters of ``UNet``; defaults are DDPM's CIFAR-10 (32x32 RGB) layout (Ho et al.
    2020, App. B) with ADM's 64-channel attention heads (35.7M params in DDPM, 38.3M here since
    scale-shift conditioning doubles each block's time projection).

    ``dataclasses.asdict(config)`` is a plain dict (lists/tuples of ints) from which
    ``UNetConfig(**d)`` rebuilds the same architecture.
    """

    in_channels: int = 3
    """Channels of x (1 for grey, 3 for RGB, latent channels for latent diffusion)."""
    out_channels: int | None = None
    """Channels of the output; None = in_channels, so the output has x's shape."""
    base_channels: int = 128
    """Channels at full resolution; ADM/DDPM CIFAR-10 use 128. The time embedding is 4x this."""
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    """Channel multiplier per level (one level per resolution); len - 1 downsamplings by 2.
    ADM CIFAR: (1, 2, 2, 2) for 32 -> 4. Use (1, 2) for 8x8 digits, (1, 2, 2) for 28x28 MNIST."""
    num_res_blocks: int = 2
    """Residual blocks per level on the way down (the way up has one more); DDPM/ADM use 2-3."""
    attention_resolutions: tuple[int, ...] = (16,)
    """Feature-map sizes, in pixels relative to ``resolution``, that get self-attention after
    each residual block (DDPM: 16 at 32x32). The middle block always has attention."""
    dropout: float = 0.1
    """Dropout probability inside residual blocks; DDPM CIFAR uses 0.1 against overfitting."""
    head_channels: int | None = 64
    """Channels per attention head (ADM's fixed 64); None = use ``num_heads`` heads instead."""
    num_heads: int = 4
    """Number of attention heads, used only when ``head_channels`` is None (ADM default 4)."""
    num_classes: int | None = None
    """Number of classes for class conditioning; None = unconditional. Label index
    ``num_classes`` is reserved as the "null" (unconditional) label for classifier-free guidance."""
    resolution: int = 32
    """Nominal input height in pixels; only used to turn ``attention_resolutions`` into
    downsampling factors. Inputs of any height/width divisible by ``2**(len(channel_mult)-1)``
    are accepted, including non-square ones."""
    norm_groups: int = 32
    """GroupNorm groups (32 in DDPM/ADM); must divide every level's channel count."""

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        self._check_sizes()
        self._check_attention()

    @property
    def output_channels(self) -> int:
        """Channels of the network output (``out_channels`` or ``in_channels``)."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def downsample_factor(self) -> int:
        """Total downsampling 2**(levels - 1); input height and width must be multiples of it."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def attention_levels(self) -> frozenset[int]:
        """Level indices k (feature map = input / 2**k) that carry self-attention."""
        return frozenset((self.resolution // r).bit_length() - 1 for r in self.attention_resolutions)

    def level_channels(self, level: int) -> int:
        """Channels of the feature maps at ``level``: base_channels * channel_mult[level]."""
        return self.base_channels * self.channel_mult[level]

    def heads(self, channels: int) -> int:
        """Number of attention heads for a block with ``channels`` channels."""
        if self.head_channels is None:
            return self.num_heads
        return channels // self.head_channels

    def _check_sizes(self) -> None:
        sizes = {
            "in_channels": self.in_channels,
            "base_channels": self.base_channels,
            "num_res_blocks": self.num_res_blocks,
            "resolution": self.resolution,
            "norm_groups": self.norm_groups,
        }
        check_common_fields("UNetConfig", sizes, self.dropout, self.num_classes)
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ConfigError(
                f"UNetConfig.channel_mult={self.channel_mult} must be a non-empty tuple of "
                "positive integers, e.g. (1, 2)"
            )
        for level in range(len(self.channel_mult)):
            if self.level_channels(level) % self.norm_groups:
                raise ConfigError(
                    f"UNetConfig: {self.level_channels(level)} channels at level {level} are not "
                    f"divisible by norm_groups={self.norm_groups}; change base_channels or norm_groups"
                )

    def _check_attention(self) -> None:
        levels = len(self.channel_mult)
        valid = [self.resolution // 2**k for k in range(levels) if self.resolution % 2**k == 0]
        for r in self.attention_resolutions:
            if r not in valid:
                raise ConfigError(
                    f"UNetConfig.attention_resolutions contains {r}, which is not a feature-map "
                    f"size of this UNet at resolution={self.resolution}; choose from {valid}"
                )
        # The middle block (deepest level) always has attention, so check that level too.
        for level in self.attention_levels | {levels - 1}:
            channels = self.level_channels(level)
            split = self.num_heads if self.head_channels is None else self.head_channels
            if split < 1 or channels % split:
                raise ConfigError(
                    f"UNetConfig: {channels} attention channels at level {level} cannot be split "
                    f"into heads (head_channels={self.head_channels}, num_heads={self.num_heads})"
                )


def zero_init(module: nn.Module) -> nn.Module:
    """Set all parameters of ``module`` to zero and return it (ADM's ``zero_module``)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Residual block with AdaGN conditioning (ADM Sec. 3; DDPM App. B).

    ``h = conv(SiLU(GN(x))); h = (1 + s) * GN(h) + b, (s, b) = Linear(SiLU(emb));
    out = skip(x) + conv_0(dropout(SiLU(h)))`` with ``conv_0`` zero-initialised.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (B, in_ch, H, W), emb: (B, emb_dim) -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1)
        h = torch.addcmul(shift, self.norm2(h), 1 + scale)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all positions of a feature map (DDPM App. B; ADM Sec. 3).

    ``out = x + proj_0(MHA(GN(x)))`` with ``proj_0`` zero-initialised; attention is
    ``softmax(q k^T / sqrt(d)) v`` per head, computed by ``scaled_dot_product_attention``.
    """

    def __init__(self, channels: int, num_heads: int, groups: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        qkv = self.qkv(h).reshape(B, H * W, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, HW, d)
        h = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d)
        h = self.proj(h.transpose(1, 2).reshape(B, H * W, C))  # (B, HW, C)
        return x + h.transpose(1, 2).reshape(B, C, H, W)


class Downsample(nn.Module):
    """Halve height and width with a stride-2 3x3 convolution (DDPM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H/2, W/2)."""
        return self.conv(x)


class Upsample(nn.Module):
    """Double height and width: nearest-neighbour upsampling then a 3x3 convolution (DDPM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A sequence of layers where residual blocks also receive the conditioning vector."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """ADM/DDPM UNet: ``forward(x, t, class_labels=None) -> tensor of x's shape``.

    Args of forward:
        x: (B, in_channels, H, W) with H and W multiples of ``config.downsample_factor``.
        t: (B,) float in [0, 1] (a 0-d tensor is broadcast to the batch).
        class_labels: LongTensor (B,) in [0, num_classes] if ``num_classes`` is set;
            ``num_classes`` is the null label (unconditional), and None means all-null.
        embedding: optional (B, 4 * base_channels) added to the time (and class) embedding,
            so it steers every residual block's scale and shift (a DDGAN generator's latent z
            after its mapping network).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        emb_dim = 4 * config.base_channels
        self.embed = ConditionEmbedding(config.base_channels, emb_dim, config.num_classes)
        self.stem = nn.Conv2d(config.in_channels, config.base_channels, 3, padding=1)
        self.down, skip_channels = build_down_path(config, emb_dim)
        self.middle = build_middle(config, emb_dim)
        self.up = build_up_path(config, emb_dim, skip_channels)
        self.head = nn.Sequential(
            nn.GroupNorm(config.norm_groups, config.base_channels),
            nn.SiLU(),
            zero_init(nn.Conv2d(config.base_channels, config.output_channels, 3, padding=1)),
        )

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict a tensor (B, output_channels, H, W) from x (B, in_channels, H, W) and t (B,)."""
        self.check_input(x)
        emb = self.embed(t, class_labels, x.shape[0])  # (B, 4 * base_channels)
        if embedding is not None:
            emb = emb + embedding
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        h = self.middle(h, emb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.head(h)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ConfigError`` unless x is (B, in_channels, H, W) with H, W divisible."""
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ConfigError(
                f"UNet expects input of shape (B, {c.in_channels}, H, W), got {tuple(x.shape)}; "
                "set in_channels to the data's channel count"
            )
        H, W = x.shape[-2:]
        f = c.downsample_factor
        if H % f or W % f:
            raise ConfigError(
                f"UNet input size {H}x{W} is not divisible by the downsampling factor {f} "
                f"(channel_mult has {len(c.channel_mult)} levels); resize or pad the images to "
                f"a multiple of {f}, or use fewer levels"
            )


def build_down_path(config: UNetConfig, emb_dim: int) -> tuple[nn.ModuleList, list[int]]:
    """Encoder blocks: per level, num_res_blocks (ResBlock [+ attention]), then a Downsample.

    Returns the blocks and the channel count of every skip tensor (the stem output first).
    """
    blocks = nn.ModuleList()
    ch = config.base_channels
    skip_channels = [ch]
    for level in range(len(config.channel_mult)):
        out = config.level_channels(level)
        for _ in range(config.num_res_blocks):
            blocks.append(res_stage(config, level, ch, out, emb_dim))
            ch = out
            skip_channels.append(ch)
        if level < len(config.channel_mult) - 1:
            blocks.append(EmbedSequential(Downsample(ch)))
            skip_channels.append(ch)
    return blocks, skip_channels


def build_middle(config: UNetConfig, emb_dim: int) -> EmbedSequential:
    """Bottleneck at the lowest resolution: ResBlock, attention, ResBlock (DDPM/ADM)."""
    ch = config.level_channels(len(config.channel_mult) - 1)
    g, p = config.norm_groups, config.dropout
    return EmbedSequential(
        ResBlock(ch, ch, emb_dim, p, g),
        AttentionBlock(ch, config.heads(ch), g),
        ResBlock(ch, ch, emb_dim, p, g),
    )


def build_up_path(config: UNetConfig, emb_dim: int, skip_channels: list[int]) -> nn.ModuleList:
    """Decoder blocks: per level (deepest first), num_res_blocks + 1 ResBlocks each taking one
    concatenated skip, with attention where configured and an Upsample ending each level but
    the last."""
    skips = list(skip_channels)
    blocks = nn.ModuleList()
    ch = config.level_channels(len(config.channel_mult) - 1)
    for level in reversed(range(len(config.channel_mult))):
        out = config.level_channels(level)
        for i in range(config.num_res_blocks + 1):
            stage = res_stage(config, level, ch + skips.pop(), out, emb_dim)
            ch = out
            if level > 0 and i == config.num_res_blocks:
                stage.append(Upsample(ch))
            blocks.append(stage)
    return blocks


def res_stage(config: UNetConfig, level: int, in_ch: int, out_ch: int, emb_dim: int) -> EmbedSequential:
    """One ResBlock from in_ch to out_ch, followed by attention if ``level`` has attention."""
    stage = EmbedSequential(ResBlock(in_ch, out_ch, emb_dim, config.dropout, config.norm_groups))
    if level in config.attention_levels:
        stage.append(AttentionBlock(out_ch, config.heads(out_ch), config.norm_groups))
    return stage
