"""Watching the loss and gradient norm for NaN/Inf without a host-device sync per step.

With ``run.on_nonfinite: stop`` the trainer hands each step's loss and gradient norm (device
tensors) to ``NonFiniteWatch.observe``, which keeps, on the device, the first step where
either was not finite. ``check()`` reads it back (one sync) before every log line,
checkpoint, evaluation and at the end, and raises ``NonFiniteError`` naming that step; no
checkpoint is ever written from non-finite weights. (``skip`` must decide before each
update, so it syncs every step.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from difflab.errors import DifflabError

QUANTITIES = ("loss", "gradient norm")


class NonFiniteError(DifflabError):
    """The loss or gradient became NaN/Inf (with ``run.on_nonfinite: stop``)."""


class NonFiniteWatch:
    """The first (1-based) step with a non-finite loss or gradient norm, kept on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.record = torch.zeros(3, dtype=torch.float32, device=device)  # [step (0 = none), quantity index, value]

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        """Note step ``step`` (1-based) if ``loss`` or ``grad_norm`` is not finite (no sync)."""
        loss, grad_norm = loss.detach().float(), grad_norm.detach().float().to(loss.device)
        loss_bad, grad_bad = ~torch.isfinite(loss), ~torch.isfinite(grad_norm)
        entry = torch.stack([torch.full_like(loss, float(step)), (~loss_bad).float(), torch.where(loss_bad, loss, grad_norm)])
        first = (self.record[0] == 0) & (loss_bad | grad_bad)
        self.record = torch.where(first, entry, self.record)

    def first(self, gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[int, str, float] | None:
        """(step, "loss" or "gradient norm", value) of the first non-finite step, or None (one sync).

        ``gather`` (e.g. ``Accelerator.gather``) stacks every rank's record, so all ranks see
        the earliest bad step of any rank and stop together.
        """
        records = self.record[None] if gather is None else gather(self.record[None])  # (world, 3)
        bad = [r for r in records.tolist() if r[0] > 0]
        if not bad:
            return None
        step, quantity, value = min(bad)
        return int(step), QUANTITIES[int(quantity)], value
