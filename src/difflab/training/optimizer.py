"""The optimizers of every run: AdamW (Loshchilov & Hutter 2019), one group per ``model.param_groups()``
entry, and one optimizer per training phase of a family that has several (a GAN's D and G).

On CPUs and GPUs torch's fused AdamW kernel updates all parameters in one pass; the default
for-loop implementation on a CPU launches a dozen element-wise ops per parameter tensor, which
for the small UNets difflab trains on a laptop costs as much as the backward pass
(``benchmarks/train_throughput.py --optimizer``). Fused and for-loop AdamW compute the same
update up to float rounding; the choice does not change what is saved in a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu")  # where torch has a fused AdamW kernel


def adamw(groups: Iterable[dict[str, Any]], device: torch.device, *, lr: float, betas: tuple[float, float],
          weight_decay: float) -> torch.optim.AdamW:
    """AdamW over ``groups`` (dicts with "params"), fused where ``device`` has the kernel."""
    groups = list(groups)
    if device.type in FUSED_DEVICES:
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError):  # an older torch or a dtype the kernel lacks: the for-loop version
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)


def phase_optimizers(model: Any, optim: Any, device: torch.device) -> dict[str, torch.optim.AdamW]:
    """{phase: AdamW} of a ``GenerativeModel`` with the ``optim`` section's settings: one over every
    parameter group (phase ""), or one per ``model.training_phases`` entry over the parameter
    group of that name."""
    groups = model.param_groups()
    phases = {"": list(groups)} if not model.training_phases else {p: [p] for p in model.training_phases}
    return {phase: adamw([{"params": groups[name], "name": name} for name in names], device, lr=optim.lr,
                         betas=optim.betas, weight_decay=optim.weight_decay)
            for phase, names in phases.items()}
