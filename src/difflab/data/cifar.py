"""CIFAR-10 (Krizhevsky 2009, "Learning multiple layers of features from tiny images"):
32x32 RGB, 256 levels, 10 classes; 50,000 train (``data_batch_1..5``) + 10,000 test (``test_batch``).

Two on-disk forms are read:

* an ``.npz`` with ``images`` uint8 (N, 32, 32, 3) and ``labels`` (N,) (``classes`` optional),
  named ``cifar10_<split>.npz`` when a folder is given;
* the official python batches folder ``cifar-10-batches-py/``. Each batch is a pickle of a dict
  ``{"data": uint8 ndarray (N, 3072) (R, G, B planes of 32x32, row-major), "labels": list of N
  ints, "batch_label", "filenames"}``. Pickles can run arbitrary code when loaded, so they are
  read by ``SafeUnpickler``, which only lets through the few callables needed to rebuild that
  dict (numpy array reconstruction, latin-1 bytes) and refuses everything else.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np

from difflab.data.locate import candidate_dirs, how_to_provide
from difflab.data.raw import RawImages
from difflab.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCH_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
BATCHES_DIR = "cifar-10-batches-py"
SIDE = 32
LATIN1_NAMES = frozenset({"latin1", "iso88591", "l1"})  # spellings with "-" and "_" removed


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """Stand-in for numpy's ``_reconstruct``: an empty plain ndarray, filled later by ``__setstate__``."""
    if subtype is not np.ndarray:
        raise DataError(f"pickle asks for array subtype {subtype!r}; only numpy.ndarray is allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for numpy's protocol-5 ``_frombuffer``: a copy of the raw buffer as an array."""
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).copy()


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol <= 2 pickles use to store bytes; latin-1 only."""
    if encoding.lower().replace("-", "").replace("_", "") not in LATIN1_NAMES:
        raise DataError(f"pickle asks to encode text as {encoding!r}; only latin-1 bytes are allowed")
    return text.encode("latin-1")


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals a CIFAR batch (dict of bytes, lists, ndarrays) needs.

    Any other global (``os.system``, ``builtins.open``, ``eval``, ...) raises DataError before
    anything is called.
    """

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to load {module}.{name} from a pickle: only numpy arrays, bytes, lists and "
                "dicts are allowed in CIFAR batches; is the file from the official CIFAR-10 archive?"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError("refusing a pickle with persistent ids; CIFAR batches have none")


def read_batch(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle one CIFAR python batch with ``SafeUnpickler``; bytes keys are decoded to str."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}; check the path") from e
    try:
        obj = SafeUnpickler(io.BytesIO(content), encoding="latin1").load()
    except DataError as e:
        raise DataError(f"{path}: {e}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError) as e:
        raise DataError(f"file {path} is not a readable CIFAR-10 python batch ({e}); download it again") from e
    if not isinstance(obj, dict):
        raise DataError(f"file {path} holds a {type(obj).__name__}, expected a CIFAR-10 batch dict")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def batch_levels(batch: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Levels (N, 32, 32, 3) and labels (N,) of one unpickled batch, validated."""
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise DataError(f"{path}: 'data' must be a uint8 array (N, 3072); is it a CIFAR-10 batch?")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.size} labels; the file is corrupt")
    levels = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)  # (N, 3072) -> (N, 3, 32, 32) -> (N, 32, 32, 3)
    return levels, labels


def load_batches(folder: Path, split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """Levels and labels of ``split`` from a ``cifar-10-batches-py`` folder."""
    parts = [batch_levels(read_batch(folder / name), folder / name) for name in BATCH_FILES[split]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Levels (N, H, W, 3) and labels (N,) from an ``.npz`` (no pickles allowed)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in ("images", "labels") if k in archive.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} as .npz ({e}); check the file") from e
    if set(arrays) != {"images", "labels"}:
        raise DataError(f"{path} must hold arrays 'images' and 'labels'")
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{path}: 'images' must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be integers ({images.shape[0]},), got {labels.dtype} {labels.shape}")
    return images, labels.astype(np.int64)


def _locate(path: str | os.PathLike | None, split: Literal["train", "test"]) -> Path:
    """The ``.npz`` file or batches folder holding ``split``."""
    if path is not None and Path(path).is_file():
        return Path(path)
    searched = candidate_dirs(path, "cifar10")
    for folder in searched:
        npz = folder / f"cifar10_{split}.npz"
        if npz.is_file():
            return npz
        for batches in (folder / BATCHES_DIR, folder):
            if (batches / BATCH_FILES[split][0]).is_file():
                return batches
    places = ", ".join(str(f) for f in searched)
    raise DataError(
        f"CIFAR-10 {split} split (cifar10_{split}.npz or {BATCHES_DIR}/) not found in {places}; "
        f"{how_to_provide('CIFAR-10', 'cifar10')}"
    )


def load_cifar10(path: str | os.PathLike | None, split: Literal["train", "test"]) -> RawImages:
    """CIFAR-10 ``split`` as levels (N, 32, 32, 3) and labels (N,).

    ``path`` may be an ``.npz`` file (used whatever ``split`` is), a folder holding
    ``cifar10_<split>.npz`` or ``cifar-10-batches-py/``, or the batches folder itself.
    """
    source = _locate(path, split)
    levels, labels = load_npz(source) if source.is_file() else load_batches(source, split)
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{source}: labels must be 0..9, found {labels.min()}..{labels.max()}")
    return RawImages(levels, labels, num_levels=256, classes=CLASSES)
