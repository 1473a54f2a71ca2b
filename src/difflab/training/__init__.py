"""Training: config files, the Accelerate-based ``Trainer``, EMA and safe checkpoints.

Typical use::

    from difflab.training import Trainer, load_config
    summary = Trainer(load_config("digits-gauss", ["run.out_dir=runs/d"])).train()
    model = difflab.load_model("runs/d")   # the trained model (EMA weights), no trainer needed
"""

from difflab.training.checkpoint import (
    Checkpoint,
    check_compatible,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from difflab.training.config import (
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    load_config,
    shipped_configs,
)
from difflab.training.ema import EMA
from difflab.training.nonfinite import NonFiniteError
from difflab.training.schedule import TimeBudget, learning_rate, parse_duration
from difflab.training.trainer import Trainer

__all__ = [
    "EMA",
    "Checkpoint",
    "ModelConfig",
    "NonFiniteError",
    "ObjectiveConfig",
    "OptimConfig",
    "RunConfig",
    "SampleConfig",
    "TimeBudget",
    "TrainConfig",
    "Trainer",
    "check_compatible",
    "learning_rate",
    "load_checkpoint",
    "load_config",
    "parse_duration",
    "resolve_checkpoint",
    "save_checkpoint",
    "shipped_configs",
]
