"""``difflab.sample``: one entry point for every sampler, grid and process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from difflab.errors import ConfigError, check_choice, check_options
from difflab.processes import DiagonalGaussianProcess, Prediction
from difflab.processes.noise import Generator
from difflab.samplers.ddpm import sample_ancestral, sample_ddim
from difflab.samplers.denoiser import ModelFn, make_denoiser
from difflab.samplers.grids import grid_choices, time_grid
from difflab.samplers.guidance import NullCond, guided, null_label_of
from difflab.samplers.tuning import TUNED_T_MIN, TunedGrid, TunedGrids, check_times, optimize_grid
from difflab.samplers.ode import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
    sample_euler,
    sample_heun,
    sample_unipc,
)

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ancestral": sample_ancestral,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m": sample_dpmpp_3m,
    "unipc": sample_unipc,
}
STOCHASTIC_SAMPLERS: set[str] = {"ancestral", "dpmpp_2m_sde"}  # draw fresh noise at every step
# sampler="auto" / grid="auto": per process kind, the choice with the lowest error at 10-20 NFE
# on the benchmarks (benchmarks/samplers.py, docs/samplers.md). The grid depends on the
# process only, so every sampler sees the same grid in one call.
AUTO_SAMPLERS: dict[str, str] = {"gaussian": "dpmpp_2m", "blurring": "unipc"}
AUTO_GRIDS: dict[str, str] = {"gaussian": "logsnr", "blurring": "quadratic"}
AUTO_SAMPLER_FALLBACK = "dpmpp_2m"
AUTO_GRID_FALLBACK = "quadratic"  # other processes: needs nothing from the process, fair on both kinds


def check_denoiser_process(process: DiagonalGaussianProcess) -> None:
    """``ConfigError`` for a process whose network is not a denoiser (IHDM): these samplers do not apply."""
    if not getattr(process, "denoiser_samplers", True):
        raise ConfigError(f"process '{process.kind}' is sampled by its own model family "
                          f"('{process.default_family}'), not by the denoiser samplers: use "
                          "difflab.models (e.g. difflab.load_model(run).sample(n)) or difflab.samplers.sample_heat")


def register_sampler(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Make ``fn`` (with the shared sampler signature) available as ``sampler=name``."""
    SAMPLERS[name] = fn


def auto_sampler(process: DiagonalGaussianProcess) -> str:
    """The sampler ``sampler="auto"`` picks for this process (see docs/samplers.md)."""
    return AUTO_SAMPLERS.get(getattr(process, "kind", ""), AUTO_SAMPLER_FALLBACK)


def resolve_sampler(sampler: str, process: DiagonalGaussianProcess) -> str:
    """The sampler that actually runs: ``auto_sampler(process)`` for "auto", else ``sampler``
    (``ConfigError`` listing the names if it is neither)."""
    check_choice("sampler", sampler, ["auto", *sorted(SAMPLERS)])
    return auto_sampler(process) if sampler == "auto" else sampler


def network_evaluations(sampler: str, steps: int) -> int:
    """NFE of one ``sample`` call with ``steps`` grid intervals (2 steps - 1 for Heun, else steps)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def auto_grid(process: DiagonalGaussianProcess) -> str:
    """The grid ``grid="auto"`` picks for this process (see docs/samplers.md)."""
    return AUTO_GRIDS.get(getattr(process, "kind", ""), AUTO_GRID_FALLBACK)


# Parameters every sampler takes from ``sample`` itself; the rest are user options.
_SHARED_PARAMETERS = ("denoise", "process", "u", "ts", "generator", "callback")


def sample(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    shape: tuple[int, ...],
    sampler: str = "auto",
    steps: int = 20,
    prediction: Prediction = "eps",
    generator: Generator = None,
    noise: torch.Tensor | None = None,
    return_trajectory: bool = False,
    *,
    grid: GridSpec = "auto",
    cond: dict[str, Any] | None = None,
    guidance: float | None = None,
    null_label: int | NullCond | None = None,
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
        sampler: a name in ``SAMPLERS`` ("dpmpp_2m", "unipc", "heun", "ddim", "ancestral", ...),
            or "auto" for the process's best sampler on the benchmarks (``auto_sampler``).
        steps: number of grid intervals (NFE for all samplers except "heun": 2 steps - 1).
        generator: RNG for the initial noise and any stochastic steps: a torch.Generator, or a
            ``difflab.processes.noise.PerSampleGenerator`` (one stream per sample, so sample i
            does not depend on the batch it is drawn in).
        noise: the initial standard-normal tensor (overrides ``generator`` for it).
        return_trajectory: also return the list of z_t (pixel space) after each step.
        grid: time-grid name (see ``difflab.samplers.grids``), "auto" for the process's best
            fixed grid on the benchmark (``auto_grid``), or explicit times (``steps + 1`` of
            them, decreasing from <= 1 to 0), e.g. from ``tune_grid``, or a model's
            ``TunedGrids`` (its grid for this sampler and steps, else "auto").
        cond: keyword arguments passed to the model, e.g. ``{"class_labels": y}``.
        guidance: classifier-free guidance weight w (0: unconditional, 1: conditional, > 1:
            guided); needs ``cond["class_labels"]``. See ``difflab.samplers.guidance``.
        null_label: the model's unconditional label (default: ``model.config.num_classes``), or
            a function mapping ``cond`` to its unconditional version (several inputs).
        clip_x0: clip the clean estimate to [-clip_x0, clip_x0] (pixel space) at each step.
        **sampler_options: options of the chosen sampler, e.g. ``eta`` for DDIM.

    Returns:
        x_0 (B, C, H, W), and the trajectory if requested.
    """
    check_denoiser_process(process)
    sampler = resolve_sampler(sampler, process)
    if isinstance(grid, str):
        check_choice("grid", grid, grid_choices())
    fn = SAMPLERS[sampler]
    check_options(f"sampler '{sampler}'", fn, sampler_options, _SHARED_PARAMETERS)
    if noise is not None and tuple(noise.shape) != tuple(shape):
        raise ConfigError(f"noise has shape {tuple(noise.shape)} but shape={tuple(shape)} was requested")
    if guidance is not None:
        model = guided(model, guidance, null_label if null_label is not None else null_label_of(model))
    ts = grid_times(grid, steps, process, sampler)
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


GridSpec = str | Sequence[float] | torch.Tensor | TunedGrids


def grid_times(grid: GridSpec, steps: int, process: DiagonalGaussianProcess, sampler: str) -> torch.Tensor:
    """The float64 times (steps + 1,) that ``sample`` uses for ``grid`` and the (resolved) ``sampler``.

    A name ("auto": ``auto_grid``); explicit times (checked); or a model's ``TunedGrids``:
    its grid for (sampler, steps) if it has one, else the process's auto grid.
    """
    if isinstance(grid, TunedGrids):
        tuned = grid.get(sampler, steps)
        if tuned is not None:
            return tuned.as_tensor()
        grid = "auto"
    if isinstance(grid, str):
        return time_grid(auto_grid(process) if grid == "auto" else grid, steps, process=process)
    return check_times(grid, steps)


def grid_name(grid: GridSpec, steps: int, process: DiagonalGaussianProcess, sampler: str) -> str:
    """What ``grid_times`` picks, for reports: "tuned", "explicit" or the grid's name."""
    if isinstance(grid, TunedGrids) and grid.get(sampler, steps) is not None:
        return "tuned"
    if isinstance(grid, str) and grid != "auto":
        return grid
    return auto_grid(process) if isinstance(grid, (str, TunedGrids)) else "explicit"


def tune_grid(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    shape: tuple[int, ...],
    steps: int,
    sampler: str = "auto",
    prediction: Prediction = "eps",
    generator: Generator = None,
    *,
    cond: dict[str, Any] | None = None,
    clip_x0: float | None = None,
    t_min: float = TUNED_T_MIN,
    reference_steps: int = 400,
    max_evals: int = 200,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> TunedGrid:
    """A time grid of ``steps`` intervals tuned so ``sampler`` tracks this model's converged ODE solution.

    See ``difflab.samplers.tuning`` for the objective. ``shape`` (B, C, H, W) is the batch of
    initial noises it averages over (B = 16-64 is enough), drawn with ``generator``; ``cond``
    must then hold B labels for a class-conditional model. Pass the result's ``as_tensor()``
    as ``grid=`` to ``sample`` with the same sampler and steps. Deterministic samplers only.
    """
    check_denoiser_process(process)
    sampler = resolve_sampler(sampler, process)
    if sampler in STOCHASTIC_SAMPLERS:
        deterministic = sorted(set(SAMPLERS) - STOCHASTIC_SAMPLERS)
        raise ConfigError(f"grid tuning needs a deterministic ODE sampler, not '{sampler}'; use one of {deterministic}")
    z = process.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype)
    denoise = make_denoiser(model, process, prediction, cond=cond, clip_x0=clip_x0)
    with torch.no_grad():
        return optimize_grid(denoise, process, process.to_basis(z), steps, sampler=sampler,
                             sampler_fn=SAMPLERS[sampler], t_min=t_min, reference_steps=reference_steps,
                             max_evals=max_evals)
