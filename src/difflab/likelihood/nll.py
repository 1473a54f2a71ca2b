"""``difflab.nll``: negative log-likelihood in bits per dimension, by the ODE or the bound.

Both methods estimate ``-log p(x) / (D ln 2)`` with D the number of dimensions of one example:

========  ====================================================  =============================
method    estimate                                              discrete data (``levels``)
========  ====================================================  =============================
"ode"     exact likelihood of the probability-flow ODE          uniform dequantization, minus
          (``flow.flow_nll``)                                   D log(bin width)
"elbo"    variational bound, continuous or T-step time          discretized Gaussian decoder
          (``elbo.elbo_terms``), an upper bound on -log p(x)
========  ====================================================  =============================

For continuous data (``levels=None``) both are densities and can be checked against closed
forms (``difflab.processes.analytic.GaussianData``). For quantized data both give bits per
dimension of the discrete data (Ho et al. 2020, Sec. 4.2), comparable to published numbers.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from difflab.errors import check_choice, check_options
from difflab.likelihood.elbo import elbo_terms
from difflab.likelihood.flow import flow_nll
from difflab.likelihood.quantization import bin_width, check_on_grid, dequantize
from difflab.processes import DiagonalGaussianProcess, Prediction
from difflab.samplers.denoiser import ModelFn

Method = Literal["ode", "elbo"]
METHODS: tuple[str, ...] = ("ode", "elbo")
_SHARED = {"model", "process", "x", "prediction", "cond", "generator", "levels"}


def dimensions(x: torch.Tensor) -> int:
    """D: the number of scalars in one example of the batch x."""
    return math.prod(x.shape[1:])


def to_bits_per_dim(nats: torch.Tensor, dims: int) -> torch.Tensor:
    """Nats per example -> bits per dimension: nats / (D ln 2)."""
    return nats / (dims * math.log(2.0))


def ode_nats(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    x: torch.Tensor,
    *,
    prediction: Prediction,
    levels: int | None,
    cond: dict[str, Any] | None,
    generator: torch.Generator | None,
    **options: Any,
) -> torch.Tensor:
    """-log p(x) (continuous) or its dequantization bound -log P(x) (discrete), nats (B,)."""
    if levels is None:
        return flow_nll(model, process, x, prediction=prediction, cond=cond, generator=generator, **options).nll
    check_on_grid(x, levels)
    y = dequantize(x, levels, generator=generator)
    nats = flow_nll(model, process, y, prediction=prediction, cond=cond, generator=generator, **options).nll
    return nats - dimensions(x) * math.log(bin_width(levels))


def nll(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    x: torch.Tensor,
    method: Method = "ode",
    prediction: Prediction = "eps",
    *,
    levels: int | None = None,
    cond: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    **options: Any,
) -> torch.Tensor:
    """Negative log-likelihood of each example in bits per dimension, shape (B,), float64.

    Args:
        model: ``model(z_t, t, **cond) -> prediction`` in pixel space, t (B,) in [0, 1].
        process: the forward process the model was trained for.
        x: data (B, C, H, W) in [-1, 1] (any trailing layout for the identity basis).
        method: "ode" (probability-flow ODE, exact up to solver tolerance and the Hutchinson
            estimate) or "elbo" (variational bound, >= the model's true NLL).
        prediction: what the model predicts: "eps", "x0", "v" or "flow".
        levels: quantization levels of x (256 for 8-bit images, 17 for digits); None for
            continuous data, where the result is -log p(x) / (D ln 2) of the density.
        cond: keyword arguments for the model, e.g. ``{"class_labels": y}``.
        generator: RNG for probes, times, noise and dequantization, on x's device.
        **options: for "ode": divergence ("exact" | "hutchinson"), num_probes, rtol, atol,
            t_min (see ``flow.flow_nll``); for "elbo": time ("continuous" | "discrete"),
            steps, num_t, t_sampling, importance, t_min (see ``elbo.elbo_terms``).

    Example:
        >>> bpd = difflab.nll(model, process, x, method="elbo", levels=256, num_t=4)
    """
    check_choice("method", method, METHODS)
    check_options(f"nll(method='{method}')", flow_nll if method == "ode" else elbo_terms, options, _SHARED)
    if method == "ode":
        nats = ode_nats(model, process, x, prediction=prediction, levels=levels, cond=cond, generator=generator, **options)
    else:
        terms = elbo_terms(model, process, x, prediction=prediction, levels=levels, cond=cond, generator=generator, **options)
        nats = terms["prior"] + terms["diffusion"] + terms["decoder"]
    return to_bits_per_dim(nats, dimensions(x))
