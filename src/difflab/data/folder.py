"""Any folder of images (searched recursively), decoded with PIL into integer levels.

Every file ending in .png, .jpg, .jpeg, .bmp, .webp or .gif (first frame) is read, in sorted
path order. Each image becomes grey ("L") or RGB (alpha dropped; 16-bit grey scaled to 8 bits),
is optionally resized (shorter side) and centre-cropped to ``image_size``, and is then converted
to the requested channel count. With ``class_subfolders=True`` the first-level subfolder names
are the classes (sorted), as in ``root/cat/001.png``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from difflab.data.preprocess import ChannelMode, check_channels, convert_channels, resize_center_crop
from difflab.data.raw import RawImages
from difflab.errors import DataError, check_choice

OnCorrupt = Literal["skip", "fail"]
ON_CORRUPT: tuple[OnCorrupt, ...] = ("skip", "fail")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
GREY_MODES = frozenset({"1", "L", "LA", "La", "F"})
SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# What PIL raises on unreadable, truncated or hostile (decompression bomb) files.
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive), sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def to_grey_or_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to "L" (grey modes) or "RGB" (everything else), dropping alpha."""
    if image.mode in SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.float64)
        return Image.fromarray(np.rint(np.clip(wide, 0, 65535) * (255 / 65535)).astype(np.uint8))
    if image.mode in GREY_MODES:
        return image.convert("L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def decode(path: Path, image_size: int | None) -> np.ndarray:
    """Levels (H, W, C) of ``path``'s first frame, C = 1 or 3, resized/cropped if ``image_size``."""
    with Image.open(path) as image:
        image.seek(0)  # first frame of animated files
        image.load()
        image = to_grey_or_rgb(image)
    if image_size is not None:
        image = resize_center_crop(image, image_size)
    levels = np.asarray(image)
    return levels.reshape(levels.shape[0], levels.shape[1], -1)  # (H, W) -> (H, W, 1)


def check_folder(path: str | os.PathLike | None) -> Path:
    """``path`` as an existing directory, else DataError saying how to fix it."""
    if path is None:
        raise DataError("the 'folder' dataset needs path= pointing at a folder of images")
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"image folder {root} does not exist; pass path= to an existing folder of images")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; pass path= to a folder of images")
    return root


def decode_all(files: list[Path], image_size: int | None, on_corrupt: OnCorrupt) -> list[tuple[Path, np.ndarray]]:
    """Decode ``files``; skip unreadable ones with one warning, or raise on the first."""
    decoded, failed = [], []
    for path in files:
        try:
            decoded.append((path, decode(path, image_size)))
        except UNREADABLE as e:
            if on_corrupt == "fail":
                raise DataError(f"cannot read image {path} ({e}); fix or delete it, or pass on_corrupt='skip'") from e
            failed.append((path, e))
    if failed:
        first, error = failed[0]
        warnings.warn(
            f"skipped {len(failed)} of {len(files)} image files that could not be read "
            f"(first: {first}: {error}); fix or delete them, or pass on_corrupt='fail' to stop on them",
            stacklevel=3,
        )
    return decoded


def stack_levels(decoded: list[tuple[Path, np.ndarray]], channels: int | None, channel_mode: ChannelMode) -> np.ndarray:
    """Stack per-image levels into (N, H, W, C) with one channel count and one size."""
    target = channels or (1 if all(a.shape[-1] == 1 for _, a in decoded) else 3)
    first_path, first = decoded[0]
    out = []
    for path, levels in decoded:
        if levels.shape[-1] != target and channel_mode == "fail":
            raise DataError(
                f"image {path} has {levels.shape[-1]} channel(s) but channels={target} was requested; "
                "pass channel_mode='convert' or another channels="
            )
        if levels.shape[:2] != first.shape[:2]:
            raise DataError(
                f"images differ in size: {first_path} is {first.shape[1]}x{first.shape[0]}, {path} is "
                f"{levels.shape[1]}x{levels.shape[0]}; pass image_size= to resize and crop them to one size"
            )
        out.append(convert_channels(levels, target))
    return np.stack(out)


def subfolder_labels(root: Path, files: list[Path], kept: list[Path]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels (N,) of ``kept`` from their first-level subfolder; classes from all ``files``."""
    parts = {p: p.relative_to(root).parts for p in files}
    loose = [p for p in files if len(parts[p]) < 2]
    if loose:
        raise DataError(
            f"class_subfolders=True but {loose[0]} is not inside a class subfolder of {root}; "
            "move it into one or drop the option"
        )
    classes = tuple(sorted({parts[p][0] for p in files}))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[parts[p][0]] for p in kept], dtype=np.int64), classes


def load_folder(
    path: str | os.PathLike | None,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    channel_mode: ChannelMode = "convert",
    on_corrupt: OnCorrupt = "fail",
    class_subfolders: bool = False,
) -> RawImages:
    """All images under ``path`` as levels (N, H, W, C), 256 levels.

    Args:
        path: the folder (searched recursively).
        image_size: side in pixels after resizing the shorter side and centre-cropping; None
            keeps the native size, which must then be the same for every image.
        channels: 1 (grey) or 3 (RGB); None: 1 if every image is grey, else 3.
        channel_mode: "convert" images with another channel count, or "fail" on them.
        on_corrupt: "skip" unreadable files with one warning giving their count, or "fail" on the first.
        class_subfolders: label images by their first-level subfolder.
    """
    check_channels(channels, channel_mode)
    check_choice("on_corrupt", on_corrupt, ON_CORRUPT)
    root = check_folder(path)
    files = list_images(root)
    if not files:
        raise DataError(
            f"image folder {root} has no {'/'.join(IMAGE_SUFFIXES)} files in it or its subfolders; "
            "add images or pass path= to another folder"
        )
    decoded = decode_all(files, image_size, on_corrupt)
    if not decoded:
        raise DataError(f"none of the {len(files)} image files in {root} could be read; check the files")
    levels = stack_levels(decoded, channels, channel_mode)
    if not class_subfolders:
        return RawImages(levels, None, num_levels=256, classes=None)
    labels, classes = subfolder_labels(root, files, [p for p, _ in decoded])
    return RawImages(levels, labels, num_levels=256, classes=classes)
