"""Time grids, built apart from the solvers (as in k-diffusion's ``get_sigmas_*``).

A grid is a float64 tensor ``ts`` of ``steps + 1`` times, decreasing from ``t_max`` (usually
1) to exactly 0. A sampler takes one step per interval, so NFE = ``steps`` for first-order
solvers; the last step (to t = 0) returns the model's clean estimate.
"""

from __future__ import annotations

from typing import Literal

import torch

from difflab.errors import ConfigError, check_choice

GridName = Literal["uniform"]
GRIDS: dict[str, object] = {}


def uniform_grid(steps: int, *, t_max: float = 1.0, t_min: float = 0.0) -> torch.Tensor:
    """t_i = t_max - (t_max - t_min) i / steps for i = 0..steps, then 0 (DDPM/DDIM spacing)."""
    ts = torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)
    ts[-1] = 0.0
    return ts


GRIDS["uniform"] = uniform_grid


def time_grid(name: str, steps: int, **options: float) -> torch.Tensor:
    """The named grid with ``steps`` intervals; see ``GRIDS`` for the available names."""
    check_choice("grid", name, sorted(GRIDS))
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps={steps!r} must be a positive integer (the number of sampler steps)")
    return GRIDS[name](steps, **options)  # type: ignore[operator]
