"""The IDX file format of MNIST (LeCun et al., "Gradient-based learning applied to document
recognition", 1998; format described on the MNIST page).

A file is a big-endian header: magic number ``0x0000 TT DD`` (TT = element type, DD = number
of dimensions), then DD 32-bit sizes, then the elements in row-major order. MNIST images are
magic 2051 (uint8, 3 dims: count, rows, cols), labels 2049 (uint8, 1 dim: count). Files may
be gzip-compressed (detected by content, not name).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from difflab.errors import DataError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
UBYTE = 0x08
GZIP_SIGNATURE = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """File content, gunzipped if it starts with the gzip signature."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}; check the path") from e
    if not raw.startswith(GZIP_SIGNATURE):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"file {path} is a truncated or corrupt gzip file ({e}); download it again") from e


def read_idx(path: str | os.PathLike, *, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file whose magic number must be ``magic`` (2051 or 2049).

    Returns the uint8 array with the header's shape. Raises DataError on a wrong magic number,
    truncation, trailing bytes or bad gzip.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"file {path} is truncated: expected at least 4 bytes, got {len(data)}")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise DataError(f"file {path} has IDX magic number {found}, expected {magic}; is it the right file?")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"file {path} is truncated: expected at least {header} bytes, got {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape))
    if len(data) < expected:
        raise DataError(f"file {path} is truncated: expected {expected} bytes, got {len(data)}")
    if len(data) > expected:
        extra = len(data) - expected
        raise DataError(f"file {path} has {extra} bytes after the data its header declares; is it corrupt?")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (magic ``0x0800 + ndim``); gzip if ``path`` ends in ``.gz``."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise DataError(f"write_idx needs a uint8 array with 1..255 dims, got {array.dtype} with {array.ndim}")
    header = struct.pack(f">I{array.ndim}I", (UBYTE << 8) | array.ndim, *array.shape)
    content = header + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
