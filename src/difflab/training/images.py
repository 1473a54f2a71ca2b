"""Sample grids as PNG files (and raw samples as .npz) for previews and ``difflab sample``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Images (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C) in [0, 255] (clipped, rounded)."""
    levels = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return levels.permute(0, 2, 3, 1).numpy()  # (B, C, H, W) -> (B, H, W, C)


def image_grid(x: torch.Tensor, nrow: int | None = None, padding: int = 1) -> np.ndarray:
    """A (rows*(H+p)+p, nrow*(W+p)+p, C) uint8 mosaic of ``x`` (B, C, H, W) in [-1, 1].

    ``nrow`` images per row (default: ceil(sqrt(B))); ``padding`` white pixels between tiles.
    """
    tiles = to_uint8(x)
    b, h, w, c = tiles.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    rows = math.ceil(b / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), 255, np.uint8)
    for i in range(b):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = tiles[i]
    return grid


def save_image_grid(x: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, scale: int | None = None) -> Path:
    """Write ``image_grid(x)`` as a PNG; tiny images are enlarged (nearest) to >= 256 px wide."""
    grid = image_grid(x, nrow)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    scale = scale or max(1, 256 // image.width)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def save_samples_npz(x: torch.Tensor, path: str | os.PathLike, labels: torch.Tensor | None = None) -> Path:
    """Save samples as ``.npz``: ``images`` float32 (B, C, H, W) in model space, ``uint8`` (B, H, W, C),
    and ``labels`` when class-conditional."""
    arrays = {"images": x.detach().float().cpu().numpy(), "uint8": to_uint8(x)}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
