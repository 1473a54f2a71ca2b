"""What a run writes besides checkpoints: preview grids, periodic evaluations, tuned grids, plots.

Each runs on the main process with the EMA weights in ``inference`` mode (the training RNG
streams untouched) while the other ranks wait.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from difflab.evaluation.figures import save_image_grid
from difflab.models import GenerativeModel
from difflab.models.artefact import MODEL_DIR
from difflab.models.tuning import tune_model_grids
from difflab.samplers import TunedGrid
from difflab.training.checkpoint import step_dir_name
from difflab.training.config import TrainConfig
from difflab.training.device import inference
from difflab.training.metrics import MetricsLog, plot_eval_curves, plot_loss_curve
from difflab.training.periodic_eval import PeriodicEvaluator


class RunOutputs:
    """Previews (``samples/``), evaluations (metrics.jsonl, ``eval.png``), tuned grids and ``loss.png``."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator, metrics: MetricsLog) -> None:
        self.config, self.accelerator, self.metrics = config, accelerator, metrics
        self.out_dir = Path(config.run.out_dir)
        self.evaluator = PeriodicEvaluator(config) if config.run.eval_every else None

    def preview(self, ema_model: GenerativeModel, step: int) -> Path | None:
        """Sample a grid with the EMA weights to ``samples/step_XXXXXXX.png``."""
        path = None
        if self.accelerator.is_main_process:
            with inference(ema_model, self.accelerator.device) as model:
                x = model.sample(self.config.run.sample.num, seed=self.config.optim.seed)  # run.sample = the model's defaults
            path = save_image_grid(x, self.out_dir / "samples" / f"{step_dir_name(step)}.png")
        self.accelerator.wait_for_everyone()
        return path

    def tune_grids(self, ema_model: GenerativeModel, checkpoint: Path | None) -> list[tuple[TunedGrid, float]]:
        """Tune time grids for ``run.tune_steps`` to the EMA weights of ``checkpoint`` (stored in its
        model directory); returns (TunedGrid, seconds) per step count."""
        done: list[tuple[TunedGrid, float]] = []
        steps = self.config.run.tune_steps
        if steps and checkpoint is not None and self.accelerator.is_main_process:
            with inference(ema_model, self.accelerator.device) as model:
                done = tune_model_grids(checkpoint / MODEL_DIR, model, steps, seed=self.config.optim.seed,  # type: ignore[arg-type]
                                        device=self.accelerator.device)
        self.accelerator.wait_for_everyone()
        return done

    def eval_due(self, step: int) -> bool:
        """Whether ``run.eval_every`` asks for an evaluation at ``step``."""
        return self.evaluator is not None and step > 0 and step % self.config.run.eval_every == 0

    def evaluate(self, ema_model: GenerativeModel, step: int, *, unless_logged: bool = False) -> dict[str, Any] | None:
        """Evaluate the EMA weights and log the result.

        Appends ``{"step", "eval", "protocol", "seconds"}`` to metrics.jsonl, redraws
        ``eval.png`` and returns the record (None on other ranks, without ``run.eval_every``,
        or with ``unless_logged`` when the log already holds this step's evaluation).
        """
        record = None
        main = self.evaluator is not None and self.accelerator.is_main_process
        if main and not (unless_logged and self._logged(step)):
            t0 = time.perf_counter()
            with inference(ema_model, self.accelerator.device) as model:
                result = self.evaluator(model)  # type: ignore[misc]
            record = {"step": step, **result, "seconds": round(time.perf_counter() - t0, 2)}
            self.metrics.append(record)
            plot_eval_curves(self.metrics.read(), self.out_dir / "eval.png")
        self.accelerator.wait_for_everyone()
        return record

    def _logged(self, step: int) -> bool:
        """Whether metrics.jsonl already holds the evaluation of ``step``."""
        return any(r.get("step") == step and "eval" in r for r in self.metrics.read())

    def plot_loss(self) -> None:
        """Redraw ``loss.png`` from metrics.jsonl."""
        if self.accelerator.is_main_process:
            plot_loss_curve(self.metrics.read(), self.out_dir / "loss.png")
