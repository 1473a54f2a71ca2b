"""Where and how fast a run computes: the ``Accelerator``, precision, memory format, compilation.

``make_accelerator`` resolves ``optim.mixed_precision`` for the device (``difflab.nn.speed``);
``speed_up`` applies ``run.channels_last`` and ``run.compile`` to a model's networks and
returns what was applied, which the run's summary reports; ``reproducible`` is the context a
run trains in (deterministic kernels, fixed threads, seeded global RNG); ``inference`` is the
context in which previews, evaluations and grid tuning run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from torch import nn

from difflab.nn.speed import (
    compile_in_place,
    networks,
    resolve_precision,
    to_channels_last,
)


def has_gpu() -> bool:
    """Whether torch sees a CUDA, MPS or XPU device."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def default_device() -> torch.device:
    """The device a single-process run trains on (what ``Accelerator`` will pick)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("mps") if torch.backends.mps.is_available() else torch.device("cpu")


def make_accelerator(mixed_precision: str, *, find_unused_parameters: bool = False) -> Accelerator:
    """An ``Accelerator`` with ``mixed_precision`` resolved for the device ("auto": bf16 where it
    is native); an option the device lacks falls back to fp32 with a warning.

    Without a GPU the accelerator is told ``cpu=True``, so processes started by
    ``accelerate launch --multi_gpu`` or ``torchrun`` form a gloo (multi-CPU) group.
    ``find_unused_parameters`` lets DDP skip parameters a backward pass does not reach (a GAN's
    generator in the discriminator's update).
    """
    precision = resolve_precision(mixed_precision, default_device())
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if find_unused_parameters else []
    return Accelerator(mixed_precision=precision, cpu=not has_gpu(), kwargs_handlers=handlers)


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (a no-op on the CPU): a host clock then times them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class SpeedSettings:
    """What a run actually uses (after per-device defaults and fallbacks)."""

    precision: str
    """"no" (fp32), "bf16" or "fp16"."""
    channels_last: bool
    compiled: tuple[str, ...]
    """Names of the compiled networks (empty: eager)."""


def agree(accelerator: Accelerator, values: list[float], reduction: str) -> list[float]:
    """``values`` reduced over all ranks ("sum" or "max"; as they are on one process): one
    all-reduce, so every rank takes the same decision (stop now, the step count of a budget)."""
    if accelerator.num_processes == 1:
        return values
    tensor = torch.tensor(values, device=accelerator.device, dtype=torch.float64)
    return accelerator.reduce(tensor, reduction=reduction).tolist()


def speed_up(
    model: nn.Module,
    *,
    precision: str,
    channels_last: bool,
    compile_networks: bool,
    probe: Callable[[], None],
) -> SpeedSettings:
    """Apply channels_last (resolved: ``difflab.nn.speed.resolve_channels_last``) and
    ``torch.compile`` to ``model``'s networks, in place.

    ``probe`` runs one training step's forward and backward (without an update), so that
    compilation happens here and a compiler failure falls back to eager mode at once.
    """
    if channels_last:
        to_channels_last(model)
    compiled: list[str] = []
    if compile_networks:
        for name, net in networks(model).items():
            if compile_in_place(net, probe, what=f"{name} network"):
                compiled.append(name)
    return SpeedSettings(precision=precision, channels_last=channels_last, compiled=tuple(compiled))


def fork_rng(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """``torch.random.fork_rng`` of the CPU generator and, on CUDA, of ``device``'s: the global
    random state is restored when the block ends."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


@contextlib.contextmanager
def inference(model: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """``model`` in eval mode under ``torch.inference_mode``, with its train/eval mode and the
    global RNG (CPU, and ``device`` if CUDA) restored afterwards: sampling leaves training untouched."""
    was_training = model.training
    try:
        with torch.inference_mode(), fork_rng(device):
            yield model.eval()
    finally:
        model.train(was_training)


@contextlib.contextmanager
def reproducible(
    run: Any, seed: int, accelerator: Accelerator, rng_to_restore: dict[str, torch.Tensor] | None = None
) -> Iterator[None]:
    """Deterministic kernels (``run.deterministic``), ``run.num_threads`` and the global RNG seeded
    with seed + rank (or set to a resumed run's ``rng_to_restore``); all restored afterwards.

    The global RNG only drives randomness inside modules (dropout); every other draw of a run
    uses its own generators.
    """
    previous = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    if run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if run.num_threads is not None:
        torch.set_num_threads(run.num_threads)
    device = accelerator.device
    try:
        with fork_rng(device):
            torch.manual_seed(seed + accelerator.process_index)
            if rng_to_restore is not None:
                torch.set_rng_state(rng_to_restore["global"])
                if "cuda" in rng_to_restore and device.type == "cuda":
                    torch.cuda.set_rng_state(rng_to_restore["cuda"], device)
            yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])
