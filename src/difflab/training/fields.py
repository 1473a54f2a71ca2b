"""Check and convert plain YAML values into the typed fields of a config dataclass.

``dataclass_from_dict(cls, values, section)`` is how every config section (``optim``,
``data``, a process, a network ...) is built from YAML: unknown keys, wrong types and
invalid choices become a one-line ``ConfigError`` naming the key, e.g.
``optim.lr='fast' must be a number``. Nested dataclass fields recurse.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from difflab.errors import ConfigError, check_choice

T = TypeVar("T")
MAX_SEED = 2**31 - 1  # per-rank generators use seed + rank; the data sampler needs seed < 2**32


def dataclass_from_dict(cls: type[T], values: Any, section: str) -> T:
    """``cls(**converted values)``; missing keys take the dataclass defaults.

    Raises ``ConfigError`` for a non-mapping, unknown keys (listing the allowed ones), values
    of the wrong type, and any ``TypeError``/``ValueError`` the constructor raises.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section} must be a mapping of options, got {type(values).__name__} {values!r}")
    known = init_fields(cls)
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise ConfigError(f"unknown {section} option(s) {unknown}; allowed: {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: convert(f"{section}.{k}", v, hints[k]) for k, v in values.items()}
    return construct(cls, kwargs, section)


def init_fields(cls: type) -> list[str]:
    """Names of the fields ``cls(...)`` accepts."""
    return [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]


def construct(cls: type[T], kwargs: dict[str, Any], section: str) -> T:
    """``cls(**kwargs)`` with constructor ``TypeError``/``ValueError`` turned into ``ConfigError``."""
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError, ZeroDivisionError) as err:
        raise ConfigError(f"invalid {section} options: {err}") from None


def convert(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` (and converted: lists -> tuples, ints -> floats)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _convert_union(name, value, typing.get_args(hint))
    if origin is Literal:
        check_choice(name, value, typing.get_args(hint))
        return value
    if origin is tuple:
        return _convert_tuple(name, value, typing.get_args(hint))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return dataclass_from_dict(hint, value, name)
    if hint is Any:
        return value
    return _convert_scalar(name, value, hint)


def _convert_union(name: str, value: Any, options: tuple[Any, ...]) -> Any:
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{name} must be set (got null)")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return convert(name, value, option)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{name}={value!r} is not valid: {'; '.join(errors)}")


def _convert_tuple(name: str, value: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{name} must be a list of {len(args)} values, got {value!r}")
    return tuple(convert(f"{name}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args)))


def _convert_scalar(name: str, value: Any, hint: Any) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}={value!r} must be an integer")
        return value
    if hint is float:
        return _to_float(name, value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string")
        return value
    raise ConfigError(f"{name}: unsupported option type {hint!r}")


def _to_float(name: str, value: Any) -> float:
    """Numbers, and numeric strings such as '1e-3' (YAML 1.1 reads ``1e-3`` as a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name}={value!r} must be a number")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ConfigError(f"{name}={value!r} must be a number") from None
    if math.isnan(number):
        raise ConfigError(f"{name} must be a number, not NaN")
    return number


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
) -> None:
    """``ConfigError`` unless ``low <= value <= high`` (``<`` for an open end); None = unbounded."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ConfigError(f"{name}={value!r} is out of range {lo}, {hi}{'; ' + why if why else ''}")
