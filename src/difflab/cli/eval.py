"""``difflab eval``: sample quality (FD/KID/IS) over samplers x steps, and NLL, for a checkpoint.

    difflab eval --checkpoint runs/digits/checkpoints --metrics fd,kid,is,nll \\
        --sampler ddim,ancestral --steps 10,20,50,100 --num 1000 --out runs/digits/eval

Writes ``eval.md`` (markdown table), ``eval.json`` (numbers + protocol) and
``eval_vs_nfe.png`` (quality against NFE) to ``--out``, and prints the table. Reference
features come from the dataset the model was trained on (recorded in the model artefact),
``--split`` (default test), cached in ``--cache-dir``; or FD is scored against reference
statistics (``--ref stats.npz``, e.g. from ``difflab features stats`` or pytorch-fid). Digits
and MNIST use the shipped classifiers; other data needs ``--inception-weights``. Metrics: fd, kid, is, precision and
recall (Kynkaanniemi et al. 2019, k = 3, in the same feature space) on samples, and nll
(bits/dim) for families with a likelihood. Only the model artefact is read.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch

from difflab.errors import ConfigError, check_choice
from difflab.samplers.grids import grid_choices


def comma_list(text: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c'] (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def positive_ints(text: str) -> list[int]:
    """'10,20,50' -> [10, 20, 50]; ConfigError for anything that is not a positive integer."""
    try:
        values = [int(v) for v in comma_list(text)]
    except ValueError:
        raise ConfigError(f"--steps={text!r} must be a comma-separated list of positive integers, e.g. 10,20,50") from None
    if not values or min(values) < 1:
        raise ConfigError(f"--steps={text!r} must be a comma-separated list of positive integers, e.g. 10,20,50")
    return values


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint: FD/KID/IS vs NFE and NLL (bits/dim)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run folder (its latest)")
    parser.add_argument("--metrics", help="comma list of fd (or fid), kid, is, precision, recall, nll "
                        "(default fd,kid,is; with --ref fd,is)")
    parser.add_argument("--ref", help="reference statistics .npz (mu, sigma: pytorch-fid's layout; written by "
                        "`difflab features stats`) to score fd against instead of the training data's test split")
    parser.add_argument("--sampler", help="comma list of samplers (default: the model's, i.e. run.sample.sampler)")
    parser.add_argument("--steps", help="comma list of step counts (default: the model's run.sample.steps)")
    parser.add_argument("--grid", help="time grid: auto (the checkpoint's tuned grid where "
                        "`difflab tune` made one, else the process's default), uniform, quadratic, logsnr or karras")
    parser.add_argument("--num", type=int, default=1000, help="samples per (sampler, steps) (default 1000)")
    parser.add_argument("--out", default="eval", help="output folder (default ./eval)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples and metric subsets (default 0)")
    parser.add_argument("--batch-size", type=int, default=250, help="sampling batch size (default 250)")
    parser.add_argument("--no-ema", action="store_true", help="evaluate the raw weights instead of the EMA")
    parser.add_argument("--split", default="test", choices=["train", "test"], help="reference split (default test)")
    parser.add_argument("--features", help="digits-cnn, mnist-cnn or inception (default: by dataset)")
    parser.add_argument("--inception-weights", help="local Inception-v3 FID weights (pt_inception-2015-12-05-6726825d.pth)")
    parser.add_argument("--cache-dir", help="reference-feature cache (default $DIFFLAB_CACHE_DIR/reference or ~/.cache/difflab/reference)")
    parser.add_argument("--nll-method", choices=["elbo", "ode", "iwae", "exact"],
                        help="NLL estimator: diffusion elbo (default) or ode; VAE elbo (default) or iwae; flow exact")
    parser.add_argument("--nll-examples", type=int, default=256, help="data images scored for NLL (default 256)")
    parser.add_argument("--nll-num-t", type=int, default=4, help="elbo: time draws per image (default 4)")
    parser.add_argument("--ode-tol", type=float, default=1e-5, help="ode: RK45 rtol = atol (default 1e-5)")
    parser.add_argument("--nll-k", type=int, default=64, help="iwae: importance samples per image (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> dict[str, Any]:
    """Validated options for ``sweep`` (ConfigError for bad values)."""
    for name in ("num", "batch_size", "nll_examples", "nll_num_t", "nll_k"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)} must be a positive integer")
    if not args.ode_tol > 0:
        raise ConfigError(f"--ode-tol={args.ode_tol} must be positive (e.g. 1e-5)")
    if args.num < 2:
        raise ConfigError(f"--num={args.num} must be at least 2 (FD needs a covariance)")
    if args.grid is not None:
        check_choice("--grid", args.grid, grid_choices())
    samplers: list[str | None] = [None] if args.sampler is None else list(comma_list(args.sampler))
    if not samplers:
        raise ConfigError("--sampler needs at least one sampler name, e.g. ddim,ancestral")
    steps: list[int | None] = [None] if args.steps is None else list(positive_ints(args.steps))
    return {
        "metrics": comma_list(args.metrics or ("fd,is" if args.ref else "fd,kid,is")), "samplers": samplers,
        "steps": steps, "grid": args.grid,
        "num_samples": args.num, "seed": args.seed, "batch_size": args.batch_size, "ema": not args.no_ema,
        "features": args.features, "inception_weights": args.inception_weights, "cache_dir": args.cache_dir,
        "nll_method": args.nll_method, "nll_examples": args.nll_examples, "reference_statistics": args.ref,
    }


def nll_settings(args: argparse.Namespace, model: Any, metrics: list[str]) -> dict[str, Any]:
    """{"nll_method", "nll_options"} for ``model``'s family: ``--nll-method`` (default: the family's
    first estimator) and its options from ``--nll-num-t``, ``--ode-tol``, ``--nll-k``."""
    if "nll" not in metrics:
        return {}
    method = args.nll_method or model.nll_methods[0]
    check_choice(f"--nll-method for a {model.family} model", method, model.nll_methods)
    settings = {"num_t": args.nll_num_t, "ode_tol": args.ode_tol, "k": args.nll_k}
    return {"nll_method": method, "nll_options": model.nll_options(method, settings)}


def run(args: argparse.Namespace) -> int:
    options = check_args(args)
    from difflab.cli.progress import ProgressLine
    from difflab.data import DataConfig
    from difflab.evaluation.evaluate import check_metrics, sweep
    from difflab.evaluation.report import markdown_table, write_report
    from difflab.models import load_model

    model = load_model(args.checkpoint, ema=not args.no_ema)
    options["metrics"] = list(check_metrics(options["metrics"], model))  # e.g. nll without one: before anything runs
    options.update(nll_settings(args, model, options["metrics"]))
    trained_on = model.artefact["metadata"].get("data")  # type: ignore[index]
    if not isinstance(trained_on, dict):
        raise ConfigError(f"{model.artefact['path']} does not record its training data; it cannot be evaluated "  # type: ignore[index]
                          "against a reference split")
    data = dataclasses.replace(DataConfig(**trained_on), split=args.split).load()
    model = model.to(torch.device(args.device))
    rows = sweep(model, data, progress=ProgressLine("eval"), **options)
    paths = write_report(rows, Path(args.out))
    print(markdown_table(rows), end="")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
