"""Likelihoods of diffusion models, written once against the diagonal Gaussian core.

- ``nll(model, process, x, method="ode" | "elbo")``: bits/dim per example (``nll``);
- ``flow_nll``: the probability-flow ODE likelihood (``flow``);
- ``elbo_terms``: the variational bound, term by term (``elbo``), with importance-sampled
  times (``time_proposal``) and the discretized decoder for quantized data (``quantization``).

This layer sits between ``samplers`` (it uses their denoiser view of a network) and
``models`` (whose ``nll`` calls it).
"""

from difflab.likelihood.elbo import elbo_terms
from difflab.likelihood.flow import FlowResult, flow_nll
from difflab.likelihood.nll import METHODS, Method, nll, to_bits_per_dim

__all__ = ["METHODS", "FlowResult", "Method", "elbo_terms", "flow_nll", "nll", "to_bits_per_dim"]
