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

These are the public functions for notebooks; each builds its condition columns and
contrasts and calls the one primitive, :func:`~infodiff_lightning.measure.measure`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser
from .denoisers.reference import GaussianReference
from .draws import Draws
from .estimate import ESTIMATORS, Estimate, check_estimator, summarize
from .integrate import AlphaSampler
from .measure import default_sampler, make_draws, measure

__all__ = ["Estimate", "ESTIMATORS", "default_sampler", "make_draws", "informations", "pointwise_mi",
           "conditional_mi", "nll"]


def _draws(denoiser: Denoiser, x: Tensor, draws: Draws | None, n_draws: int, sampler: AlphaSampler | None,
           generator: torch.Generator | int | None) -> Draws:
    """The draws given, or n_draws per image from ``generator`` (an int seeds a new one)."""
    return make_draws(denoiser, x, n_draws, sampler, generator) if draws is None else draws


def informations(denoiser: Denoiser, x: Tensor, columns: Sequence[Column], pairs: Sequence[tuple[int, int]], *,
                 estimator: str = "orthogonal", n_draws: int = 64, sampler: AlphaSampler | None = None,
                 generator: torch.Generator | int | None = None, draws: Draws | None = None,
                 maps: bool = False, microbatch: int | None = None, return_terms: bool = False) -> list[Estimate]:
    """Information of column ``cond`` relative to column ``ref`` for each pair (ref, cond),
    all from one pass with shared draws. ``maps`` adds per-element maps (orthogonal maps
    for the orthogonal estimator, error-difference maps for the standard one);
    ``return_terms`` keeps each estimate's per-draw terms and the draws' alpha
    (``extra["alpha"]``)."""
    check_estimator(estimator)
    if not pairs:
        raise ValueError("informations: give at least one (reference, condition) pair")
    names = [str(k) for k in range(len(columns))]
    for pair in pairs:
        if len(pair) != 2 or not all(0 <= int(i) < len(columns) for i in pair):
            raise ValueError(f"pair {tuple(pair)} does not index two of the {len(columns)} condition columns")
    m = measure(denoiser, dict(zip(names, columns)), {p: (names[a], names[b]) for p, (a, b) in enumerate(pairs)},
                x=x, draws=_draws(denoiser, x, draws, n_draws, sampler, generator),
                maps=estimator if maps else None, microbatch=microbatch)
    out = []
    for p in range(len(pairs)):
        est = m.estimate(p, estimator, keep_terms=return_terms)
        est.extra["alpha"] = m.errors.alpha if return_terms else None
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
    draws = _draws(denoiser, x, draws, n_draws, sampler, generator)
    cond = denoiser.null_conditions(n) if condition is None else condition
    model = measure(denoiser, {"c": cond}, x=x, draws=draws, microbatch=microbatch)
    gauss = measure(ref, {"null": ref.null_conditions(n)}, x=x, draws=draws, microbatch=microbatch)
    terms = 0.5 * model.errors.weight * (model.mse("c") - gauss.mse("null"))
    est = summarize(terms, model.n_evals, model.design)
    offset = ref.neg_log_prob(x).to(est.value.dtype)
    return Estimate(est.value + offset, est.stderr, est.n_evals, extra={"dim": d})
