"""Validation of the fields every network config shares (sizes, dropout, num_classes), and of image shapes."""

from __future__ import annotations

from difflab.errors import ConfigError, DataError


def check_common_fields(
    owner: str, sizes: dict[str, int], dropout: float, num_classes: int | None
) -> None:
    """Raise ``ConfigError`` unless every size is >= 1, dropout is in [0, 1) and num_classes
    is None or >= 1; ``owner`` (e.g. "UNetConfig") prefixes the field name in the message."""
    for name, value in sizes.items():
        if value < 1:
            raise ConfigError(f"{owner}.{name}={value} must be a positive integer")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{owner}.dropout={dropout} must lie in [0, 1)")
    if num_classes is not None and num_classes < 1:
        raise ConfigError(
            f"{owner}.num_classes={num_classes} must be >= 1, or None for unconditional"
        )


def check_divisible(shape: tuple[int, ...], factor: int, what: str) -> None:
    """Raise ``DataError`` unless H and W of ``shape`` (..., H, W) are multiples of ``factor``."""
    if len(shape) != 4 or shape[-2] % factor or shape[-1] % factor:
        raise DataError(
            f"{what} needs images (B, C, H, W) with H and W multiples of {factor}; got shape {tuple(shape)}"
        )
