"""Preview grids and ``.npz`` files of samples from a trained network.

Drawing is ``difflab.evaluation.generate`` (the one sampling path, shared with evaluation);
this module only fixes the grid's class layout (labels 0..K-1 repeating, so each column of
a 10-wide grid is one class) and turns ``eta=None`` into the sampler's default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from difflab.evaluation.evaluate import generate
from difflab.evaluation.figures import to_uint8
from difflab.processes import DiagonalGaussianProcess, Prediction


def class_labels_for(num: int, num_classes: int | None) -> torch.Tensor | None:
    """Labels 0, 1, ..., num_classes-1, 0, 1, ... (B,) int64 for a class-conditional grid, or None."""
    if num_classes is None:
        return None
    return torch.arange(num) % num_classes


def sample_grid(
    model: nn.Module,
    process: DiagonalGaussianProcess,
    image_shape: tuple[int, int, int],
    *,
    num: int,
    prediction: Prediction,
    sampler: str = "ddim",
    steps: int = 50,
    seed: int = 0,
    eta: float | None = None,
    clip_x0: float | None = 1.0,
    num_classes: int | None = None,
    **sampler_options: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(samples (num, C, H, W) on the CPU, class labels (num,) or None) from noise seeded by ``seed``.

    ``model`` should be in eval mode; the result depends only on the weights and these arguments.
    """
    labels = class_labels_for(num, num_classes)
    options: dict[str, Any] = {**sampler_options, **({} if eta is None else {"eta": eta})}
    x = generate(model, process, image_shape, num_samples=num, sampler=sampler, steps=steps, prediction=prediction,
                 seed=seed, num_classes=num_classes, labels=labels, clip_x0=clip_x0, **options)
    return x, labels


def save_samples_npz(x: torch.Tensor, path: str | os.PathLike, labels: torch.Tensor | None = None) -> Path:
    """Save samples as ``.npz``: ``images`` float32 (B, C, H, W) in [-1, 1], ``uint8`` (B, H, W, C),
    and ``labels`` (B,) when class-conditional."""
    arrays = {"images": x.detach().float().cpu().numpy(), "uint8": to_uint8(x)}
    if labels is not None:
        arrays["labels"] = labels.cpu().numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
