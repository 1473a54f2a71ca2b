"""A run's state besides the weights: captured into a checkpoint's ``train_state``, restored on resume.

``capture_run_state`` gathers the optimizer, the EMA counters, the data sampler's position, the
loss window, the time budget, the loss scaler and every rank's random streams (a collective:
all ranks call it); ``restore_run_state`` puts them back so that a resumed run continues bit for
bit where the checkpoint stopped (CPU, deterministic mode). ``replica_checksums`` lets ``save``
check that DDP replicas agree before rank 0 writes for all of them.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from difflab.training.checkpoint import Checkpoint

if TYPE_CHECKING:
    from difflab.training.trainer import Trainer


def capture_run_state(trainer: Trainer) -> dict[str, Any]:
    """Everything besides the weights needed to continue bit for bit (collective: all ranks call it)."""
    acc = trainer.accelerator
    rng = {"generator": trainer.generator.get_state(), "global": torch.get_rng_state()}
    if acc.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(acc.device)
    gathered = {k: acc.gather(v.to(acc.device)[None]).cpu() for k, v in rng.items()}  # (world, n) uint8
    scaler = acc.scaler.state_dict() if acc.scaler is not None else None
    return {
        "optimizer": trainer.optimizer.state_dict(),
        "ema": trainer.ema.state_dict(),
        "sampler": trainer.sampler.state_dict(),
        "window": {"loss_sum": float(trainer.window["loss_sum"]), "count": trainer.window["count"]},
        "skipped": trainer.skipped,
        "last_loss": trainer.last_loss,
        "last_grad_norm": None if trainer.last_grad_norm is None else float(trainer.last_grad_norm),
        "budget": None if trainer.budget is None else trainer.budget.state_dict(),
        "scaler": scaler,
        "rng": gathered,
        "image_shape": list(trainer.image_shape),
        "num_processes": acc.num_processes,
    }


def replica_checksums(trainer: Trainer) -> torch.Tensor:
    """(world, 2 * tensors) float64 per-tensor sums of the weights and EMA on every rank.

    DDP keeps replicas equal; ``save`` checks it, since a divergence would make the
    checkpoint (written by rank 0 alone) misrepresent the other ranks.
    """
    tensors = [*trainer.unwrapped_model.parameters(), *trainer.ema.module.parameters()]
    sums = torch.stack([p.detach().double().sum() for p in tensors])
    return trainer.accelerator.gather(sums[None]).cpu()


def restore_run_state(trainer: Trainer, checkpoint: Checkpoint) -> None:
    """Continue exactly where ``checkpoint`` stopped (weights were loaded before ``prepare``)."""
    state = checkpoint.training_state
    trainer.step = checkpoint.step
    if checkpoint.path.parent.resolve() == (trainer.out_dir / "checkpoints").resolve():
        trainer.checkpoint = checkpoint.path  # already on disk: do not rewrite it at this step
    trainer.ema.module.load_state_dict(checkpoint.ema_model.state_dict())
    trainer.ema.load_state_dict(state["ema"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.sampler.load_state_dict(state["sampler"])
    loss_sum = torch.tensor(float(state["window"]["loss_sum"]), device=trainer.accelerator.device)
    trainer.window = {"loss_sum": loss_sum, "count": int(state["window"]["count"])}
    trainer.length.resume(checkpoint.config.optim, state.get("budget"), checkpoint.path)
    trainer.skipped = int(state["skipped"])
    trainer.last_loss = state.get("last_loss")
    trainer.last_grad_norm = state.get("last_grad_norm")
    scaler = trainer.accelerator.scaler
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    rank, world = trainer.accelerator.process_index, trainer.accelerator.num_processes
    if rng["generator"].shape[0] == world:
        trainer.generator.set_state(rng["generator"][rank].clone())
        trainer.rng_to_restore = {k: v[rank].clone() for k, v in rng.items() if k != "generator"}
    else:
        warnings.warn(f"checkpoint was written by {rng['generator'].shape[0]} processes, this run has "
                      f"{world}: random streams restart from the seed (the run is no longer bit-exact)",
                      stacklevel=2)
    if checkpoint.config.optim.batch_size != trainer.config.optim.batch_size:
        warnings.warn(f"optim.batch_size changed from {checkpoint.config.optim.batch_size} to "
                      f"{trainer.config.optim.batch_size}: the data order after step {trainer.step} differs from "
                      "the original run's", stacklevel=2)
