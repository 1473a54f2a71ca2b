"""Reference statistics: the mean and covariance of reference features, stored as an ``.npz`` in
the layout pytorch-fid and clean-fid use (arrays ``mu`` (d,) and ``sigma`` (d, d)).

With them, the Frechet distance of samples needs no reference images (Heusel et al. 2017):

    FD = |mu_r - mu_g|^2 + Tr(S_r) + Tr(S_g) - 2 Tr((S_r S_g)^{1/2}),

the trace of the square root taken from the eigenvalues of S_r S_g (real and non-negative for
two covariance matrices). The covariance is the unbiased one (divided by N - 1), as in
pytorch-fid, so ``FeatureStatistics.of(real).frechet_distance(fake)`` equals
``quality.frechet_distance(real, fake)``. Only FD (and IS, which needs no reference) can be
computed from statistics; KID, precision and recall need the reference features themselves.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.errors import ConfigError, DataError


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean ``mu`` (d,) and covariance ``sigma`` (d, d) of N feature vectors, float64."""

    mu: torch.Tensor
    sigma: torch.Tensor
    source: str = "features"  # what they describe, for the protocol line
    extractor: str | None = None  # the extractor's name and weight fingerprint, when known (not in
    fingerprint: str | None = None  # pytorch-fid's files): ``difflab eval --ref`` checks them

    @classmethod
    def of(cls, features: torch.Tensor, source: str = "features", *, extractor: str | None = None,
           fingerprint: str | None = None) -> FeatureStatistics:
        """The statistics of features (N, d), N >= 2."""
        if features.ndim != 2 or len(features) < 2:
            raise DataError(f"statistics need features (N, d) with N >= 2; got {tuple(features.shape)}")
        x = features.detach().double().cpu()
        return cls(x.mean(0), torch.cov(x.T, correction=1).reshape(x.shape[1], x.shape[1]), source, extractor,
                   fingerprint)

    @property
    def dims(self) -> int:
        return int(self.mu.shape[0])

    def frechet_distance(self, features: torch.Tensor) -> float:
        """FD between these statistics and those of ``features`` (M, d)."""
        if features.ndim != 2 or features.shape[1] != self.dims:
            raise DataError(f"the reference statistics ({self.source}) have d={self.dims} features, the samples' "
                            f"features are {tuple(features.shape)}: make them with the same extractor")
        other = FeatureStatistics.of(features)
        diff = self.mu - other.mu
        root_trace = torch.linalg.eigvals(self.sigma @ other.sigma).sqrt().real.sum()
        return float(diff @ diff + self.sigma.trace() + other.sigma.trace() - 2.0 * root_trace)

    def save(self, path: str | Path) -> Path:
        """Write ``mu`` and ``sigma`` (and the extractor's name and fingerprint, as strings) to
        ``path`` (an ``.npz``), atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ConfigError(f"{path}: reference statistics are written as .npz (pytorch-fid's layout); "
                              "give a path ending in .npz")
        identity = {k: np.array(v) for k, v in (("extractor", self.extractor), ("fingerprint", self.fingerprint))
                    if v is not None}
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, mu=self.mu.numpy(), sigma=self.sigma.numpy(), **identity)
            tmp.replace(path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"cannot write {path}: {err.strerror or err}") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureStatistics:
        """Read an ``.npz`` with ``mu`` (d,) and ``sigma`` (d, d) (pytorch-fid / clean-fid / ours);
        ``DataError`` in one line for anything else. Pickled arrays are refused."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"reference statistics {path} not found; write them with: difflab features stats")
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("one array, not an archive of mu and sigma")
            with loaded as f:
                arrays = {k: np.asarray(f[k]) for k in ("mu", "sigma", "extractor", "fingerprint") if k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise DataError(f"{path} is not a reference-statistics .npz ({str(err).splitlines()[0]})") from None
        if not {"mu", "sigma"} <= set(arrays):
            raise DataError(f"{path} lacks {sorted({'mu', 'sigma'} - set(arrays))}: reference statistics need "
                            "arrays mu (d,) and sigma (d, d)")
        mu, sigma = arrays["mu"], arrays["sigma"]
        if mu.dtype.kind not in "fiu" or sigma.dtype.kind not in "fiu" or mu.ndim != 1 \
                or sigma.shape != (len(mu), len(mu)) or not np.isfinite(mu).all() or not np.isfinite(sigma).all():
            raise DataError(f"{path}: mu {mu.shape} and sigma {sigma.shape} must be finite numbers, (d,) and (d, d)")
        identity = {k: str(arrays[k]) for k in ("extractor", "fingerprint") if k in arrays}
        return cls(torch.from_numpy(mu.astype(np.float64)), torch.from_numpy(sigma.astype(np.float64)), path.name,
                   **identity)
