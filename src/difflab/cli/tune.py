"""``difflab tune``: tune a checkpoint's time grids for few-step sampling.

    difflab tune --checkpoint runs/digits --steps 10,20
    difflab sample --checkpoint runs/digits --sampler auto --steps 10     # now on the tuned grid

For each step count, moves the grid's points so the sampler's output tracks the model's
converged ODE solution from the same noise (``difflab.tune_grid``), and stores the grids in
the model directory (``model/tuned_grids.json``, tied to the weights' sha256). ``difflab sample``
and ``difflab eval`` use them whenever ``--grid`` is ``auto`` (the default) and a grid exists
for the sampler and step count. Cost per step count: about 600 + 203 * steps network
evaluations on a batch of 32.
"""

from __future__ import annotations

import argparse
from typing import Any

from difflab.cli.eval import positive_ints
from difflab.cli.sample import check_device
from difflab.errors import ConfigError


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("tune", help="tune a checkpoint's time grids for few-step sampling",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run folder (its latest)")
    parser.add_argument("--steps", default="10,20", help="comma list of step counts to tune (default 10,20)")
    parser.add_argument("--sampler", default="auto", help="deterministic sampler to tune for (default auto)")
    parser.add_argument("--max-evals", type=int, default=200, help="sampler runs per grid (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tuning noise (default 0)")
    parser.add_argument("--no-ema", action="store_true", help="tune for the raw weights instead of the EMA")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    steps = positive_ints(args.steps)
    if min(steps) < 3:
        raise ConfigError(f"--steps={args.steps}: tuning needs at least 3 steps (fewer have no point to move)")
    if args.max_evals < 1:
        raise ConfigError(f"--max-evals={args.max_evals} must be a positive integer")
    device = check_device(args.device)
    from difflab.models import load_model, model_dir
    from difflab.models.tuning import tune_model_grids, tuned_table

    model = load_model(args.checkpoint, ema=not args.no_ema).to(device)
    folder = model_dir(args.checkpoint)
    done = tune_model_grids(folder, model, steps, sampler=args.sampler, ema=not args.no_ema,  # type: ignore[arg-type]
                            seed=args.seed, max_evals=args.max_evals, device=device)
    print(tuned_table(done))
    print(f"wrote {folder / 'tuned_grids.json'}")
    return 0
