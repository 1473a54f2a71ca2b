"""Improved precision and recall of feature sets with k-NN manifolds (Kynkaanniemi et al. 2019).

"Improved Precision and Recall Metric for Assessing Generative Models" (Kynkaanniemi, Karras,
Laine, Lehtinen, Aila; NeurIPS 2019) estimates the manifold of a feature set ``Phi`` as the union
of balls centred at its points, each with radius the distance to its k-th nearest neighbour in
``Phi`` (the point itself excluded), and asks which points of the other set fall inside:

- ``f(phi, Phi) = 1`` if ``||phi - phi'||_2 <= ||phi' - NN_k(phi', Phi)||_2`` for at least one
  ``phi'`` in ``Phi``, else ``0``;
- ``precision(Phi_r, Phi_g) = 1/|Phi_g| sum_{phi_g in Phi_g} f(phi_g, Phi_r)``
  (fraction of generated samples on the real manifold: quality);
- ``recall(Phi_r, Phi_g) = 1/|Phi_r| sum_{phi_r in Phi_r} f(phi_r, Phi_g)``
  (fraction of real samples on the generated manifold: coverage).

The paper uses ``k = 3``. Everything runs in float64 on the device of ``real``, ``batch_size``
query rows at a time, so memory is O(batch_size * N) rather than O(N * M).

Distances are first computed the fast way, ``|a|^2 + |b|^2 - 2 a.b`` by matrix product, on the
data centred at the common mean; that is only accurate to a rounding bound, so every comparison
(k-th neighbour selection, ``<=`` against a radius) that the bound cannot decide is redone with
the direct ``sum_i (a_i - b_i)^2`` of the original features. The results are therefore those of
the direct O(N M d) computation (duplicates are at distance exactly 0, ties count as inside) at
close to the speed of the matrix product; the redone pairs are few unless the data has many ties.
"""

from __future__ import annotations

import numbers

import torch

from difflab.errors import ConfigError, DataError

_EPS = torch.finfo(torch.float64).eps


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ConfigError(f"precision/recall: k must be an integer >= 1 (the paper uses 3); got {k!r}")
    return int(k)


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ConfigError(f"precision/recall: batch_size must be an integer >= 1; got {batch_size!r}")
    return int(batch_size)


def _check_set(name: str, x: torch.Tensor, k: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"precision/recall: {name} features must be a tensor (N, d) with d >= 1; got {shape}")
    if len(x) <= k:
        raise DataError(f"precision/recall: {name} features need more than k={k} points for a k-th neighbour; "
                        f"got {len(x)} (pass more samples or a smaller k)")
    if x.is_complex() or not bool(torch.isfinite(x).all()):
        raise DataError(f"precision/recall: {name} features must be real and finite (found NaN/inf or complex values)")


class _Features:
    """A float64 feature set: original values, values centred at a shared mean, squared norms of the latter."""

    def __init__(self, x: torch.Tensor, mean: torch.Tensor) -> None:
        self.x = x
        self.centred = x - mean
        self.sq_norms = (self.centred * self.centred).sum(1)
        # |fast - direct| <= scale * (|a'|^2 + |b'|^2) for centred a', b': each dot-product style sum
        # errs by at most gamma_d = d eps / (1 - d eps) times that, centring adds a few eps.
        self.tol_scale = 8.0 * (x.shape[1] + 4) * _EPS


def _fast_sq_dist(a: _Features, rows: slice, b: _Features) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate squared distances (rows of ``a``) x (all of ``b``), and per row a bound on their error."""
    na = a.sq_norms[rows]
    approx = torch.addmm(b.sq_norms[None, :], a.centred[rows], b.centred.T, alpha=-2.0)
    approx.add_(na[:, None]).clamp_min_(0.0)
    return approx, a.tol_scale * (na + b.sq_norms.max())


def _direct_sq_dist(a: torch.Tensor, b: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, chunk: int) -> torch.Tensor:
    """``sum_i (a[ia] - b[ib])_i^2`` pair by pair, ``chunk`` pairs at a time."""
    out = torch.empty(len(ia), dtype=a.dtype, device=a.device)
    for start in range(0, len(ia), chunk):
        diff = a[ia[start:start + chunk]] - b[ib[start:start + chunk]]
        out[start:start + chunk] = (diff * diff).sum(1)
    return out


def _knn_sq_radii(f: _Features, k: int, batch_size: int) -> torch.Tensor:
    """Squared distance of each point of ``f`` to its k-th nearest other point of ``f``."""
    n, device = len(f.x), f.x.device
    radii = torch.empty(n, dtype=torch.float64, device=device)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        local = torch.arange(stop - start, device=device)
        approx, tol = _fast_sq_dist(f, slice(start, stop), f)
        approx[local, local + start] = torch.inf  # not its own neighbour
        kth = approx.topk(k, dim=1, largest=False).values[:, -1]
        # The true k-th distance is within tol of kth, so every true k nearest neighbour has
        # approx <= kth + 2 tol and everything beyond is farther than the true k-th: redo those exactly.
        rows, cols = (approx <= (kth + 2.0 * tol)[:, None]).nonzero(as_tuple=True)
        del approx
        exact = _direct_sq_dist(f.x, f.x, rows + start, cols, batch_size)
        counts = torch.bincount(rows, minlength=stop - start)  # >= k per row
        position = torch.arange(len(rows), device=device) - (counts.cumsum(0) - counts)[rows]
        padded = torch.full((stop - start, int(counts.max())), torch.inf, dtype=torch.float64, device=device)
        padded[rows, position] = exact
        radii[start:stop] = padded.topk(k, dim=1, largest=False).values[:, -1]
    return radii


def _fraction_inside(query: _Features, centres: _Features, sq_radii: torch.Tensor, batch_size: int) -> float:
    """Fraction of ``query`` points within ``<=`` the radius of at least one of ``centres``."""
    inside_count = 0
    for start in range(0, len(query.x), batch_size):
        stop = min(start + batch_size, len(query.x))
        margin, tol = _fast_sq_dist(query, slice(start, stop), centres)
        margin.sub_(sq_radii)  # <= -tol: surely inside that ball, > tol: surely outside
        closest = margin.min(dim=1).values
        inside = closest <= -tol
        undecided = ~inside & (closest <= tol)
        if bool(undecided.any()):
            rows = undecided.nonzero()[:, 0]
            near, cols = (margin[rows].abs() <= tol[rows, None]).nonzero(as_tuple=True)
            rows = rows[near]
            exact = _direct_sq_dist(query.x, centres.x, rows + start, cols, batch_size)
            inside[rows[exact <= sq_radii[cols]]] = True
        inside_count += int(inside.sum())
    return inside_count / len(query.x)


def knn_radii(x: torch.Tensor, k: int = 3, batch_size: int = 1024) -> torch.Tensor:
    """Distance (float64, shape (N,)) of each row of ``x`` (N, d) to its k-th nearest other row.

    The point itself is excluded, a duplicate of it is not (it is a neighbour at distance 0).
    These are the radii of the k-NN manifold balls of Kynkaanniemi et al. (2019).
    """
    k, batch_size = _check_k(k), _check_batch_size(batch_size)
    _check_set("x", x, k)
    x = x.detach().to(torch.float64)
    return _knn_sq_radii(_Features(x, x.mean(0)), k, batch_size).sqrt()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
    """Improved (precision, recall) of generated features ``fake`` (M, d) against ``real`` (N, d).

    precision = fraction of ``fake`` inside the k-NN manifold of ``real``; recall = fraction of
    ``real`` inside the k-NN manifold of ``fake`` (Kynkaanniemi et al. 2019, default ``k = 3``).
    A point is inside if its distance to some centre is ``<=`` that centre's k-th neighbour
    distance. Pairwise distances are taken ``batch_size`` rows at a time.
    """
    k, batch_size = _check_k(k), _check_batch_size(batch_size)
    _check_set("real", real, k)
    _check_set("fake", fake, k)
    if real.shape[1] != fake.shape[1]:
        raise DataError(f"precision/recall: real and fake features must have the same d; "
                        f"got {tuple(real.shape)} and {tuple(fake.shape)}")
    real = real.detach().to(torch.float64)
    fake = fake.detach().to(device=real.device, dtype=torch.float64)
    mean = (real.sum(0) + fake.sum(0)) / (len(real) + len(fake))
    r, g = _Features(real, mean), _Features(fake, mean)
    precision = _fraction_inside(g, r, _knn_sq_radii(r, k, batch_size), batch_size)
    recall = _fraction_inside(r, g, _knn_sq_radii(g, k, batch_size), batch_size)
    return precision, recall
