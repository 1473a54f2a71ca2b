"""``difflab.sample``: one entry point for every sampler, grid and process."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from difflab.errors import ConfigError, check_choice
from difflab.processes import DiagonalGaussianProcess, Prediction
from difflab.samplers.ddpm import sample_ancestral, sample_ddim
from difflab.samplers.denoiser import ModelFn, make_denoiser
from difflab.samplers.grids import time_grid
from difflab.samplers.heat import sample_heat

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "ihdm": sample_heat,
}
# Samplers that drive the model themselves, ``fn(model, process, shape, *, steps, generator,
# noise, return_trajectory, cond, device, dtype, **options)``: IHDM predicts the next level.
MODEL_SAMPLERS: set[str] = {"ihdm"}


def register_sampler(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Make ``fn`` (with the shared sampler signature) available as ``sampler=name``."""
    SAMPLERS[name] = fn


def _check_options(name: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
    shared = {"denoise", "model", "process", "u", "ts", "shape", "steps", "generator", "callback", "noise",
              "return_trajectory", "cond", "device", "dtype"}
    allowed = [p for p in inspect.signature(fn).parameters if p not in shared]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"sampler '{name}' has no option(s) {unknown}; its options are: {allowed or 'none'}")


def sample(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    shape: tuple[int, ...],
    sampler: str = "ddim",
    steps: int = 50,
    prediction: Prediction = "eps",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    return_trajectory: bool = False,
    *,
    grid: str = "uniform",
    cond: dict[str, Any] | None = None,
    clip_x0: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **sampler_options: Any,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Draw samples x_0 of ``shape`` (B, C, H, W) by integrating the reverse process.

    Args:
        model: any callable ``model(z_t, t, **cond)`` with z_t (B, C, H, W) in pixel space
            and t (B,) in [0, 1], returning the ``prediction`` (eps, x0 or v) in pixel space.
        process: the forward process the model was trained for.
        sampler: a name in ``SAMPLERS`` ("ancestral", "ddim", ...).
        steps: number of grid intervals (network evaluations for first-order samplers).
        generator: RNG for the initial noise and any stochastic steps.
        noise: the initial standard-normal tensor (overrides ``generator`` for it).
        return_trajectory: also return the list of z_t (pixel space) after each step.
        grid: time-grid name (see ``difflab.samplers.grids``).
        cond: keyword arguments passed to the model, e.g. ``{"class_labels": y}``.
        clip_x0: clip the clean estimate to [-clip_x0, clip_x0] (pixel space) at each step.
        **sampler_options: options of the chosen sampler, e.g. ``eta`` for DDIM.

    Returns:
        x_0 (B, C, H, W), and the trajectory if requested.
    """
    check_choice("sampler", sampler, sorted(SAMPLERS))
    fn = SAMPLERS[sampler]
    _check_options(sampler, fn, sampler_options)
    if noise is not None and tuple(noise.shape) != tuple(shape):
        raise ConfigError(f"noise has shape {tuple(noise.shape)} but shape={tuple(shape)} was requested")
    if sampler in MODEL_SAMPLERS:
        return fn(model, process, tuple(shape), steps=steps, generator=generator, noise=noise,
                  return_trajectory=return_trajectory, cond=cond, device=device, dtype=dtype, **sampler_options)
    ts = time_grid(grid, steps)
    z = process.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype, noise=noise)
    trajectory: list[torch.Tensor] = []

    def record(i: int, t: torch.Tensor, u_t: torch.Tensor, u_0: torch.Tensor) -> None:
        trajectory.append(process.from_basis(u_t).cpu())

    denoise = make_denoiser(model, process, prediction, cond=cond, clip_x0=clip_x0)
    u_0 = fn(denoise, process, process.to_basis(z), ts, generator=generator,
             callback=record if return_trajectory else None, **sampler_options)
    x_0 = process.from_basis(u_0)
    if return_trajectory:
        return x_0, trajectory + [x_0.cpu()]
    return x_0
