"""Samplers: stateless functions with one signature, time grids built apart, one entry point."""

from difflab.samplers.api import (
    MODEL_SAMPLERS,
    SAMPLERS,
    auto_grid,
    auto_sampler,
    register_sampler,
    sample,
    sample_with_guidance,
    tune_grid,
)
from difflab.samplers.ddpm import sample_ancestral, sample_ddim
from difflab.samplers.denoiser import make_denoiser
from difflab.samplers.grids import GRIDS, karras_grid, logsnr_grid, quadratic_grid, time_grid, uniform_grid
from difflab.samplers.guidance import guided
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
    "MODEL_SAMPLERS",
    "SAMPLERS",
    "auto_grid",
    "auto_sampler",
    "guided",
    "karras_grid",
    "logsnr_grid",
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
    "sample_with_guidance",
    "time_grid",
    "tune_grid",
    "TunedGrid",
    "TunedGrids",
    "uniform_grid",
]
