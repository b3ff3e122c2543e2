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
- ``truth``: the ceiling, for world prompts only: each candidate's truth score is the
  share of the exact alignment checks it passes (:func:`truth_score`, from
  analyses/world_alignment.py; 1 exactly when the image is aligned), and the rule keeps k
  at random among the aligned ones. A prompt with fewer than k aligned candidates is
  filled with the next best truth scores (random among equal scores), so every prompt
  still gives k images; such prompts are reported (``short``), with how many of their
  candidates were aligned.

The MI of each candidate is :func:`candidate_mi`: io(x; c) of eq. 7 (estimators.py),
the null condition against the prompt, from draws keyed by the candidate's id, at a
fixed count or with adaptive precision (adaptive.py), each with its standard error.

Random choices draw from id_generator(seed, prompt id, round) (draws.py; round 0 for
``random``, round 1 for tie-breaking, round 2 for ``truth``), so a selection repeats exactly.
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
           "select", "truth_score", "truth_k"]

RULES = ("mi", "mi_separated", "trajectory", "random", "truth")
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


def truth_score(verdict: dict, check_dot: bool = True) -> float:
    """The share of the exact checks an image passes, from a verdict of
    ``world_alignment.score_alignment``: per claimed object present, colour, shape,
    position, size (when said) and dot (when ``check_dot``), plus one check that nothing
    else is drawn. 1.0 exactly when the verdict is ``aligned`` (with the same check_dot)."""
    passed = total = 0
    for obj in verdict["objects"]:
        checks = ["present", "colour", "shape", "position"] + (["size"] if obj["size"] is not None else []) \
            + (["dot"] if check_dot else [])
        passed += sum(bool(obj[a]) for a in checks)
        total += len(checks)
    passed += not verdict["extra"]
    return passed / (total + 1)


def truth_k(scores: Tensor, k: int, generator: torch.Generator) -> Selection:
    """k positions at random among the highest truth scores: every aligned candidate
    (score 1) is equally good; when fewer than k are aligned the places left go to the
    next score level, random within the level that does not fit whole."""
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if bool(torch.isnan(scores).any()):
        raise ValueError("truth: a candidate has no truth score (was the selection run with the truth rule?)")
    chosen: list[int] = []
    for level in torch.unique(scores).flip(0).tolist():  # highest first
        members = torch.nonzero(scores == level).flatten().tolist()
        free = k - len(chosen)
        if len(members) <= free:
            chosen += members
        else:
            chosen += [members[j] for j in torch.randperm(len(members), generator=generator)[:free].tolist()]
        if len(chosen) >= k:
            break
    return Selection(sorted(chosen))


def select_prompt(rule: str, k: int, prompt_id: int, mi: Tensor, mi_stderr: Tensor, trajectory: Tensor,
                  seed: int = 0, on_tie: str = "random", truth: Tensor | None = None) -> Selection:
    """The candidates ``rule`` keeps among one prompt's candidates (module doc); ``truth``:
    the candidates' truth scores (the ``truth`` rule only)."""
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
    if rule == "truth":
        if truth is None:
            raise ValueError("the truth rule needs each candidate's truth score (world prompts scored by "
                             "analyses/world_alignment.py)")
        return truth_k(truth, k, id_generator(seed, prompt_id, 2))
    raise ValueError(f"unknown selection rule {rule!r}; the rules are {', '.join(RULES)}")


def select(rows: Tensor, rule: str, k: int, seed: int = 0, on_tie: str = "random",
           truth: Tensor | None = None) -> tuple[list[int], list[dict]]:
    """Apply ``rule`` to every prompt. ``rows`` (N, 5): (prompt id, candidate, MI, its
    standard error, trajectory score) per candidate; ``truth`` (N,): the truth scores
    (:func:`truth_score`) the ``truth`` rule needs. Returns the row indices kept (in
    row order) and what each rule reports per prompt: for ``mi_separated`` the ties, one
    {"prompt", "tied" (candidates), "chosen" (candidates)} per tied prompt; for ``truth``
    the prompts short of k aligned candidates, one {"prompt", "aligned" (how many),
    "chosen" (candidates)} each."""
    rows = torch.as_tensor(rows, dtype=torch.float64)
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"rows must be (N, 5): prompt, candidate, MI, stderr, trajectory; got {tuple(rows.shape)}")
    kept, ties = [], []
    prompts = rows[:, 0].to(torch.long)
    for p in torch.unique(prompts).tolist():
        idx = torch.nonzero(prompts == p).flatten()
        idx = idx[torch.argsort(rows[idx, 1], stable=True)]  # the prompt's candidates in candidate order
        scores = None if truth is None else torch.as_tensor(truth, dtype=torch.float64)[idx]
        sel = select_prompt(rule, k, p, rows[idx, 2], rows[idx, 3], rows[idx, 4], seed, on_tie, scores)
        kept += [int(idx[j]) for j in sel.chosen]
        if rule == "truth" and int((scores == 1).sum()) < k:
            cand = rows[idx, 1].to(torch.long)
            ties.append({"prompt": p, "aligned": int((scores == 1).sum()),
                         "chosen": sorted(int(cand[j]) for j in sel.chosen)})
        if sel.tied:
            cand = rows[idx, 1].to(torch.long)
            ties.append({"prompt": p, "tied": sorted(int(cand[j]) for j in sel.tied),
                         "chosen": sorted(int(cand[j]) for j in sel.chosen)})
    return sorted(kept), ties
