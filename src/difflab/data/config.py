"""``DataConfig``: what training reads its images from, validated on construction."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from difflab.data.dataset import ImageDataset
from difflab.data.folder import ON_CORRUPT, OnCorrupt
from difflab.data.load import DATASET_NAMES, SPLITS, DatasetName, Split, check_image_size, load_dataset
from difflab.data.preprocess import ChannelMode, check_channels
from difflab.errors import ConfigError, check_choice


@dataclass(frozen=True)
class DataConfig:
    """Dataset choice and preprocessing for training.

    Attributes:
        name: dataset. Default "digits": embedded in scikit-learn, so a run works with no files.
        path: file or folder to read; None searches ``../shared/data`` then ``$DIFFLAB_DATA_DIR``.
        split: "train" or "test".
        image_size: pixels per side after shorter-side resize + centre crop; None keeps the native
            size (digits 8, MNIST 28, CIFAR-10 32) so nothing is interpolated by default.
        channels: 1 or 3; None keeps the native count.
        channel_mode: "convert" mismatching images or "fail" on them.
        on_corrupt: "folder" only; default "fail" so broken files are seen rather than silently
            dropped ("skip" warns with the count).
        class_subfolders: "folder" only: label images by their first-level subfolder.
        hflip: random left-right flip (p = 0.5) at batch time. Off by default because digits are
            not mirror-symmetric; DDPM (Ho et al. 2020, App. B) used it for CIFAR-10.
    """

    name: DatasetName = "digits"
    path: str | None = None
    split: Split = "train"
    image_size: int | None = None
    channels: int | None = None
    channel_mode: ChannelMode = "convert"
    on_corrupt: OnCorrupt = "fail"
    class_subfolders: bool = False
    hflip: bool = False

    def __post_init__(self) -> None:
        check_choice("data.name", self.name, DATASET_NAMES)
        check_choice("data.split", self.split, SPLITS)
        check_image_size(self.image_size)
        check_channels(self.channels, self.channel_mode)
        check_choice("data.on_corrupt", self.on_corrupt, ON_CORRUPT)
        if self.name == "folder" and self.path is None:
            raise ConfigError("data.name='folder' needs data.path set to a folder of images")
        if self.class_subfolders and self.name != "folder":
            raise ConfigError(f"data.class_subfolders applies only to name='folder', not {self.name!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DataConfig:
        """Build from a mapping (e.g. a YAML section); unknown keys are a ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown data option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def load(self) -> ImageDataset:
        """``load_dataset`` with these options (``hflip`` is applied later, per batch)."""
        options = dataclasses.asdict(self)
        del options["hflip"]
        return load_dataset(options.pop("name"), **options)
