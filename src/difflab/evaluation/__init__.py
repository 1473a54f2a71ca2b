"""Evaluation: likelihoods (probability-flow ODE, variational bound) and sample quality."""

from difflab.evaluation.elbo import elbo_terms
from difflab.evaluation.flow import FlowResult, flow_nll
from difflab.evaluation.likelihood import METHODS, nll, to_bits_per_dim

__all__ = ["METHODS", "FlowResult", "elbo_terms", "flow_nll", "nll", "to_bits_per_dim"]
