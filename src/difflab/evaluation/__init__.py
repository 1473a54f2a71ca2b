"""Evaluation: likelihoods (probability-flow ODE, variational bound) and sample quality.

- ``nll(model, process, x, method="ode" | "elbo")``: bits/dim per example (``likelihood``);
- ``frechet_distance`` / ``kernel_distance`` / ``inception_score`` on features (``quality``)
  from ``make_extractor("digits-cnn" | "mnist-cnn" | "inception")`` (``features``);
- ``evaluate`` / ``sweep``: numbers with their protocol, ``write_report`` for tables and plots.
"""

from difflab.evaluation.elbo import elbo_terms
from difflab.evaluation.evaluate import Protocol, evaluate, generate, sweep
from difflab.evaluation.features import EXTRACTORS, extract, make_extractor
from difflab.evaluation.flow import FlowResult, flow_nll
from difflab.evaluation.likelihood import METHODS, nll, to_bits_per_dim
from difflab.evaluation.quality import frechet_distance, inception_score, kernel_distance, reference_features
from difflab.evaluation.report import markdown_table, write_report

__all__ = [
    "EXTRACTORS",
    "METHODS",
    "FlowResult",
    "Protocol",
    "elbo_terms",
    "evaluate",
    "extract",
    "flow_nll",
    "frechet_distance",
    "generate",
    "inception_score",
    "kernel_distance",
    "make_extractor",
    "markdown_table",
    "nll",
    "reference_features",
    "sweep",
    "to_bits_per_dim",
    "write_report",
]
