"""Pictures a person looks at: sample grids, forward-process strips, reverse-process GIFs, loss curves.

Images are tensors in [-1, 1] of shape (N, C, H, W) with C = 1 or 3. Files are written
atomically (to a temporary name, then renamed) so a crash never leaves half an image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image

from difflab.processes import DiagonalGaussianProcess


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8 in [0, 255]."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 1, upscale: int = 1) -> np.ndarray:
    """Tile (N, C, H, W) images into one (rows*H', cols*W', 3) uint8 array, ``nrow`` images per row."""
    pixels = to_uint8(images)  # (N, H, W, C)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    if upscale > 1:
        pixels = pixels.repeat(upscale, axis=1).repeat(upscale, axis=2)
    n, h, w, _ = pixels.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, cols)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top : top + h, left : left + w] = pixels[k]
    return grid


def _atomic_write(path: Path, write) -> Path:  # noqa: ANN001 - a one-argument writer
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)
    return path


def _auto_upscale(height: int, target: int = 64) -> int:
    """Integer factor so tiny images (8x8 digits) are visible: at least ``target`` pixels high."""
    return max(1, target // height)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write a PNG grid of (N, C, H, W) images in [-1, 1]; small images are upscaled (nearest)."""
    grid = make_grid(images, nrow, upscale=_auto_upscale(images.shape[-2]))
    return _atomic_write(Path(path), lambda p: Image.fromarray(grid).save(p, format="PNG"))


@torch.no_grad()
def forward_strip(
    process: DiagonalGaussianProcess,
    x0: torch.Tensor,
    times: Sequence[float] = (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0),
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z_t for each example (rows) at each time (columns): shape (N * len(times), C, H, W).

    The same noise draw is used at every t, so a row shows one path of the forward process.
    """
    n = x0.shape[0]
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    rows = []
    for t in times:
        tt = torch.full((n,), float(t), dtype=torch.float64)
        rows.append(process.diffuse(x0, tt, noise))
    # (T, N, C, H, W) -> (N, T, C, H, W) -> (N*T, C, H, W): one row per example
    return torch.stack(rows).transpose(0, 1).reshape(-1, *x0.shape[1:])


def save_forward_strip(
    process: DiagonalGaussianProcess, x0: torch.Tensor, path: str | Path, *, generator: torch.Generator | None = None
) -> Path:
    """PNG of the forward process: clean -> blurred and noisy, one row per image."""
    times = (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0)
    return save_image_grid(forward_strip(process, x0, times, generator=generator), path, nrow=len(times))


def save_trajectory_gif(frames: Sequence[torch.Tensor], path: str | Path, *, nrow: int | None = None, seconds: float = 4.0) -> Path:
    """Animated GIF of a reverse trajectory; each frame is a batch (N, C, H, W) in [-1, 1]."""
    upscale = _auto_upscale(frames[0].shape[-2])
    images = [make_grid(f, nrow, upscale=upscale) for f in frames]
    images += [images[-1]] * max(1, len(images) // 4)  # hold the final samples on screen
    duration = seconds / len(images)
    return _atomic_write(Path(path), lambda p: imageio.mimsave(p, images, format="GIF", duration=duration, loop=0))


def _pyplot():  # noqa: ANN202 - matplotlib.pyplot, imported lazily (it takes a second)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> Path:  # noqa: ANN001 - a matplotlib Figure
    """Write ``fig`` as a PNG atomically and close it."""
    plt = _pyplot()
    fig.tight_layout()

    def write(p: Path) -> None:
        fig.savefig(p, format="png")
        plt.close(fig)

    return _atomic_write(Path(path), write)


def save_loss_curve(steps: Sequence[int], losses: Sequence[float], path: str | Path, *, title: str = "training loss") -> Path:
    """PNG plot of the loss against the step, with a moving average."""
    fig, ax = _pyplot().subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
    window = max(1, len(losses) // 20)
    if len(losses) >= window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"moving average ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    return _save_figure(fig, Path(path))


def save_metric_curves(
    curves: dict[str, tuple[Sequence[int], Sequence[float], Sequence[float] | None]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """PNG with one panel per metric: value against the training step, with error bars.

    ``curves`` maps a label (e.g. "FD") to (steps, values, errors or None).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(1, len(curves)), figsize=(4.2 * max(1, len(curves)), 3.4), dpi=100, squeeze=False)
    for ax, (label, (steps, values, errors)) in zip(axes[0], curves.items()):
        ax.errorbar(steps, values, yerr=errors, marker="o", ms=3, capsize=2)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=8)
    return _save_figure(fig, Path(path))


def save_quality_vs_nfe(
    curves: dict[str, tuple[Sequence[int], Sequence[float]]],
    path: str | Path,
    *,
    ylabel: str = "FD",
    title: str = "",
) -> Path:
    """PNG of a sample metric against network calls per sample (log x axis): a line per sampler,
    a point for a sampler with one budget (a DDGAN's T). ``curves`` maps a label to (NFEs, values)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, (nfes, values) in curves.items():
        ax.plot(nfes, values, marker="o", ms=4, ls="-" if len(nfes) > 1 else "none", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")  # a diverging sampler's FD can be 10x the others'
    ticks: list[int] = []
    for n in sorted({n for nfes, _ in curves.values() for n in nfes}, reverse=True):
        if not ticks or ticks[-1] / n > 1.15:  # 2 steps - 1 Heun calls sit next to the budget: label the budget
            ticks.append(n)
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("network calls per sample (NFE)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    return _save_figure(fig, Path(path))


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
