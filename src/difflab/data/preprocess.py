"""Resizing and channel conversion on integer-level images, shared by every loader.

Arrays here are integer levels (H, W, C) or (N, H, W, C) uint8, before scaling to [-1, 1].
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

from difflab.errors import DataError, check_choice

ChannelMode = Literal["convert", "fail"]
CHANNEL_MODES: tuple[ChannelMode, ...] = ("convert", "fail")
CHANNEL_COUNTS = (1, 3)

# ITU-R BT.601 luma weights, the ones PIL uses for RGB -> L.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` pixels (bicubic), then crop the centre size x size."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def resize_levels(levels: np.ndarray, size: int, num_levels: int) -> np.ndarray:
    """Resize + centre-crop each image of (N, H, W, C) levels to (N, size, size, C).

    Bicubic overshoot is clipped to ``[0, num_levels - 1]`` so the result stays on the level grid.
    """
    n, h, w, c = levels.shape
    if (h, w) == (size, size):
        return levels
    out = np.empty((n, size, size, c), dtype=np.uint8)
    for i in range(n):
        image = Image.fromarray(levels[i, :, :, 0] if c == 1 else levels[i])
        out[i] = np.asarray(resize_center_crop(image, size)).reshape(size, size, c)
    return np.minimum(out, num_levels - 1)


def convert_channels(levels: np.ndarray, channels: int) -> np.ndarray:
    """Convert (..., H, W, C) levels to ``channels`` channels: 1 -> 3 repeats, 3 -> 1 takes BT.601 luma."""
    c = levels.shape[-1]
    if c == channels:
        return levels
    if c == 1 and channels == 3:
        return np.repeat(levels, 3, axis=-1)
    if c == 3 and channels == 1:
        luma = np.rint(levels.astype(np.float64) @ LUMA_WEIGHTS)  # (..., H, W)
        return luma.astype(np.uint8)[..., None]
    raise DataError(f"cannot convert {c}-channel images to {channels} channels; use channels=1 or 3")


def check_channels(channels: int | None, channel_mode: str) -> None:
    """Validate the ``channels`` / ``channel_mode`` options (ConfigError lists allowed values)."""
    if channels is not None:
        check_choice("channels", channels, CHANNEL_COUNTS)
    check_choice("channel_mode", channel_mode, CHANNEL_MODES)


def fit_levels(
    levels: np.ndarray,
    num_levels: int,
    *,
    image_size: int | None,
    channels: int | None,
    channel_mode: ChannelMode,
    source: str,
) -> np.ndarray:
    """Resize/crop (N, H, W, C) levels to ``image_size`` and convert them to ``channels``.

    ``None`` keeps the native size / channel count. With ``channel_mode="fail"`` a channel
    mismatch raises DataError naming ``source`` instead of converting.
    """
    check_channels(channels, channel_mode)
    if image_size is not None:
        levels = resize_levels(levels, image_size, num_levels)
    native = levels.shape[-1]
    if channels is None or channels == native:
        return levels
    if channel_mode == "fail":
        raise DataError(
            f"{source} has {native} channel(s) but channels={channels} was requested; "
            f"pass channels={native} or channel_mode='convert'"
        )
    return convert_channels(levels, channels)
