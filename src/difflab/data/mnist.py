"""MNIST from the original IDX files: 60,000 train + 10,000 test 28x28 grey digits, 256 levels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from difflab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from difflab.data.locate import candidate_dirs, how_to_provide
from difflab.data.raw import RawImages
from difflab.errors import DataError

FILE_STEMS = {"train": "train", "test": "t10k"}
CLASSES = tuple(str(d) for d in range(10))


def _find(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_mnist_files(path: str | os.PathLike | None, split: Literal["train", "test"]) -> tuple[Path, Path]:
    """(images file, labels file) of ``split``, searched in ``path`` or the default data dirs."""
    stem = FILE_STEMS[split]
    searched = candidate_dirs(path, "mnist")
    for folder in searched:
        images = _find(folder, f"{stem}-images-idx3-ubyte")
        labels = _find(folder, f"{stem}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            return images, labels
    places = ", ".join(str(f) for f in searched)
    raise DataError(
        f"MNIST {split} files ({stem}-images-idx3-ubyte[.gz], {stem}-labels-idx1-ubyte[.gz]) "
        f"not found in {places}; {how_to_provide('MNIST', 'mnist')}"
    )


def load_mnist(path: str | os.PathLike | None, split: Literal["train", "test"]) -> RawImages:
    """MNIST ``split`` as levels (N, 28, 28, 1) and labels (N,)."""
    images_file, labels_file = find_mnist_files(path, split)
    images = read_idx(images_file, magic=IMAGES_MAGIC)
    labels = read_idx(labels_file, magic=LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_file} holds {images.shape[0]} images but {labels_file} holds {labels.shape[0]} labels; "
            "use files from the same split"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{labels_file} has label {labels.max()}, MNIST labels are 0..9; is it the right file?")
    return RawImages(images[..., None], labels.astype(np.int64), num_levels=256, classes=CLASSES)
