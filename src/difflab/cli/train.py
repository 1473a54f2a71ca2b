"""``difflab train``: train a diffusion model from a YAML config.

    difflab train --config digits-blur run.out_dir=runs/blur optim.steps=500
    difflab train --config digits-gauss --budget 10m   # as many steps as 10 minutes of training allow
    difflab train --config my.yaml --resume            # continue run.out_dir if it has a checkpoint
    difflab train --resume runs/blur                    # continue with the run's own config
    accelerate launch --cpu --num_processes 2 -m difflab.cli train --config digits-gauss

``--config`` takes a YAML file or the name of a shipped config (see ``--list-configs``).
Bad options exit with code 2 and a one-line message before anything is written.
SIGINT/SIGTERM save a checkpoint and exit 0, printing how to resume.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from difflab.errors import ConfigError

if TYPE_CHECKING:
    from difflab.training.config import TrainConfig


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("train", help="train a model from a YAML config",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file or shipped config name (e.g. digits-gauss)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="override options, e.g. optim.lr=1e-3 run.out_dir=runs/x")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="DIR",
                        help="continue from DIR (a checkpoint or run folder); without DIR, from "
                             "run.out_dir if it holds a checkpoint")
    parser.add_argument("--budget", metavar="DURATION",
                        help="train for this much time instead of optim.steps, e.g. 90s, 10m, 2h "
                             "(sets optim.time_budget; the LR decays and the EMA fits the estimated steps)")
    parser.add_argument("--list-configs", action="store_true", help="print the shipped config names and exit")
    parser.set_defaults(run=run)


def split_resume_override(args: argparse.Namespace) -> None:
    """``--resume optim.steps=10``: argparse gives the override to --resume; move it back."""
    if args.resume not in (None, "auto") and "=" in args.resume and not Path(args.resume).exists():
        args.overrides = [*args.overrides, args.resume]
        args.resume = "auto"


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: ``--config`` + overrides, or the resumed checkpoint's config + overrides."""
    from difflab.training.checkpoint import read_config, resolve_checkpoint
    from difflab.training.config import (
        TrainConfig,
        apply_overrides,
        load_config,
        shipped_configs,
    )

    if args.config is not None:
        return load_config(args.config, args.overrides)
    if args.resume not in (None, "auto"):
        saved = read_config(resolve_checkpoint(args.resume))
        return TrainConfig.from_dict(apply_overrides(saved.to_dict(), list(args.overrides)))
    names = ", ".join(sorted(shipped_configs()))
    raise ConfigError(f"pass --config FILE (or a shipped config: {names}), or --resume DIR")


def run(args: argparse.Namespace) -> int:
    from difflab.training.config import shipped_configs
    from difflab.training.trainer import Trainer

    split_resume_override(args)
    if args.budget is not None:  # replaces the config's step count, not one given beside it (that is an error)
        steps_given = any(o.strip().startswith("optim.steps=") for o in args.overrides)
        args.overrides = [*args.overrides, f"optim.time_budget={args.budget}", *([] if steps_given else ["optim.steps=null"])]
    if args.list_configs:
        for name, path in sorted(shipped_configs().items()):
            print(f"{name}\t{path}")
        return 0
    config = resolve_config(args)
    trainer = Trainer(config, resume=args.resume)
    summary = trainer.train()
    if trainer.accelerator.is_main_process:
        print(report(summary, args), file=sys.stderr if summary["interrupted"] else sys.stdout)
    return 0


def report(summary: dict[str, Any], args: argparse.Namespace) -> str:
    """One or two lines about the finished (or interrupted) run."""
    if summary["interrupted"]:
        config = f"--config {shlex.quote(args.config)} " if args.config else ""
        extra = "".join(f" {shlex.quote(o)}" for o in args.overrides)
        return (f"difflab train: stopped by {summary['interrupted']} at step {summary['steps']}; checkpoint saved "
                f"to {summary['checkpoint']}\nresume with: difflab train {config}--resume "
                f"{shlex.quote(summary['out_dir'])}{extra}")
    loss = "n/a" if summary["final_loss"] is None else f"{summary['final_loss']:.4g}"  # IHDM losses are ~1e-5
    tuned = "".join(f"\ntuned the {g.sampler} grid for {g.steps} steps in {seconds:.0f} s: relative MSE to the "
                    f"converged ODE solution {g.rel_mse_start:.2e} -> {g.rel_mse:.2e}"
                    for g, seconds in summary.get("tuned_grids", []))
    return (f"trained {summary['steps_this_run']} steps (total {summary['steps']}) in {summary['wall_time_s']:.1f} s, "
            f"{summary['images_per_s']:.0f} images/s, final loss {loss}, skipped {summary['skipped']}; "
            f"checkpoint: {summary['checkpoint']}{budget_line(summary)}{speed_line(summary)}{fitted_line(summary)}"
            f"{tuned}")


def fitted_line(summary: dict[str, Any]) -> str:
    """"\nfitted before training: ...": the model's report of its data-dependent state, if any."""
    return f"\nfitted before training: {summary['fitted']}" if summary.get("fitted") else ""


def budget_line(summary: dict[str, Any]) -> str:
    """"\ntime budget ...": the budget, the training time used and the estimated step count."""
    b = summary.get("budget")
    if not b:
        return ""
    estimate = (f"{b['total_steps']} steps estimated after the first {b['estimated_at']}" if b["total_steps"]
                else "stopped before the step count was estimated")
    over = "; overran: the machine got slower than the first steps said" if b["overran"] else ""
    return f"\ntime budget {b['seconds']:.0f} s: {b['used_s']:.1f} s of training used, {estimate}{over}"


def speed_line(summary: dict[str, Any]) -> str:
    """"\nspeed: ...": the precision, memory format and compiled networks the run used."""
    s = summary.get("speed")
    if s is None:
        return ""
    precision = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[s.precision]
    compiled = f"compiled {', '.join(s.compiled)}" if s.compiled else "eager"
    return f"\nspeed: {precision}, {'channels_last' if s.channels_last else 'contiguous'}, {compiled}"
