"""A deterministic, resumable, shardable batch sampler for step-based training.

Global batch ``k`` (training step k) is fixed by ``(seed, k)`` alone: with
``S = num_samples // batch_size`` steps per epoch, step k is position ``k mod S`` of epoch
``k // S``, whose order is ``torch.randperm(num_samples)`` from a generator seeded with
``epoch_seed(seed, epoch)``, a 32-bit hash of the pair (torch's CPU generator keeps only the low
32 bits of a seed; hashing keeps runs with nearby seeds from sharing epochs, as ``seed + epoch``
would).
The last ``num_samples mod batch_size`` samples of each epoch's permutation are dropped, so every
batch is full; they differ from epoch to epoch.

The sampler's whole state is ``(seed, step)``: a run resumed from ``state_dict()`` sees exactly
the batches an uninterrupted run would, given the same ``num_samples``, ``batch_size`` and torch
version. The global batch does not depend on ``num_replicas``; each of the ``num_replicas`` ranks
takes the contiguous slice ``[rank * b, (rank + 1) * b)`` of it, ``b = batch_size / num_replicas``,
so the ranks' slices are disjoint and together cover the global batch.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Mapping

import torch

from difflab.errors import ConfigError

MAX_SEED = 2**64 - 1


def epoch_seed(seed: int, epoch: int) -> int:
    """32-bit generator seed of ``epoch`` for run ``seed``: the first 4 bytes of BLAKE2b(seed, epoch)."""
    digest = hashlib.blake2b(struct.pack("<QQ", seed, epoch), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class ResumableBatchSampler:
    """Yields this rank's index batches (b,) int64 for steps ``step, step + 1, ...`` without end.

    Args:
        num_samples: dataset size N.
        batch_size: global batch size B over all ranks; ``B <= N`` and ``num_replicas`` divides B.
        seed: in ``[0, 2**64)``.
        num_replicas: number of processes sharing each global batch.
        rank: this process's index in ``[0, num_replicas)``.
        step: the first step to yield (0 for a fresh run).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        step: int = 0,
    ) -> None:
        if not 1 <= batch_size <= num_samples:
            raise ConfigError(f"batch_size={batch_size} must be between 1 and the dataset size {num_samples}")
        if num_replicas < 1 or batch_size % num_replicas:
            raise ConfigError(f"batch_size={batch_size} must be a multiple of num_replicas={num_replicas} (>= 1)")
        if not 0 <= rank < num_replicas:
            raise ConfigError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.num_replicas, self.rank = num_replicas, rank
        self._cache: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation)
        self.load_state_dict({"seed": seed, "step": step})

    @property
    def steps_per_epoch(self) -> int:
        """Full global batches per pass over the data, ``N // B``."""
        return self.num_samples // self.batch_size

    def permutation(self, epoch: int) -> torch.Tensor:
        """Sample order (N,) int64 of ``epoch``."""
        if self._cache is None or self._cache[0] != epoch:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
            self._cache = (epoch, torch.randperm(self.num_samples, generator=generator))
        return self._cache[1]

    def global_batch(self, step: int) -> torch.Tensor:
        """All ranks' indices (B,) int64 at ``step``."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.batch_size
        return self.permutation(epoch)[start : start + self.batch_size]

    def indices(self, step: int) -> torch.Tensor:
        """This rank's indices (B / num_replicas,) int64 at ``step``."""
        b = self.batch_size // self.num_replicas
        return self.global_batch(step)[self.rank * b : (self.rank + 1) * b]

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            batch = self.indices(self.step)
            self.step += 1  # counts batches handed out, so a checkpoint after using one resumes at the next
            yield batch

    def state_dict(self) -> dict[str, int]:
        """``{"seed", "step"}``: everything needed to resume."""
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at ``state["step"]`` with ``state["seed"]``."""
        seed, step = int(state["seed"]), int(state["step"])
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed={seed} must be in [0, {MAX_SEED}]")
        if step < 0:
            raise ConfigError(f"step={step} must be >= 0")
        self.seed, self.step, self._cache = seed, step, None
