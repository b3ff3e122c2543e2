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

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..denoisers.base import TextDenoiser
from ..estimate import ESTIMATORS
from ..measure import DrawSpec, measure

__all__ = ["CandidateScores", "score_candidates", "PREDICTION_ESTIMATOR"]

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
    columns = {"null": denoiser.null_conditions(n)}
    columns.update({f"candidate/{j}": [c[j] for c in candidates] for j in range(k)})
    m = measure(denoiser, columns, {j: ("null", f"candidate/{j}") for j in range(k)}, images=images, ids=ids,
                draws=DrawSpec(n_draws, seed), microbatch=microbatch)
    value, stderr = {}, {}
    for est in ESTIMATORS:
        scores = [m.estimate(j, est) for j in range(k)]
        value[est] = torch.stack([s.value for s in scores], 1)
        stderr[est] = torch.stack([s.stderr for s in scores], 1)
    return CandidateScores(value, stderr, m.n_evals)
