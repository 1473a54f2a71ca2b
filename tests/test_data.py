"""Tests for difflab.data: loaders, IDX/CIFAR formats, safe unpickling, folders, sampler."""

from __future__ import annotations

import builtins
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.data import (
    DataConfig,
    ResumableBatchSampler,
    levels_to_signed,
    load_dataset,
    random_hflip,
)
from difflab.data.cifar import read_batch
from difflab.data.digits import split_indices
from difflab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx, write_idx
from difflab.data.sampler import epoch_seed
from difflab.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``../shared/data`` from the repo root (or $DIFFLAB_DATA_DIR), if present."""
    for candidate in (REPO_ROOT / ".." / "shared" / "data", os.environ.get("DIFFLAB_DATA_DIR")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return (x + 1) / 2


# --- scaling and digits ---------------------------------------------------------------------


@pytest.mark.parametrize("num_levels", [17, 256])
def test_levels_to_signed_endpoints_exact_and_layout(num_levels):
    levels = np.zeros((2, 3, 4, 1), dtype=np.uint8)
    levels[0, 1, 2, 0] = num_levels - 1
    x = levels_to_signed(levels, num_levels)
    assert x.shape == (2, 1, 3, 4) and x.dtype == torch.float32
    assert x[0, 0, 1, 2] == 1.0 and x.min() == -1.0 and (x == 1.0).sum() == 1


def test_digits_shapes_range_and_levels():
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    assert train.images.shape == (1438, 1, 8, 8) and test.images.shape == (359, 1, 8, 8)
    assert train.num_levels == 17 and train.num_classes == 10 and train.labels.dtype == torch.int64
    assert train.images.min() == -1.0 and train.images.max() == 1.0
    v = to_unit(train.images) * 16  # back to the 0..16 levels
    assert torch.allclose(v, v.round(), atol=1e-5)
    assert torch.bincount(test.labels, minlength=10).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]


def test_digits_split_is_disjoint_and_complete():
    labels = np.repeat(np.arange(10), 180)
    train, test = split_indices(labels, "train"), split_indices(labels, "test")
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(labels)
    assert np.array_equal(test, split_indices(labels, "test"))  # deterministic


def test_resize_and_channels_on_array_dataset():
    d = load_dataset("digits", split="test", image_size=16, channels=3)
    assert d.images.shape == (359, 3, 16, 16)
    assert torch.equal(d.images[:, 0], d.images[:, 2])  # grey repeated
    v = to_unit(d.images) * 16  # still on the 17-level grid after bicubic + clip
    assert v.min() >= 0 and v.max() <= 16 and torch.allclose(v, v.round(), atol=1e-5)
    with pytest.raises(DataError, match="channel_mode='convert'"):
        load_dataset("digits", channels=3, channel_mode="fail")


# --- IDX / MNIST ----------------------------------------------------------------------------


def write_mnist(folder: Path, split_stem: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{split_stem}-images-idx3-ubyte{suffix}", images)
    write_idx(folder / f"{split_stem}-labels-idx1-ubyte{suffix}", labels)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 7, 6), dtype=np.uint8)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    write_idx(path, images)
    assert path.read_bytes()[:2] == (b"\x1f\x8b" if gz else b"\x00\x00")
    assert np.array_equal(read_idx(path, magic=IMAGES_MAGIC), images)
    header = (path.read_bytes() if not gz else gzip.decompress(path.read_bytes()))[:16]
    assert header == bytes.fromhex("00000803 00000005 00000007 00000006")


def test_mnist_loads_small_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.arange(6, dtype=np.uint8)
    write_mnist(tmp_path, "train", images, labels, gz=True)
    write_mnist(tmp_path, "t10k", images[:2], labels[:2], gz=False)
    train = load_dataset("mnist", path=tmp_path)
    assert train.images.shape == (6, 1, 28, 28) and train.num_levels == 256
    assert torch.allclose(to_unit(train.images[:, 0]) * 255, torch.from_numpy(images).float(), atol=1e-4)
    assert train.labels.tolist() == list(range(6))
    assert len(load_dataset("mnist", path=tmp_path, split="test")) == 2


def test_idx_truncated_file_is_a_data_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((3, 4, 4), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"is truncated: expected 64 bytes, got 59"):
        read_idx(path, magic=IMAGES_MAGIC)


def test_idx_bad_magic_trailing_bytes_and_bad_gzip(tmp_path):
    path = tmp_path / "labels"
    write_idx(path, np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        read_idx(path, magic=IMAGES_MAGIC)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="1 bytes after the data"):
        read_idx(path, magic=LABELS_MAGIC)
    gz = tmp_path / "labels.gz"
    write_idx(gz, np.zeros(300, dtype=np.uint8))
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated or corrupt gzip"):
        read_idx(gz, magic=LABELS_MAGIC)


def test_mnist_count_mismatch_and_missing_files(tmp_path):
    write_mnist(tmp_path, "train", np.zeros((3, 2, 2), np.uint8), np.zeros(2, np.uint8), gz=False)
    with pytest.raises(DataError, match="3 images but .* 2 labels"):
        load_dataset("mnist", path=tmp_path)
    with pytest.raises(DataError, match="not found in"):
        load_dataset("mnist", path=tmp_path / "nowhere", split="test")


# --- real data (skipped without ../shared/data) ----------------------------------------------


def test_shared_mnist_train_count_and_mean():
    root = shared_data_dir()
    if root is None or not (root / "mnist").is_dir():
        pytest.skip("../shared/data/mnist not present")
    d = load_dataset("mnist", path=root / "mnist", split="train")
    assert d.images.shape == (60000, 1, 28, 28)
    assert to_unit(d.images).mean().item() == pytest.approx(0.1307, abs=5e-5)
    assert torch.bincount(d.labels).sum() == 60000


def test_shared_cifar10_test_channel_means():
    root = shared_data_dir()
    if root is None or not (root / "cifar10" / "cifar10_test.npz").is_file():
        pytest.skip("../shared/data/cifar10/cifar10_test.npz not present")
    d = load_dataset("cifar10", path=root / "cifar10", split="test")
    assert d.images.shape == (10000, 3, 32, 32) and d.classes[0] == "airplane"
    means = to_unit(d.images).mean(dim=(0, 2, 3))
    assert means.tolist() == pytest.approx([0.4942, 0.4851, 0.4504], abs=5e-5)
    assert torch.bincount(d.labels).tolist() == [1000] * 10


# --- CIFAR-10 --------------------------------------------------------------------------------


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], protocol: int) -> None:
    """A batch in the documented format: dict with bytes keys, data (N, 3072) uint8 RGB planes."""
    batch = {b"batch_label": b"test batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * len(labels)}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_batches(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.random.default_rng(2).integers(0, 256, (4, 3072), dtype=np.uint8)
    write_cifar_batch(folder / "test_batch", data, [3, 1, 4, 1], protocol)
    if protocol == 2:  # the official files name numpy's pre-2.0 module
        legacy = (folder / "test_batch").read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray\n_reconstruct" in legacy
        (folder / "test_batch").write_bytes(legacy)
    for i in range(1, 6):
        write_cifar_batch(folder / f"data_batch_{i}", data[:2], [i, 0], protocol)
    test = load_dataset("cifar10", path=tmp_path, split="test")
    expected = data.reshape(4, 3, 32, 32).astype(np.float32)  # R, G, B planes, row-major
    assert torch.allclose(to_unit(test.images) * 255, torch.from_numpy(expected), atol=1e-4)
    assert test.labels.tolist() == [3, 1, 4, 1]
    train = load_dataset("cifar10", path=folder, split="train")
    assert len(train) == 10 and train.labels.tolist() == [1, 0, 2, 0, 3, 0, 4, 0, 5, 0]


def test_cifar_npz_and_bad_npz(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar10_train.npz", images=images, labels=np.array([0, 9, 5]))
    d = load_dataset("cifar10", path=tmp_path)
    assert torch.allclose(to_unit(d.images).permute(0, 2, 3, 1) * 255, torch.from_numpy(images).float(), atol=1e-4)
    np.savez(tmp_path / "bad.npz", images=images.astype(np.float32), labels=np.zeros(3))
    with pytest.raises(DataError, match="must be uint8"):
        load_dataset("cifar10", path=tmp_path / "bad.npz")


class WritesFile:
    """A pickle payload that creates ``path`` when unpickled without restrictions."""

    def __init__(self, call, args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def malicious_payloads(marker: Path):
    return {
        "os.system": WritesFile(os.system, (f"touch {marker}",)),
        "builtins.open": WritesFile(builtins.open, (str(marker), "w")),
    }


@pytest.mark.parametrize("kind", ["os.system", "builtins.open"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, kind):
    marker = tmp_path / "pwned"
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"evil": malicious_payloads(marker)[kind]}
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match="refusing to load"):
        load_dataset("cifar10", path=tmp_path, split="test")
    assert not marker.exists()
    # Control: the same bytes do write the file when unpickled without restrictions.
    with open(folder / "test_batch", "rb") as f:
        pickle.Unpickler(f).load()
    assert marker.exists()


def test_read_batch_rejects_non_pickles_and_other_codecs(tmp_path):
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(DataError, match="not a readable CIFAR-10 python batch"):
        read_batch(path)
    path.write_bytes(pickle.dumps(b"x", protocol=2).replace(b"latin1", b"rot13_"))
    with pytest.raises(DataError, match="only latin-1"):
        read_batch(path)


# --- image folders ---------------------------------------------------------------------------


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_folder_crop_is_exact_when_shorter_side_matches(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (10, 20, 3), dtype=np.uint8)  # H=10, W=20
    save(tmp_path / "a.png", rgb)
    d = load_dataset("folder", path=tmp_path, image_size=10)
    assert d.images.shape == (1, 3, 10, 10) and d.labels is None and d.num_levels == 256
    got = (to_unit(d.images[0]).permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(got, rgb[:, 5:15])  # centre 10 columns


def test_folder_resize_keeps_halves(tmp_path):
    halves = np.zeros((20, 40), dtype=np.uint8)
    halves[:, 20:] = 255  # left black, right white
    save(tmp_path / "sub" / "halves.bmp", halves)
    d = load_dataset("folder", path=tmp_path, image_size=8)  # 40x20 -> 16x8 -> centre 8x8
    x = to_unit(d.images[0, 0])
    assert d.images.shape == (1, 1, 8, 8)
    assert x[:, 0].max() < 0.05 and x[:, -1].min() > 0.95 and x.mean().item() == pytest.approx(0.5, abs=0.05)


def test_folder_formats_grey_rgb_and_gif_first_frame(tmp_path):
    grey = np.full((12, 12), 200, dtype=np.uint8)
    save(tmp_path / "g.JPG", grey, quality=100)
    save(tmp_path / "deep" / "c.webp", np.full((12, 12, 3), (255, 0, 0), dtype=np.uint8), lossless=True)
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "notes.txt").write_text("not an image")
    rgb = load_dataset("folder", path=tmp_path)  # mixed -> 3 channels, sorted: anim, deep/c, g
    assert rgb.images.shape == (3, 3, 12, 12)
    assert to_unit(rgb.images[0]).mean(dim=(1, 2)).tolist() == pytest.approx([0, 0, 1], abs=0.01)  # first frame
    assert to_unit(rgb.images[1]).mean(dim=(1, 2)).tolist() == pytest.approx([1, 0, 0], abs=0.01)
    assert to_unit(rgb.images[2]).mean(dim=(1, 2)).tolist() == pytest.approx([200 / 255] * 3, abs=0.01)
    grey_only = load_dataset("folder", path=tmp_path, channels=1)
    assert grey_only.images.shape == (3, 1, 12, 12)
    assert to_unit(grey_only.images[1]).mean().item() == pytest.approx(0.299, abs=0.01)  # BT.601 luma of red
    with pytest.raises(DataError, match="g.JPG has 1 channel"):
        load_dataset("folder", path=tmp_path, channels=3, channel_mode="fail")


def test_folder_corrupt_files_skip_with_count_or_fail(tmp_path):
    for i in range(3):
        save(tmp_path / f"ok{i}.png", np.full((8, 8), i, dtype=np.uint8))
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    good = (tmp_path / "ok0.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="skipped 2 of 5 image files"):
        d = load_dataset("folder", path=tmp_path, on_corrupt="skip")
    assert len(d) == 3
    with pytest.raises(DataError, match="garbage.png"):
        load_dataset("folder", path=tmp_path, on_corrupt="fail")


def test_folder_empty_missing_and_mixed_sizes(tmp_path):
    with pytest.raises(DataError, match="has no .* files in it or its subfolders"):
        load_dataset("folder", path=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", path=tmp_path / "missing")
    save(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    save(tmp_path / "b.png", np.zeros((8, 9), np.uint8))
    with pytest.raises(DataError, match="pass image_size="):
        load_dataset("folder", path=tmp_path)
    assert load_dataset("folder", path=tmp_path, image_size=8).images.shape == (2, 1, 8, 8)


def test_folder_class_subfolders(tmp_path):
    for name in ("dog/1.png", "cat/1.png", "cat/2.png"):
        save(tmp_path / name, np.zeros((4, 4), np.uint8))
    d = load_dataset("folder", path=tmp_path, class_subfolders=True)
    assert d.classes == ("cat", "dog") and d.labels.tolist() == [0, 0, 1] and d.num_classes == 2


# --- hflip -----------------------------------------------------------------------------------


def test_random_hflip_per_image_and_reproducible():
    x = torch.arange(64 * 6, dtype=torch.float32).reshape(64, 1, 2, 3)
    y = random_hflip(x, generator=torch.Generator().manual_seed(0))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert ((y == x).flatten(1).all(1) | flipped).all() and 10 < flipped.sum() < 54
    assert torch.equal(y, random_hflip(x, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(random_hflip(x, generator=torch.Generator(), p=1.0), x.flip(-1))
    assert torch.equal(random_hflip(x, generator=torch.Generator(), p=0.0), x)


# --- sampler ---------------------------------------------------------------------------------


def take(sampler: ResumableBatchSampler, n: int) -> list[list[int]]:
    it = iter(sampler)
    return [next(it).tolist() for _ in range(n)]


def test_sampler_epochs_are_permutations_and_seeded():
    s = ResumableBatchSampler(10, 3, seed=7)
    batches = take(s, 6)  # 3 steps per epoch, 1 sample dropped per epoch
    for epoch in (batches[:3], batches[3:]):
        flat = [i for b in epoch for i in b]
        assert len(set(flat)) == 9 and set(flat) <= set(range(10))
    assert batches[:3] != batches[3:]
    assert batches == take(ResumableBatchSampler(10, 3, seed=7), 6)
    assert batches != take(ResumableBatchSampler(10, 3, seed=8), 6)
    assert s.state_dict() == {"seed": 7, "step": 6}


def test_epoch_seed_is_a_stable_32_bit_hash():
    seeds = [epoch_seed(s, e) for s in range(20) for e in range(20)]
    assert len(set(seeds)) == 400 and max(seeds) < 2**32
    assert epoch_seed(0, 0) == 0x48D745DE  # stored: a change would break resuming old runs


def test_sampler_resume_equals_uninterrupted_run():
    full = take(ResumableBatchSampler(10, 3, seed=1), 10)
    first = ResumableBatchSampler(10, 3, seed=1)
    take(first, 4)
    resumed = ResumableBatchSampler(10, 3, seed=123)
    resumed.load_state_dict(first.state_dict())
    assert take(resumed, 6) == full[4:]


def test_sampler_shards_are_disjoint_and_cover_global_batch():
    shards = [ResumableBatchSampler(50, 12, seed=3, num_replicas=3, rank=r) for r in range(3)]
    single = ResumableBatchSampler(50, 12, seed=3)
    for step in range(8):
        parts = [s.indices(step).tolist() for s in shards]
        assert all(len(p) == 4 for p in parts)
        assert sum(parts, []) == single.indices(step).tolist()  # disjoint slices, same global batch


def test_sampler_rejects_bad_config():
    with pytest.raises(ConfigError, match="multiple of num_replicas"):
        ResumableBatchSampler(50, 10, seed=0, num_replicas=3)
    with pytest.raises(ConfigError, match="between 1 and the dataset size"):
        ResumableBatchSampler(5, 10, seed=0)
    with pytest.raises(ConfigError, match="rank=2"):
        ResumableBatchSampler(50, 10, seed=0, num_replicas=2, rank=2)


# --- config ----------------------------------------------------------------------------------


def test_data_config_validates_and_loads():
    with pytest.raises(ConfigError, match="'digits', 'mnist', 'cifar10', 'folder'"):
        DataConfig(name="imagenet")
    with pytest.raises(ConfigError, match="image_size=0"):
        DataConfig(image_size=0)
    with pytest.raises(ConfigError, match="channels=2"):
        DataConfig(channels=2)
    with pytest.raises(ConfigError, match="needs data.path"):
        DataConfig(name="folder")
    with pytest.raises(ConfigError, match="unknown data option.*batch"):
        DataConfig.from_dict({"name": "digits", "batch": 3})
    d = DataConfig.from_dict({"name": "digits", "split": "test", "channels": 3, "hflip": True}).load()
    assert d.images.shape == (359, 3, 8, 8) and d.name == "digits/test"
