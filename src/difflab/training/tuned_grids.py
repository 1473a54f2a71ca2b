"""A checkpoint's tuned time grids: ``tuned_grids.json`` beside its weights.

``difflab tune`` (and the end of ``difflab train`` when ``run.tune_steps`` is set) tunes one
grid per step count for the checkpoint's sampler (``difflab.tune_grid``) and stores them in
the checkpoint directory. The file records the sha256 of the weights it was tuned for (from
the manifest), so grids of other weights (raw vs EMA, another step) are never used.
``difflab sample`` and ``difflab eval`` with ``--grid auto`` (the default) then sample on the
tuned grid whenever one exists for the sampler and step count, else on the process's
fixed auto grid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from difflab.errors import CheckpointError
from difflab.processes import DiagonalGaussianProcess
from difflab.samplers import TunedGrid, TunedGrids, tune_grid
from difflab.training.config import TrainConfig

FILENAME = "tuned_grids.json"
TUNE_BATCH = 32  # initial noises the objective averages over (16-64 give the same grids to ~1e-2 in t)


def weights_sha256(checkpoint_dir: str | Path, ema: bool = True) -> str:
    """The sha256 of the checkpoint's EMA (or raw) weights, as listed in its manifest."""
    name = "ema.safetensors" if ema else "model.safetensors"
    manifest = Path(checkpoint_dir) / "manifest.json"
    try:
        return str(json.loads(manifest.read_text(encoding="utf-8"))["files"][name]["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest} does not list {name}: {err}") from None


def load_tuned_grids(checkpoint_dir: str | Path, ema: bool = True) -> TunedGrids | None:
    """The grids tuned for these weights, or None (no file, or tuned for other weights)."""
    return TunedGrids.load(Path(checkpoint_dir) / FILENAME, weights_sha256(checkpoint_dir, ema))


def tune_checkpoint(
    checkpoint_dir: str | Path,
    model: nn.Module,
    process: DiagonalGaussianProcess,
    config: TrainConfig,
    image_shape: tuple[int, ...],
    steps: Sequence[int],
    *,
    sampler: str = "auto",
    ema: bool = True,
    seed: int = 0,
    max_evals: int = 200,
    device: torch.device | str | None = None,
) -> list[tuple[TunedGrid, float]]:
    """Tune a grid per step count, add them to the checkpoint's file; returns (grid, seconds) each.

    The model's prediction type, labels and clipping (``run.sample.clip_x0``, as sampling
    uses) come from its ``config``; a class-conditional model is tuned on labels 0..K-1
    repeating (conditional, w = 1).
    """
    num_classes = config.network.get("num_classes")
    checkpoint_dir = Path(checkpoint_dir)
    table = load_tuned_grids(checkpoint_dir, ema) or TunedGrids(weights_sha256(checkpoint_dir, ema))
    cond = None if num_classes is None else {"class_labels": (torch.arange(TUNE_BATCH) % num_classes).to(device)}
    done = []
    for n in steps:
        start = time.perf_counter()
        grid = tune_grid(model, process, (TUNE_BATCH, *image_shape), n, sampler, config.objective.prediction,
                         torch.Generator(device=device or "cpu").manual_seed(seed), cond=cond,
                         clip_x0=config.run.sample.clip_x0, max_evals=max_evals, device=device)
        table.add(grid)
        table.save(checkpoint_dir / FILENAME)  # after each grid: an interrupted run keeps what it finished
        done.append((grid, time.perf_counter() - start))
    return done


def tuned_table(done: Sequence[tuple[TunedGrid, float]]) -> str:
    """Markdown lines: per grid, J on the logsnr grid and on the tuned one, reference error, seconds."""
    lines = ["| sampler | steps | rel. MSE, best fixed grid | rel. MSE, tuned grid | reference error | seconds |",
             "|---|---|---|---|---|---|"]
    for g, seconds in done:
        lines.append(f"| {g.sampler} | {g.steps} | {g.rel_mse_start:.2e} | {g.rel_mse:.2e} | "
                     f"{g.rel_mse_reference:.1e} | {seconds:.1f} |")
    return "\n".join(lines)
