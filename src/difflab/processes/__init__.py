"""Forward processes: bases, schedules, marginals, posteriors and prediction views."""

from difflab.processes.bases import Basis, DCTBasis, IdentityBasis, dct_frequencies_squared, dct_matrix
from difflab.processes.diffusion import (
    PROCESSES,
    BlurringDiffusion,
    DiagonalGaussianProcess,
    GaussianDiffusion,
    build_process,
    register_process,
)
from difflab.processes.heat import HeatDissipation, HeatPrior, fit_heat_prior
from difflab.processes.predictions import PREDICTIONS, Prediction, make_target, split_prediction, x0_error_factor
from difflab.processes.schedules import CosineLogSNR, LinearDDPM, make_schedule

__all__ = [
    "PREDICTIONS",
    "PROCESSES",
    "Basis",
    "BlurringDiffusion",
    "CosineLogSNR",
    "DCTBasis",
    "DiagonalGaussianProcess",
    "GaussianDiffusion",
    "HeatDissipation",
    "HeatPrior",
    "IdentityBasis",
    "LinearDDPM",
    "Prediction",
    "build_process",
    "dct_frequencies_squared",
    "dct_matrix",
    "fit_heat_prior",
    "make_schedule",
    "make_target",
    "register_process",
    "split_prediction",
    "x0_error_factor",
]
