"""Conditioning embeddings shared by difflab's networks: diffusion time and class label.

Time uses the sinusoidal position encoding of Vaswani et al. 2017 (Sec. 3.5) as adopted by
DDPM (Ho et al. 2020, Appendix B) and ADM (Dhariwal & Nichol 2021): for frequency index
``i < d/2``, ``omega_i = max_period ** (-i / (d/2))`` and
``emb(t) = [cos(s * t * omega), sin(s * t * omega)]``. difflab's time is continuous,
``t in [0, 1]``, so it is first scaled by ``s`` (default 1000, the number of DDPM steps)
to put it in the range the frequencies were designed for.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from difflab.errors import ConfigError

TIME_SCALE = 1000.0
"""Default scale s applied to t in [0, 1] before the sinusoid: DDPM's T = 1000 steps."""


def timestep_embedding(
    t: torch.Tensor, dim: int, scale: float = TIME_SCALE, max_period: float = 10_000.0
) -> torch.Tensor:
    """Sinusoidal embedding of diffusion time (Vaswani et al. 2017, Sec. 3.5; DDPM App. B).

    Args:
        t: times, shape (B,), float in [0, 1].
        dim: embedding width d; an odd ``dim`` gets one zero column at the end.
        scale: s, multiplies t so that t = 1 maps to ``s`` (DDPM's last step).
        max_period: the longest wavelength, in units of scaled time.

    Returns:
        Tensor (B, dim) in t's floating dtype (float32 for integer t):
        ``[cos(s t omega), sin(s t omega)]``.
    """
    dtype = t.dtype if t.is_floating_point() else torch.float32
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=dtype)
    omega = torch.exp(-math.log(max_period) * i / half)  # (half,)
    angle = (scale * t.to(dtype))[:, None] * omega[None, :]  # (B, half)
    emb = torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)  # (B, 2*half)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoid of t followed by a two-layer MLP (Linear, SiLU, Linear), as in DDPM/ADM.

    Maps t (B,) in [0, 1] to a conditioning vector (B, out_dim).
    """

    def __init__(self, sinusoid_dim: int, out_dim: int, scale: float = TIME_SCALE) -> None:
        super().__init__()
        self.sinusoid_dim = sinusoid_dim
        self.scale = scale
        self.mlp = nn.Sequential(
            nn.Linear(sinusoid_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t: (B,) in [0, 1], any float dtype -> (B, out_dim) in the weights' dtype."""
        emb = timestep_embedding(t, self.sinusoid_dim, self.scale)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class ClassEmbedding(nn.Module):
    """Learned class-label embedding with a reserved "null" label for classifier-free guidance.

    There are ``num_classes + 1`` rows: labels ``0 .. num_classes - 1`` are the real classes and
    label ``num_classes`` (``self.null_label``) means "unconditional" (Ho & Salimans 2022,
    classifier-free guidance: train with labels randomly replaced by the null label, sample
    with ``(1 + w) * eps(z, c) - w * eps(z, null)``). Passing ``labels=None`` uses the null label.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        """The label index meaning "no class" (equals ``num_classes``)."""
        return self.num_classes

    def forward(self, labels: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """labels: LongTensor (B,) in [0, num_classes] or None -> (B, dim)."""
        if labels is None:
            device = self.embedding.weight.device
            labels = torch.full((batch_size,), self.null_label, dtype=torch.long, device=device)
        check_labels(labels, batch_size, self.num_classes)
        return self.embedding(labels)


def check_labels(labels: torch.Tensor, batch_size: int, num_classes: int) -> None:
    """Raise ``ConfigError`` unless labels is an integer tensor (B,) with values in [0, num_classes]."""
    if labels.shape != (batch_size,) or labels.is_floating_point():
        raise ConfigError(
            f"class_labels must be an integer tensor of shape ({batch_size},), "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > num_classes):
        raise ConfigError(
            f"class_labels must lie in [0, {num_classes}] ({num_classes} = null/unconditional "
            f"label), got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def check_time(t: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Return t as shape (B,): a 0-d t is broadcast to the batch; any other shape raises."""
    if t.ndim == 0:
        return t.expand(batch_size)
    if t.shape != (batch_size,):
        raise ConfigError(
            f"t must have shape ({batch_size},) (one time in [0, 1] per sample), "
            f"got shape {tuple(t.shape)}"
        )
    return t


class ConditionEmbedding(nn.Module):
    """The network's conditioning vector: ``TimeEmbedding(t) + ClassEmbedding(labels)`` (ADM).

    With ``num_classes=None`` the network is unconditional and refuses class labels.
    """

    def __init__(self, sinusoid_dim: int, dim: int, num_classes: int | None) -> None:
        super().__init__()
        self.time = TimeEmbedding(sinusoid_dim, dim)
        self.label = ClassEmbedding(num_classes, dim) if num_classes is not None else None

    def forward(self, t: torch.Tensor, labels: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """t: (B,) or 0-d, labels: (B,) or None -> embedding (B, dim)."""
        emb = self.time(check_time(t, batch_size))
        if self.label is not None:
            return emb + self.label(labels, batch_size)
        if labels is not None:
            raise ConfigError(
                "class_labels were given but the network is unconditional; "
                "set num_classes in its config to train a class-conditional model"
            )
        return emb
