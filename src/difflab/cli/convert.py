"""``difflab convert``: rewrite a checkpoint of the earlier single-folder layout as ``model/`` + ``train_state/``.

    difflab convert runs/digits-blur                 # the run's latest checkpoint
    difflab convert runs/mnist-ihdm/checkpoints/step_0001000 --prior runs/mnist-ihdm/prior.safetensors

The weights, EMA and training state are kept bit for bit; IHDM's prior (the run folder's
``prior.safetensors`` by default) moves inside the model. The conversion is atomic: a failure
leaves the old checkpoint as it was.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("convert", help="convert a checkpoint of the earlier layout",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint directory, or a run folder (its latest)")
    parser.add_argument("--prior", help="IHDM only: the run's prior.safetensors (default: <run folder>/prior.safetensors)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from difflab.models.legacy import convert_checkpoint

    path = convert_checkpoint(args.checkpoint, prior=args.prior)
    print(f"converted {path}: model/ (weights, EMA, fitted state, config.json) and train_state/")
    return 0
