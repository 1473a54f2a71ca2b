"""Image datasets in memory as float32 (N, C, H, W) in [-1, 1], and a resumable batch sampler.

Entry points: ``load_dataset`` / ``DataConfig`` to get an ``ImageDataset``;
``ResumableBatchSampler`` for the index order; ``random_hflip`` for batch-time augmentation.
"""

from difflab.data.config import DataConfig
from difflab.data.dataset import ImageDataset, levels_to_signed
from difflab.data.idx import read_idx, write_idx
from difflab.data.load import DATASET_NAMES, load_dataset
from difflab.data.sampler import ResumableBatchSampler
from difflab.data.transforms import random_hflip

__all__ = [
    "DATASET_NAMES",
    "DataConfig",
    "ImageDataset",
    "ResumableBatchSampler",
    "levels_to_signed",
    "load_dataset",
    "random_hflip",
    "read_idx",
    "write_idx",
]
