"""Standard-normal noise from a generator, per batch or per sample.

Every random draw of a sampler or prior goes through ``standard_normal(shape, generator)``.
``generator`` is a ``torch.Generator`` (one stream for the whole batch, as PyTorch draws) or a
``PerSampleGenerator``: one stream per sample, seeded by (seed, index), so the noise of sample
i -- its initial noise and every step's noise -- is the same whatever batch it is drawn in,
whatever the batch size, process count or order (as Karras et al. 2022 do in EDM's
``generate.py`` with its stacked generators).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from difflab.errors import ConfigError

MASK32 = 0xFFFFFFFF  # the CPU generator (MT19937) keeps 32 bits of a seed


def _fmix32(x: int) -> int:
    """MurmurHash3's 32-bit finalizer: a bijection of [0, 2**32) that scrambles nearby inputs."""
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & MASK32
    return x ^ (x >> 16)


def sample_seed(seed: int, index: int) -> int:
    """The 32-bit seed of sample ``index`` of a draw seeded with ``seed``.

    ``fmix32((fmix32(seed) + index) mod 2**32)``: for one ``seed`` distinct indices (< 2**32) get
    distinct seeds, and neither neighbouring indices nor neighbouring seeds get related streams.
    """
    if not (0 <= seed < 2**63 and 0 <= index <= MASK32):
        raise ConfigError(f"seed={seed} must be in [0, 2**63) and sample index={index} in [0, 2**32)")
    return _fmix32((_fmix32(seed & MASK32 ^ (seed >> 32)) + index) & MASK32)


class PerSampleGenerator:
    """One ``torch.Generator`` per sample; ``randn`` stacks one draw of each, shape (B, ...).

    Args:
        seed: the draw's seed.
        indices: global indices of the samples in this batch (e.g. ``range(start, start + b)``).
        device: where the generators (and the noise) live.
    """

    def __init__(self, seed: int, indices: Sequence[int], device: torch.device | str | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.indices = list(indices)
        self.generators = [torch.Generator(device=self.device).manual_seed(sample_seed(seed, i)) for i in self.indices]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], *, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> torch.Tensor:
        """(B, *shape[1:]) standard normal, row i from generator i; shape[0] must equal B."""
        if shape[0] != len(self.generators):
            raise ConfigError(f"a per-sample generator for {len(self.generators)} samples cannot draw a batch of {shape[0]}")
        rows = [torch.randn(tuple(shape[1:]), generator=g, device=self.device, dtype=dtype) for g in self.generators]
        return torch.stack(rows).to(device or self.device)


Generator = torch.Generator | PerSampleGenerator | None


def standard_normal(
    shape: Sequence[int],
    generator: Generator = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, I) of ``shape`` from ``generator`` (a torch.Generator, a ``PerSampleGenerator`` or None)."""
    if isinstance(generator, PerSampleGenerator):
        return generator.randn(shape, dtype=dtype, device=device)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
