"""Training: config files, the Accelerate-based ``Trainer``, EMA and safe checkpoints.

Typical use::

    from difflab.training import Trainer, load_config, load_for_sampling
    summary = Trainer(load_config("digits-gauss", ["run.out_dir=runs/d"])).train()
    model, process, config = load_for_sampling("runs/d")
"""

from difflab.training.checkpoint import (
    Checkpoint,
    check_compatible,
    load_checkpoint,
    load_for_sampling,
    resolve_checkpoint,
    save_checkpoint,
)
from difflab.training.config import (
    ObjectiveConfig,
    OptimConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    load_config,
    shipped_configs,
)
from difflab.training.ema import EMA
from difflab.training.sampling import sample_grid
from difflab.training.trainer import NonFiniteError, Trainer, learning_rate

__all__ = [
    "EMA",
    "Checkpoint",
    "NonFiniteError",
    "ObjectiveConfig",
    "OptimConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "Trainer",
    "check_compatible",
    "learning_rate",
    "load_checkpoint",
    "load_config",
    "load_for_sampling",
    "resolve_checkpoint",
    "sample_grid",
    "save_checkpoint",
    "shipped_configs",
]
