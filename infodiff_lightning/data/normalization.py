"""Per-column maps of X and Y fitted on the training pairs: I(X;Y) is unchanged by them.

Mutual information is invariant under any invertible map of X and any invertible map of
Y; a strictly increasing map of each column is one. So the data can be brought to the
scale the denoiser and the estimators' log-SNR range suit, without changing the quantity
measured:

- ``standard``: (v - mean) / std per column (an affine map);
- ``gaussianize``: v -> Phi^-1(F_n(v)) per column, F_n the training split's empirical
  CDF, interpolated linearly between the training values (knots at probabilities
  (i + 1/2) / n) and extended beyond the outermost knots with the slope of the outer
  1% of them, so the map stays strictly increasing on the whole line. Every column
  becomes close to a standard normal: heavy tails (Student-t with one degree of
  freedom), bounded supports (a normal CDF) and marginal distortions (half-cube,
  asinh) no longer reach the network;
- ``none``: the identity.

A fitted normalization is a few named tensors (``tensors()``), saved with a trained
model and rebuilt by :func:`load_normalization`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Normalization", "Standardization", "Gaussianization", "NORMALIZATIONS", "fit_normalization",
           "load_normalization"]

NORMALIZATIONS = ("standard", "gaussianize", "none")


class Normalization:
    """A fitted per-column map of X and of Y (float64 in, float64 out)."""

    kind: str

    def x(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def y(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def tensors(self) -> dict[str, Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class Standardization(Normalization):
    """(v - mean) / std per column; the identity has mean 0 and std 1."""

    mean_x: Tensor
    std_x: Tensor
    mean_y: Tensor
    std_y: Tensor
    kind: str = "standard"

    @classmethod
    def fit(cls, x: Tensor, y: Tensor) -> "Standardization":
        return cls(x.mean(0), x.std(0), y.mean(0), y.std(0))

    @classmethod
    def identity(cls, dim_x: int, dim_y: int) -> "Standardization":
        zeros, ones = (lambda d: torch.zeros(d, dtype=torch.float64)), (lambda d: torch.ones(d, dtype=torch.float64))
        return cls(zeros(dim_x), ones(dim_x), zeros(dim_y), ones(dim_y), kind="none")

    def x(self, x: Tensor) -> Tensor:
        return (x - self.mean_x.to(x)) / self.std_x.to(x)

    def y(self, y: Tensor) -> Tensor:
        return (y - self.mean_y.to(y)) / self.std_y.to(y)

    def tensors(self) -> dict[str, Tensor]:
        return {"mean_x": self.mean_x, "std_x": self.std_x, "mean_y": self.mean_y, "std_y": self.std_y}


def _normal_scores(n: int) -> Tensor:
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.special.ndtri(p)


def _gaussianize(v: Tensor, knots: Tensor) -> Tensor:
    """Phi^-1 of the interpolated empirical CDF, per column; ``knots`` (n, d) sorted per column."""
    n = knots.shape[0]
    z = _normal_scores(n).to(v)
    k = knots.to(v).T.contiguous()  # (d, n)
    vals = v.T.contiguous()  # (d, B)
    # Segment i spans knots i and i + 1; the outer segments reach over the outer 1% of
    # the knots, so the slope beyond the data is that of the tail, not of one gap.
    tail = max(1, n // 100)
    lo_idx = torch.searchsorted(k, vals).clamp(1, n - 1) - 1
    lo_idx = torch.where(vals < k[:, :1], torch.zeros_like(lo_idx), lo_idx)
    hi_idx = lo_idx + 1
    below, above = vals < k[:, :1], vals > k[:, -1:]
    lo_idx = torch.where(above, torch.full_like(lo_idx, n - 1 - tail), lo_idx)
    hi_idx = torch.where(above, torch.full_like(hi_idx, n - 1), hi_idx)
    hi_idx = torch.where(below, torch.full_like(hi_idx, tail), hi_idx)
    k0, k1 = k.gather(1, lo_idx), k.gather(1, hi_idx)
    z0, z1 = z[lo_idx], z[hi_idx]
    gap = k1 - k0
    w = torch.where(gap > 0, (vals - k0) / torch.where(gap > 0, gap, torch.ones_like(gap)), torch.full_like(gap, 0.5))
    return (z0 + w * (z1 - z0)).T


@dataclass(frozen=True)
class Gaussianization(Normalization):
    """Phi^-1 of each column's interpolated empirical CDF (see the module doc)."""

    knots_x: Tensor  # (n, dim_x), sorted per column
    knots_y: Tensor  # (n, dim_y)
    kind: str = "gaussianize"

    @classmethod
    def fit(cls, x: Tensor, y: Tensor) -> "Gaussianization":
        return cls(x.sort(0).values, y.sort(0).values)

    def x(self, x: Tensor) -> Tensor:
        return _gaussianize(x, self.knots_x)

    def y(self, y: Tensor) -> Tensor:
        nan = torch.isnan(y)  # the null condition (rows of NaN) stays null
        return torch.where(nan, y, _gaussianize(torch.where(nan, torch.zeros_like(y), y), self.knots_y))

    def tensors(self) -> dict[str, Tensor]:
        return {"knots_x": self.knots_x, "knots_y": self.knots_y}


def fit_normalization(kind: str, x: Tensor, y: Tensor) -> Normalization:
    """The ``kind`` map ("standard", "gaussianize" or "none") fitted on the rows (x, y)."""
    if kind == "standard":
        return Standardization.fit(x, y)
    if kind == "gaussianize":
        return Gaussianization.fit(x, y)
    if kind == "none":
        return Standardization.identity(x.shape[1], y.shape[1])
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {kind!r}")


def load_normalization(kind: str, tensors: dict[str, Tensor]) -> Normalization:
    """Rebuild a saved normalization from its kind and ``tensors()``."""
    if kind in ("standard", "none"):
        return Standardization(**tensors, kind=kind)
    if kind == "gaussianize":
        return Gaussianization(**tensors)
    raise ValueError(f"unknown normalization kind {kind!r} (expected one of {NORMALIZATIONS})")
