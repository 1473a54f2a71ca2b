"""``load_dataset``: the one entry point training and the CLI use to get images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from difflab.data.cifar import load_cifar10
from difflab.data.dataset import ImageDataset, levels_to_signed
from difflab.data.digits import load_digits
from difflab.data.folder import ON_CORRUPT, OnCorrupt, load_folder
from difflab.data.mnist import load_mnist
from difflab.data.preprocess import ChannelMode, fit_levels
from difflab.data.raw import RawImages
from difflab.errors import ConfigError, check_choice

DatasetName = Literal["digits", "mnist", "cifar10", "folder"]
DATASET_NAMES: tuple[DatasetName, ...] = ("digits", "mnist", "cifar10", "folder")
Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


def check_image_size(image_size: int | None) -> None:
    """ConfigError unless ``image_size`` is None or a positive int."""
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size={image_size!r} must be a positive number of pixels or None for the native size")


def read_raw(
    name: DatasetName,
    path: str | os.PathLike | None,
    split: Split,
    *,
    image_size: int | None,
    channels: int | None,
    channel_mode: ChannelMode,
    on_corrupt: OnCorrupt,
    class_subfolders: bool,
) -> RawImages:
    """Integer levels and labels of dataset ``name`` as stored (folders are already resized)."""
    if name == "digits":
        return load_digits(split)
    if name == "mnist":
        return load_mnist(path, split)
    if name == "cifar10":
        return load_cifar10(path, split)
    return load_folder(
        path,
        image_size=image_size,
        channels=channels,
        channel_mode=channel_mode,
        on_corrupt=on_corrupt,
        class_subfolders=class_subfolders,
    )


def load_dataset(
    name: DatasetName,
    *,
    path: str | os.PathLike | None = None,
    split: Split = "train",
    image_size: int | None = None,
    channels: int | None = None,
    channel_mode: ChannelMode = "convert",
    on_corrupt: OnCorrupt = "fail",
    class_subfolders: bool = False,
) -> ImageDataset:
    """Load a whole dataset into memory as float32 (N, C, H, W) images in [-1, 1].

    Args:
        name: "digits" (sklearn 8x8, 17 levels, no files), "mnist" (IDX files), "cifar10"
            (.npz or python batches) or "folder" (any folder of images, 256 levels).
        path: file or folder to read; None searches the default data dirs (see
            ``difflab.data.locate``). Required for "folder".
        split: "train" or "test". A "folder" has no splits: point ``path`` at the one you want.
        image_size: pixels per side after resizing the shorter side (bicubic) and centre-cropping;
            None keeps the native size.
        channels: 1 (grey) or 3 (RGB); None keeps the native count.
        channel_mode: "convert" to ``channels`` (grey repeated, or BT.601 luma) or "fail".
        on_corrupt: "folder" only: "skip" unreadable files with a warning, or "fail".
        class_subfolders: "folder" only: label images by their first-level subfolder.
    """
    check_choice("name", name, DATASET_NAMES)
    check_choice("split", split, SPLITS)
    check_image_size(image_size)
    check_choice("on_corrupt", on_corrupt, ON_CORRUPT)
    raw = read_raw(
        name,
        path,
        split,
        image_size=image_size,
        channels=channels,
        channel_mode=channel_mode,
        on_corrupt=on_corrupt,
        class_subfolders=class_subfolders,
    )
    title = f"folder/{Path(path).name}" if name == "folder" else f"{name}/{split}"
    levels = fit_levels(
        raw.levels, raw.num_levels, image_size=image_size, channels=channels, channel_mode=channel_mode, source=title
    )
    labels = None if raw.labels is None else torch.from_numpy(raw.labels)
    return ImageDataset(
        images=levels_to_signed(levels, raw.num_levels),
        labels=labels,
        num_classes=None if labels is None else len(raw.classes),
        num_levels=raw.num_levels,
        name=title,
        classes=raw.classes,
    )
