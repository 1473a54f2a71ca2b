"""Objectives: loss = weighting x prediction error, and training-time sampling."""

from difflab.objectives.heat import heat_loss, levels_from_times, predict_less_blurred, process_loss, sample_levels
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
    "TIME_SAMPLINGS",
    "WEIGHTINGS",
    "TimeSampling",
    "Weighting",
    "diffusion_loss",
    "heat_loss",
    "levels_from_times",
    "loss_weight",
    "predict_less_blurred",
    "process_loss",
    "sample_levels",
    "sample_times",
]
