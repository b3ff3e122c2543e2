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
import math
from typing import Sequence

import torch
from torch import Tensor

from ..denoisers.base import TextDenoiser
from ..estimate import ESTIMATORS
from ..integrate import AlphaSampler
from ..measure import DrawSpec, measure
from ..uncertainty import estimate_stderr

__all__ = ["CandidateScores", "score_candidates", "PREDICTION_ESTIMATOR", "AdaptiveRanking", "rank_adaptively",
           "separated_from_leader", "ELIMINATION_Z", "MIN_DRAWS"]

#: The estimator whose scores choose the caption (see the module doc).
PREDICTION_ESTIMATOR = "standard"


@dataclass
class CandidateScores:
    """Per-image, per-candidate pointwise MI (N, K) and standard errors, per estimator."""

    value: dict[str, Tensor]
    stderr: dict[str, Tensor]
    n_evals: int


def _check_candidates(what: str, images: Tensor, ids: Sequence[int], candidates: Sequence[Sequence[str]]
                      ) -> tuple[int, int]:
    """(N images, K candidates each), or a ValueError naming ``what`` was given wrong."""
    n = int(images.shape[0])
    if len(candidates) != n or len(ids) != n:
        raise ValueError(f"{what}: {n} images, {len(ids)} ids and {len(candidates)} candidate lists")
    k = len(candidates[0]) if n else 0
    if k < 2 or any(len(c) != k for c in candidates):
        raise ValueError(f"{what}: every image needs the same number (>= 2) of candidate captions")
    return n, k


def score_candidates(denoiser: TextDenoiser, images: Tensor, ids: Sequence[int], candidates: Sequence[Sequence[str]],
                     n_draws: int = 16, seed: int = 0, microbatch: int | None = None) -> CandidateScores:
    """i(x_n; c_nk) for every image n and each of its K candidates (every image has K),
    with draws keyed by (seed, image id) and shared by the candidates of an image."""
    n, k = _check_candidates("score_candidates", images, ids, candidates)
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


#: Default elimination threshold, in calibrated standard errors of the gap to the leader.
#: The rule looks at the data after every round (up to max_draws / round_draws looks) and
#: at K - 1 gaps per look; at z = 3 a one-sided normal tail is 0.13% per look, so even 15
#: looks at 3 gaps leave a wrong elimination of an equal candidate rare, while a wrong
#: caption that the fixed count separates clearly (gap / stderr of 10 and more at 64
#: draws) is still dropped after the first look.
ELIMINATION_Z = 3.0
#: Default fewest draws before any elimination: a standard error from 2-4 draws is itself
#: too noisy to test with (at 8 draws the paired design has nu = 4, iid nu = 7).
MIN_DRAWS = 8


def separated_from_leader(scores: Tensor, active: Tensor, design: str, z: float) -> Tensor:
    """(N, K) bool: the active candidates whose gap to their image's leader exceeds ``z``
    calibrated standard errors.

    ``scores``: (N, K, S) per-draw scores of K candidates on S draws that an image's
    candidates share; any per-draw constant common to the candidates cancels, so the
    standard term without its null column, -1/2 w ||eps - eps_hat(. | c_k)||^2, serves.
    ``active``: (N, K) the candidates still in the race (the others' scores are not read).
    The leader is the active candidate of highest mean score (the first on a tie); for
    every other active k the per-draw gap t_s = score_leader,s - score_k,s, a difference of
    standard-estimator terms, has mean m and the calibrated standard error se of the draws'
    ``design`` (uncertainty.estimate_stderr); k is separated when m > z se. The leader, the
    inactive candidates and a gap without a finite error (too few draws) are never separated.
    """
    if scores.ndim != 3 or active.shape != scores.shape[:2]:
        raise ValueError(f"separated_from_leader: scores (N, K, S) and active (N, K), got "
                         f"{tuple(scores.shape)} and {tuple(active.shape)}")
    if not bool(active.any(1).all()):
        raise ValueError("separated_from_leader: every image needs an active candidate")
    n, k, s = scores.shape
    leader = scores.mean(-1).masked_fill(~active, -math.inf).argmax(1)
    lead = scores[torch.arange(n), leader]  # (N, S)
    # Inactive rows get a zero gap (their scores may be NaN: never measured in later rounds).
    gap = torch.where(active[..., None], lead[:, None] - scores, torch.zeros_like(scores))
    mean, se = estimate_stderr(gap.reshape(n * k, s), design)
    return active & (mean > z * se).reshape(n, k)  # NaN se compares False: kept


@dataclass
class AdaptiveRanking:
    """What successive elimination found, per image (N images, K candidates each).

    ``prediction`` (N,): the chosen candidate, the survivor of highest mean score.
    ``value`` / ``stderr`` (N, K): each candidate's standard-estimator score relative to the
    prediction, i(x; c_k) - i(x; c_pred), as the mean over the draws candidate k got (all of
    them shared with the prediction, which is measured in every round), with its calibrated
    standard error; 0 for the prediction itself. Pointwise MI itself needs the null column,
    which the choice does not (module doc), so adaptive ranking does not measure it.
    ``draws`` (N, K): draws each candidate got; ``survivors`` (N, K): never eliminated.
    ``n_evals`` (N,): denoiser inputs spent on each image (``draws.sum(1)``);
    ``total_evals``: those of every denoiser pass (``Measurement.n_evals`` summed; lower
    than ``n_evals.sum()`` only where a pass's condition columns coincided)."""

    value: Tensor
    stderr: Tensor
    draws: Tensor
    survivors: Tensor
    prediction: Tensor
    n_evals: Tensor
    total_evals: int

    @property
    def image_draws(self) -> Tensor:
        """(N,) draws per image: those of its survivors, the most any candidate got."""
        return self.draws.max(1).values

    def decision_scores(self) -> Tensor:
        """(N, K) the survivors' scores and -inf for the eliminated: ``statistics.correct`` of
        these counts a hit only where the true candidate is the strict winner (a tie between
        survivors at max_draws is a miss, as in the fixed-draw ranking)."""
        return self.value.masked_fill(~self.survivors, -math.inf)


def check_elimination(round_draws: int, min_draws: int, max_draws: int, z: float) -> None:
    """Raise a ValueError naming the option of successive elimination that cannot work."""
    if round_draws < 1 or max_draws < round_draws or max_draws % round_draws:
        raise ValueError(f"rank_adaptively: max_draws ({max_draws}) must be a positive multiple of round_draws "
                         f"({round_draws}): every round has the same size")
    if not 2 <= min_draws <= max_draws:
        raise ValueError(f"rank_adaptively: min_draws must be in [2, max_draws = {max_draws}], got {min_draws}")
    if not z > 0:
        raise ValueError(f"rank_adaptively: z must be > 0, got {z}")


def rank_adaptively(denoiser: TextDenoiser, images: Tensor, ids: Sequence[int], candidates: Sequence[Sequence[str]],
                    *, round_draws: int = 4, max_draws: int = 32, min_draws: int = MIN_DRAWS,
                    z: float = ELIMINATION_Z, seed: int = 0, sampler: AlphaSampler | None = None,
                    microbatch: int | None = None) -> AdaptiveRanking:
    """Caption ranking by successive elimination over draw rounds.

    Round r gives every image still running ``round_draws`` new draws, keyed by (``seed``,
    image id, r) (``DrawSpec(round=r)``), on which its active candidates are measured
    (shared by them: common random numbers). From ``min_draws`` draws on, after every
    round, :func:`separated_from_leader` (at ``z``) drops the candidates behind the leader
    on all the draws so far. An image stops when one candidate is left or at ``max_draws``;
    the prediction is then the survivor of highest mean score. Images with the same number
    of active candidates share a pass (one column per candidate slot).

    Every round has the same size, so that under the paired design the rounds' strata
    together still give the PAIR variance (uncertainty.py). What an image gets depends only
    on (seed, its id, its image, its candidates): never on the images that share its batch,
    so a resumed or multi-process job ranks it the same.
    """
    n, k = _check_candidates("rank_adaptively", images, ids, candidates)
    check_elimination(round_draws, min_draws, max_draws, z)
    ids = [int(i) for i in ids]
    x = denoiser.encode(images, ids=ids)
    active = torch.ones(n, k, dtype=torch.bool)
    running = torch.ones(n, dtype=torch.bool)
    draws = torch.zeros(n, k, dtype=torch.long)
    scores: Tensor | None = None  # (N, K, max_draws) per-draw -1/2 w mse; NaN where not measured
    total_evals, design, done = 0, "iid", 0
    for r in range(max_draws // round_draws):
        spec = DrawSpec(round_draws, seed, sampler, round=r)
        lo, hi = r * round_draws, (r + 1) * round_draws
        groups: dict[int, list[int]] = {}
        for i in running.nonzero()[:, 0].tolist():
            groups.setdefault(int(active[i].sum()), []).append(i)
        for members in groups.values():
            slots = [active[i].nonzero()[:, 0].tolist() for i in members]
            columns = {f"slot/{j}": [candidates[i][s[j]] for i, s in zip(members, slots)]
                       for j in range(len(slots[0]))}
            rows = torch.tensor(members)
            m = measure(denoiser, columns, draws=spec, x=x[rows.to(x.device)], ids=[ids[i] for i in members],
                        microbatch=microbatch)
            total_evals += m.n_evals
            design = m.design
            if scores is None:
                scores = torch.full((n, k, max_draws), math.nan, dtype=m.errors.mse.dtype)
            for j in range(len(slots[0])):
                cand = torch.tensor([s[j] for s in slots])
                scores[rows, cand, lo:hi] = -0.5 * m.errors.weight * m.mse(f"slot/{j}")
                draws[rows, cand] += round_draws
        done = hi
        if done >= min_draws:
            # One image at a time: a batched bootstrap can round the last bit of an error
            # differently with the number of rows, and a decision must not depend on them.
            for i in running.nonzero()[:, 0].tolist():
                active[i] &= ~separated_from_leader(scores[i:i + 1, :, :done], active[i:i + 1], design, z)[0]
        running &= active.sum(1) > 1
        if not bool(running.any()):
            break
    assert scores is not None
    mean = torch.stack([scores[i, :, :draws[i].max()].mean(-1) for i in range(n)])
    prediction = mean.masked_fill(~active, -math.inf).argmax(1)
    value = torch.zeros(n, k, dtype=scores.dtype)
    stderr = torch.zeros(n, k, dtype=scores.dtype)
    # Scores relative to the prediction, over each candidate's own draws: per image, and
    # within it per draw count (the same calls whatever the batch, as above).
    gaps = scores - scores[torch.arange(n), prediction][:, None]
    for i in range(n):
        for d in sorted(set(draws[i].tolist())):
            cand = (draws[i] == d).nonzero()[:, 0]
            value[i, cand], stderr[i, cand] = estimate_stderr(gaps[i, cand, :d], design)
    return AdaptiveRanking(value, stderr, draws, active, prediction, draws.sum(1), total_evals)
