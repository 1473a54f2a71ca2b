"""``difflab demo``: blurring diffusion on embedded 8x8 digits, end to end on a CPU.

    difflab demo                       # ~4 minutes on 2 CPU cores; writes runs/demo/
    difflab demo --steps 200 --out runs/quick

Trains the shipped ``digits-blur`` config, then writes a sample grid, the forward process
as an image strip, the reverse trajectory as an animated GIF, the loss curve and a summary.
It also tunes the 10-step time grid to the trained network (``run.tune_steps``, as
``difflab tune`` does) and compares FD at 10 network evaluations on the fixed and the tuned grid.
Running it again continues the same run (nothing is retrained once the steps are done);
``--fresh`` starts over.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from difflab.errors import ConfigError

DEMO_CONFIG = "digits-blur"
DEMO_STEPS = 3500  # ~3 minutes on 2 quiet CPU cores (batch 64, 0.7M-parameter UNet, ~1300 images/s)
FEW_STEPS = 10  # the few-step budget whose grid the demo tunes (~30 s) and evaluates: FD 19.0 -> 13.4


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="train and sample a blurring diffusion model on digits",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--steps", type=int, default=DEMO_STEPS, help=f"training steps (default {DEMO_STEPS})")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and train from scratch")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from difflab.training.config import load_config
    from difflab.training.trainer import Trainer

    if args.steps < 1:
        raise ConfigError(f"--steps={args.steps} must be a positive integer")
    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    # One evaluation (FD/KID vs the digits test split) at the end of training.
    overrides = [f"run.out_dir={out}", f"optim.steps={args.steps}", "run.sample_every=0", f"run.eval_every={args.steps}",
                 f"run.tune_steps=[{FEW_STEPS}]"]
    config = load_config(DEMO_CONFIG, overrides)
    t0 = time.perf_counter()
    print(f"difflab demo: training {DEMO_CONFIG} for {args.steps} steps -> {out}/")
    trainer = Trainer(config, resume="auto")
    summary = trainer.train()
    if summary["interrupted"]:
        print(f"difflab demo: interrupted; run it again to continue from {summary['checkpoint']}")
        return 0
    files = write_figures(trainer, out)
    summary["total_wall_time_s"] = time.perf_counter() - t0
    summary["eval"] = last_evaluation(trainer)
    summary["few_step"] = few_step_comparison(trainer)
    print(f"difflab demo: {few_step_line(summary['few_step'])[2:]}")
    write_summary(out, summary, files, config.to_dict())
    print(f"difflab demo: done in {summary['total_wall_time_s']:.0f} s; samples in {files['samples']}")
    return 0


def write_figures(trainer: Any, out: Path) -> dict[str, str]:
    """Samples, forward strip and reverse GIF from the EMA weights of ``trainer``."""
    from difflab.evaluation.figures import save_forward_strip, save_image_grid, save_trajectory_gif
    from difflab.samplers import sample

    cfg, process = trainer.config, trainer.process
    model = trainer.ema.module.eval().network
    shape = trainer.image_shape
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    s = cfg.run.sample
    common = {"prediction": cfg.objective.prediction, "sampler": s.sampler, "steps": s.steps, "clip_x0": s.clip_x0}
    x = sample(model, process, (64, *shape), generator=gen(0), **common)
    files = {"samples": save_image_grid(x, out / "samples.png", nrow=8)}
    real = trainer.dataset.images[:4]
    files["forward_process"] = save_forward_strip(process, real, out / "forward_process.png", generator=gen(1))
    _, frames = sample(model, process, (16, *shape), generator=gen(2), return_trajectory=True, **common)
    files["reverse_process"] = save_trajectory_gif(frames, out / "reverse_process.gif", nrow=4)
    files["loss"] = out / "loss.png"
    if (out / "eval.png").exists():
        files["eval"] = out / "eval.png"
    return {k: str(v) for k, v in files.items()}


def few_step_comparison(trainer: Any, steps: int = FEW_STEPS) -> dict[str, Any] | None:
    """FD (the run's evaluation protocol) at ``steps`` NFE with the auto sampler, on the process's
    fixed auto grid and on the grid tuned to these weights; None if no tuned grid exists."""
    from difflab.evaluation.evaluate import evaluate
    from difflab.samplers.api import auto_grid, resolve_sampler

    model = trainer.ema.module.eval()
    sampler = resolve_sampler("auto", model.process)
    tuned = model.tuned_grids  # set by the run's grid tuning (run.tune_steps)
    if tuned is None or tuned.get(sampler, steps) is None:
        return None
    o, evaluator = trainer.config.run.eval, trainer.outputs.evaluator
    fd = {}
    for name, grid in (("fixed", auto_grid(model.process)), ("tuned", "auto")):
        fd[name] = evaluate(model, evaluator.data, metrics=("fd",), num_samples=o.num_samples, sampler="auto",
                            steps=steps, grid=grid, seed=o.seed, clip_x0=o.clip_x0 if o.clip_x0 is not None else 0.0,
                            features=evaluator.extractor, cache_dir=o.cache_dir, ema=True)["fd"]
    return {"steps": steps, "sampler": sampler,
            "fixed_grid": auto_grid(trainer.process), "fd_fixed": fd["fixed"], "fd_tuned": fd["tuned"]}


def few_step_line(record: dict[str, Any] | None) -> str:
    if record is None:
        return "- few-step sampling: no tuned grid (run.tune_steps is empty)"
    return (f"- {record['steps']} network evaluations ({record['sampler']}): FD {record['fd_fixed']:.1f} on the fixed "
            f"{record['fixed_grid']} grid, {record['fd_tuned']:.1f} on the grid tuned to this network")


def last_evaluation(trainer: Any) -> dict[str, Any] | None:
    """The newest ``{"step", "eval", "protocol"}`` line of the run's metrics log, if any."""
    lines = [r for r in trainer.metrics.read() if "eval" in r]
    return lines[-1] if lines else None


def _fmt(value: float | None) -> str:
    return "n/a (already trained)" if value is None else f"{value:.4f}"


def _eval_lines(record: dict[str, Any] | None) -> list[str]:
    if record is None:
        return []
    numbers = ", ".join(f"{k} {v:.4g}" for k, v in record["eval"].items() if isinstance(v, float))
    return [f"- evaluation at step {record['step']}: {numbers} ({record['protocol']})"]


def write_summary(out: Path, summary: dict[str, Any], files: dict[str, str], config: dict[str, Any]) -> None:
    """summary.json (everything) and summary.md (for people)."""
    record = {**summary, "files": files, "config": config}
    (out / "summary.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    lines = [
        "# difflab demo",
        "",
        f"- process: {config['process']}",
        f"- training: {summary['steps']} steps, batch {config['optim']['batch_size']}, "
        f"{summary['images_per_s']:.0f} images/s this run, final loss {_fmt(summary['final_loss'])}",
        f"- wall time: {summary['total_wall_time_s']:.0f} s (training {summary['wall_time_s']:.0f} s this run)",
        f"- sampler: {config['run']['sample']['sampler']}, {config['run']['sample']['steps']} steps, EMA weights",
        *_eval_lines(summary.get("eval")),
        few_step_line(summary.get("few_step")),
        "",
        *[f"- {name}: `{path}`" for name, path in files.items()],
        f"- checkpoint: `{summary['checkpoint']}`",
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
