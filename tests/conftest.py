"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

TINY_RUN = ["network.base_channels=16", "optim.batch_size=16", "optim.steps=2", "optim.warmup_steps=1",
            "run.progress=false", "run.sample.steps=2", "run.sample.num=4"]


def train_tiny_run(out: Path) -> Path:
    """A 2-step training run of a tiny UNet on digits into ``out`` (its checkpoint is what the CLI tests read)."""
    from difflab.training import Trainer, load_config

    Trainer(load_config(None, [*TINY_RUN, f"run.out_dir={out}"])).train()
    return out
