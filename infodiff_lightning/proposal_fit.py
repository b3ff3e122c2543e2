"""Fit a model's log-SNR proposal (proposal.py) from one pilot measurement.

The pilot spreads its draws evenly over the reference range (stratified uniform, so every
bin of the fit sees the same number of draws), measures the given contrasts with the
orthogonal estimator (eq. 7), divides each draw's term by its weight to get the integrand
value f_s, and fits eq. OPT, mixed with the reference sampler's own mass per bin (the
defensive share ``floor``, proposal.py). The pilot is a few images: the shape of the integrand over
log-SNR is the model's, not the image's (BENCHMARKS.md "Draw schemes" shows it on the
world model).
"""
from __future__ import annotations

from typing import Hashable, Mapping, Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser
from .integrate import Piecewise, Uniform
from .measure import REFERENCE_SAMPLER, DrawSpec, measure, reference_range
from .proposal import DEFAULT_BINS, DEFAULT_FLOOR, fit_proposal

__all__ = ["fit_model_proposal"]


def fit_model_proposal(denoiser: Denoiser, x: Tensor, columns: Mapping[str, Column],
                       contrasts: Mapping[Hashable, tuple[str, str]], *, ids: Sequence[int] | None = None,
                       n_draws: int = 64, seed: int = 0, n_bins: int = DEFAULT_BINS, floor: float = DEFAULT_FLOOR,
                       microbatch: int | None = None) -> Piecewise:
    """The proposal of eq. OPT over :func:`~infodiff_lightning.measure.reference_range`,
    fitted on ``n_draws`` stratified uniform draws per pilot image of the ``contrasts``
    of ``columns`` (as for :func:`~infodiff_lightning.measure.measure`)."""
    if n_draws < 2 * n_bins:
        raise ValueError(f"fit_model_proposal: {n_draws} pilot draws per image for {n_bins} bins; give at least "
                         f"two per bin (n_draws >= {2 * n_bins})")
    lo, hi = reference_range(denoiser)
    spec = DrawSpec(n_draws, seed, Uniform(lo, hi, stratified=True))
    # the defensive share of the proposal: the reference sampler's mass in each bin
    ref = REFERENCE_SAMPLER.restricted((lo, hi))
    edges = torch.linspace(lo, hi, n_bins + 1, dtype=torch.float64).tolist()
    guard = [ref.cdf(b) - ref.cdf(a) for a, b in zip(edges, edges[1:])]
    m = measure(denoiser, columns, contrasts, x=x, ids=ids, draws=spec, microbatch=microbatch)
    integrand = [m.terms(key) / m.errors.weight for key in contrasts]
    return fit_proposal(m.errors.alpha, integrand, lo, hi, n_bins=n_bins, floor=floor, defensive=guard)
