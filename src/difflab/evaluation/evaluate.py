"""``evaluate(model, data) -> dict``: sample quality and likelihood with their protocol.

One call draws ``num_samples`` samples with a fixed seed (``model.sample``: per-sample seeds),
extracts features, compares them to the (cached) reference features of ``data`` with FD / KID
/ IS / precision / recall, and estimates the NLL in bits/dim on ``nll_examples`` data images
(``model.nll``; ``UnsupportedMetric`` for families without one). Every number comes back beside
the protocol that produced it (sample count, seed, sampler, steps, EMA or not, extractor,
reference), so a table row can always be reproduced. ``sweep`` repeats the sampling part over
samplers x steps for a quality-versus-NFE curve. The trainer calls ``evaluate`` periodically.

``model`` is any ``difflab.models.GenerativeModel``; a bare denoiser callable with its process,
``evaluate(net, process, data, prediction=...)``, is wrapped as a ``DiffusionModel``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from difflab.data import ImageDataset
from difflab.errors import ConfigError, check_choice
from difflab.evaluation.features import extract, resolve_extractor
from difflab.evaluation.precision_recall import precision_recall
from difflab.evaluation.quality import (
    frechet_distance,
    inception_score,
    kernel_distance,
    reference_features,
)
from difflab.evaluation.statistics import FeatureStatistics
from difflab.models import (
    DiffusionModel,
    GenerativeModel,
    UnsupportedMetric,
    model_device,
)
from difflab.processes import DiagonalGaussianProcess

MetricName = Literal["fd", "kid", "is", "precision", "recall", "nll"]
METRIC_NAMES: tuple[str, ...] = ("fd", "kid", "is", "precision", "recall", "nll")
METRIC_ALIASES = {"fid": "fd"}  # the usual name of FD with Inception features
SAMPLE_METRICS = ("fd", "kid", "is", "precision", "recall")
FEATURE_METRICS = ("kid", "precision", "recall")  # need the reference features, not just their statistics
Progress = Callable[[int, int], None]  # (images done, images in all), called after each sampling batch
PR_NEIGHBOURS = 3  # k of the k-NN manifolds (Kynkaenniemi et al. 2019 use k = 3)


@dataclass(frozen=True)
class Protocol:
    """How a number was measured; printed beside it."""

    num_samples: int  # samples drawn (sample metrics) or data images scored (NLL)
    seed: int
    sampler: str  # "-" for NLL
    steps: int  # 0 for NLL
    ema: bool | None  # None: unknown (a plain model callable)
    features: str  # extractor name, or the NLL method
    reference: str  # e.g. "mnist/test (10000 images)"
    prediction: str
    grid: str = "-"  # the sampler's time grid ("-" for NLL)

    def describe(self) -> str:
        ema = {True: "EMA", False: "raw weights", None: "weights n/a"}[self.ema]
        if self.sampler == "-":
            return f"n={self.num_samples} images of {self.reference}, seed={self.seed}, NLL by {self.features} ({ema})"
        return (f"n={self.num_samples}, seed={self.seed}, {self.sampler} {self.steps} steps, {ema}, "
                f"{self.features} vs {self.reference}, {self.grid} grid")


@dataclass(frozen=True)
class Reference:
    """Reference images with their cached features and logits, or only the statistics of their
    features (then ``features`` and ``logits`` are empty, and only FD and IS can be computed)."""

    images: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    name: str
    levels: int | None
    statistics: FeatureStatistics | None = None

    def describe(self) -> str:
        if self.statistics is not None:
            return f"{self.statistics.source} (reference statistics)"
        return f"{self.name} ({len(self.images)} images)"


def check_metrics(metrics: Sequence[str], model: GenerativeModel | None = None) -> tuple[str, ...]:
    """The metric names, validated and de-aliased ("fid" is "fd"); at least one; "nll" only for a
    ``model`` that has a likelihood."""
    metrics = [METRIC_ALIASES.get(m, m) for m in metrics]
    for m in metrics:
        check_choice("metric", m, [*METRIC_NAMES, *METRIC_ALIASES])
    if not metrics:
        raise ConfigError(f"no metrics requested; choose from {', '.join(METRIC_NAMES)}")
    if "nll" in metrics and model is not None and not model.has_likelihood:
        raise UnsupportedMetric(f"metric 'nll' is not defined for {model.family} models (no likelihood in difflab); "
                                f"choose from {', '.join(m for m in METRIC_NAMES if m != 'nll')}")
    return tuple(dict.fromkeys(metrics))


def as_model(model: Any, args: tuple[Any, ...], options: dict[str, Any]) -> tuple[GenerativeModel, ImageDataset]:
    """(model, data) from ``(model, data)`` or ``(net, process, data)`` with ``prediction``/``num_classes``
    in ``options`` (popped): a bare denoiser becomes a ``DiffusionModel``."""
    if isinstance(model, GenerativeModel):
        if len(args) != 1:
            raise ConfigError("evaluate(model, data, ...) takes a GenerativeModel and the reference data")
        return model, args[0]
    if len(args) != 2 or not isinstance(args[0], DiagonalGaussianProcess):
        raise ConfigError("evaluate needs (model, data) with a difflab model, or (net, process, data) with a denoiser")
    process, data = args
    defaults = {k: options.pop(k) if k in options else v for k, v in WRAP_DEFAULTS.items()}
    if defaults["clip_x0"] is None:
        defaults["clip_x0"] = 0.0  # None here meant "no clipping"
    wrapped = DiffusionModel.wrap(model, process, tuple(data.images.shape[1:]), prediction=options.pop("prediction", "eps"),
                                  num_classes=options.pop("num_classes", None), **defaults)
    return wrapped, data


def make_reference(
    data: ImageDataset, extractor: nn.Module, *, cache_dir: str | Path | None = None
) -> Reference:
    """Reference features of a dataset (``data.name`` like "mnist/test" names the cache entry)."""
    dataset, _, split = data.name.partition("/")
    feats, logits = reference_features(data.images, extractor, dataset=dataset, split=split or "all", cache_dir=cache_dir)
    return Reference(data.images, feats, logits, data.name, data.num_levels)


def statistics_reference(statistics: str | Path | FeatureStatistics, data: ImageDataset,
                         extractor: nn.Module) -> Reference:
    """A ``Reference`` holding only feature statistics (read from an ``.npz`` path), checked before
    anything is sampled: made by the same extractor (name and weight fingerprint, where the file
    records them; pytorch-fid's files do not) and of its feature size (on two blank images)."""
    stats = statistics if isinstance(statistics, FeatureStatistics) else FeatureStatistics.load(statistics)
    recorded = (stats.extractor, stats.fingerprint)
    if stats.extractor is not None and recorded != (extractor.name, extractor.fingerprint):
        raise ConfigError(f"the reference statistics ({stats.source}) were made with extractor '{stats.extractor}' "
                          f"({stats.fingerprint}), not '{extractor.name}' ({extractor.fingerprint}): pass "
                          f"--features {stats.extractor} or write them with --features {extractor.name}")
    dims = extract(extractor, torch.zeros(2, *data.images.shape[1:]))[0].shape[1]
    if dims != stats.dims:
        raise ConfigError(f"the reference statistics ({stats.source}) have d={stats.dims} features but extractor "
                          f"'{extractor.name}' gives {dims}: write them with --features {extractor.name}")
    empty = torch.empty(0)
    return Reference(data.images, empty, empty, data.name, data.num_levels, stats)


def sample_quality(
    samples: torch.Tensor, reference: Reference, extractor: nn.Module, metrics: Sequence[str], *, seed: int = 0
) -> dict[str, float]:
    """FD / KID (+ std) / IS (+ std) / precision / recall of ``samples`` against the reference, as requested."""
    feats, logits = extract(extractor, samples.clamp(-1, 1))
    out: dict[str, float] = {}
    if "precision" in metrics or "recall" in metrics:
        precision, recall = precision_recall(reference.features, feats, k=PR_NEIGHBOURS)
        out.update({k: v for k, v in (("precision", precision), ("recall", recall)) if k in metrics})
    if "fd" in metrics:
        stats = reference.statistics
        out["fd"] = stats.frechet_distance(feats) if stats is not None else frechet_distance(reference.features, feats)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kernel_distance(reference.features, feats, seed=seed)
    if "is" in metrics:
        out["is"], out["is_std"] = inception_score(logits, splits=min(10, len(logits)), seed=seed)
    return out


def likelihood_summary(
    model: GenerativeModel,
    reference: Reference,
    *,
    method: str = "elbo",
    num_examples: int = 256,
    batch_size: int = 128,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Mean NLL in bits/dim over ``num_examples`` reference images (a seeded subset) and its standard error."""
    n = min(num_examples, len(reference.images))
    idx = torch.randperm(len(reference.images), generator=torch.Generator().manual_seed(seed))[:n]
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)  # times, noise, probes
    bpd = torch.cat([
        model.nll(reference.images[idx[i : i + batch_size]].to(device), method, levels=reference.levels,
                  generator=generator, **options).cpu()
        for i in range(0, n, batch_size)
    ])
    se = bpd.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return {"nll": bpd.mean().item(), "nll_se": se, "nll_options": dict(options)}


WRAP_DEFAULTS = {"sampler": "ddim", "steps": 50, "clip_x0": 1.0}  # a bare denoiser's sampling defaults


def evaluate(
    model: GenerativeModel | Any,
    *args: Any,
    metrics: Sequence[MetricName] = ("fd", "kid", "is"),
    num_samples: int = 1000,
    seed: int = 0,
    batch_size: int = 250,
    ema: bool | None = None,
    features: str | nn.Module | None = None,
    inception_weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    nll_method: str | None = None,
    nll_examples: int = 256,
    nll_options: dict[str, Any] | None = None,
    reference_statistics: str | Path | FeatureStatistics | None = None,
    progress: Progress | None = None,
    **sample_options: Any,
) -> dict[str, Any]:
    """Evaluate a model against ``data`` (its reference split); returns numbers and protocol.

    ``evaluate(model, data, ...)`` for a ``GenerativeModel``, or ``evaluate(net, process, data,
    prediction=..., num_classes=...)`` for a bare denoiser (sampled by default with DDIM, 50
    steps, clip_x0 = 1). Either sample metrics (any of "fd", "kid", "is", "precision",
    "recall") for one sampler and step count, or "nll" alone (it does not depend on the
    sampler); ``sweep`` makes a full table.

    Args:
        data: the reference dataset, e.g. ``load_dataset("mnist", split="test")``.
        metrics: sample metrics and/or "nll" (bits/dim on ``data``; ``UnsupportedMetric`` for
            families without a likelihood).
        features: extractor name (default by dataset: digits-cnn, mnist-cnn, else inception)
            or a module (see ``features.resolve_extractor``).
        reference_statistics: an ``.npz`` of reference feature statistics (pytorch-fid's layout;
            ``statistics.FeatureStatistics``) to score FD against instead of ``data``'s features;
            only "fd" and "is" can use them. They must come from the same extractor.
        progress: called with (images done, images in all) after each sampling batch.
        ema: whether ``model`` holds EMA weights (recorded in the protocol).
        **sample_options: go to ``model.sample`` (sampler, steps, grid, clip_x0, eta, guidance,
            ...; left out or None: the model's defaults). Class-conditional models get labels
            0, 1, ..., K-1, 0, ... (balanced).

    Returns:
        the requested numbers (``kid_std``/``is_std`` beside KID/IS) and ``"nfe"``, or
        ``{"nll", "nll_se", "nll_options"}``, plus ``"protocol"`` (dict) and ``"protocol_text"``.
    """
    model, data = as_model(model, args, sample_options)
    metrics = check_metrics(metrics, model)
    wanted = [m for m in metrics if m in SAMPLE_METRICS]
    if wanted and "nll" in metrics:
        raise ConfigError("evaluate() takes sample metrics or 'nll', not both; use sweep() for a full table")
    reference_name = f"{data.name} ({len(data)} images)"
    statistics_only = sorted(set(wanted) & set(FEATURE_METRICS)) if reference_statistics is not None else []
    if statistics_only:
        raise ConfigError(f"reference statistics hold a mean and a covariance only: they score fd and is, not "
                          f"{', '.join(statistics_only)}; drop those metrics or the statistics")
    prediction = str(getattr(model, "prediction", "-"))
    if not wanted:
        reference = Reference(data.images, torch.empty(0), torch.empty(0), data.name, data.num_levels)
        nll_method = nll_method or model.nll_methods[0]
        check_choice("nll method", nll_method, model.nll_methods)
        result = likelihood_summary(model, reference, method=nll_method, num_examples=nll_examples, seed=seed,
                                    **(nll_options or {}))
        method = nll_method + "".join(f", {k}={v}" for k, v in (nll_options or {}).items())
        protocol = Protocol(min(nll_examples, len(data)), seed, "-", 0, ema, method, reference_name, prediction)
    else:
        extractor = resolve_extractor(features, data.name.partition("/")[0], inception_weights=inception_weights)
        if reference_statistics is None:
            reference = make_reference(data, extractor, cache_dir=cache_dir)
        else:
            reference = statistics_reference(reference_statistics, data, extractor)
            reference_name = reference.describe()
        how = model.sampling_protocol(**sample_options)
        samples = model.sample(num_samples, seed=seed, batch_size=batch_size, progress=progress, **sample_options)
        result = {**sample_quality(samples, reference, extractor, wanted, seed=seed), "nfe": how["nfe"]}
        protocol = Protocol(num_samples, seed, how["sampler"], how["steps"], ema, extractor.name, reference_name,
                            prediction, grid=how["grid"])
    return {**result, "protocol": asdict(protocol), "protocol_text": protocol.describe()}


def sweep(
    model: GenerativeModel | Any,
    *args: Any,
    samplers: Sequence[str],
    steps: Sequence[int],
    **options: Any,
) -> list[dict[str, Any]]:
    """``evaluate`` for every sampler x step count (sample metrics only), one row each.

    Takes ``(model, data)`` or ``(net, process, data)`` as ``evaluate``. NLL, if requested in
    ``options["metrics"]``, is computed once and returned as its own row (sampler "-", steps 0):
    it does not depend on the sampler. Everything is validated before the first sample is drawn.
    """
    options = dict(options)
    model, data = as_model(model, args, options)
    metrics = check_metrics(options.pop("metrics", ("fd", "kid", "is")), model)
    rows = []
    sample_metrics = [m for m in metrics if m in SAMPLE_METRICS]
    for name in samplers:  # every sampler/steps pair checked before the first (slow) evaluation
        for n in steps if sample_metrics else ():
            model.sampling_protocol(sampler=name, steps=n, **{k: v for k, v in options.items() if k in SAMPLING_KEYS})
    for name in samplers:
        for n in steps:
            if sample_metrics:
                row = evaluate(model, data, metrics=sample_metrics, sampler=name, steps=n, **options)
                rows.append({"sampler": name or row["protocol"]["sampler"], "steps": n or row["protocol"]["steps"], **row})
    if "nll" in metrics:
        nll_options = {k: v for k, v in options.items() if k not in SAMPLING_KEYS}
        row = evaluate(model, data, metrics=("nll",), **nll_options)
        rows.append({"sampler": "-", "steps": 0, **row})
    return rows


SAMPLING_KEYS = ("grid", "clip_x0", "eta", "guidance", "delta", "sampler_options")
