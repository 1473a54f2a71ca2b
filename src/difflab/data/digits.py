"""sklearn's embedded 8x8 digits (UCI optical recognition of handwritten digits, test part):
1797 images, pixel values 0..16 (17 levels), labels 0..9. Needs no files.

Split: per class, a fixed fraction ``TEST_FRACTION`` of the images (rounded) goes to the test
split, chosen by ``torch.randperm`` seeded with ``SPLIT_SEED``; the rest is train. Stratified, so
both splits have ~the full class balance: 1438 train / 359 test images.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from difflab.data.raw import RawImages

NUM_LEVELS = 17  # pixel values 0..16
TEST_FRACTION = 0.2
SPLIT_SEED = 0
CLASSES = tuple(str(d) for d in range(10))


def split_indices(labels: np.ndarray, split: Literal["train", "test"]) -> np.ndarray:
    """Sorted indices of ``split`` in the fixed stratified split of ``labels`` (N,)."""
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = torch.randperm(len(members), generator=generator).numpy()
        test.append(members[order[: round(TEST_FRACTION * len(members))]])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test)] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def load_digits(split: Literal["train", "test"]) -> RawImages:
    """Digits ``split`` as levels (N, 8, 8, 1) with values 0..16 and labels (N,)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    levels = bunch.images.astype(np.uint8)[..., None]  # (1797, 8, 8) -> (1797, 8, 8, 1)
    labels = bunch.target.astype(np.int64)
    keep = split_indices(labels, split)
    return RawImages(levels[keep], labels[keep], num_levels=NUM_LEVELS, classes=CLASSES)
