"""What each dataset reader returns before resizing and scaling to [-1, 1]."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class RawImages(NamedTuple):
    """Integer-level images as read from disk.

    Attributes:
        levels: uint8 (N, H, W, C), values in ``[0, num_levels)``.
        labels: int64 (N,) or None.
        num_levels: quantisation levels L of the source pixels.
        classes: class names indexed by label, or None.
    """

    levels: np.ndarray
    labels: np.ndarray | None
    num_levels: int
    classes: tuple[str, ...] | None
