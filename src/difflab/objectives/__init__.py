"""Objectives: loss = weighting x prediction error, and training-time sampling."""

from difflab.objectives.cld import CLD_WEIGHTINGS, CLDWeighting, hsm_loss, hsm_weight
from difflab.objectives.heat import (
    heat_loss,
    levels_from_times,
    predict_less_blurred,
    sample_levels,
)
from difflab.objectives.ldae import LDAE_SPACES, LDAESpace, dae_weight, ldae_loss
from difflab.objectives.losses import (
    TIME_SAMPLINGS,
    WEIGHTINGS,
    TimeSampling,
    Weighting,
    diffusion_loss,
    loss_weight,
    sample_times,
)

__all__ = [
    "CLD_WEIGHTINGS",
    "CLDWeighting",
    "hsm_loss",
    "hsm_weight",
    "LDAE_SPACES",
    "TIME_SAMPLINGS",
    "WEIGHTINGS",
    "LDAESpace",
    "TimeSampling",
    "Weighting",
    "dae_weight",
    "diffusion_loss",
    "heat_loss",
    "ldae_loss",
    "levels_from_times",
    "loss_weight",
    "predict_less_blurred",
    "sample_levels",
    "sample_times",
]
