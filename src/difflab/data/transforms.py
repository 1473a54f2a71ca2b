"""Batch-time augmentation with an explicit random generator."""

from __future__ import annotations

import torch

from difflab.errors import ConfigError


def random_hflip(x: torch.Tensor, *, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image of ``x`` (B, C, H, W) left-right with probability ``p``.

    One uniform draw per image from ``generator`` (which must live on ``x.device``), so the
    flips are reproducible from the generator state alone.
    """
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"hflip probability p={p} must be in [0, 1]")
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
