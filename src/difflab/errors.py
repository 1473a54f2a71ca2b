"""Errors difflab raises on bad input.

Every user-facing failure (bad config, bad data, bad checkpoint) is one of these
exceptions with a one-line message that says what is wrong and how to fix it. The CLI
prints the message (no traceback) and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable


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
