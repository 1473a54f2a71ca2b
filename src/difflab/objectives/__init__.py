"""Objectives: loss = weighting x prediction error, and training-time sampling."""

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
    "LDAE_SPACES",
    "TIME_SAMPLINGS",
    "WEIGHTINGS",
    "LDAESpace",
    "TimeSampling",
    "Weighting",
    "dae_weight",
    "diffusion_loss",
    "ldae_loss",
    "loss_weight",
    "sample_times",
]
