"""Selecting generated candidates by information: the rules, per prompt, as plain functions.

Each prompt p has candidates m with a score: the project's pointwise MI io(x_m; p) with a
standard error s_m (estimators.py), or MI-TUNE's trajectory score (trajectory_score.py).
Every rule keeps ``k`` candidates per prompt, so every selected set has the same number
of images (k per prompt):

- ``mi``: the k largest MI values (k = 1: the argmax). Equal values: the lower index first.
- ``mi_separated``: the k largest unless the k-th is within its standard error of the
  next. With the MI values sorted, v_(1) >= v_(2) >= ..., the boundary group is

      G = { m : |v_m - v_(k)| <= s_(k) }                                          (TIE)

  and the candidates above it (v_m > v_(k) + s_(k)) are kept. If G holds a candidate
  ranked below k, the prompt is a *tie*: the measurement cannot tell which of G belongs
  in the top k. ``on_tie`` decides: "random" fills the free places at random from G (no
  preference among what the measurement cannot separate), "best" keeps the k largest
  anyway, "drop" leaves the prompt out (then this set is smaller). Every tie is reported.
- ``trajectory``: the k largest trajectory scores.
- ``random``: k candidates at random (the control).

The MI of each candidate is :func:`candidate_mi`: io(x; c) of eq. 7 (estimators.py),
the null condition against the prompt, from draws keyed by the candidate's id, at a
fixed count or with adaptive precision (adaptive.py), each with its standard error.

Random choices draw from id_generator(seed, prompt id, round) (draws.py; round 0 for
``random``, round 1 for tie-breaking), so a selection repeats exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..adaptive import Precision, measure_adaptively
from ..denoisers.base import Column
from ..draws import id_generator
from ..measure import DrawSpec, measure

__all__ = ["RULES", "ON_TIE", "Selection", "candidate_mi", "top_k", "separated_top_k", "random_k", "select_prompt",
           "select"]

RULES = ("mi", "mi_separated", "trajectory", "random")
ON_TIE = ("random", "best", "drop")


@dataclass
class Selection:
    """The candidates a rule keeps (positions into the prompt's candidates) and, when the
    prompt is a tie (eq. TIE), the tied group."""

    chosen: list[int]
    tied: list[int] = field(default_factory=list)


def candidate_mi(denoiser, images: Tensor, conditions: Column, ids: list[int], n_draws: int = 32, seed: int = 0,
                 precision: Precision | None = None, microbatch: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(io(x; c) (B,), its standard error (B,), draws taken (B,)) of each image x with its
    condition c, on den.encode(images) with the denoiser's default sampler: ``n_draws``
    draws keyed by (seed, id), or rounds of them until ``precision`` is met."""
    columns = {"null": denoiser.null_conditions(len(ids)), "prompt": conditions}
    contrast = {"mi": ("null", "prompt")}
    if precision is not None:
        m = measure_adaptively(denoiser, columns, contrast, precision=precision, ids=ids, seed=seed, images=images,
                               microbatch=microbatch)
        est = m.estimate("mi")
        return est.value, est.stderr, m.draws
    est = measure(denoiser, columns, contrast, draws=DrawSpec(n_draws, seed), images=images, ids=ids,
                  microbatch=microbatch).estimate("mi")
    return est.value, est.stderr, torch.full((len(ids),), n_draws)


def _order(values: Tensor) -> list[int]:
    """Positions by decreasing value; equal values keep their order (lower index first)."""
    return torch.sort(torch.as_tensor(values, dtype=torch.float64), descending=True, stable=True).indices.tolist()


def top_k(values: Tensor, k: int) -> list[int]:
    """The positions of the k largest values."""
    return _order(values)[:k]


def random_k(n: int, k: int, generator: torch.Generator) -> list[int]:
    """k distinct positions of n at random."""
    return sorted(torch.randperm(n, generator=generator)[:k].tolist())


def separated_top_k(values: Tensor, stderrs: Tensor, k: int, generator: torch.Generator,
                    on_tie: str = "random") -> Selection:
    """The k largest values unless the k-th is within its standard error of the next
    (eq. TIE); a tie is resolved by ``on_tie`` and reported in ``tied``. A NaN standard
    error (unknown precision) is taken as infinite: nothing is separated from it."""
    if on_tie not in ON_TIE:
        raise ValueError(f"on_tie must be one of {', '.join(ON_TIE)}, got {on_tie!r}")
    values = torch.as_tensor(values, dtype=torch.float64)
    stderrs = torch.as_tensor(stderrs, dtype=torch.float64)
    order = _order(values)
    if k >= len(order):
        return Selection(order)
    vk, sk = float(values[order[k - 1]]), float(stderrs[order[k - 1]])
    if sk != sk:
        sk = float("inf")
    group = [m for m in order if abs(float(values[m]) - vk) <= sk]
    above = [m for m in order if float(values[m]) > vk + sk]
    if not set(group) - set(order[:k]):
        return Selection(order[:k])
    if on_tie == "best":
        return Selection(order[:k], group)
    if on_tie == "drop":
        return Selection([], group)
    free = k - len(above)
    picks = torch.randperm(len(group), generator=generator)[:free].tolist()
    return Selection(above + [group[j] for j in sorted(picks)], group)


def select_prompt(rule: str, k: int, prompt_id: int, mi: Tensor, mi_stderr: Tensor, trajectory: Tensor,
                  seed: int = 0, on_tie: str = "random") -> Selection:
    """The candidates ``rule`` keeps among one prompt's candidates (module doc)."""
    n = int(torch.as_tensor(mi).numel())
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if rule == "mi":
        return Selection(top_k(mi, k))
    if rule == "mi_separated":
        return separated_top_k(mi, mi_stderr, k, id_generator(seed, prompt_id, 1), on_tie)
    if rule == "trajectory":
        return Selection(top_k(trajectory, k))
    if rule == "random":
        return Selection(random_k(n, min(k, n), id_generator(seed, prompt_id, 0)))
    raise ValueError(f"unknown selection rule {rule!r}; the rules are {', '.join(RULES)}")


def select(rows: Tensor, rule: str, k: int, seed: int = 0, on_tie: str = "random") -> tuple[list[int], list[dict]]:
    """Apply ``rule`` to every prompt. ``rows`` (N, 5): (prompt id, candidate, MI, its
    standard error, trajectory score) per candidate. Returns the row indices kept (in
    row order) and the ties, one {"prompt", "tied" (candidates), "chosen" (candidates)}
    per tied prompt."""
    rows = torch.as_tensor(rows, dtype=torch.float64)
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"rows must be (N, 5): prompt, candidate, MI, stderr, trajectory; got {tuple(rows.shape)}")
    kept, ties = [], []
    prompts = rows[:, 0].to(torch.long)
    for p in torch.unique(prompts).tolist():
        idx = torch.nonzero(prompts == p).flatten()
        idx = idx[torch.argsort(rows[idx, 1], stable=True)]  # the prompt's candidates in candidate order
        sel = select_prompt(rule, k, p, rows[idx, 2], rows[idx, 3], rows[idx, 4], seed, on_tie)
        kept += [int(idx[j]) for j in sel.chosen]
        if sel.tied:
            cand = rows[idx, 1].to(torch.long)
            ties.append({"prompt": p, "tied": sorted(int(cand[j]) for j in sel.tied),
                         "chosen": sorted(int(cand[j]) for j in sel.chosen)})
    return sorted(kept), ties
