"""Forward processes: bases, schedules, marginals, posteriors and prediction views."""

from difflab.processes.bases import (
    Basis,
    DCTBasis,
    IdentityBasis,
    dct_frequencies_squared,
    dct_matrix,
)
from difflab.processes.build import PROCESSES, build_process
from difflab.processes.cld import CLD, CriticallyDamped, cholesky_2x2
from difflab.processes.diffusion import (
    BlurringDiffusion,
    DiagonalGaussianProcess,
    GaussianDiffusion,
)
from difflab.processes.heat import HeatDissipation, HeatPrior, fit_heat_prior
from difflab.processes.latent import NOISE_LEVELS, DAEDiffusion, LatentDiffusion
from difflab.processes.predictions import (
    PREDICTIONS,
    Prediction,
    make_target,
    split_prediction,
    x0_error_factor,
)
from difflab.processes.schedules import CosineLogSNR, LinearDDPM, make_schedule
from difflab.processes.tokenizers import Tokenizer

__all__ = [
    "CLD",
    "CriticallyDamped",
    "cholesky_2x2",
    "NOISE_LEVELS",
    "PREDICTIONS",
    "PROCESSES",
    "Basis",
    "BlurringDiffusion",
    "CosineLogSNR",
    "DAEDiffusion",
    "DCTBasis",
    "DiagonalGaussianProcess",
    "GaussianDiffusion",
    "HeatDissipation",
    "HeatPrior",
    "IdentityBasis",
    "LatentDiffusion",
    "LinearDDPM",
    "Prediction",
    "Tokenizer",
    "build_process",
    "dct_frequencies_squared",
    "dct_matrix",
    "fit_heat_prior",
    "make_schedule",
    "make_target",
    "split_prediction",
    "x0_error_factor",
]
