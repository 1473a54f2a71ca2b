"""Evaluation: sample quality and likelihood of any ``difflab.models.GenerativeModel``.

- ``nll(model, process, x, method="ode" | "elbo")``: bits/dim per example (``difflab.likelihood``);
- ``frechet_distance`` / ``kernel_distance`` / ``inception_score`` on features (``quality``),
  ``precision_recall`` (k-NN manifolds, ``precision_recall``)
  from ``make_extractor("digits-cnn" | "mnist-cnn" | "inception")`` (``features``);
- ``evaluate`` / ``sweep``: numbers with their protocol, ``write_report`` for tables and plots.
"""

from difflab.likelihood.elbo import elbo_terms
from difflab.evaluation.evaluate import Protocol, evaluate, sweep
from difflab.evaluation.precision_recall import precision_recall
from difflab.evaluation.features import EXTRACTORS, extract, make_extractor
from difflab.likelihood.flow import FlowResult, flow_nll
from difflab.likelihood.nll import METHODS, nll, to_bits_per_dim
from difflab.evaluation.quality import frechet_distance, inception_score, kernel_distance, reference_features
from difflab.evaluation.report import markdown_table, write_report
from difflab.evaluation.statistics import FeatureStatistics

__all__ = [
    "EXTRACTORS",
    "FeatureStatistics",
    "METHODS",
    "FlowResult",
    "Protocol",
    "elbo_terms",
    "evaluate",
    "extract",
    "flow_nll",
    "frechet_distance",
    "inception_score",
    "kernel_distance",
    "make_extractor",
    "markdown_table",
    "nll",
    "precision_recall",
    "reference_features",
    "sweep",
    "to_bits_per_dim",
    "write_report",
]
