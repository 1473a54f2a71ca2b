"""Draw a batch of samples from a trained network: the one code path for training previews
and ``difflab sample``, so a loaded checkpoint reproduces the in-memory model exactly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from difflab.evaluation.figures import to_uint8
from difflab.processes import DiagonalGaussianProcess, Prediction
from difflab.samplers import sample


def class_labels_for(num: int, num_classes: int | None, device: torch.device | str) -> torch.Tensor | None:
    """Labels 0, 1, ..., num_classes-1, 0, 1, ... (B,) int64 for a class-conditional grid, or None."""
    if num_classes is None:
        return None
    return torch.arange(num, device=device) % num_classes


@torch.no_grad()
def generate(
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
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(samples (num, C, H, W), class labels (num,) or None) from noise seeded by ``seed``.

    ``model`` is put in eval mode; the generator is created here from ``seed`` so the result
    depends only on the weights and these arguments.
    """
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    labels = class_labels_for(num, num_classes, device)
    options: dict[str, Any] = {} if eta is None else {"eta": eta}
    x = sample(
        model, process, (num, *image_shape), sampler=sampler, steps=steps, prediction=prediction,
        generator=generator, cond=None if labels is None else {"class_labels": labels},
        clip_x0=clip_x0, device=device, **options,
    )
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
