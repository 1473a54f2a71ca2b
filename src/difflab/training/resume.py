"""A run's state besides the weights: captured into a checkpoint's ``train_state``, restored on resume.

``capture_run_state`` gathers the optimizer, the EMA counters, the data sampler's position, the
loss window, the time budget, the loss scaler and every rank's random streams (a collective:
all ranks call it); ``restore_run_state`` puts them back so that a resumed run continues bit for
bit where the checkpoint stopped (CPU, deterministic mode). ``replica_checksums`` lets ``save``
check that DDP replicas agree before rank 0 writes for all of them.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator

from difflab.data import ResumableBatchSampler
from difflab.models import GenerativeModel
from difflab.training.checkpoint import Checkpoint
from difflab.training.config import TrainConfig
from difflab.training.ema import EMA
from difflab.training.metrics import LossWindow
from difflab.training.run_length import RunLength
from difflab.training.schedule import TimeBudget


class Run(Protocol):
    """What a run's state consists of (the ``Trainer``'s attributes these functions read and set)."""

    config: TrainConfig
    accelerator: Accelerator
    out_dir: Path
    step: int
    checkpoint: Path | None
    generator: torch.Generator
    optimizers: dict[str, Any]  # {training phase ("" for one): the prepared AdamW}
    ema: EMA
    sampler: ResumableBatchSampler
    window: LossWindow  # the losses since the last log line
    skipped: int
    last_loss: float | None
    last_grad_norm: torch.Tensor | float | None
    length: RunLength
    budget: TimeBudget | None
    image_shape: tuple[int, int, int]
    rng_to_restore: dict[str, torch.Tensor] | None

    @property
    def unwrapped_model(self) -> GenerativeModel: ...


def capture_run_state(run: Run) -> dict[str, Any]:
    """Everything besides the weights needed to continue bit for bit (collective: all ranks call it)."""
    acc = run.accelerator
    rng = {"generator": run.generator.get_state(), "global": torch.get_rng_state()}
    if acc.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(acc.device)
    gathered = {k: acc.gather(v.to(acc.device)[None]).cpu() for k, v in rng.items()}  # (world, n) uint8
    scaler = acc.scaler.state_dict() if acc.scaler is not None else None
    return {
        **optimizer_state(run.optimizers),
        "ema": run.ema.state_dict(),
        "sampler": run.sampler.state_dict(),
        "window": run.window.state_dict(),
        "skipped": run.skipped,
        "last_loss": run.last_loss,
        "last_grad_norm": None if run.last_grad_norm is None else float(run.last_grad_norm),
        "budget": None if run.budget is None else run.budget.state_dict(),
        "scaler": scaler,
        "rng": gathered,
        "image_shape": list(run.image_shape),
        "num_processes": acc.num_processes,
    }


def optimizer_state(optimizers: dict[str, Any]) -> dict[str, Any]:
    """{"optimizer": state} of a one-phase run, {"optimizers": {phase: state}} of a multi-phase one."""
    if list(optimizers) == [""]:
        return {"optimizer": optimizers[""].state_dict()}
    return {"optimizers": {phase: opt.state_dict() for phase, opt in optimizers.items()}}


def load_optimizer_state(optimizers: dict[str, Any], state: dict[str, Any]) -> None:
    """Inverse of ``optimizer_state``."""
    if list(optimizers) == [""]:
        optimizers[""].load_state_dict(state["optimizer"])
        return
    for phase, optimizer in optimizers.items():
        optimizer.load_state_dict(state["optimizers"][phase])


def replica_checksums(run: Run) -> torch.Tensor:
    """(world, tensors) float64 per-tensor sums of the weights, the EMA and the fitted state (a
    tokenizer ...) on every rank.

    DDP keeps the weights equal and every rank fits the same state from the same data and seed;
    ``save`` checks it, since a divergence would make the checkpoint (written by rank 0 alone)
    misrepresent the other ranks.
    """
    model = run.unwrapped_model
    tensors = [*model.parameters(), *run.ema.module.parameters(), *model.fitted_state().values()]
    sums = torch.stack([p.detach().double().sum() for p in tensors])
    return run.accelerator.gather(sums[None]).cpu()


def restore_run_state(run: Run, checkpoint: Checkpoint) -> None:
    """Continue exactly where ``checkpoint`` stopped (weights were loaded before ``prepare``)."""
    state = checkpoint.training_state
    run.step = checkpoint.step
    if checkpoint.path.parent.resolve() == (run.out_dir / "checkpoints").resolve():
        run.checkpoint = checkpoint.path  # already on disk: do not rewrite it at this step
    run.ema.module.load_state_dict(checkpoint.ema_model.state_dict())
    run.ema.load_state_dict(state["ema"])
    load_optimizer_state(run.optimizers, state)
    run.sampler.load_state_dict(state["sampler"])
    run.window.load_state_dict(state["window"])
    run.length.resume(checkpoint.config.optim, state.get("budget"), checkpoint.path)
    run.skipped = int(state["skipped"])
    run.last_loss = state.get("last_loss")
    run.last_grad_norm = state.get("last_grad_norm")
    scaler = run.accelerator.scaler
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    if rng["generator"].shape[0] == world:
        run.generator.set_state(rng["generator"][rank].clone())
        run.rng_to_restore = {k: v[rank].clone() for k, v in rng.items() if k != "generator"}
    else:
        warnings.warn(f"checkpoint was written by {rng['generator'].shape[0]} processes, this run has "
                      f"{world}: random streams restart from the seed (the run is no longer bit-exact)",
                      stacklevel=2)
    if checkpoint.config.optim.batch_size != run.config.optim.batch_size:
        warnings.warn(f"optim.batch_size changed from {checkpoint.config.optim.batch_size} to "
                      f"{run.config.optim.batch_size}: the data order after step {run.step} differs from "
                      "the original run's", stacklevel=2)
