"""Samplers: stateless functions with one signature, time grids built apart, one entry point."""

from difflab.samplers.api import MODEL_SAMPLERS, SAMPLERS, register_sampler, sample
from difflab.samplers.ddpm import sample_ancestral, sample_ddim
from difflab.samplers.denoiser import make_denoiser
from difflab.samplers.grids import GRIDS, time_grid, uniform_grid
from difflab.samplers.heat import sample_heat

__all__ = [
    "GRIDS",
    "MODEL_SAMPLERS",
    "SAMPLERS",
    "make_denoiser",
    "register_sampler",
    "sample",
    "sample_ancestral",
    "sample_ddim",
    "sample_heat",
    "time_grid",
    "uniform_grid",
]
