"""Evaluation during training: ``difflab.evaluation.evaluate`` on the EMA weights every
``run.eval_every`` steps (issue 3).

Everything that can fail (reference data, feature extractor, Inception weights, image shape)
is set up when the ``Trainer`` is built, so a bad ``run.eval`` section fails before training
starts, not at the first evaluation. Each evaluation becomes one metrics.jsonl line::

    {"step": 500, "eval": {"fd": 3.1, "kid": 0.012, "kid_std": 0.002}, "protocol": "n=500, seed=0, ...",
     "seconds": 9.8}

It draws only from its own generators (seeded by ``run.eval.seed``), so it leaves the
training random streams, and hence exact resumption, untouched.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from difflab.evaluation.evaluate import SAMPLE_METRICS, evaluate
from difflab.evaluation.features import extract, resolve_extractor
from difflab.evaluation.report import COLUMNS
from difflab.models import GenerativeModel
from difflab.training.config import TrainConfig

NUMBER_KEYS = tuple(key for _, value, error in COLUMNS for key in (value, error) if key is not None)


class PeriodicEvaluator:
    """``evaluator(model) -> {"eval": numbers, "protocol": text}`` for a run's config.

    Builds, up front: the reference split of the run's dataset (``run.eval.split``) and, for
    FD/KID/IS, the feature extractor, checked on two reference images.
    """

    def __init__(self, config: TrainConfig) -> None:
        self.options = config.run.eval
        self.data = dataclasses.replace(config.data, split=self.options.split).load()
        self.sample_metrics = [m for m in self.options.metrics if m in SAMPLE_METRICS]
        self.extractor: nn.Module | None = None
        if self.sample_metrics:
            dataset = self.data.name.partition("/")[0]
            self.extractor = resolve_extractor(self.options.features, dataset,
                                               inception_weights=self.options.inception_weights)
            extract(self.extractor, self.data.images[:2])  # ConfigError if the extractor does not fit the images

    def __call__(self, model: GenerativeModel) -> dict[str, Any]:
        """Sample metrics and/or NLL of ``model`` (EMA weights, in eval mode) with their protocol."""
        o = self.options
        common = dict(seed=o.seed, ema=True, cache_dir=o.cache_dir)
        results = []
        if self.sample_metrics:  # sampler/steps None: the run.sample ones (the model's defaults)
            sampling = {"sampler": o.sampler, "steps": o.steps, "clip_x0": o.clip_x0 if o.clip_x0 is not None else 0.0}
            sampling = {k: v for k, v in sampling.items() if k in model.sample_options()}  # e.g. a VAE has none of them
            results.append(evaluate(model, self.data, metrics=self.sample_metrics, num_samples=o.num_samples,
                                    batch_size=o.batch_size, features=self.extractor, **sampling, **common))
        if "nll" in o.metrics:
            results.append(evaluate(model, self.data, metrics=("nll",), nll_examples=o.nll_examples, **common))
        numbers = {k: float(r[k]) for r in results for k in NUMBER_KEYS if k in r}
        return {"eval": numbers, "protocol": "; ".join(r["protocol_text"] for r in results)}

