"""PID toys: Gaussian mixtures with two binary tokens whose decomposition is known.

Each system is a :class:`DiscreteMixture` with label tuples (y1, y2) (plus a context
coordinate c where stated), uniform over the listed label tuples, and
X | labels ~ N(mu_z, sigma^2 I) where z in {0, 1} is the planted feature and
mu_0, mu_1 = -/+ (separation * sigma / 2) * (1, ..., 1)/sqrt(dim): two means
``separation`` standard deviations apart. Every information is then that of one binary
feature, I_sep = I(X; Z), which ``DiscreteMixture.mutual_information`` gives exactly
(Monte-Carlo with exact densities), e.g. ``system.mutual_information(target=(True, True))``
for I(X; Y1, Y2). Planted decompositions (Williams-Beer lattice, any reasonable
redundancy measure):

    xor_system      z = y1 xor y2, y1, y2 independent   r = u1 = u2 = 0,  s  = I(X; Y1, Y2) = I_sep
    copy_system     z = y1 = y2                          r = I(X; Y1),     u1 = u2 = s = 0
    unique_system   z = y1, y2 independent of y1         u1 = I(X; Y1),    r = u2 = s = 0
    context_xor_system  labels (y1, y2, c), z = y1 xor c: unconditionally every term is 0;
                    given c, u1 = I(X; Y1 | C) = I_sep and the rest is 0 (CPID).

:func:`with_independent_label` appends a label coordinate independent of everything (an
uninformative context), and :func:`observe` / :func:`pid_columns` build the condition
rows (-1 = unobserved) that :func:`infodiff_lightning.pid.pid` takes.
"""
from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from .mixture import DiscreteMixture

__all__ = ["xor_system", "copy_system", "unique_system", "context_xor_system", "with_independent_label",
           "observe", "pid_columns", "binary_candidates"]


def _two_means(dim: int, separation: float, sigma: float) -> Tensor:
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not separation > 0:
        raise ValueError(f"separation must be > 0, got {separation}")
    half = 0.5 * separation * sigma * torch.ones(dim, dtype=torch.float64) / math.sqrt(dim)
    return torch.stack([-half, half])  # (2, dim): mu_0, mu_1


def _system(labels: list[tuple[int, ...]], feature: list[int], dim: int, separation: float,
            sigma: float) -> DiscreteMixture:
    mu = _two_means(dim, separation, sigma)
    k = len(labels)
    return DiscreteMixture(torch.tensor(labels), torch.full((k,), 1.0 / k, dtype=torch.float64),
                           mu[torch.tensor(feature)], sigma)


def xor_system(dim: int = 4, separation: float = 3.0, sigma: float = 1.0) -> DiscreteMixture:
    """(y1, y2) uniform on {0,1}^2, mean mu_{y1 xor y2}: all information is synergy."""
    labels = list(itertools.product((0, 1), repeat=2))
    return _system(labels, [a ^ b for a, b in labels], dim, separation, sigma)


def copy_system(dim: int = 4, separation: float = 3.0, sigma: float = 1.0) -> DiscreteMixture:
    """y1 = y2 uniform on {0,1}, mean mu_{y1}: all information is redundancy."""
    return _system([(0, 0), (1, 1)], [0, 1], dim, separation, sigma)


def unique_system(dim: int = 4, separation: float = 3.0, sigma: float = 1.0) -> DiscreteMixture:
    """(y1, y2) uniform on {0,1}^2, mean mu_{y1}: all information is unique to y1."""
    labels = list(itertools.product((0, 1), repeat=2))
    return _system(labels, [a for a, _ in labels], dim, separation, sigma)


def context_xor_system(dim: int = 4, separation: float = 3.0, sigma: float = 1.0) -> DiscreteMixture:
    """(y1, y2, c) uniform on {0,1}^3, mean mu_{y1 xor c}: y1 tells nothing about x alone,
    everything once the context c is known (I(X; Y1 | C) = I_sep); y2 is irrelevant."""
    labels = list(itertools.product((0, 1), repeat=3))
    return _system(labels, [a ^ c for a, _, c in labels], dim, separation, sigma)


def with_independent_label(system: DiscreteMixture, n_values: int = 2) -> DiscreteMixture:
    """The same system with one more label coordinate, uniform on {0..n_values-1} and
    independent of X and of the other labels (an uninformative context)."""
    if n_values < 1:
        raise ValueError(f"n_values must be >= 1, got {n_values}")
    k = system.labels.shape[0]
    extra = torch.arange(n_values).repeat_interleave(k)[:, None]
    labels = torch.cat([system.labels.repeat(n_values, 1), extra], 1)
    return DiscreteMixture(labels, system.probs.repeat(n_values) / n_values, system.means.repeat(n_values, 1),
                           system.sigma)


def observe(labels: Tensor, keep) -> Tensor:
    """Condition rows: ``labels`` (N, m) with the coordinates where ``keep`` (m bools) is
    False replaced by -1 (unobserved)."""
    keep = torch.as_tensor(list(keep), dtype=torch.bool)
    if keep.numel() != labels.shape[1]:
        raise ValueError(f"keep has {keep.numel()} entries, labels have {labels.shape[1]} coordinates")
    return torch.where(keep, labels, torch.full_like(labels, -1))


def pid_columns(labels: Tensor, source1: int = 0, source2: int = 1, context: tuple[int, ...] = ()):
    """(ref, y1, y2, y12) condition columns for :func:`infodiff_lightning.pid.pid`:
    ref observes the ``context`` coordinates only (all -1 without context: the null
    condition), y1 adds ``source1``, y2 adds ``source2``, y12 adds both."""
    m = labels.shape[1]
    base = [i in context for i in range(m)]

    def with_(*idx):
        return observe(labels, [b or i in idx for i, b in enumerate(base)])

    return with_(), with_(source1), with_(source2), with_(source1, source2)


def binary_candidates(labels: Tensor, source: int, context: tuple[int, ...] = ()) -> list[Tensor]:
    """Candidate condition columns for I_min: the ``source`` coordinate set to 0 and to 1
    (with the ``context`` coordinates observed, the others unobserved)."""
    keep = [i in context for i in range(labels.shape[1])]
    cols = []
    for value in (0, 1):
        col = observe(labels, keep)
        col[:, source] = value
        cols.append(col)
    return cols
