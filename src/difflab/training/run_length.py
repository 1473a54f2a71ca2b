"""``RunLength``: how long a run lasts, and the learning rate and EMA decay that follow from it.

The formulas and the budget clock are in ``difflab.training.schedule``; this class binds them
to a run's ``optim`` section, so the trainer asks one object for the step count, the LR of
a step and the EMA decay.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from difflab.errors import CheckpointError
from difflab.training.device import agree, synchronize
from difflab.training.schedule import (
    DEFAULT_EMA_LENGTH,
    TimeBudget,
    budget_warmup,
    ema_decay_for,
    learning_rate,
    resolve_decay,
)
from difflab.training.sections import OptimConfig


class RunLength:
    """A run's length (``optim.steps``, or ``optim.time_budget`` through a ``TimeBudget``) and
    the learning rate and EMA decay that follow it.

    Args:
        optim: the run's ``optim`` section.
        clock: the budget's clock (default ``time.perf_counter``).
    """

    def __init__(self, optim: OptimConfig, clock: Callable[[], float] | None = None) -> None:
        self.optim = optim
        seconds = optim.budget_seconds
        self.budget = None if seconds is None else TimeBudget(seconds)
        if self.budget is not None and clock is not None:
            self.budget.clock = clock
        self.decay = resolve_decay(optim.lr_decay, budgeted=self.budget is not None)

    def resume(self, saved: OptimConfig, state: dict[str, Any] | None, source: Path) -> None:
        """Continue a budget run from a checkpoint's ``optim`` section and budget state (a no-op
        for step runs); ``CheckpointError`` if that run had no budget or another one."""
        if self.budget is None:
            return
        if state is None or saved.time_budget is None:
            raise CheckpointError(f"{source} was not a time-budget run; resume it without "
                                  "optim.time_budget (or start a new run.out_dir)")
        if saved.budget_seconds != self.budget.seconds:
            raise CheckpointError(f"optim.time_budget changed from {saved.time_budget!r} to "
                                  f"{self.optim.time_budget!r}; a budget run's schedule is fixed by its first "
                                  "steps: resume with the same budget or start a new run.out_dir")
        self.budget.load_state_dict(state)

    def start_step(self) -> None:
        """Start timing a training step (budget runs)."""
        if self.budget is not None:
            self.budget.start()

    def end_step(self, step: int, accelerator: Accelerator) -> bool:
        """Stop timing; once every rank has timed its estimation window, fix the step count from
        the slowest rank's pace. Whether it was fixed by this step."""
        budget = self.budget
        if budget is None:
            return False
        if budget.total_steps is None:  # time the estimation window's steps exactly
            synchronize(accelerator.device)
        budget.stop(step)
        if budget.total_steps is not None:
            return False
        if agree(accelerator, [float(budget.window_done())], "sum")[0] < accelerator.num_processes:
            return False
        budget.fix_total(step, agree(accelerator, [budget.seconds_per_step()], "max")[0])
        return True

    @property
    def total_steps(self) -> int | None:
        """``optim.steps``, or the budget's estimate (None before it is made)."""
        return self.optim.steps if self.budget is None else self.budget.total_steps

    def learning_rate(self, step: int) -> float:
        """The LR of the update at ``step`` (0-based); a budget run's warm-up is ``budget_warmup``."""
        o, total = self.optim, self.total_steps
        warmup = o.warmup_steps if self.budget is None else budget_warmup(o.warmup_steps, total)
        return learning_rate(step, o.lr, warmup, total, self.decay, o.min_lr_ratio)

    def ema_decay(self) -> float:
        """The EMA decay: ``optim.ema_decay`` capped by ``optim.ema_length`` of the run once its
        length is known (``DEFAULT_EMA_LENGTH`` for budget runs without one)."""
        o, total = self.optim, self.total_steps
        length = o.ema_length if o.ema_length is not None or self.budget is None else DEFAULT_EMA_LENGTH
        return o.ema_decay if length is None or total is None else ema_decay_for(total, o.ema_decay, length)

    def summary(self) -> dict[str, Any] | None:
        """None for a step run; else the budget, the training seconds used, the estimated steps,
        the step at which they were estimated, and whether the run overran."""
        b = self.budget
        if b is None:
            return None
        return {"seconds": b.seconds, "used_s": b.elapsed, "total_steps": b.total_steps,
                "estimated_at": b.estimated_at, "overran": b.overrun()}
