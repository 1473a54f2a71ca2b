"""The ``difflab`` command: one subcommand per module in ``difflab.cli``.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. User
errors (``DifflabError``) are printed as one line and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

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
    "features": "features",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="difflab", description="Generative models: train, sample, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(f"difflab.cli.{module}").add_parser(sub)
    return parser


@contextlib.contextmanager
def one_line_warnings(prefix: str) -> Iterator[None]:
    """Show Python warnings (e.g. skipped corrupt images) as ``prefix: warning: message``."""

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"{prefix}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if hasattr(args, "overrides") and overrides == extra:  # KEY=VALUE after an option: argparse leaves them over
        args.overrides = [*args.overrides, *overrides]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        with one_line_warnings(f"difflab {args.command}"):
            return int(args.run(args) or 0)
    except DifflabError as err:
        print(f"difflab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"difflab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
