"""Objectives: loss = weighting x prediction error, and training-time sampling."""

from difflab.objectives.losses import (
    TIME_SAMPLINGS,
    WEIGHTINGS,
    TimeSampling,
    Weighting,
    diffusion_loss,
    loss_weight,
    sample_times,
)

__all__ = ["TIME_SAMPLINGS", "WEIGHTINGS", "TimeSampling", "Weighting", "diffusion_loss", "loss_weight", "sample_times"]
