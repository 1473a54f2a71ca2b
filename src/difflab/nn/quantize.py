"""``VectorQuantizer``: the codebook of a VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017,
"Neural Discrete Representation Learning").

Every latent vector z_e (one per cell of a (B, d, h, w) grid) is replaced by its nearest code,
z_q = e_k with k = argmin_j ||z_e - e_j||^2 (Eq. 1-2). The gradient is copied straight through
from z_q to z_e, and the codebook and the encoder are pulled together by the two terms of Eq. 3,

    ||sg[z_e] - e_k||^2  (the codebook loss)  +  beta ||z_e - sg[e_k]||^2  (the commitment loss),

so everything trains by gradients (and so by the same optimizer and DDP averaging as the rest of
the model). **Dead codes** -- codes no latent picks, which then never move -- are restarted
(Dhariwal et al. 2020, Jukebox, Sec. 3.2; Zeghidour et al. 2021): ``after_step`` (called after
each optimizer step) counts, per code, the steps since a training batch last picked it, and
moves every code idle for ``DEAD_AFTER`` steps onto a latent of the latest batch -- the latents
the codebook serves worst, so the choice needs no random draw. A restarted code's count starts
again from 0. The counts start at ``DEAD_AFTER``, so the first step restarts every code its
batch did not pick (a data-dependent initialisation).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

DEAD_AFTER = 20  # steps without a pick after which a code is dead


class VectorQuantizer(nn.Module):
    """Nearest-code quantization of (B, d, h, w) latents against ``codebook_size`` codes of size d."""

    def __init__(self, codebook_size: int, dim: int) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(codebook_size, dim).uniform_(-1 / codebook_size, 1 / codebook_size))
        self.register_buffer("idle", torch.full((codebook_size,), DEAD_AFTER))  # steps since a batch picked it
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # codes restarted so far
        self.latest: tuple[torch.Tensor, torch.Tensor] | None = None  # (indices, latents) of the latest batch

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def indices(self, z_e: torch.Tensor) -> torch.Tensor:
        """k = argmin_j ||z_e - e_j||^2 per cell: (B, d, h, w) -> (B, h, w) long."""
        flat = z_e.movedim(1, -1).reshape(-1, z_e.shape[1])  # (B h w, d)
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                     + self.codebook.pow(2).sum(1)[None])  # (B h w, K)
        return distances.argmin(1).view(z_e.shape[0], *z_e.shape[2:])

    def embed(self, k: torch.Tensor) -> torch.Tensor:
        """Codes e_k of indices (B, h, w) as a latent grid (B, d, h, w)."""
        return F.embedding(k, self.codebook).movedim(-1, 1)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_q with straight-through gradients, indices (B, h, w), codebook loss (B,), commitment
        loss (B,)); the losses are squared distances averaged over the latent's elements. In
        training mode the batch is kept for ``after_step``."""
        k = self.indices(z_e.detach())
        e = self.embed(k)  # (B, d, h, w)
        codebook_loss = (z_e.detach() - e).pow(2).flatten(1).mean(1)
        commitment_loss = (z_e - e.detach()).pow(2).flatten(1).mean(1)
        if self.training:
            self.latest = (k, z_e.detach())
        return z_e + (e - z_e).detach(), k, codebook_loss, commitment_loss

    @torch.no_grad()
    def after_step(self) -> int:
        """Count the idle steps of the codes the latest training batch did not pick and restart the
        dead ones (``restart_dead_codes``); returns how many were restarted."""
        if self.latest is None:
            return 0
        k, z_e = self.latest
        self.latest = None
        counts = torch.bincount(k.flatten(), minlength=self.codebook_size)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)  # every rank sees the global batch's picks
        self.idle.copy_(torch.where(counts > 0, 0, self.idle + 1))
        return self.restart_dead_codes(z_e.movedim(1, -1).reshape(-1, z_e.shape[1]))  # (B h w, d)

    @property
    def dead(self) -> torch.Tensor:
        """(K,) bool: codes no training batch picked in the last ``DEAD_AFTER`` steps."""
        return self.idle >= DEAD_AFTER

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> int:
        """Move the dead codes onto the latents z (N, d) farthest from their nearest code (their idle
        count reset to 0); returns how many moved. With several processes rank 0's codebook is
        broadcast, so the replicas stay equal."""
        dead = self.dead.nonzero().flatten()
        if len(dead) == 0:
            return 0
        error = (z - self.codebook[self.indices(z[:, :, None, None]).flatten()]).pow(2).sum(1)  # (N,)
        worst = error.topk(min(len(dead), len(z))).indices
        dead = dead[: len(worst)]
        self.codebook[dead] = z[worst].to(self.codebook.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(self.codebook.data, src=0)
        self.idle[dead] = 0
        self.restarts += len(dead)
        return len(dead)
