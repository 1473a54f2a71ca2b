"""Errors difflab raises on bad input.

Every user-facing failure (bad config, bad data, bad checkpoint) is one of these
exceptions with a one-line message that says what is wrong and how to fix it. The CLI
prints the message (no traceback) and exits with code 2.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class DifflabError(ValueError):
    """Base class: a problem with the user's input, not a bug in difflab."""


class ConfigError(DifflabError):
    """An invalid, unknown or contradictory option."""


class DataError(DifflabError):
    """Missing, empty, corrupt or wrongly shaped data."""


class CheckpointError(DifflabError):
    """A missing, corrupt, unsafe or incompatible checkpoint."""


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``allowed``, listing the allowed values."""
    allowed = list(allowed)
    if value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {choices}")


def check_options(subject: str, fn: Callable[..., Any], options: Mapping[str, Any], shared: Iterable[str]) -> None:
    """Raise ``ConfigError`` if ``options`` holds keywords that ``fn`` does not take.

    ``shared`` names the parameters the caller fills in itself (not user options); the error
    lists the options ``fn`` does accept, e.g. "sampler 'ddim' has no option(s) ['order']; ...".
    """
    shared = set(shared)
    allowed = [p for p in inspect.signature(fn).parameters if p not in shared]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{subject} has no option(s) {unknown}; its options are: {allowed or 'none'}")
