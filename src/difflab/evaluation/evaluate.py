"""``evaluate(model, process, data) -> dict``: sample quality and likelihood with their protocol.

One call draws ``num_samples`` samples with a fixed seed, extracts features, compares them to
the (cached) reference features of ``data`` with FD / KID / IS, and estimates the NLL in
bits/dim on ``nll_examples`` data images. Every number comes back beside the protocol that
produced it (sample count, seed, sampler, steps, EMA or not, extractor, reference), so a
table row can always be reproduced. ``sweep`` repeats the sampling part over samplers x steps
for a quality-versus-NFE curve. The trainer can call ``evaluate`` periodically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from difflab.data import ImageDataset
from difflab.errors import ConfigError, check_choice
from difflab.evaluation.features import extract, resolve_extractor
from difflab.evaluation.likelihood import Method, nll
from difflab.evaluation.quality import frechet_distance, inception_score, kernel_distance, reference_features
from difflab.processes import DiagonalGaussianProcess, Prediction
from difflab.samplers import sample
from difflab.samplers.api import GridSpec, grid_name, network_evaluations, resolve_sampler
from difflab.samplers.denoiser import ModelFn

MetricName = Literal["fd", "kid", "is", "nll"]
METRIC_NAMES: tuple[str, ...] = ("fd", "kid", "is", "nll")
SAMPLE_METRICS = ("fd", "kid", "is")


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


def model_device(model: ModelFn) -> torch.device:
    """Where a network's parameters live (CPU for plain callables)."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    return params[0].device if params else torch.device("cpu")


@dataclass(frozen=True)
class Reference:
    """Reference images with their cached features and logits."""

    images: torch.Tensor
    features: torch.Tensor
    logits: torch.Tensor
    name: str
    levels: int | None

    def describe(self) -> str:
        return f"{self.name} ({len(self.images)} images)"


def check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    """The metric names, validated; at least one."""
    for m in metrics:
        check_choice("metric", m, METRIC_NAMES)
    if not metrics:
        raise ConfigError(f"no metrics requested; choose from {', '.join(METRIC_NAMES)}")
    return tuple(dict.fromkeys(metrics))


def make_reference(
    data: ImageDataset, extractor: nn.Module, *, cache_dir: str | Path | None = None
) -> Reference:
    """Reference features of a dataset (``data.name`` like "mnist/test" names the cache entry)."""
    dataset, _, split = data.name.partition("/")
    feats, logits = reference_features(data.images, extractor, dataset=dataset, split=split or "all", cache_dir=cache_dir)
    return Reference(data.images, feats, logits, data.name, data.num_levels)


def balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """n class labels, every class equally often (up to one), in random order."""
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=generator)]


@torch.no_grad()
def generate(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    shape: tuple[int, ...],
    *,
    num_samples: int,
    sampler: str = "ddim",
    steps: int = 50,
    prediction: Prediction = "eps",
    seed: int = 0,
    batch_size: int = 250,
    num_classes: int | None = None,
    labels: torch.Tensor | None = None,
    clip_x0: float | None = 1.0,
    **sampler_options: Any,
) -> torch.Tensor:
    """``num_samples`` samples (N, *shape) on the CPU, drawn in batches from one generator seeded with ``seed``.

    The one sample-drawing path of difflab: ``evaluate``, training previews, periodic
    evaluation and ``difflab sample`` all call it, so a loaded checkpoint reproduces the
    in-memory model exactly. Class-conditional models (``num_classes``) get ``labels`` (N,)
    if given, else balanced random labels, as ``class_labels``. ``sampler_options`` go to
    the sampler (e.g. ``eta`` for DDIM). A network should be in eval mode (``load_for_sampling``
    returns it so); it is not switched here.
    """
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(f"num_samples={num_samples} and batch_size={batch_size} must be positive")
    if labels is not None and tuple(labels.shape) != (num_samples,):
        raise ConfigError(f"labels must have shape ({num_samples},), got {tuple(labels.shape)}")
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)  # noise, on the model's device
    if labels is None and num_classes:
        labels = balanced_labels(num_samples, num_classes, torch.Generator().manual_seed(seed))
    out = []
    for start in range(0, num_samples, batch_size):
        b = min(batch_size, num_samples - start)
        cond = None if labels is None else {"class_labels": labels[start : start + b].to(device)}
        x = sample(model, process, (b, *shape), sampler, steps, prediction, generator,
                   cond=cond, clip_x0=clip_x0, device=device, **sampler_options)
        out.append(x.detach().cpu().float())
    return torch.cat(out)


def sample_quality(
    samples: torch.Tensor, reference: Reference, extractor: nn.Module, metrics: Sequence[str], *, seed: int = 0
) -> dict[str, float]:
    """FD / KID (+ std) / IS (+ std) of ``samples`` against the reference, for the requested metrics."""
    feats, logits = extract(extractor, samples.clamp(-1, 1))
    out: dict[str, float] = {}
    if "fd" in metrics:
        out["fd"] = frechet_distance(reference.features, feats)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kernel_distance(reference.features, feats, seed=seed)
    if "is" in metrics:
        out["is"], out["is_std"] = inception_score(logits, splits=min(10, len(logits)), seed=seed)
    return out


def likelihood_summary(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    reference: Reference,
    *,
    method: Method = "elbo",
    num_examples: int = 256,
    batch_size: int = 128,
    prediction: Prediction = "eps",
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Mean NLL in bits/dim over ``num_examples`` reference images (a seeded subset) and its standard error."""
    n = min(num_examples, len(reference.images))
    idx = torch.randperm(len(reference.images), generator=torch.Generator().manual_seed(seed))[:n]
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(seed)  # times, noise, probes
    bpd = torch.cat([
        nll(model, process, reference.images[idx[i : i + batch_size]].to(device), method, prediction,
            levels=reference.levels, generator=generator, **options).cpu()
        for i in range(0, n, batch_size)
    ])
    se = bpd.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return {"nll": bpd.mean().item(), "nll_se": se, "nll_options": dict(options)}


def evaluate(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    data: ImageDataset,
    *,
    metrics: Sequence[MetricName] = ("fd", "kid", "is"),
    num_samples: int = 1000,
    sampler: str = "ddim",
    steps: int = 50,
    grid: GridSpec = "auto",
    prediction: Prediction = "eps",
    seed: int = 0,
    batch_size: int = 250,
    ema: bool | None = None,
    num_classes: int | None = None,
    clip_x0: float | None = 1.0,
    features: str | nn.Module | None = None,
    inception_weights: str | Path | None = None,
    cache_dir: str | Path | None = None,
    nll_method: Method = "elbo",
    nll_examples: int = 256,
    nll_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a model against ``data`` (its reference split); returns numbers and protocol.

    Either sample metrics (any of "fd", "kid", "is") for one sampler and step count, or
    "nll" alone (it does not depend on the sampler); ``sweep`` makes a full table.

    Args:
        model: ``model(z_t, t, **cond) -> prediction``; sampled with ``difflab.sample``.
        data: the reference dataset, e.g. ``load_dataset("mnist", split="test")``.
        metrics: any of "fd", "kid", "is" (on samples) and "nll" (bits/dim on ``data``).
        grid: the sampler's time grid (as in ``difflab.sample``: a name, times, or a model's
            ``TunedGrids``), recorded in the protocol.
        features: extractor name (default by dataset: digits-cnn, mnist-cnn, else inception)
            or a module (see ``features.resolve_extractor``).
        ema: whether ``model`` holds EMA weights (recorded in the protocol).
        num_classes: for class-conditional models: sample with balanced labels.
        clip_x0: clip the clean estimate while sampling (None for blurring processes).

    Returns:
        ``{"fd", "kid", "kid_std", "is", "is_std", "nfe"}`` (the requested ones) or
        ``{"nll", "nll_se", "nll_options"}``, plus ``"protocol"`` (dict) and ``"protocol_text"``.
    """
    metrics = check_metrics(metrics)
    wanted = [m for m in metrics if m in SAMPLE_METRICS]
    if wanted and "nll" in metrics:
        raise ConfigError("evaluate() takes sample metrics or 'nll', not both; use sweep() for a full table")
    reference_name = f"{data.name} ({len(data)} images)"
    if not wanted:
        reference = Reference(data.images, torch.empty(0), torch.empty(0), data.name, data.num_levels)
        result = likelihood_summary(model, process, reference, method=nll_method, num_examples=nll_examples,
                                    prediction=prediction, seed=seed, **(nll_options or {}))
        method = nll_method + "".join(f", {k}={v}" for k, v in (nll_options or {}).items())
        protocol = Protocol(min(nll_examples, len(data)), seed, "-", 0, ema, method, reference_name, prediction)
    else:
        extractor = resolve_extractor(features, data.name.partition("/")[0], inception_weights=inception_weights)
        reference = make_reference(data, extractor, cache_dir=cache_dir)
        samples = generate(model, process, tuple(data.images.shape[1:]), num_samples=num_samples, sampler=sampler,
                           steps=steps, grid=grid, prediction=prediction, seed=seed, batch_size=batch_size,
                           num_classes=num_classes, clip_x0=clip_x0)
        ran = resolve_sampler(sampler, process)
        nfe = network_evaluations(ran, steps)
        result = {**sample_quality(samples, reference, extractor, wanted, seed=seed), "nfe": nfe}
        label = f"auto = {ran}" if sampler == "auto" else sampler
        protocol = Protocol(num_samples, seed, label, steps, ema, extractor.name, reference_name, prediction,
                            grid=grid_name(grid, steps, process, ran))
    return {**result, "protocol": asdict(protocol), "protocol_text": protocol.describe()}


def sweep(
    model: ModelFn,
    process: DiagonalGaussianProcess,
    data: ImageDataset,
    *,
    samplers: Sequence[str],
    steps: Sequence[int],
    **options: Any,
) -> list[dict[str, Any]]:
    """``evaluate`` for every sampler x step count (sample metrics only), one row each.

    NLL, if requested in ``options["metrics"]``, is computed once and returned as its own row
    (sampler "-", steps 0): it does not depend on the sampler.
    """
    options = dict(options)
    metrics = check_metrics(options.pop("metrics", ("fd", "kid", "is")))
    rows = []
    sample_metrics = [m for m in metrics if m in SAMPLE_METRICS]
    for name in samplers:
        for n in steps:
            if sample_metrics:
                row = evaluate(model, process, data, metrics=sample_metrics, sampler=name, steps=n, **options)
                rows.append({"sampler": name, "steps": n, **row})
    if "nll" in metrics:
        row = evaluate(model, process, data, metrics=("nll",), sampler="-", steps=0, **options)
        rows.append({"sampler": "-", "steps": 0, **row})
    return rows
