"""The ``run`` section of a training config: outputs, logging, previews, periodic evaluation.

``RunConfig`` holds ``SampleConfig`` (preview grids, and ``difflab sample``'s defaults) and
``EvalConfig`` (``run.eval_every``). Every field is validated on construction with a one-line
``ConfigError``; cross-section checks live in ``difflab.training.config.check_consistency``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Literal

from difflab.data.load import Split
from difflab.errors import ConfigError, check_choice
from difflab.evaluation.evaluate import METRIC_NAMES, MetricName
from difflab.evaluation.features import EXTRACTORS, ExtractorName, default_extractor
from difflab.samplers import SAMPLERS
from difflab.training.fields import MAX_SEED, check_range

OnNonFinite = Literal["stop", "skip"]


@dataclass(frozen=True)
class SampleConfig:
    """How preview grids (and ``difflab sample`` by default) draw samples."""

    sampler: str = "ddim"
    """A name in ``difflab.samplers.SAMPLERS`` ("ddim", "ancestral", ...)."""
    steps: int = 50
    """Sampler steps (network evaluations for first-order samplers); 50 is a usual DDIM budget."""
    num: int = 64
    """Images per preview grid (an 8 x 8 grid)."""
    eta: float | None = None
    """DDIM stochasticity (0 = deterministic DDIM, 1 = DDPM-like); None = the sampler's default."""
    clip_x0: float | None = 1.0
    """Clip the clean estimate to [-clip_x0, clip_x0] at each step; 1 matches images in [-1, 1]."""

    def __post_init__(self) -> None:  # the sampler name is checked against the model family (check_consistency)
        if self.eta is not None and "eta" not in inspect.signature(SAMPLERS.get(self.sampler, len)).parameters:
            raise ConfigError(f"run.sample.eta is set but sampler {self.sampler!r} has no eta; remove it or use ddim")
        check_range("run.sample.steps", self.steps, 1)
        check_range("run.sample.num", self.num, 1, 4096)
        if self.eta is not None:
            check_range("run.sample.eta", self.eta, 0.0, 1.0)
        if self.clip_x0 is not None:
            check_range("run.sample.clip_x0", self.clip_x0, 0.0, low_open=True)


@dataclass(frozen=True)
class EvalConfig:
    """Periodic evaluation during training (``run.eval_every``): ``difflab.evaluation.evaluate``
    on the EMA weights, logged to metrics.jsonl and plotted in eval.png.

    Digits and MNIST use the shipped classifier features (digits-cnn, mnist-cnn), so FD/KID/IS
    run offline. Any other data (CIFAR-10, image folders) needs Inception-v3: install
    torch-fidelity and set ``inception_weights`` to a local copy of the standard FID weights
    file, or evaluate only ``nll``.
    """

    metrics: tuple[MetricName, ...] = ("fd", "kid")
    """Any of "fd" (Frechet distance on classifier/Inception features), "kid" (kernel
    distance, unbiased, so comparable across sample counts), "is" (Inception-style score) and
    "nll" (bits/dim by the variational bound on ``nll_examples`` reference images). FD and KID
    are the default: FD is the standard number, KID has an error bar at small sample counts."""
    num_samples: int = 500
    """Samples drawn per evaluation (at least 2). FD is biased upwards at small counts, so
    compare numbers only at equal ``num_samples``; 500 takes ~10 s on one CPU core for digits."""
    sampler: str | None = None
    """A sampler of the model family (``difflab.samplers.SAMPLERS`` for diffusion); null = the
    run's ``run.sample.sampler`` (DDIM in the shipped diffusion configs: its curve is smooth)."""
    steps: int | None = None
    """Sampler steps (network evaluations per sample); null = ``run.sample.steps``."""
    clip_x0: float | None = 1.0
    """Clip the clean estimate to [-clip_x0, clip_x0] while sampling; null for blurring
    processes (as in ``run.sample``)."""
    seed: int = 0
    """Seeds the evaluation's own generators (noise, labels, KID subsets, NLL times): every
    evaluation of a run sees the same noise, and the training random streams are untouched."""
    split: Split = "test"
    """Reference split of the run's dataset ("train" or "test"); held-out test by default."""
    features: ExtractorName | None = None
    """Feature extractor: "digits-cnn", "mnist-cnn" or "inception"; null = by dataset
    (digits -> digits-cnn, mnist -> mnist-cnn, anything else -> inception)."""
    inception_weights: str | None = None
    """Path of the local Inception-v3 FID weights file (pt_inception-2015-12-05-6726825d.pth);
    needed only when the extractor is "inception". Nothing is downloaded."""
    cache_dir: str | None = None
    """Cache of the reference features; null = $DIFFLAB_CACHE_DIR/reference or ~/.cache/difflab/reference."""
    batch_size: int = 250
    """Samples drawn per batch (memory, not results: every sample has its own seed)."""
    nll_examples: int = 256
    """Reference images scored when "nll" is requested (standard error ~ 1/sqrt of it)."""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ConfigError(f"run.eval.metrics is empty; list any of {', '.join(METRIC_NAMES)}")
        for i, metric in enumerate(self.metrics):
            check_choice(f"run.eval.metrics[{i}]", metric, METRIC_NAMES)
        check_range("run.eval.num_samples", self.num_samples, 2, why="FD needs a covariance")
        if self.steps is not None:
            check_range("run.eval.steps", self.steps, 1)
        if self.clip_x0 is not None:
            check_range("run.eval.clip_x0", self.clip_x0, 0.0, low_open=True)
        check_range("run.eval.seed", self.seed, 0, MAX_SEED)
        if self.features is not None:
            check_choice("run.eval.features", self.features, EXTRACTORS)
        check_range("run.eval.batch_size", self.batch_size, 1)
        check_range("run.eval.nll_examples", self.nll_examples, 2, why="the standard error needs two")

    def extractor_for(self, dataset: str) -> str:
        """The feature extractor used on ``dataset`` (``features``, else the dataset's default)."""
        return self.features or default_extractor(dataset)


@dataclass(frozen=True)
class RunConfig:
    """Outputs, logging, fault handling and the speed switches (``channels_last``, ``compile``)."""

    out_dir: str = "runs/digits"
    """Run folder: checkpoints/, samples/, metrics.jsonl, loss.png (relative to the cwd)."""
    log_every: int = 10
    """Steps between metrics.jsonl lines (each the mean loss since the previous line)."""
    sample_every: int = 0
    """Steps between preview sample grids (samples/step_XXXXXXX.png); 0 = only at the end."""
    eval_every: int = 0
    """Steps between evaluations (``run.eval``) of the EMA weights, logged to metrics.jsonl as
    ``{"step", "eval", "protocol"}`` lines and plotted in eval.png; 0 = off (the default, since
    an evaluation costs as much as hundreds of training steps on small models)."""
    checkpoint_every: int = 500
    """Steps between checkpoints; 0 = only at the end (and on SIGINT/SIGTERM)."""
    keep_last: int = 3
    """Checkpoints kept on disk (older ones are deleted after a new one is complete)."""
    on_nonfinite: OnNonFinite = "stop"
    """A NaN/Inf loss or gradient: "stop" (keep the last good checkpoint, exit with an error)
    or "skip" the batch (no update; counted as ``skipped`` in metrics.jsonl)."""
    deterministic: bool = True
    """``torch.use_deterministic_algorithms``: bit-exact reruns and resumes (slower on GPU)."""
    num_threads: int | None = None
    """CPU threads for torch (None = torch's default); fix it for bit-exact CPU reruns."""
    progress: bool = True
    """Show a tqdm bar (loss, images/s, time left) on the main process."""
    channels_last: bool | None = None
    """Keep the networks' weights and batches in channels_last (NHWC) memory layout; null =
    by device: on for CUDA (tensor-core convolutions want it), off on CPUs (measured slower)."""
    compile: bool = False
    """``torch.compile`` the networks for training (fuses GroupNorm/SiLU/casts; falls back to
    eager with a warning if the compiler fails). Off by default: compiling a UNet costs minutes
    on a small CPU, more than short runs gain (``benchmarks/train_throughput.py``)."""
    tune_steps: tuple[int, ...] = ()
    """Step counts (each >= 3) whose time grids are tuned to the final EMA weights at the end of
    training, as ``difflab tune`` does: ``difflab sample``/``eval`` then sample on them by
    default. Each costs about 600 + 203 * steps network evaluations on a batch of 32
    (~30 s for 10 steps of the digits network on a CPU); () = off."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """Preview sampling options."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Periodic evaluation options (used when ``eval_every`` > 0)."""

    def __post_init__(self) -> None:
        if not self.out_dir:
            raise ConfigError("run.out_dir must be a non-empty path")
        check_range("run.log_every", self.log_every, 1)
        check_range("run.sample_every", self.sample_every, 0, why="0 = only at the end")
        check_range("run.eval_every", self.eval_every, 0, why="0 = no evaluation during training")
        check_range("run.checkpoint_every", self.checkpoint_every, 0, why="0 = only at the end")
        check_range("run.keep_last", self.keep_last, 1)
        if self.num_threads is not None:
            check_range("run.num_threads", self.num_threads, 1)
        for i, steps in enumerate(self.tune_steps):
            check_range(f"run.tune_steps[{i}]", steps, 3, why="fewer steps have no grid point to move")
