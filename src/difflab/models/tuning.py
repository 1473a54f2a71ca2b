"""Grids tuned to a saved model's weights: ``tuned_grids.json`` inside its model directory.

``difflab tune`` (and the end of ``difflab train`` when ``run.tune_steps`` is set) tunes one
grid per step count (``difflab.tune_grid``) for the weights the model was loaded with and
stores them beside those weights, tied to their sha256 (from the model's manifest), so grids
of other weights (raw vs EMA, another step) are never used. ``load_model`` then attaches them
and ``sample(grid="auto")`` uses the tuned grid whenever one exists for the sampler and steps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from difflab.errors import ConfigError
from difflab.models.artefact import TUNED_GRIDS, WEIGHTS, verify_manifest
from difflab.models.diffusion import DiffusionModel
from difflab.samplers import TunedGrid, TunedGrids, tune_grid

TUNE_BATCH = 32  # initial noises the objective averages over (16-64 give the same grids to ~1e-2 in t)


def tune_model_grids(
    model_dir: str | Path,
    model: DiffusionModel,
    steps: Sequence[int],
    *,
    sampler: str = "auto",
    ema: bool = True,
    seed: int = 0,
    max_evals: int = 200,
    device: torch.device | str | None = None,
) -> list[tuple[TunedGrid, float]]:
    """Tune a grid per step count for ``model`` (the ``ema`` or raw weights saved in ``model_dir``)
    and add them to its ``tuned_grids.json``; returns (grid, seconds) each.

    Prediction type, conditioning and clipping are the model's own; a class-conditional model is
    tuned on labels 0..K-1 repeating (conditional, w = 1).
    """
    if not model.tunable:
        raise ConfigError(f"{model.family} models do not sample on ODE grids; there is nothing to tune")
    folder = Path(model_dir)
    sha = verify_manifest(folder)["files"][WEIGHTS[ema]]["sha256"]
    table = TunedGrids.load(folder / TUNED_GRIDS, sha) or TunedGrids(sha)
    cond = model.conditioning.resolve(TUNE_BATCH, None)
    cond = None if cond is None else {k: v.to(device) for k, v in cond.items()}
    done = []
    for n in steps:
        start = time.perf_counter()
        grid = tune_grid(model.denoiser, model.process, model.state_shape(TUNE_BATCH), n, sampler,  # type: ignore[attr-defined]
                         model.sample_prediction,  # type: ignore[attr-defined]
                         torch.Generator(device=device or "cpu").manual_seed(seed), cond=cond,
                         clip_x0=model.sample_defaults["clip_x0"], max_evals=max_evals, device=device)
        table.add(grid)
        table.save(folder / TUNED_GRIDS)  # after each grid: an interrupted run keeps what it finished
        done.append((grid, time.perf_counter() - start))
    model.tuned_grids = table
    return done


def tuned_table(done: Sequence[tuple[TunedGrid, float]]) -> str:
    """Markdown lines: per grid, J on the best fixed grid and on the tuned one, reference error, seconds."""
    lines = ["| sampler | steps | rel. MSE, best fixed grid | rel. MSE, tuned grid | reference error | seconds |",
             "|---|---|---|---|---|---|"]
    for g, seconds in done:
        lines.append(f"| {g.sampler} | {g.steps} | {g.rel_mse_start:.2e} | {g.rel_mse:.2e} | "
                     f"{g.rel_mse_reference:.1e} | {seconds:.1f} |")
    return "\n".join(lines)
