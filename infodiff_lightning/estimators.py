"""Information estimators of Kong et al. (ICLR 2024) and Kong et al. (2023), in nats.

With the squared errors of one denoiser pass (evaluate.py) and importance weights w:

    standard   i(x; y | c)  = 1/2 E_q[ w (||eps - eps_hat(.|c)||^2 - ||eps - eps_hat(.|y,c)||^2) ]   (eq. 5)
    orthogonal io(x; y | c) = 1/2 E_q[ w  ||eps_hat(.|c) - eps_hat(.|y,c)||^2 ]                       (eq. 7)

c = null gives pointwise MI, c = "the prompt without the word" gives CMI of the word.
Each estimate is the mean of per-draw terms t_s = 1/2 w_s (...); its standard error
follows the design of the draws (uncertainty.py: iid, paired strata, or none for a
grid) and is scaled for the number of draws so that +-1.96 stderr is a 95% interval.
A dataset-level value is the mean over images, with standard error std over images /
sqrt(N) (which includes both sampling and integration noise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser
from .denoisers.reference import GaussianReference
from .draws import Draws, sample_draws
from .evaluate import Errors, denoiser_errors
from .integrate import AlphaSampler, TruncatedLogistic
from .uncertainty import estimate_stderr, mean_stderr

__all__ = [
    "contrast_estimate",
    "Estimate", "default_sampler", "make_draws", "information_terms", "informations",
    "pointwise_mi", "conditional_mi", "nll", "bits_per_dim",
]

ESTIMATORS = ("standard", "orthogonal")


@dataclass
class Estimate:
    """Per-image estimates (N,), their standard errors, and what they cost.

    ``stderr`` is the calibrated standard error of the Monte-Carlo integral of each image
    (uncertainty.py, eq. CAL; NaN for grid draws). ``map`` / ``map_stderr``: per-element
    map (N, *map_shape) and its per-element standard error."""

    value: Tensor
    stderr: Tensor
    n_evals: int
    terms: Tensor | None = None  # (N, S) per-draw terms; value = terms.mean(1)
    map: Tensor | None = None  # (N, *map_shape); sums to value for orthogonal maps
    extra: dict = field(default_factory=dict)
    map_stderr: Tensor | None = None  # (N, *map_shape)

    def dataset_mean(self) -> tuple[float, float]:
        """Dataset-level mean over images and its standard error (std over images /
        sqrt(N); for one image, that image's own standard error)."""
        n = self.value.numel()
        if n == 1:
            return float(self.value), float(self.stderr)
        return float(self.value.mean()), float(self.value.std() / math.sqrt(n))


def summarize(terms: Tensor, n_evals: int, design: str = "iid", keep_terms: bool = False,
              draw_map: Tensor | None = None) -> Estimate:
    """Mean of per-draw terms (N, S) per image with its calibrated standard error
    (uncertainty.estimate_stderr), and of per-draw map terms (N, S, *map_shape) when
    given, element by element (with the CAL formula: a bootstrap per pixel costs too much)."""
    value, stderr = estimate_stderr(terms, design)
    est = Estimate(value, stderr, n_evals, terms if keep_terms else None)
    if draw_map is not None:
        est.map, est.map_stderr = mean_stderr(draw_map.movedim(1, -1), design)
    return est


def contrast_estimate(errors: Errors, pair_index: int, pair: tuple[int, int], estimator: str = "orthogonal",
                      keep_terms: bool = False) -> Estimate:
    """The information of one (reference, condition) contrast of a denoiser pass: its
    per-draw terms (eq. 5 or 7, :func:`information_terms`) summarized per image, with its
    per-element map when the pass kept maps."""
    terms = information_terms(errors, pair_index, pair, estimator)
    return summarize(terms, errors.n_evals, errors.design, keep_terms, errors.draw_map(pair_index))


def default_sampler(denoiser: Denoiser) -> AlphaSampler:
    """The reference truncated logistic (loc 1, scale 2, clip 3), kept inside the
    denoiser's trained log-SNR range."""
    return TruncatedLogistic(1.0, 2.0, 3.0).restricted(denoiser.alpha_range)


def make_draws(denoiser: Denoiser, x: Tensor, n_draws: int, sampler: AlphaSampler | None,
               generator: torch.Generator | int | None) -> Draws:
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    sampler = default_sampler(denoiser) if sampler is None else sampler
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return sample_draws(int(x.shape[0]), n_draws, tuple(x.shape[1:]), sampler, generator, dtype)


def check_alpha_range(denoiser: Denoiser, draws: Draws) -> None:
    """Raise if the draws leave the denoiser's trained log-SNR range."""
    rng = denoiser.alpha_range
    if rng is None:
        return
    lo, hi = float(draws.alpha.min()), float(draws.alpha.max())
    if lo < rng[0] - 1e-6 or hi > rng[1] + 1e-6:
        raise ValueError(f"draws span alpha [{lo:.3f}, {hi:.3f}] outside the model's trained range "
                         f"[{rng[0]:.3f}, {rng[1]:.3f}]; use sampler.restricted(denoiser.alpha_range)")


def information_terms(errors: Errors, pair_index: int, pair: tuple[int, int], estimator: str) -> Tensor:
    """Per-draw terms (N, S) of eq. 5 (standard) or eq. 7 (orthogonal) for one pair."""
    if estimator == "orthogonal":
        d = errors.gap[..., pair_index]
    elif estimator == "standard":
        d = errors.mse[..., pair[0]] - errors.mse[..., pair[1]]
    else:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    return 0.5 * errors.weight * d


def informations(denoiser: Denoiser, x: Tensor, columns: Sequence[Column], pairs: Sequence[tuple[int, int]], *,
                 estimator: str = "orthogonal", n_draws: int = 64, sampler: AlphaSampler | None = None,
                 generator: torch.Generator | int | None = None, draws: Draws | None = None,
                 maps: bool = False, microbatch: int | None = None, return_terms: bool = False) -> list[Estimate]:
    """Information of column ``cond`` relative to column ``ref`` for each pair (ref, cond),
    all from one pass with shared draws. ``maps`` adds per-element maps (orthogonal maps
    for the orthogonal estimator, error-difference maps for the standard one)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if not pairs:
        raise ValueError("informations: give at least one (reference, condition) pair")
    if draws is None:
        draws = make_draws(denoiser, x, n_draws, sampler, generator)
    check_alpha_range(denoiser, draws)
    err = denoiser_errors(denoiser, x, columns, draws, pairs, maps=estimator if maps else None, microbatch=microbatch)
    out = []
    for p, pair in enumerate(pairs):
        est = contrast_estimate(err, p, pair, estimator, keep_terms=return_terms)
        est.extra["alpha"] = err.alpha if return_terms else None
        out.append(est)
    return out


def pointwise_mi(denoiser: Denoiser, x: Tensor, condition: Column, **kw) -> Estimate:
    """i(x; y) for each image x with its condition y (reference: the null condition)."""
    n = int(x.shape[0])
    return informations(denoiser, x, [denoiser.null_conditions(n), condition], [(0, 1)], **kw)[0]


def conditional_mi(denoiser: Denoiser, x: Tensor, condition: Column, context: Column, **kw) -> Estimate:
    """i(x; w | c): ``condition`` is (w, c) (e.g. the full prompt), ``context`` is c alone
    (e.g. the prompt without the word). Two conditions per draw, not three."""
    return informations(denoiser, x, [context, condition], [(0, 1)], **kw)[0]


def nll(denoiser: Denoiser, x: Tensor, condition: Column | None = None, *, reference_mean=0.0, reference_cov=1.0,
        n_draws: int = 256, sampler: AlphaSampler | None = None, generator: torch.Generator | int | None = None,
        draws: Draws | None = None, microbatch: int | None = None) -> Estimate:
    """-log p(x [| c]) in nats, pointwise (Kong et al. 2023, with a Gaussian reference G):

        -log p(x) = -log p_G(x) + 1/2 Int E_eps[ ||eps - eps_hat(x_a)||^2 - ||eps - eps_hat_G(x_a)||^2 ] da

    eps_hat_G is the exact denoiser of G = N(reference_mean, reference_cov). Averaged over
    x ~ G this is the form h_G + 1/2 Int (mmse - mmse_G) da; the pointwise form
    shares (alpha, eps) between the two denoisers, which cancels most of the noise.
    The alpha range is truncated to the sampler's range: widen it for small variances.
    """
    n = int(x.shape[0])
    d = int(x[0].numel())
    ref = GaussianReference(reference_mean, reference_cov, d)
    if draws is None:
        draws = make_draws(denoiser, x, n_draws, sampler, generator)
    check_alpha_range(denoiser, draws)
    cond = denoiser.null_conditions(n) if condition is None else condition
    model = denoiser_errors(denoiser, x, [cond], draws, microbatch=microbatch)
    gauss = denoiser_errors(ref, x, [ref.null_conditions(n)], draws, microbatch=microbatch)
    terms = 0.5 * model.weight * (model.mse[..., 0] - gauss.mse[..., 0])
    est = summarize(terms, model.n_evals, model.design)
    offset = ref.neg_log_prob(x).to(est.value.dtype)
    return Estimate(est.value + offset, est.stderr, est.n_evals, extra={"dim": d})


def bits_per_dim(estimate: Estimate) -> tuple[Tensor, Tensor]:
    """-log2 p(x) / d for an :func:`nll` estimate (continuous density; no dequantisation)."""
    d = estimate.extra["dim"]
    return estimate.value / (d * math.log(2)), estimate.stderr / (d * math.log(2))
