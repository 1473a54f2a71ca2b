"""``TrainConfig``: every option of a training run, validated before anything runs.

A config is a YAML file with the sections below (any may be left out to take the defaults);
``load_config(path, overrides)`` reads it, applies ``section.key=value`` overrides and
returns a frozen ``TrainConfig``. Unknown keys, wrong types, out-of-range values and
contradictory options raise ``ConfigError`` with a one-line message. ``to_dict()`` gives the
fully resolved config (every default filled in), which checkpoints store as ``config.yaml``.

Sections::

    data:      difflab.data.DataConfig (name, path, split, image_size, channels, hflip, ...)
    model:     ModelConfig       (the model family: diffusion, ihdm; auto = the process's own)
    process:   {kind: gaussian|blurring|heat, ...}   -> difflab.processes.build_process
    network:   {kind: unet|mlp, ...}            -> difflab.nn.make_config
    objective: ObjectiveConfig   (what the network predicts and how errors are weighted)
    optim:     OptimConfig       (AdamW, schedule, batch, EMA, precision, seed)
    run:       RunConfig         (where to write, how often to log/sample/evaluate/checkpoint)
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from difflab.data import DataConfig
from difflab.data.load import Split
from difflab.errors import ConfigError, check_choice
from difflab.evaluation.evaluate import METRIC_NAMES, SAMPLE_METRICS, MetricName
from difflab.evaluation.features import EXTRACTORS, INCEPTION_WEIGHTS, ExtractorName, default_extractor
from difflab.models import FAMILIES, GenerativeModel
from difflab.nn import NETWORK_KINDS, config_to_dict, make_config
from difflab.objectives import TimeSampling, Weighting
from difflab.processes import PROCESSES, Prediction, build_process
from difflab.samplers import SAMPLERS
from difflab.training.fields import check_range, dataclass_from_dict

MixedPrecision = Literal["no", "fp16", "bf16"]
OnNonFinite = Literal["stop", "skip"]
MAX_SEED = 2**31 - 1  # per-rank generators use seed + rank; the data sampler needs seed < 2**32
TERMINAL_LOGSNR_FLOOR = -20.0  # below this lambda(1), eps-prediction cannot give x0 (see check_consistency)


@dataclass(frozen=True)
class ModelConfig:
    """Which model family the run trains (``difflab.models.FAMILIES``)."""

    family: str = "auto"
    """"diffusion" (a denoiser: eps/x0/v prediction, the ODE/SDE samplers, NLL), "ihdm" (inverse
    heat dissipation: predict the less-blurred level, Rissanen et al. 2023), or "auto": the family
    the process was designed for (heat -> ihdm, every other process -> diffusion)."""

    def __post_init__(self) -> None:
        check_choice("model.family", self.family, ["auto", *sorted(FAMILIES)])


@dataclass(frozen=True)
class ObjectiveConfig:
    """The training loss (``difflab.objectives.diffusion_loss``)."""

    prediction: Prediction = "eps"
    """Network output: "eps" (DDPM, Ho et al. 2020), "x0", or "v" (Salimans & Ho 2022)."""
    weighting: Weighting = "uniform"
    """Weight of the per-coefficient error: "uniform" (plain MSE on the prediction, DDPM's
    L_simple), "snr" (MSE on x0), "min_snr" (Hang et al. 2023)."""
    gamma: float = 5.0
    """min_snr clamp on the SNR (unitless); 5 is Hang et al.'s recommended value."""
    time_sampling: TimeSampling = "uniform"
    """How training times t are drawn: i.i.d. "uniform" or low-variance "stratified"
    (Kingma et al. 2021, App. I.1)."""
    cond_drop_prob: float = 0.0
    """Probability of replacing a class label by the null label, for classifier-free guidance
    (Ho & Salimans 2022 use 0.1-0.2). 0 = plain conditional (or unconditional) training."""

    def __post_init__(self) -> None:
        check_range("objective.gamma", self.gamma, 0.0, low_open=True, why="Hang et al. use 5")
        check_range("objective.cond_drop_prob", self.cond_drop_prob, 0.0, 1.0, high_open=True)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, gradient clipping and an EMA of the weights."""

    lr: float = 2e-4
    """Peak learning rate (per step); DDPM's CIFAR-10 value (Ho et al. 2020, App. B)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2): PyTorch/Adam defaults, used by DDPM."""
    weight_decay: float = 0.0
    """Decoupled weight decay per step (x lr); DDPM uses none."""
    warmup_steps: int = 100
    """Steps of linear LR warm-up from lr/warmup_steps to lr; DDPM uses 5000 at batch 128,
    a short one suffices for the small default models. 0 = no warm-up."""
    grad_clip: float = 1.0
    """Max global L2 norm of the gradient (DDPM: 1.0); 0 = no clipping."""
    batch_size: int = 64
    """Global batch size in images, summed over all processes (must be divisible by their number)."""
    steps: int = 2000
    """Optimizer steps of the whole run (the digits default trains in minutes on a CPU)."""
    ema_decay: float = 0.999
    """Per-step decay of the exponential moving average of the weights (DDPM: 0.9999 over
    800k steps; 0.999 suits runs of thousands of steps). 0 = EMA equals the weights."""
    ema_warmup: bool = True
    """Use decay min(ema_decay, (1 + n) / (10 + n)) after n updates, so early EMA weights are
    not dominated by the random initialisation."""
    mixed_precision: MixedPrecision = "no"
    """"fp16" (with a loss scaler) or "bf16" autocast when the device supports it; "no" = fp32.
    fp16 on a CPU falls back to fp32 with a warning."""
    seed: int = 0
    """Seeds the weights, the data order and every training generator (rank r uses seed + r)."""

    def __post_init__(self) -> None:
        check_range("optim.lr", self.lr, 0.0, low_open=True)
        for i, beta in enumerate(self.betas):
            check_range(f"optim.betas[{i}]", beta, 0.0, 1.0, high_open=True)
        check_range("optim.weight_decay", self.weight_decay, 0.0)
        check_range("optim.warmup_steps", self.warmup_steps, 0)
        check_range("optim.grad_clip", self.grad_clip, 0.0, why="0 disables clipping")
        check_range("optim.batch_size", self.batch_size, 1)
        check_range("optim.steps", self.steps, 1)
        check_range("optim.ema_decay", self.ema_decay, 0.0, 1.0, high_open=True)
        check_range("optim.seed", self.seed, 0, MAX_SEED)


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
    """Outputs, logging and fault handling."""

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
    """Show a tqdm bar (loss, images/s, ETA) on the main process."""
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


DEFAULT_PROCESS: dict[str, Any] = {"kind": "gaussian", "schedule": "cosine"}
DEFAULT_NETWORK: dict[str, Any] = {  # a 0.7M-parameter UNet for 8x8 grey digits (~0.1 s per step of 64 on one CPU core)
    "kind": "unet",
    "in_channels": 1,
    "base_channels": 32,
    "channel_mult": (1, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (),
    "dropout": 0.0,
    "head_channels": None,
    "num_heads": 1,
    "resolution": 8,
    "norm_groups": 8,
}


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. Build with ``TrainConfig.from_dict`` or ``load_config``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    process: dict[str, Any] = field(default_factory=lambda: resolve_process(DEFAULT_PROCESS))
    network: dict[str, Any] = field(default_factory=lambda: resolve_network(DEFAULT_NETWORK))
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_consistency(self)

    @classmethod
    def from_dict(cls, raw: Any) -> TrainConfig:
        """Validate a plain dict (parsed YAML) into a ``TrainConfig``."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"a training config must be a mapping of sections, got {type(raw).__name__}")
        sections = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(str(k) for k in raw if k not in sections)
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown}; allowed: {', '.join(sections)}")
        values: dict[str, Any] = {}
        if "data" in raw:
            values["data"] = dataclass_from_dict(DataConfig, raw["data"], "data")
        if "process" in raw:
            values["process"] = resolve_process(raw["process"])
        if "network" in raw:
            values["network"] = resolve_network(raw["network"])
        for name, section_cls in (("model", ModelConfig), ("objective", ObjectiveConfig), ("optim", OptimConfig),
                                  ("run", RunConfig)):
            if name in raw:
                values[name] = dataclass_from_dict(section_cls, raw[name], name)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples) that ``from_dict`` turns back into ``self``."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        """``to_dict()`` as YAML text, sections in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively (YAML/JSON-friendly)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _kind_and_fields(
    raw: Any, section: str, kinds: list[str], default: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """(kind, other fields); a section without ``kind`` changes fields of the ``default``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{section} must be a mapping with a 'kind' key, got {raw!r}")
    fields = dict(raw) if "kind" in raw else {**default, **raw}
    kind = fields.pop("kind")
    check_choice(f"{section}.kind", kind, kinds)
    return kind, fields


def resolve_process(raw: Any) -> dict[str, Any]:
    """The full config dict of the process ``raw`` describes (defaults filled in), validated.

    Without a ``kind``, ``raw`` modifies ``DEFAULT_PROCESS``.
    """
    kind, fields = _kind_and_fields(raw, "process", sorted(PROCESSES), DEFAULT_PROCESS)
    process = dataclass_from_dict(PROCESSES[kind], fields, "process")
    return process.config()


def resolve_network(raw: Any) -> dict[str, Any]:
    """The full config dict of the network ``raw`` describes (defaults filled in), validated.

    Without a ``kind``, ``raw`` modifies ``DEFAULT_NETWORK``.
    """
    kind, fields = _kind_and_fields(raw, "network", list(NETWORK_KINDS), DEFAULT_NETWORK)
    config_class = type(make_config(kind))
    return config_to_dict(dataclass_from_dict(config_class, fields, "network"))


def check_consistency(config: TrainConfig) -> None:
    """``ConfigError`` for options that are valid alone but contradict each other."""
    if config.objective.cond_drop_prob > 0 and config.network.get("num_classes") is None:
        raise ConfigError(
            f"objective.cond_drop_prob={config.objective.cond_drop_prob} needs a class-conditional "
            "network: set network.num_classes (or cond_drop_prob: 0)"
        )
    if config.objective.prediction == "eps":
        logsnr_1 = terminal_logsnr(config.process)
        if logsnr_1 < TERMINAL_LOGSNR_FLOOR:
            raise ConfigError(
                f"objective.prediction='eps' with a process whose terminal logSNR is {logsnr_1:.3g} "
                f"(< {TERMINAL_LOGSNR_FLOOR:g}, SNR ~ 0): x0 = (z - sigma eps) / alpha is undefined at t=1; "
                "use prediction 'v' or 'x0', or raise process.logsnr_min"
            )
    check_eval_features(config)
    family = model_family(config)
    FAMILIES[family].check_process(build_process(config.process))
    samplers = FAMILIES[family].sampler_names()
    for key, sampler in (("run.sample.sampler", config.run.sample.sampler), ("run.eval.sampler", config.run.eval.sampler)):
        if sampler is not None:
            check_choice(key, sampler, samplers)  # the samplers of the run's model family
    if config.run.eval_every and "nll" in config.run.eval.metrics and not FAMILIES[family].has_likelihood:
        raise ConfigError(f"run.eval.metrics has 'nll', which {family} models do not define; remove it "
                          f"(sample metrics: {', '.join(SAMPLE_METRICS)})")
    if config.run.tune_steps and not FAMILIES[family].tunable:
        raise ConfigError(f"run.tune_steps tunes ODE-sampler grids, which {family} models do not use; "
                          "set run.tune_steps: []")


def model_family(config: TrainConfig) -> str:
    """The family a run trains: ``model.family``, or for "auto" the process's ``default_family``."""
    if config.model.family != "auto":
        return config.model.family
    return build_process(config.process).default_family


def family_class(config: TrainConfig) -> type[GenerativeModel]:
    """The ``GenerativeModel`` class of the run's family."""
    return FAMILIES[model_family(config)]


def check_eval_features(config: TrainConfig) -> None:
    """``ConfigError`` when periodic FD/KID/IS would need Inception weights that are not configured.

    Checked with the config (before any training) rather than at the first evaluation; that the
    file exists is checked when the ``Trainer`` builds the extractor.
    """
    run = config.run
    if not run.eval_every or not any(m in SAMPLE_METRICS for m in run.eval.metrics):
        return
    if run.eval.extractor_for(config.data.name) == "inception" and run.eval.inception_weights is None:
        raise ConfigError(
            f"run.eval_every={run.eval_every} with metrics {list(run.eval.metrics)} on data {config.data.name!r} "
            f"needs Inception features (only digits and mnist have shipped ones): set run.eval.inception_weights "
            f"to a local {INCEPTION_WEIGHTS}, or run.eval.metrics: [nll], or run.eval_every: 0"
        )


def terminal_logsnr(process_config: dict[str, Any]) -> float:
    """max over coefficients of lambda(t=1) for an 8x8 grey image (float; -inf = zero SNR).

    x0 from eps is (z - sigma eps) / alpha, which amplifies eps errors by 1 / alpha_1; below
    ``TERMINAL_LOGSNR_FLOOR`` (alpha_1 < 5e-5) eps-prediction is useless at t = 1.
    """
    process = build_process(process_config)
    with torch.no_grad():
        logsnr = process.logsnr(torch.ones(1, dtype=torch.float64), (1, 1, 8, 8))
    value = float(logsnr.max())
    return float("-inf") if value != value else value  # NaN (0/0) counts as zero SNR


# --- reading config files ------------------------------------------------------------------

def shipped_configs() -> dict[str, Path]:
    """Config name (file stem) -> path of the YAML files shipped in ``difflab/configs``."""
    folder = importlib.resources.files("difflab") / "configs"
    if not folder.is_dir():
        return {}
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_config_path(path_or_name: str | Path) -> Path:
    """An existing YAML file, or the shipped config of that name (e.g. "digits-blur")."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = shipped_configs()
    if str(path_or_name) in shipped:
        return shipped[str(path_or_name)]
    raise ConfigError(
        f"config {str(path_or_name)!r} is neither a file nor a shipped config; "
        f"shipped: {', '.join(sorted(shipped)) or 'none'}"
    )


def read_yaml(path: Path) -> Any:
    """Parsed YAML (safe loader), with I/O and syntax errors as one-line ``ConfigError``s."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config {path}: {err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"invalid YAML in {path}{line}: {problem}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Copy of ``raw`` with each ``section.key=value`` set (value parsed as YAML)."""
    merged = _deep_copy(raw)
    for item in overrides:
        key, sep, text = str(item).partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. optim.lr=1e-3")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text  # not YAML: keep the raw string; the type check reports it
        node = merged
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return merged


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    return value


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (a path or a shipped name, None = all defaults) plus overrides.

    Example: ``load_config("digits-blur", ["optim.lr=1e-3", "run.out_dir=runs/x"])``.
    """
    raw: Any = {} if path is None else read_yaml(resolve_config_path(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of sections, got {type(raw).__name__}")
    return TrainConfig.from_dict(apply_overrides(raw, list(overrides)))
