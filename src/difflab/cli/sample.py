"""``difflab sample``: draw a grid of images from a checkpoint.

    difflab sample --checkpoint runs/digits --sampler ddim --steps 50 --num 64 --seed 0 --out grid.png
    difflab sample --checkpoint runs/digits/checkpoints/step_0002000 --no-ema --npz samples.npz
    difflab sample --checkpoint runs/digits-blur-cond --class 3 --guidance 2 --out threes.png

Options left out take the values of the checkpoint's ``run.sample`` section. The EMA
weights are used unless ``--no-ema``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from difflab.errors import ConfigError, check_choice
from difflab.samplers.grids import grid_choices


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("sample", help="sample an image grid from a checkpoint",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run folder (its latest)")
    parser.add_argument("--sampler", help="sampler name (default: the run's run.sample.sampler)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: run.sample.steps)")
    parser.add_argument("--num", type=int, help="number of images (default: run.sample.num)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    parser.add_argument("--grid", default="auto", help="time grid: auto (the checkpoint's tuned grid if "
                        "`difflab tune` made one for this sampler and steps, else the process's default), "
                        "uniform, quadratic, logsnr or karras")
    parser.add_argument("--eta", type=float, help="DDIM stochasticity (0 deterministic, 1 DDPM-like)")
    parser.add_argument("--clip-x0", type=float, help="clip the clean estimate to [-c, c]; <= 0 disables")
    parser.add_argument("--class", dest="classes", type=int, nargs="+", metavar="K",
                        help="class index (or indices, repeated to fill the grid) of a class-conditional model")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance weight w: 0 unconditional, "
                        "1 conditional (default), > 1 guided")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--out", default="samples.png", help="PNG grid to write (default samples.png)")
    parser.add_argument("--npz", help="also save the samples to this .npz file")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--prior", help="IHDM only: prior .safetensors (default: the run folder's prior.safetensors)")
    parser.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> torch.device:
    """``ConfigError`` for out-of-range numbers or a bad device; returns the device."""
    for name in ("steps", "num"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name}={value} must be a positive integer")
    if not 0 <= args.seed < 2**63:
        raise ConfigError(f"--seed={args.seed} must be in [0, 2**63)")
    if args.eta is not None and not 0 <= args.eta <= 1:
        raise ConfigError(f"--eta={args.eta} must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like)")
    check_choice("--grid", args.grid, grid_choices())
    return check_device(args.device)


def check_device(text: str) -> torch.device:
    """The torch device named by ``--device``; ``ConfigError`` if it is malformed or unavailable."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"--device={text!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device={text} but CUDA is not available; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device={text!r} is not supported; use cpu, cuda or mps")
    return device


def grid_option(grid: str, checkpoint_dir: Path, ema: bool) -> str | Any:
    """``--grid``: a name, or for "auto" the checkpoint's tuned grids when it has any (``difflab tune``)."""
    from difflab.training.tuned_grids import load_tuned_grids

    return (load_tuned_grids(checkpoint_dir, ema) or "auto") if grid == "auto" else grid


def heat_sampler_options(process: Any, prior_path: str | Path) -> dict[str, Any]:
    """{"prior": HeatPrior} for an IHDM run (its prior is fitted to the data at training time), else {}."""
    from difflab.processes import HeatDissipation, HeatPrior

    return {"prior": HeatPrior.load(prior_path)} if isinstance(process, HeatDissipation) else {}


def run(args: argparse.Namespace) -> int:
    from difflab.training.checkpoint import load_checkpoint
    from difflab.evaluation.figures import save_image_grid
    from difflab.training.sampling import sample_grid, save_samples_npz

    device = check_args(args)
    ckpt = load_checkpoint(args.checkpoint)
    s = ckpt.config.run.sample
    model = (ckpt.model if args.no_ema else ckpt.ema_model).to(device)
    options = heat_sampler_options(ckpt.process, args.prior or ckpt.path.parent.parent / "prior.safetensors")
    clip = s.clip_x0 if args.clip_x0 is None else (args.clip_x0 if args.clip_x0 > 0 else None)
    num_classes = ckpt.config.network.get("num_classes")
    kwargs = {"num": args.num or s.num, "prediction": ckpt.config.objective.prediction,
              "sampler": args.sampler or s.sampler, "steps": args.steps or s.steps, "seed": args.seed,
              "eta": s.eta if args.eta is None else args.eta, "clip_x0": clip, "num_classes": num_classes,
              "grid": grid_option(args.grid, ckpt.path, not args.no_ema), **options}
    image_shape = tuple(ckpt.training_state["image_shape"])
    if args.classes is None and args.guidance is None:
        x, labels = sample_grid(model, ckpt.process, image_shape, **kwargs)
    else:
        check_guidance(num_classes, args.guidance, ckpt.config.objective.cond_drop_prob)
        x, labels = sample_guided_grid(model, ckpt.process, image_shape, classes=args.classes,
                                       guidance=1.0 if args.guidance is None else args.guidance, **kwargs)
    distinct = 0 if labels is None else len(torch.unique(labels))
    nrow = distinct if 1 < distinct <= 16 else None  # class-conditional: one class per column
    out = save_image_grid(x, Path(args.out), nrow=nrow)
    from difflab.samplers.api import grid_name, resolve_sampler

    ran = resolve_sampler(kwargs["sampler"], ckpt.process)
    grid = grid_name(kwargs["grid"], kwargs["steps"], ckpt.process, ran)
    print(f"wrote {out} ({x.shape[0]} samples, step {ckpt.step}, {'raw' if args.no_ema else 'EMA'} weights, "
          f"{ran} with {kwargs['steps']} steps on the {grid} grid)")
    if args.npz:
        print(f"wrote {save_samples_npz(x, args.npz, labels)}")
    return 0


def check_guidance(num_classes: int | None, guidance: float | None, cond_drop_prob: float) -> None:
    """``ConfigError`` for ``--class``/``--guidance`` on an unconditional model; warn if the null label is untrained."""
    if num_classes is None:
        raise ConfigError("--class/--guidance need a class-conditional checkpoint (network.num_classes set); "
                          "train one with e.g. --config digits-blur-cond")
    if guidance is not None and guidance != 1.0 and cond_drop_prob == 0:
        print("difflab sample: warning: the model was trained with objective.cond_drop_prob=0, so its null "
              "(unconditional) label is untrained and guidance != 1 mixes in a meaningless prediction",
              file=sys.stderr)


def sample_guided_grid(
    model: torch.nn.Module, process: Any, image_shape: tuple[int, ...], *, classes: list[int] | None,
    guidance: float, num: int, num_classes: int, eta: float | None, **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``sample_grid`` with classifier-free guidance w and the given classes (None: 0..K-1 repeating).

    Draws through ``difflab.evaluation.generate`` (the one sampling path); ``guidance`` and the
    null label (= num_classes) go on to ``difflab.sample``.
    """
    from difflab.evaluation.evaluate import generate
    from difflab.samplers.guidance import class_labels

    labels = class_labels(range(num_classes) if classes is None else classes, num, num_classes)
    options = {} if eta is None else {"eta": eta}
    x = generate(model, process, image_shape, num_samples=num, num_classes=num_classes, labels=labels,
                 guidance=guidance, null_label=num_classes, **kwargs, **options)
    return x, labels
