"""Exponential moving average of a network's weights (the weights used for sampling).

After each optimizer step, ``theta_ema <- beta theta_ema + (1 - beta) theta`` (Polyak
averaging as used by DDPM, Ho et al. 2020, App. B, with beta = 0.9999). With warm-up the
decay after n updates is ``beta_n = min(beta, (1 + n) / (10 + n))`` (as in TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``), so the average is not dominated by the
random initial weights in short runs. Buffers (e.g. normalisation statistics) are copied.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds ``module``, an eval-mode, gradient-free copy of the tracked network.

    Args:
        model: the network being trained (its current weights become the initial average).
        decay: beta in [0, 1); 0 makes the average equal to the latest weights.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after n updates.
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        """beta_n for the next update."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """theta_ema <- beta_n theta_ema + (1 - beta_n) theta; buffers copied as they are."""
        beta = self.current_decay()
        for ema_p, p in zip(self.module.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - beta)
        for ema_b, b in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, int]:
        """The counters; the averaged weights are ``module.state_dict()`` (saved separately)."""
        return {"num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.num_updates = int(state["num_updates"])
