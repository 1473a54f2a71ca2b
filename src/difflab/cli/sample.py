"""``difflab sample``: draw a grid of images from a checkpoint.

    difflab sample --checkpoint runs/digits --sampler ddim --steps 50 --num 64 --seed 0 --out grid.png
    difflab sample --checkpoint runs/digits/checkpoints/step_0002000 --no-ema --npz samples.npz
    difflab sample --checkpoint runs/digits-blur-cond --class 3 --guidance 2 --out threes.png

Options left out take the model's sampling defaults (the run's ``run.sample`` section). The
EMA weights are used unless ``--no-ema``. Only the model artefact is read (``difflab.load_model``);
IHDM models sample from the prior saved inside them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from difflab.errors import ConfigError, check_choice
from difflab.nn.speed import (
    PRECISIONS,
    autocast,
    compile_in_place,
    networks,
    resolve_precision,
)
from difflab.samplers.grids import grid_choices

DEFAULT_NUM = 64  # images in the grid when --num is left out (8 x 8)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("sample", help="sample an image grid from a checkpoint",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory, or a run folder (its latest)")
    parser.add_argument("--sampler", help="sampler name (default: the model's, i.e. the run's run.sample.sampler)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's run.sample.steps)")
    parser.add_argument("--num", type=int, help=f"number of images (default {DEFAULT_NUM})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    parser.add_argument("--grid", help="time grid: auto (the checkpoint's tuned grid if "
                        "`difflab tune` made one for this sampler and steps, else the process's default), "
                        "uniform, quadratic, logsnr or karras")
    parser.add_argument("--eta", type=float, help="DDIM stochasticity (0 deterministic, 1 DDPM-like)")
    parser.add_argument("--clip-x0", type=float, help="clip the clean estimate to [-c, c]; <= 0 disables")
    parser.add_argument("--class", dest="classes", type=int, nargs="+", metavar="K",
                        help="class index (or indices, repeated to fill the grid) of a class-conditional model")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance weight w: 0 unconditional, "
                        "1 conditional (default), > 1 guided")
    parser.add_argument("--temperature", type=float, help="VAE / flow: std T of the latent draw z ~ N(0, T^2 I) "
                        "(default: the model's)")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    parser.add_argument("--out", default="samples.png", help="PNG grid to write (default samples.png)")
    parser.add_argument("--npz", help="also save the samples to this .npz file")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="autocast: auto = bf16 where the device has bf16 units, fp32 elsewhere (default auto)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the denoiser first (pays off for many samples; eager if it fails)")
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
    if args.grid is not None:
        check_choice("--grid", args.grid, grid_choices())
    if args.temperature is not None and not args.temperature > 0:
        raise ConfigError(f"--temperature={args.temperature} must be positive (1 = the model's prior)")
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


def run(args: argparse.Namespace) -> int:
    from difflab.cli.progress import ProgressLine
    from difflab.evaluation.figures import save_image_grid, save_samples_npz
    from difflab.models import load_model

    device = check_args(args)
    model = load_model(args.checkpoint, ema=not args.no_ema).to(device)
    num = args.num or DEFAULT_NUM
    cond = None
    if args.classes is not None or args.guidance is not None:
        check_guidance(model.conditioning.num_classes, args.guidance, model.conditioning.drop_prob)
    if args.classes is not None:
        from difflab.samplers.guidance import class_labels

        cond = {"class_labels": class_labels(args.classes, num, model.conditioning.num_classes)}
    options = {"sampler": args.sampler, "steps": args.steps, "grid": args.grid, "eta": args.eta,
               "clip_x0": args.clip_x0, "guidance": args.guidance, "temperature": args.temperature}
    options = {k: v for k, v in options.items() if v is not None}  # the family rejects what it does not take
    how = model.sampling_protocol(**options)  # checks the options before anything is drawn or written
    precision = resolve_precision(args.precision, device, key="--precision")
    with autocast(device, precision):
        x = draw_samples(model, args.compile, lambda: model.sample(num, seed=args.seed, cond=cond, device=device,
                                                                   progress=ProgressLine("sample"), **options))
    labels = model.conditioning.resolve(num, cond)
    labels = None if labels is None else labels["class_labels"]
    distinct = 0 if labels is None else len(torch.unique(labels))
    nrow = distinct if 1 < distinct <= 16 else None  # class-conditional: one class per column
    out = save_image_grid(x, Path(args.out), nrow=nrow)
    step = model.artefact["metadata"].get("step", "?")  # type: ignore[index]
    speed = f"{'bf16' if precision == 'bf16' else 'fp16' if precision == 'fp16' else 'fp32'}" + \
        (", compiled" if args.compile else "")
    how_text = how["sampler"] if how["grid"] == "-" else f"{how['sampler']} with {how['steps']} steps on the {how['grid']} grid"
    print(f"wrote {out} ({x.shape[0]} samples, step {step}, {'raw' if args.no_ema else 'EMA'} weights, "
          f"{how_text}, {speed})")
    if args.npz:
        print(f"wrote {save_samples_npz(x, args.npz, labels)}")
    return 0


def draw_samples(model: torch.nn.Module, compile_networks: bool, draw: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``draw()``, with the model's networks compiled first when asked: the first draw compiles
    them; if compilation fails they fall back to eager (one warning) and the draw is repeated."""
    if not compile_networks:
        return draw()
    drawn: list[torch.Tensor] = []
    for name, net in networks(model).items():
        compile_in_place(net, lambda: drawn.append(draw()), what=f"{name} network")
    return drawn[-1] if drawn else draw()


def check_guidance(num_classes: int | None, guidance: float | None, cond_drop_prob: float) -> None:
    """``ConfigError`` for ``--class``/``--guidance`` on an unconditional model; warn if the null label is untrained."""
    if num_classes is None:
        raise ConfigError("--class/--guidance need a class-conditional checkpoint (network.num_classes set); "
                          "train one with e.g. --config digits-blur-cond")
    if guidance is not None and guidance != 1.0 and cond_drop_prob == 0:
        print("difflab sample: warning: the model was trained with objective.cond_drop_prob=0, so its null "
              "(unconditional) label is untrained and guidance != 1 mixes in a meaningless prediction",
              file=sys.stderr)
