"""How long a run lasts, and the learning rate and EMA that follow its length.

A run is either ``optim.steps`` optimizer updates or ``optim.time_budget`` seconds of
training. Under a budget the step count is not known in advance: ``TimeBudget`` times the
first steps, fixes ``total_steps`` once (stored in every checkpoint, so a resumed run
follows the same schedule bit for bit) and from then on the run is an ordinary run of
``total_steps`` steps. The learning rate (warm-up, then decay to ``min_lr_ratio * lr`` at the
last step) and the EMA length are functions of the step and ``total_steps`` alone.

Only the time spent in training steps counts against the budget: periodic evaluations,
previews and checkpoints are reported apart, so runs with and without them get the same
compute. A run stops before ``total_steps`` only if it overruns the budget by
``OVERRUN`` (the machine got slower than the first steps said).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from difflab.errors import ConfigError

LRDecay = Literal["auto", "none", "cosine", "linear"]
LR_DECAYS = ("auto", "none", "cosine", "linear")
UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd])")
SKIP_STEPS = 2  # the first steps pay for allocation and compilation: not used in the estimate
MIN_WINDOW_STEPS = 5  # steps timed before the estimate, at least ...
WINDOW_FRACTION = 0.03  # ... and this fraction of the budget, ...
MAX_WINDOW_S = 60.0  # ... but at most this long
OVERRUN = 0.1  # stop early only when the training time exceeds the budget by this fraction
STATE_KEYS = ("elapsed", "total_steps", "window_steps", "window_seconds", "estimated_at")
MAX_WARMUP_FRACTION = 0.05  # a budget run warms up for at most this fraction of its steps
DEFAULT_EMA_LENGTH = 0.1  # fraction of a budget run the EMA averages over (when optim.ema_length is null)


def parse_duration(text: str | float, key: str = "optim.time_budget") -> float:
    """Seconds in a duration such as ``"90s"``, ``"10m"``, ``"1h30m"``, ``"2h"`` or a plain number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        compact = str(text).replace(" ", "").lower()
        parts = _DURATION.findall(compact)
        if not compact or "".join(n + u for n, u in parts) != compact:
            raise ConfigError(f"{key}={text!r} is not a duration; write e.g. 90s, 10m, 1h30m or 2h")
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{key}={text!r} must be a positive duration, e.g. 90s, 10m or 2h")
    return seconds


def format_duration(seconds: float) -> str:
    """``"1h02m03s"``, ``"4m05s"`` or ``"12s"`` (whole seconds)."""
    s = max(0, round(seconds))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def resolve_decay(decay: LRDecay, budgeted: bool) -> str:
    """"auto" is cosine under a time budget and none (constant after warm-up) for a step count."""
    return ("cosine" if budgeted else "none") if decay == "auto" else decay


def learning_rate(
    step: int,
    lr: float,
    warmup_steps: int,
    total_steps: int | None = None,
    decay: str = "none",
    min_lr_ratio: float = 0.1,
) -> float:
    """The learning rate of the update at ``step`` (0-based).

    Linear warm-up ``lr * (step + 1) / warmup_steps`` for the first ``warmup_steps`` updates,
    then ``"none"``: constant; ``"cosine"`` (Loshchilov & Hutter 2017) or ``"linear"``: decay
    from ``lr`` after warm-up to exactly ``min_lr_ratio * lr`` at the last update
    (``step = total_steps - 1``). Without ``total_steps`` (a budget run before its estimate)
    there is no decay yet.
    """
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if decay == "none" or total_steps is None:
        return lr * factor
    last = total_steps - 1
    p = 1.0 if step >= last else max(0.0, step - warmup_steps) / max(1, last - warmup_steps)
    shape = 0.5 * (1.0 + math.cos(math.pi * p)) if decay == "cosine" else 1.0 - p
    return lr * factor * (min_lr_ratio + (1.0 - min_lr_ratio) * shape)


def budget_warmup(warmup_steps: int, total_steps: int | None) -> int:
    """Warm-up steps of a budget run: ``warmup_steps``, capped at ``MAX_WARMUP_FRACTION`` of the
    estimated run once it is known (a 20 s run should not spend itself warming up)."""
    if total_steps is None or warmup_steps == 0:
        return warmup_steps
    return min(warmup_steps, max(1, round(MAX_WARMUP_FRACTION * total_steps)))


def ema_decay_for(total_steps: int, ema_decay: float, ema_length: float) -> float:
    """``min(ema_decay, 1 - 1 / (ema_length * total_steps))``: an EMA whose averaging length
    ``1 / (1 - beta)`` is at most the fraction ``ema_length`` of the run."""
    return max(0.0, min(ema_decay, 1.0 - 1.0 / max(1.0, ema_length * total_steps)))


@dataclass
class TimeBudget:
    """Training time of a budget run: the clock, the one-off step estimate and the deadline.

    Call ``start()`` before and ``stop(step)`` after each training step (``step`` = updates
    done). ``clock`` is injectable (tests pass a fake one); it defaults to ``time.perf_counter``.
    """

    seconds: float
    """The budget: seconds of training steps, over all segments of a resumed run."""
    elapsed: float = 0.0
    """Training-step seconds spent so far (saved in checkpoints)."""
    total_steps: int | None = None
    """The estimated step count of the whole run; None until the first steps are timed."""
    window_steps: int = 0
    window_seconds: float = 0.0
    estimated_at: int | None = None
    """The step at which ``total_steps`` was fixed."""
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)
    """Seconds from an arbitrary origin (tests inject a fake clock)."""

    def __post_init__(self) -> None:
        self._started: float | None = None

    def start(self) -> None:
        self._started = self.clock()

    def stop(self, step: int) -> None:
        """Account the step that ``start`` began; ``step`` is the number of updates done now."""
        assert self._started is not None, "TimeBudget.stop without start"
        seconds = self.clock() - self._started
        self._started = None
        self.elapsed += seconds
        if self.total_steps is None and step > SKIP_STEPS:
            self.window_steps += 1
            self.window_seconds += seconds

    def window_done(self) -> bool:
        """Whether enough steps were timed to estimate the run's length."""
        target = min(MAX_WINDOW_S, WINDOW_FRACTION * self.seconds)
        return self.total_steps is None and self.window_steps >= MIN_WINDOW_STEPS and self.window_seconds >= target

    def seconds_per_step(self) -> float:
        return self.window_seconds / max(1, self.window_steps)

    def fix_total(self, step: int, seconds_per_step: float) -> int:
        """Fix ``total_steps``: the steps done plus the whole steps the remaining budget affords."""
        left = max(0.0, self.seconds - self.elapsed)
        self.total_steps = max(step, step + math.floor(left / max(seconds_per_step, 1e-12)))
        self.estimated_at = step
        return self.total_steps

    def overrun(self) -> bool:
        """Whether training has exceeded the budget by more than ``OVERRUN`` (stop now)."""
        return self.elapsed > self.seconds * (1.0 + OVERRUN)

    def left(self) -> float:
        return max(0.0, self.seconds - self.elapsed)

    def state_dict(self) -> dict[str, float | int | None]:
        """What a checkpoint stores (all but the budget itself, which is in the config, and the clock)."""
        return {key: getattr(self, key) for key in STATE_KEYS}

    def load_state_dict(self, state: dict[str, float | int | None]) -> None:
        for key in STATE_KEYS:
            setattr(self, key, state[key])

