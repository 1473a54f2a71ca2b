"""``TrainConfig``: every option of a training run, validated before anything runs.

A config is a YAML file with the sections below (any may be left out to take the defaults);
``load_config(path, overrides)`` reads it, applies ``section.key=value`` overrides and
returns a frozen ``TrainConfig``. Unknown keys, wrong types, out-of-range values and
contradictory options raise ``ConfigError`` with a one-line message. ``to_dict()`` gives the
fully resolved config (every default filled in), which checkpoints store as ``config.yaml``.

Sections::

    data:      difflab.data.DataConfig (name, path, split, image_size, channels, hflip, ...)
    model:     ModelConfig       (the model family: diffusion, ihdm, latent, vae, flow; auto = the process's
               own), with the family's own options written beside it ({family: vae, beta: 4})
    tokenizer: TokenizerConfig   (latent models: patch_pca, autoencoder, kl_vae, vq_vae; fitted before training)
    process:   the process itself (a frozen dataclass of difflab.processes.PROCESSES, e.g.
               GaussianDiffusion), written {kind: gaussian|blurring|heat|dae, ...}
    network:   the network's config dataclass (UNetConfig, MLPConfig, ViTConfig), written
               {kind: unet|mlp|vit, ...}
    objective: ObjectiveConfig   (what the network predicts and how errors are weighted)
    optim:     OptimConfig       (AdamW, length in steps or a time budget, LR schedule, EMA, precision, seed)
    run:       RunConfig         (where to write, how often to log/sample/evaluate/checkpoint, speed switches)
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from difflab.data import DataConfig
from difflab.errors import ConfigError, check_choice
from difflab.evaluation.evaluate import SAMPLE_METRICS
from difflab.evaluation.features import INCEPTION_WEIGHTS
from difflab.models import FAMILIES, GenerativeModel
from difflab.nn import NETWORK_KINDS, NetworkConfig, config_to_dict, make_config
from difflab.processes import PROCESSES, DiagonalGaussianProcess
from difflab.training.fields import dataclass_from_dict
from difflab.training.run_options import EvalConfig, RunConfig, SampleConfig
from difflab.training.sections import (
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    TokenizerConfig,
)

__all__ = [  # the section classes are re-exported: ``from difflab.training.config import OptimConfig``
    "EvalConfig", "ModelConfig", "ObjectiveConfig", "OptimConfig", "RunConfig", "SampleConfig", "TokenizerConfig",
    "TrainConfig",
    "check_consistency", "load_config", "model_family", "resolve_config_path", "shipped_configs",
]

TERMINAL_LOGSNR_FLOOR = -20.0  # below this lambda(1), eps-prediction cannot give x0 (see check_consistency)


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
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    process: DiagonalGaussianProcess = field(default_factory=lambda: resolve_process(DEFAULT_PROCESS))
    network: NetworkConfig = field(default_factory=lambda: resolve_network(DEFAULT_NETWORK))
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
        if "model" in raw:
            values["model"] = ModelConfig.from_dict(raw["model"])
        for name, section_cls in (("tokenizer", TokenizerConfig),
                                  ("objective", ObjectiveConfig), ("optim", OptimConfig), ("run", RunConfig)):
            if name in raw:
                values[name] = dataclass_from_dict(section_cls, raw[name], name)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, not tuples) that ``from_dict`` turns back into ``self``."""
        return {f.name: section_dict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        """``to_dict()`` as YAML text, sections in declaration order."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def section_dict(section: Any) -> dict[str, Any]:
    """One section as a plain dict: a process's ``config()``, a network's ``{"kind", **fields}``,
    the fields of any other section."""
    if isinstance(section, DiagonalGaussianProcess):
        return _plain(section.config())
    if isinstance(section, NetworkConfig):
        return _plain(config_to_dict(section))
    if isinstance(section, ModelConfig):
        return _plain(section.to_dict())
    return _plain(dataclasses.asdict(section))  # type: ignore[arg-type]


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


def resolve_process(raw: Any) -> DiagonalGaussianProcess:
    """The process ``raw`` describes (defaults filled in), validated field by field.

    Without a ``kind``, ``raw`` modifies ``DEFAULT_PROCESS``.
    """
    kind, fields = _kind_and_fields(raw, "process", sorted(PROCESSES), DEFAULT_PROCESS)
    return dataclass_from_dict(PROCESSES[kind], fields, "process")


def resolve_network(raw: Any) -> NetworkConfig:
    """The network config ``raw`` describes (defaults filled in), validated field by field.

    Without a ``kind``, ``raw`` modifies ``DEFAULT_NETWORK``.
    """
    kind, fields = _kind_and_fields(raw, "network", list(NETWORK_KINDS), DEFAULT_NETWORK)
    return dataclass_from_dict(type(make_config(kind)), fields, "network")


def check_consistency(config: TrainConfig) -> None:
    """``ConfigError`` for options that are valid alone but contradict each other."""
    if config.objective.cond_drop_prob > 0 and config.network.num_classes is None:
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
    check_latent(config, family)
    FAMILIES[family].check_process(config.process)
    FAMILIES[family].check_network(config.network)
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


def check_latent(config: TrainConfig, family: str) -> None:
    """A tokenizer section exactly for latent models, and the l-DAE loss only for them."""
    has_tokenizer = config.tokenizer.kind != "none"
    if (family == "latent") != has_tokenizer:
        fix = "set tokenizer.kind (patch_pca, autoencoder, kl_vae, vq_vae)" if not has_tokenizer else \
            "set model.family: latent (or auto), or tokenizer.kind: none"
        raise ConfigError(f"model.family={family!r} with tokenizer.kind={config.tokenizer.kind!r}: a tokenizer "
                          f"belongs to latent models only; {fix}")
    if config.objective.loss == "ldae" and family != "latent":
        raise ConfigError("objective.loss='ldae' adds noise in a tokenizer's latent: set tokenizer.kind: patch_pca")
    if config.objective.loss == "ldae" and config.objective.space == "image" and config.tokenizer.kind != "patch_pca":
        raise ConfigError(f"objective.space='image' weights residuals per PCA component (l-DAE Eq. 4): it needs "
                          f"tokenizer.kind: patch_pca, not {config.tokenizer.kind!r}; or set objective.space: latent")


def model_family(config: TrainConfig) -> str:
    """The family a run trains: ``model.family``, or for "auto" "latent" when a tokenizer is set,
    else the process's ``default_family``."""
    if config.model.family != "auto":
        return config.model.family
    return "latent" if config.tokenizer.kind != "none" else config.process.default_family


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


def terminal_logsnr(process: DiagonalGaussianProcess) -> float:
    """max over coefficients of lambda(t=1) for an 8x8 grey image (float; -inf = zero SNR).

    x0 from eps is (z - sigma eps) / alpha, which amplifies eps errors by 1 / alpha_1; below
    ``TERMINAL_LOGSNR_FLOOR`` (alpha_1 < 5e-5) eps-prediction is useless at t = 1.
    """
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
