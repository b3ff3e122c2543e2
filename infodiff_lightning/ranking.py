"""Caption ranking by pointwise MI (Kong et al. 2024, the ARO protocol).

Each image comes with K candidate captions; the model's choice is the candidate with the
largest pointwise information

    k* = argmax_k i(x; c_k),   i(x; c) = log p(c | x) - log p(c)

which for equally likely candidates is the Bayes classifier of the caption. All K
candidates of an image are scored from one denoiser pass over the columns
[null, c_1, ..., c_K] with shared (alpha, eps) draws (common random numbers: the
differences between candidates carry less Monte-Carlo noise than the scores), and both
estimators come from the same pass (the orthogonal one reads the gaps, the standard one
the error differences).

The prediction uses the standard estimator (:data:`PREDICTION_ESTIMATOR`). It is the
pointwise identity: 1/2 Int E_eps[mse(x_a | null) - mse(x_a | c)] da = log p(x | c) - log p(x)
for *any* pair (x, c). The orthogonal estimator 1/2 Int E ||eps_hat(.|null) - eps_hat(.|c)||^2
equals it only on average over x ~ p(x | c): it is never negative, and a wrong caption
that moves the prediction a lot scores high (tests/test_ranking.py shows it picking
against the Bayes classifier). Its scores are kept for comparison, not for the choice.

A prediction counts as correct only when the true candidate's score is strictly larger
than every other (a tie is a miss, so an uninformative model scores 0, not 1/K).
Accuracy carries a Wilson 95% interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .denoisers.base import TextDenoiser
from .draws import draws_for_ids
from .estimators import ESTIMATORS, contrast_estimate, default_sampler
from .evaluate import denoiser_errors

__all__ = ["CandidateScores", "score_candidates", "correct", "accuracy_interval", "PREDICTION_ESTIMATOR"]

#: The estimator whose scores choose the caption (see the module doc).
PREDICTION_ESTIMATOR = "standard"


@dataclass
class CandidateScores:
    """Per-image, per-candidate pointwise MI (N, K) and standard errors, per estimator."""

    value: dict[str, Tensor]
    stderr: dict[str, Tensor]
    n_evals: int


def score_candidates(denoiser: TextDenoiser, images: Tensor, ids: Sequence[int], candidates: Sequence[Sequence[str]],
                     n_draws: int = 16, seed: int = 0, microbatch: int | None = None) -> CandidateScores:
    """i(x_n; c_nk) for every image n and each of its K candidates (every image has K),
    with draws keyed by (seed, image id) and shared by the candidates of an image."""
    n = int(images.shape[0])
    if len(candidates) != n or len(ids) != n:
        raise ValueError(f"score_candidates: {n} images, {len(ids)} ids and {len(candidates)} candidate lists")
    k = len(candidates[0]) if n else 0
    if k < 2 or any(len(c) != k for c in candidates):
        raise ValueError("score_candidates: every image needs the same number (>= 2) of candidate captions")
    x = denoiser.encode(images, ids=list(ids))
    draws = draws_for_ids(list(ids), n_draws, tuple(x.shape[1:]), default_sampler(denoiser), seed)
    columns = [denoiser.null_conditions(n)] + [[c[j] for c in candidates] for j in range(k)]
    pairs = [(0, j + 1) for j in range(k)]
    errors = denoiser_errors(denoiser, x, columns, draws, pairs, microbatch=microbatch)
    value, stderr = {}, {}
    for est in ESTIMATORS:
        scores = [contrast_estimate(errors, j, pair, est) for j, pair in enumerate(pairs)]
        value[est] = torch.stack([s.value for s in scores], 1)
        stderr[est] = torch.stack([s.stderr for s in scores], 1)
    return CandidateScores(value, stderr, errors.n_evals)


def correct(scores: Tensor, true_index: Tensor | Sequence[int]) -> Tensor:
    """(N,) bool: the true candidate's score beats every other strictly."""
    true_index = torch.as_tensor(true_index, dtype=torch.long, device=scores.device)
    true = scores.gather(1, true_index[:, None])
    others = scores.clone()
    others.scatter_(1, true_index[:, None], -math.inf)
    return (true[:, 0] > others.max(1).values)


def accuracy_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float, float]:
    """(accuracy, low, high): the share of hits with its Wilson score interval (95% by default)."""
    if n <= 0:
        raise ValueError("accuracy_interval: no predictions")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def macro_accuracy(counts: list[tuple[int, int]], z: float = 1.959964) -> tuple[float, float, float]:
    """(accuracy, low, high): the mean of per-subgroup accuracies (ARO's macro average over
    relations or attribute pairs), with a normal interval from the subgroups' binomial
    variances, sum_i p_i (1 - p_i) / n_i / K^2; p_i is shrunk to (hits + 1/2) / (n + 1) in the
    variance only, so that a subgroup at 0% or 100% does not claim to be exact."""
    counts = [(h, n) for h, n in counts if n > 0]
    if not counts:
        raise ValueError("macro_accuracy: no subgroup has predictions")
    k = len(counts)
    mean = sum(h / n for h, n in counts) / k
    var = sum(((h + 0.5) / (n + 1)) * (1 - (h + 0.5) / (n + 1)) / n for h, n in counts) / k ** 2
    half = z * math.sqrt(var)
    return mean, max(0.0, mean - half), min(1.0, mean + half)
