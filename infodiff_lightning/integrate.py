"""Importance samplers over log-SNR: draws alpha ~ q with exact weights 1/q(alpha).

An integral Int f(alpha) d alpha over [lo, hi] is estimated by mean_i f(a_i) w(a_i) with
w = 1/q. The weights are the true inverse densities of the *truncated* proposal, so the
estimate is unbiased on the truncated range (a pitfall of the reference code, which
weights by the untruncated logistic density).

Every sampler returns ``(alpha, weight)`` of shape ``shape``; stratified versions split
the proposal into S/2 equal-probability strata along the last dimension (the S draws of
one image) and place two independent draws in each, as draws (2h, 2h+1). That lowers the
variance at equal count and, with two draws per stratum, keeps the variance estimable
(uncertainty.py, eq. PAIR). Each sampler names its ``design`` ("iid", "paired" or
"grid"), which the draws carry to the standard-error formulas.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AlphaSampler", "TruncatedLogistic", "Uniform", "Grid", "Piecewise", "intersect_range"]


def _check_range(lo: float, hi: float, what: str) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{what}: the alpha range [{lo}, {hi}] must be finite")
    if not hi > lo:
        raise ValueError(f"{what}: empty alpha range [{lo}, {hi}] (need hi > lo)")


def intersect_range(a: tuple[float, float], b: tuple[float, float] | None) -> tuple[float, float]:
    """Intersection of two alpha ranges; raises if it is empty."""
    if b is None:
        return a
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    if not hi > lo:
        raise ValueError(f"empty alpha range: {a} does not overlap the model's trained range {b}")
    return lo, hi


def _unit_draws(shape: tuple[int, ...], stratified: bool, generator: torch.Generator | None) -> Tensor:
    """Uniform(0,1) draws; stratified along the last dim (S even): draws 2h and 2h+1 both
    lie in stratum h, u in [h/(S/2), (h+1)/(S/2))."""
    if len(shape) == 0 or any(s <= 0 for s in shape):
        raise ValueError(f"need a positive number of draws, got shape {shape}")
    n = shape[-1]
    if stratified and n % 2:
        raise ValueError(f"stratified sampling places two draws in each stratum: the number of draws per image "
                         f"must be even, got {n}")
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    if stratified:
        u = (torch.div(torch.arange(n), 2, rounding_mode="floor").to(torch.float64) + u) / (n // 2)
    return u


class AlphaSampler:
    """Base class: ``sample(shape, generator) -> (alpha, weight)`` on ``[lo, hi]``."""

    lo: float
    hi: float
    stratified: bool = False

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def restricted(self, alpha_range: tuple[float, float] | None) -> "AlphaSampler":
        """The same proposal truncated to the intersection with ``alpha_range``."""
        raise NotImplementedError

    @property
    def design(self) -> str:
        """How the draws of one image relate (uncertainty.DRAW_SCHEMES): "iid", "paired" or "grid"."""
        return "paired" if self.stratified else "iid"

    @property
    def range(self) -> tuple[float, float]:
        return self.lo, self.hi


@dataclass
class TruncatedLogistic(AlphaSampler):
    """Logistic(loc, scale) truncated to [loc - clip*scale, loc + clip*scale] (and to
    [lo, hi] when given). Density q(a) = pdf(a) / (F(hi) - F(lo)); weight 1/q(a).
    The default (loc 1, scale 2, clip 3) is the reference choice for SD 2.1."""

    loc: float = 1.0
    scale: float = 2.0
    clip: float = 3.0
    stratified: bool = False
    lo: float | None = None
    hi: float | None = None

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"TruncatedLogistic: scale must be > 0, got {self.scale}")
        if not self.clip > 0:
            raise ValueError(f"TruncatedLogistic: clip must be > 0, got {self.clip}")
        lo, hi = self.loc - self.clip * self.scale, self.loc + self.clip * self.scale
        if self.lo is not None:
            lo = max(lo, self.lo)
        if self.hi is not None:
            hi = min(hi, self.hi)
        _check_range(lo, hi, "TruncatedLogistic")
        self.lo, self.hi = float(lo), float(hi)

    def cdf(self, a: float) -> float:
        """The untruncated logistic's distribution function at ``a``."""
        return 1.0 / (1.0 + math.exp(-(a - self.loc) / self.scale))

    def log_density(self, alpha: Tensor) -> Tensor:
        z = (alpha - self.loc) / self.scale
        log_pdf = -z - 2 * torch.nn.functional.softplus(-z) - math.log(self.scale)
        return log_pdf - math.log(self.cdf(self.hi) - self.cdf(self.lo))

    def sample(self, shape, generator=None):
        f_lo, f_hi = self.cdf(self.lo), self.cdf(self.hi)
        u = f_lo + (f_hi - f_lo) * _unit_draws(tuple(shape), self.stratified, generator)
        alpha = (self.loc + self.scale * torch.logit(u)).clamp(self.lo, self.hi)
        return alpha, torch.exp(-self.log_density(alpha))

    def restricted(self, alpha_range):
        if alpha_range is None:
            return self
        lo, hi = intersect_range((self.lo, self.hi), alpha_range)
        return TruncatedLogistic(self.loc, self.scale, self.clip, self.stratified, lo, hi)


@dataclass
class Uniform(AlphaSampler):
    """Uniform on [lo, hi]; weight = hi - lo."""

    lo: float = -10.0
    hi: float = 10.0
    stratified: bool = False

    def __post_init__(self) -> None:
        _check_range(self.lo, self.hi, "Uniform")

    def sample(self, shape, generator=None):
        u = _unit_draws(tuple(shape), self.stratified, generator)
        alpha = self.lo + (self.hi - self.lo) * u
        return alpha, torch.full_like(alpha, self.hi - self.lo)

    def restricted(self, alpha_range):
        if alpha_range is None:
            return self
        lo, hi = intersect_range((self.lo, self.hi), alpha_range)
        return Uniform(lo, hi, self.stratified)


@dataclass
class Grid(AlphaSampler):
    """Midpoint rule: alpha_i = lo + (i + 1/2)(hi - lo)/n, n = last dim of ``shape``.
    Every weight is hi - lo because the estimators average over the n draws. alpha is
    deterministic, so no standard error is reported (NaN): the error is a quadrature bias."""

    lo: float = -10.0
    hi: float = 10.0

    @property
    def design(self) -> str:
        return "grid"

    def __post_init__(self) -> None:
        _check_range(self.lo, self.hi, "Grid")

    def sample(self, shape, generator=None):
        shape = tuple(shape)
        if len(shape) == 0 or any(s <= 0 for s in shape):
            raise ValueError(f"need a positive number of draws, got shape {shape}")
        n = shape[-1]
        alpha = self.lo + (self.hi - self.lo) * (torch.arange(n, dtype=torch.float64) + 0.5) / n
        alpha = alpha.expand(shape).clone()
        return alpha, torch.full_like(alpha, self.hi - self.lo)

    def restricted(self, alpha_range):
        if alpha_range is None:
            return self
        lo, hi = intersect_range((self.lo, self.hi), alpha_range)
        return Grid(lo, hi)


@dataclass
class Piecewise(AlphaSampler):
    """A piecewise-constant density on log-SNR: bin j = [edges[j], edges[j+1]) holds
    probability ``mass[j]``, spread uniformly, so q(a) = mass_j / width_j and the weight is
    width_j / mass_j. Fitted to a model's integrand (proposal.py), it puts the draws where
    the information is. ``stratified``: consecutive draw pairs share a stratum of equal
    probability in its quantiles (the "paired" design).

    Every bin needs positive mass: a bin the proposal never visits would drop its share of
    the integral without any sign in the standard error."""

    edges: tuple[float, ...] = (-10.0, 10.0)
    mass: tuple[float, ...] = (1.0,)
    stratified: bool = False

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.edges)
        mass = tuple(float(m) for m in self.mass)
        if len(edges) != len(mass) + 1 or not mass:
            raise ValueError(f"Piecewise: need len(edges) == len(mass) + 1 >= 2, got {len(edges)} edges and "
                             f"{len(mass)} masses")
        if any(not math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"Piecewise: edges must be finite and increasing, got {edges}")
        if any(not (m > 0 and math.isfinite(m)) for m in mass):
            raise ValueError(f"Piecewise: every bin needs a positive, finite mass, got {mass}")
        total = sum(mass)
        self.edges, self.mass = edges, tuple(m / total for m in mass)
        self.lo, self.hi = edges[0], edges[-1]

    def _tables(self) -> tuple[Tensor, Tensor, Tensor]:
        edges = torch.tensor(self.edges, dtype=torch.float64)
        mass = torch.tensor(self.mass, dtype=torch.float64)
        cum = torch.cat([torch.zeros(1, dtype=torch.float64), mass.cumsum(0)])
        cum[-1] = 1.0  # the last bin ends at u = 1 exactly, whatever the rounding of the sum
        return edges, mass, cum

    def log_density(self, alpha: Tensor) -> Tensor:
        edges, mass, _ = self._tables()
        j = (torch.bucketize(alpha.to(torch.float64), edges[1:-1], right=True)).clamp(0, len(self.mass) - 1)
        return (mass[j] / (edges[j + 1] - edges[j])).log()

    def sample(self, shape, generator=None):
        edges, mass, cum = self._tables()
        u = _unit_draws(tuple(shape), self.stratified, generator)
        j = torch.bucketize(u, cum[1:-1], right=True).clamp(0, len(self.mass) - 1)
        frac = ((u - cum[j]) / mass[j]).clamp(0.0, 1.0)
        alpha = edges[j] + frac * (edges[j + 1] - edges[j])
        return alpha, (edges[j + 1] - edges[j]) / mass[j]

    def restricted(self, alpha_range):
        """The proposal truncated to ``alpha_range``: bins cut at the new ends keep the
        share of their mass that lies inside (the density is unchanged where it remains)."""
        if alpha_range is None:
            return self
        lo, hi = intersect_range((self.lo, self.hi), alpha_range)
        edges, mass = [], []
        for a, b, m in zip(self.edges, self.edges[1:], self.mass):
            a2, b2 = max(a, lo), min(b, hi)
            if b2 > a2:
                if not edges:
                    edges.append(a2)
                edges.append(b2)
                mass.append(m * (b2 - a2) / (b - a))
        return Piecewise(tuple(edges), tuple(mass), self.stratified)
