"""Standard errors of Monte-Carlo integrals over (alpha, eps) draws.

Every estimate of the package is the mean over S draws of per-draw terms t_s (for
one image). How the draws were made decides how the variance of that mean is
estimated; the *design* of the draws names it:

* ``"iid"``: independent draws (plain samplers). Var = s^2 / S with the sample
  variance s^2; nu = S - 1 degrees of freedom.
* ``"paired"``: stratified samplers place *two* independent draws in each of S/2
  equal-probability strata, as draws (2h, 2h+1). The mean's variance is
  sum_h Var_h * 2 / S^2, and E (t_2h - t_2h+1)^2 = 2 Var_h, so

      Var = sum_h (t_2h - t_2h+1)^2 / S^2,       nu = S / 2                       (PAIR)

  which is unbiased and respects the strata. (Treating stratified draws as
  independent overstates the error about 2x: the between-strata spread is not noise.)
* ``"grid"``: deterministic alpha (midpoint rule). Its error is a deterministic
  quadrature bias, not noise: the standard error is NaN.

The formula is scaled for the small number of draws:

    stderr = sqrt(Var * nu / (nu - 2))      (nu > 2; NaN otherwise)               (CAL)

For normal terms (mean - truth) / sqrt(Var) is Student-t with nu degrees of freedom,
whose variance is nu / (nu - 2); the scale makes z = (mean - truth) / stderr have unit
variance, and then +-1.96 stderr covers 94.5-95.7% for every nu >= 3 (it is within
0.5% of the exact t interval).

The per-draw terms are not normal: they are right-skewed (a squared error gap weighted
by 1/q), and a draw set that misses the rare large terms has both a low mean and a small
spread, so the CAL interval undercovers (88-92% at 16 draws on a Gaussian mixture). For
iid draws the per-image standard error is therefore the *symmetric bootstrap-t* one
(:func:`bootstrap_t_stderr`): the 95% quantile q of |T*| = |mean* - mean| / se* over
resamples of the draws replaces 1.96, and stderr = se * q / 1.96, so that +-1.96 stderr
is the bootstrap-t interval (whose two-sided coverage error is of smaller order than the
t interval's). Paired draws cannot be resampled that way (two draws per stratum are
symmetric about their stratum mean, so a resample cannot see the skew); their standard
error is CAL times the same skew factor, measured on the draws as if they were iid:

    stderr_paired = CAL_paired * (q_iid / 1.96) / sqrt(nu_iid / (nu_iid - 2))         (SKEW)

(q_iid / 1.96 over the iid CAL factor is how much wider than a t interval the bootstrap-t
interval is). This is a heuristic; benchmarks/bench_calibration.py measures both
designs against long-run values, and plain draws are the better calibrated default.
Nonlinear statistics (below) get the same skew factor, from their per-draw terms.

Nonlinear functions of several estimates (the minimum of two informations in MMI
redundancy, the KL divergence of specific information) get their standard error and
bias from a *wild bootstrap* over draws that respects the same design: each draw's
terms (all sources of that draw together, so common random numbers stay common) are
moved away from their centre by a random sign; for linear statistics its variance
equals the formulas above exactly in expectation.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["DRAW_SCHEMES", "check_design", "mean_variance", "calibrated_stderr", "mean_stderr", "degrees_of_freedom",
           "fold_index", "wild_bootstrap", "bootstrap_chunk", "bootstrap_t_stderr", "skew_factor", "estimate_stderr", "N_BOOTSTRAP"]

DRAW_SCHEMES = ("iid", "paired", "grid")

#: Bootstrap replicates for nonlinear statistics: the relative noise of a bootstrap
#: standard error is about 1/sqrt(2B) = 3.5% at B = 400, small against the spread of
#: the standard error itself at the draw counts used (1/sqrt(2 nu) = 25% at nu = 8).
N_BOOTSTRAP = 400


#: Largest skew factor applied (see :func:`skew_factor`).
MAX_SKEW_FACTOR = 4.0


def check_design(design: str, n_draws: int) -> None:
    """Raise if ``design`` is unknown or does not fit ``n_draws`` draws per image."""
    if design not in DRAW_SCHEMES:
        raise ValueError(f"draw design must be one of {DRAW_SCHEMES}, got {design!r}")
    if design == "paired" and n_draws % 2:
        raise ValueError(f"paired (stratified) draws need an even number of draws per image, got {n_draws}: "
                         "each stratum holds two draws")


def degrees_of_freedom(design: str, n_draws: int) -> int:
    """nu of the variance estimate: S - 1 (iid), S / 2 (paired), 0 (grid)."""
    check_design(design, n_draws)
    return {"iid": n_draws - 1, "paired": n_draws // 2, "grid": 0}[design]


def mean_variance(terms: Tensor, design: str) -> Tensor:
    """Estimated variance of the mean over the last axis of per-draw ``terms`` (..., S):
    s^2 / S (iid), eq. PAIR (paired), NaN (grid)."""
    s = terms.shape[-1]
    check_design(design, s)
    if design == "grid" or (design == "iid" and s < 2):
        return torch.full(terms.shape[:-1], math.nan, dtype=terms.dtype, device=terms.device)
    if design == "iid":
        return terms.var(-1) / s
    d = terms[..., 0::2] - terms[..., 1::2]
    return (d**2).sum(-1) / s**2


def calibrated_stderr(variance: Tensor, dof: int) -> Tensor:
    """Eq. CAL: sqrt(variance * nu / (nu - 2)), NaN where nu <= 2."""
    if dof <= 2:
        return torch.full_like(variance, math.nan)
    return (variance * dof / (dof - 2)).sqrt()


def mean_stderr(terms: Tensor, design: str) -> tuple[Tensor, Tensor]:
    """Mean over the last axis of ``terms`` (..., S) and its calibrated standard error."""
    s = terms.shape[-1]
    return terms.mean(-1), calibrated_stderr(mean_variance(terms, design), degrees_of_freedom(design, s))


def bootstrap_t_stderr(terms: Tensor, n_boot: int = N_BOOTSTRAP, seed: int = 0, chunk: int = 64) -> Tensor:
    """Symmetric bootstrap-t standard error of the mean over the last axis of iid ``terms``
    (N, S): se * q / 1.96 with se = std/sqrt(S) and q the 95% quantile of
    |mean* - mean| / se* over ``n_boot`` resamples (with replacement) of the S draws.

    The resample indices are the same for every image (seeded by ``seed``), so an image's
    standard error depends on its own terms only, never on the batch or device it is in.
    """
    if terms.ndim != 2:
        raise ValueError(f"bootstrap_t_stderr: terms must be (N, S), got {tuple(terms.shape)}")
    s = terms.shape[1]
    if s < 4:  # nu <= 2: no finite error (as CAL)
        return torch.full(terms.shape[:1], math.nan, dtype=terms.dtype, device=terms.device)
    idx = torch.randint(0, s, (n_boot, s), generator=torch.Generator().manual_seed(seed)).to(terms.device)
    # at most ``chunk`` images, and fewer when their resamples would pass the element budget
    # (300 images x 4096 draws: 64 images x 400 x 4096 would be 839 MB per tensor)
    chunk = min(chunk, bootstrap_chunk(n_boot, s, 1, BOOTSTRAP_T_CHUNK_ELEMENTS))
    out = []
    for block in terms.split(chunk):  # (n, S) -> (n, B, S): bounded memory
        se = block.std(1) / math.sqrt(s)
        rs = block[:, idx]
        t = ((rs.mean(2) - block.mean(1, keepdim=True)) / (rs.std(2) / math.sqrt(s))).abs()
        t = torch.nan_to_num(t, nan=0.0)  # a resample equal to the data (0/0) deviates by 0
        out.append(se * torch.quantile(t, 0.95, dim=1) / 1.96)
    return torch.cat(out)


def skew_factor(terms: Tensor) -> Tensor:
    """How much wider than a t interval the symmetric bootstrap-t interval of the mean of
    ``terms`` (N, S) is, treating the draws as iid: (q / 1.96) / sqrt(nu / (nu - 2)) with
    nu = S - 1 (1 where the terms do not vary: nothing to widen)."""
    s = terms.shape[1]
    raw = terms.std(1) / math.sqrt(s)
    factor = bootstrap_t_stderr(terms) / raw / math.sqrt((s - 1) / (s - 3))
    # Terms that are mostly identical (an information that is 0 up to rounding) make
    # resamples without spread, whose |T*| is infinite: the factor is capped at
    # MAX_SKEW_FACTOR, beyond which the draws say nothing more about the tail.
    factor = factor.nan_to_num(nan=MAX_SKEW_FACTOR, posinf=MAX_SKEW_FACTOR).clamp_max(MAX_SKEW_FACTOR)
    return torch.where(raw > 0, factor, torch.ones_like(factor))


def estimate_stderr(terms: Tensor, design: str) -> tuple[Tensor, Tensor]:
    """Mean over draws of per-image ``terms`` (N, S) and its standard error: CAL times the
    skew factor (for iid draws exactly the bootstrap-t error; eq. SKEW for paired ones),
    NaN for a grid (see the module docstring)."""
    value, stderr = mean_stderr(terms, design)
    if design == "grid" or terms.shape[1] < 4:
        return value, stderr
    return value, stderr * skew_factor(terms)


def fold_index(n_draws: int) -> Tensor:
    """Fold (0 or 1) of each draw: its parity. Under the paired design the two folds are
    two independent stratified samples (one draw per stratum each); under iid any split
    is a split into independent halves."""
    return torch.arange(n_draws) % 2


def _multipliers(shape: tuple[int, ...], generator: torch.Generator, dtype) -> Tensor:
    signs = torch.randint(0, 2, shape, generator=generator).to(dtype)
    return 2 * signs - 1


#: Elements (replicates x images x draws x quantities) of the resampled terms that
#: :func:`wild_bootstrap` builds at once: 128 MiB in float64. The statistic's own
#: temporaries are a few times this (about 5x for the MMI PID statistic), so the peak of
#: a bootstrap is bounded by the chunk, not by the batch.
BOOTSTRAP_CHUNK_ELEMENTS = 2**24
#: The same budget for the resamples of :func:`bootstrap_t_stderr` (its own name: a
#: reduction over a block of images can round an image's last bit differently with the
#: block's size, so tests that vary the wild bootstrap's chunks hold this one fixed).
BOOTSTRAP_T_CHUNK_ELEMENTS = 2**24


def bootstrap_chunk(n_boot: int, n_draws: int, n_quantities: int, budget: int | None = None) -> int:
    """Images per chunk of a bootstrap: as many as keep the resampled terms (n_boot x
    images x n_draws x n_quantities) within ``budget`` elements (None:
    ``BOOTSTRAP_CHUNK_ELEMENTS``, read at call time), and at least one."""
    budget = BOOTSTRAP_CHUNK_ELEMENTS if budget is None else budget
    return max(1, budget // max(1, n_boot * n_draws * n_quantities))


def wild_bootstrap(terms: Tensor, design: str, statistic: Callable[..., Tensor], n_boot: int = N_BOOTSTRAP,
                   generator: torch.Generator | int | None = 0, per_image: Sequence[Tensor] = (),
                   chunk: int | None = None) -> Tensor:
    """Replicates of ``statistic`` under a wild bootstrap of the draws.

    ``terms``: (N, S, K) per-draw terms of K quantities sharing their draws.
    ``statistic``: maps terms of shape (..., n, S, K), followed by the rows of each
    ``per_image`` tensor (leading axis N) for the same n images, to (..., n, M) (it must
    broadcast over leading axes). Returns (n_boot, N, M).

    iid: t*_s = c + sqrt(S/(S-1)) xi_s (t_s - c), c the mean over draws;
    paired: t*_2h+r = m_h + sqrt(2) xi_2h+r (t_2h+r - m_h), m_h the stratum mean;
    xi = +-1 independent per draw, shared by the K quantities of the draw. For a linear
    statistic the bootstrap variance equals :func:`mean_variance` in expectation.

    The images are resampled ``chunk`` at a time (default :func:`bootstrap_chunk`), so
    that at most chunk x n_boot x S x K resampled terms exist at once. The signs are the
    same for every image, so an image's replicates depend on its own terms only: the
    result does not depend on the chunk size, nor on the batch or device the image is in.
    """
    if terms.ndim != 3:
        raise ValueError(f"wild_bootstrap: terms must be (N, S, K), got {tuple(terms.shape)}")
    n, s, k = terms.shape
    check_design(design, s)
    if design == "grid":
        raise ValueError("wild_bootstrap: grid draws are deterministic in alpha; there is nothing to resample")
    if s < 2:
        raise ValueError("wild_bootstrap: need at least 2 draws per image")
    for extra in per_image:
        if extra.shape[0] != n:
            raise ValueError(f"wild_bootstrap: per_image tensors must have one row per image ({n}), "
                             f"got shape {tuple(extra.shape)}")
    if isinstance(generator, int) or generator is None:
        generator = torch.Generator().manual_seed(0 if generator is None else generator)
    if design == "iid":
        centre = terms.mean(1, keepdim=True)
        scale = math.sqrt(s / (s - 1))
    else:
        centre = 0.5 * (terms[:, 0::2] + terms[:, 1::2]).repeat_interleave(2, dim=1)
        scale = math.sqrt(2.0)
    deviation = terms - centre
    # Drawn once for all chunks: the same signs for every image.
    signs = scale * _multipliers((n_boot, 1, s, 1), generator, terms.dtype).to(terms.device)
    chunk = bootstrap_chunk(n_boot, s, k) if chunk is None else chunk
    if chunk < 1:
        raise ValueError(f"wild_bootstrap: chunk must be >= 1 image, got {chunk}")
    out = []
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        out.append(statistic(centre[rows] + signs * deviation[rows], *(extra[rows] for extra in per_image)))
    return torch.cat(out, 1)
