"""The in-memory image dataset every loader returns, and the level → [-1, 1] scaling.

Images are stored on disk as integer levels ``v in {0, ..., L-1}`` (``L = num_levels``: 256
for 8-bit images, 17 for sklearn's digits). difflab models see ``x = 2 v / (L - 1) - 1`` in
``[-1, 1]``; likelihood code needs ``L`` to turn densities into discrete bits/dim (Ho et al.
2020, "Denoising Diffusion Probabilistic Models", Sec. 3.3: the bin width is ``2 / (L - 1)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from difflab.errors import DataError


def levels_to_signed(levels: np.ndarray, num_levels: int) -> torch.Tensor:
    """Map integer levels ``v`` (N, H, W, C) to float32 ``2 v / (L - 1) - 1``, layout (N, C, H, W).

    ``0`` maps to exactly ``-1`` and ``L - 1`` to exactly ``1``.
    """
    v = torch.from_numpy(np.require(levels, requirements=["C", "W"])).permute(0, 3, 1, 2)  # (N,H,W,C) -> (N,C,H,W)
    return (v.to(torch.float32) / (num_levels - 1)) * 2 - 1


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A whole image dataset held in memory.

    Attributes:
        images: float32 (N, C, H, W) in [-1, 1].
        labels: int64 (N,) class indices in ``[0, num_classes)``, or None when unlabelled.
        num_classes: number of classes, or None when unlabelled.
        num_levels: quantisation levels L of the source pixels (256 for 8-bit, 17 for digits).
        name: dataset name and split, e.g. ``"mnist/train"``.
        classes: class names indexed by label, or None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    num_classes: int | None
    num_levels: int
    name: str
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        x = self.images
        if x.dtype != torch.float32 or x.ndim != 4:
            raise DataError(f"{self.name}: images must be float32 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        if (self.labels is None) != (self.num_classes is None):
            raise DataError(f"{self.name}: labels and num_classes must both be given or both be None")
        if self.labels is not None:
            y = self.labels
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{self.name}: labels must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        """Channel count C."""
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """Spatial size (H, W) in pixels."""
        return (self.images.shape[2], self.images.shape[3])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, C, H, W) and labels (B,) (or None) at ``indices`` (B,) int64."""
        labels = None if self.labels is None else self.labels[indices]
        return self.images[indices], labels

    def to(self, device: torch.device | str) -> ImageDataset:
        """The same dataset with images and labels on ``device`` (a GPU run then indexes batches
        there, with no host-to-device copy per step)."""
        labels = None if self.labels is None else self.labels.to(device)
        return replace(self, images=self.images.to(device), labels=labels)
