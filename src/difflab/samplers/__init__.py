"""Samplers: stateless functions with one signature, time grids built apart, one entry point."""

from difflab.samplers.api import (
    SAMPLERS,
    auto_grid,
    auto_sampler,
    register_sampler,
    sample,
    tune_grid,
)
from difflab.samplers.ddpm import sample_ancestral, sample_ddim
from difflab.samplers.denoiser import make_denoiser
from difflab.samplers.grids import GRIDS, karras_grid, logsnr_grid, quadratic_grid, time_grid, uniform_grid
from difflab.samplers.guidance import class_labels, guided, null_labels
from difflab.samplers.heat import sample_heat
from difflab.samplers.tuning import TunedGrid, TunedGrids
from difflab.samplers.ode import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
    sample_euler,
    sample_heun,
    sample_unipc,
)

__all__ = [
    "GRIDS",
    "SAMPLERS",
    "auto_grid",
    "auto_sampler",
    "class_labels",
    "guided",
    "karras_grid",
    "logsnr_grid",
    "null_labels",
    "make_denoiser",
    "quadratic_grid",
    "register_sampler",
    "sample",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m",
    "sample_euler",
    "sample_heat",
    "sample_heun",
    "sample_unipc",
    "time_grid",
    "tune_grid",
    "TunedGrid",
    "TunedGrids",
    "uniform_grid",
]
