"""The ``difflab`` command: one subcommand per module in ``difflab.cli``.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. User
errors (``DifflabError``) are printed as one line and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from difflab.errors import DifflabError

# Subcommand name -> module in difflab.cli (imported lazily so `difflab --help` is fast).
SUBCOMMANDS: dict[str, str] = {
    "train": "train",
    "sample": "sample",
    "demo": "demo",
    "eval": "eval",
    "probe": "probe",
    "tune": "tune",
    "convert": "convert",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="difflab", description="Generative models: train, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(f"difflab.cli.{module}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if hasattr(args, "overrides") and overrides == extra:  # KEY=VALUE after an option: argparse leaves them over
        args.overrides = [*args.overrides, *overrides]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args) or 0)
    except DifflabError as err:
        print(f"difflab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"difflab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
