"""Adaptive precision: draw per image in rounds until its answer is as precise as asked.

A fixed draw count spends as much on an image whose answer is already clear as on one
that is still noisy. Here each image gets a first round of ``min_draws`` draws, then
rounds of ``round_draws`` more, until every watched contrast meets the target

    stderr <= target          (absolute, nats)      or
    stderr <= relative * |value|                                              (STOP)

or ``max_draws`` is reached. Round r of an image's draws is keyed by (seed, sample id, r)
(draws.id_generator), so an image's draws, its stopping round and its numbers depend only
on the image, never on the batch or the number of processes.

Why the rounds combine without a new formula: every draw's term t_s = f_s / q(alpha_s) is
an unbiased draw of the integral, whatever round or stratum it came from, so the plain
mean over all of an image's draws is unbiased. Under the paired (stratified) design each
round is a stratified sample with two draws per stratum; the mean over all draws has
variance sum_h 2 Var_h / S^2 over all strata h of all rounds, which is what eq. PAIR
(uncertainty.py) estimates from the concatenated draws. So the standard errors of a
combined image are those of uncertainty.py on its concatenated terms.

What stopping costs: the decision to stop depends on the draws, so the final estimate is
not exactly the mean of a fixed-size sample (optional stopping). tests/test_adaptive.py
checks that the dataset mean stays on a closed-form integral under stopping; the
coverage of per-image errors under stopping is not measured yet. Keep ``min_draws`` at 16
or above, where the standard error itself is reliable.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser, take
from .estimate import Estimate
from .evaluate import Errors
from .integrate import AlphaSampler
from .measure import DrawSpec, Measurement, measure

__all__ = ["Precision", "AdaptiveMeasurement", "measure_adaptively", "precise_enough", "scatter_results"]


@dataclass(frozen=True)
class Precision:
    """How precise each image's answer must be (eq. STOP): ``target`` (absolute standard
    error, nats) and/or ``relative`` (standard error over |value|); either one met
    suffices. Draws: a first round of ``min_draws``, then rounds of ``round_draws``, at
    most ``max_draws`` per image (even counts: stratified draws come in pairs)."""

    target: float | None = None
    relative: float | None = None
    min_draws: int = 16
    round_draws: int = 16
    max_draws: int = 256

    def __post_init__(self) -> None:
        if self.target is None and self.relative is None:
            raise ValueError("Precision: give a target standard error (target) or a relative one (relative)")
        for name in ("target", "relative"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"Precision: {name} must be > 0, got {v}")
        if self.min_draws < 4:
            raise ValueError(f"Precision: min_draws must be >= 4 (a standard error needs them), got {self.min_draws}")
        if self.round_draws < 2:
            raise ValueError(f"Precision: round_draws must be >= 2, got {self.round_draws}")
        if self.max_draws < self.min_draws:
            raise ValueError(f"Precision: max_draws ({self.max_draws}) must be >= min_draws ({self.min_draws})")


def precise_enough(estimate: Estimate, precision: Precision) -> Tensor:
    """(N,) bool: whether each image's estimate meets eq. STOP (a NaN error never does)."""
    ok = torch.zeros_like(estimate.stderr, dtype=torch.bool)
    if precision.target is not None:
        ok |= estimate.stderr <= precision.target
    if precision.relative is not None:
        ok |= estimate.stderr <= precision.relative * estimate.value.abs()
    return ok


def _cat_errors(a: Errors, b: Errors) -> Errors:
    """The draws of ``b`` appended to those of ``a`` (same images, same columns)."""
    maps = None if a.draw_maps is None else torch.cat([a.draw_maps, b.draw_maps], 1)
    return Errors(torch.cat([a.mse, b.mse], 1), torch.cat([a.gap, b.gap], 1), maps,
                  torch.cat([a.weight, b.weight], 1), torch.cat([a.alpha, b.alpha], 1),
                  a.n_evals + b.n_evals, a.design)


def _by_name(m: Measurement, names: Sequence[str], keys: Sequence[Hashable]) -> Errors:
    """The errors of ``m`` with one column per name and one pair per contrast key, in the
    given order. (measure evaluates identical columns once, and which columns are
    identical can change as images stop, so rounds are combined by name.)"""
    e = m.errors
    cols = [m.column_index[n] for n in names]
    pairs = [m.contrast_index[k] for k in keys]
    maps = None if e.draw_maps is None else e.draw_maps[:, :, pairs]
    return Errors(e.mse[..., cols], e.gap[..., pairs], maps, e.weight, e.alpha, e.n_evals, e.design)


def _rows(e: Errors, keep: Tensor) -> Errors:
    """The images ``keep`` (bool (N,)) of ``e``; n_evals shared in proportion (approximate
    where an image's shared entries made it cheaper: the totals are counted separately)."""
    n = int(keep.sum())
    evals = e.n_evals * n // max(1, int(keep.numel()))
    return Errors(e.mse[keep], e.gap[keep], None if e.draw_maps is None else e.draw_maps[keep], e.weight[keep],
                  e.alpha[keep], evals, e.design)


@dataclass
class AdaptiveMeasurement:
    """The images of an adaptive measurement, grouped by how many draws they took: each
    group is an ordinary :class:`~infodiff_lightning.measure.Measurement` of its images
    (``index`` into the batch). ``draws`` (N,) is each image's draw count."""

    groups: list[tuple[Tensor, Measurement]]
    draws: Tensor
    n_evals: int

    def estimate(self, key: Hashable, estimator: str = "orthogonal") -> Estimate:
        """Per-image estimate of contrast ``key`` for the whole batch (as Measurement.estimate),
        with the whole measurement's evaluation count."""
        est = scatter_results([(idx, m.estimate(key, estimator)) for idx, m in self.groups], int(self.draws.numel()))
        est.n_evals = self.n_evals
        return est

    def per_group(self, compute: Callable[[Measurement], Any]) -> Any:
        """``compute`` on each group, its results put back in batch order (scatter_results)."""
        return scatter_results([(idx, compute(m)) for idx, m in self.groups], int(self.draws.numel()))


def measure_adaptively(denoiser: Denoiser, columns: Mapping[str, Column],
                       contrasts: Mapping[Hashable, tuple[str, str]], *, precision: Precision, ids: Sequence[int],
                       seed: int = 0, sampler: AlphaSampler | None = None, x: Tensor | None = None,
                       images: Tensor | None = None, watch: Sequence[Hashable] | None = None,
                       estimator: str | Sequence[str] = "orthogonal", maps: str | None = None,
                       microbatch: int | None = None) -> AdaptiveMeasurement:
    """:func:`~infodiff_lightning.measure.measure` in rounds until every ``watch``-ed
    contrast (default: all) of each image meets ``precision`` (module docstring), under
    ``estimator`` (or under each of several estimators). ``ids`` are required: they key
    each round's draws."""
    ids = [int(i) for i in ids]
    if (x is None) == (images is None):
        raise ValueError("measure_adaptively: give either x (clean inputs) or images (to encode), not both or neither")
    if images is not None:
        x = denoiser.encode(images, ids=ids)
    n = int(x.shape[0])
    if len(ids) != n:
        raise ValueError(f"measure_adaptively: {len(ids)} ids for {n} images")
    watch = list(contrasts) if watch is None else list(watch)
    estimators = [estimator] if isinstance(estimator, str) else list(estimator)
    if not watch or any(k not in contrasts for k in watch):
        raise ValueError(f"measure_adaptively: watch must name measured contrasts {list(contrasts)}, got {watch}")

    names, keys = list(columns), list(contrasts)
    column_index = {name: j for j, name in enumerate(names)}
    contrast_index = {key: p for p, key in enumerate(keys)}
    pairs = [(column_index[contrasts[k][0]], column_index[contrasts[k][1]]) for k in keys]
    active = torch.arange(n)
    acc: Errors | None = None
    done: list[tuple[Tensor, Measurement]] = []
    draws = torch.zeros(n, dtype=torch.long)
    total, rnd = 0, 0
    while active.numel():
        size = precision.min_draws if rnd == 0 else precision.round_draws
        spec = DrawSpec(size, seed, sampler, rnd)
        sub = {name: take(col, active) for name, col in columns.items()}
        m = measure(denoiser, sub, contrasts, x=x[active], ids=[ids[i] for i in active.tolist()], draws=spec,
                    maps=maps, microbatch=microbatch)
        total += m.n_evals
        named = _by_name(m, names, keys)
        acc = named if acc is None else _cat_errors(acc, named)
        draws[active] += size
        rnd += 1
        current = Measurement(x[active], acc, column_index, contrast_index, pairs)
        stop = torch.ones(active.numel(), dtype=torch.bool)
        for key in watch:
            for name in estimators:
                stop &= precise_enough(current.estimate(key, name), precision)
        if int(draws[active[0]]) + precision.round_draws > precision.max_draws:
            stop[:] = True
        if bool(stop.any()):
            done.append((active[stop], Measurement(x[active[stop]], _rows(acc, stop), column_index, contrast_index,
                                                   pairs)))
            keep = ~stop
            active, acc = active[keep], _rows(acc, keep) if bool(keep.any()) else None
    return AdaptiveMeasurement(done, draws, total)


def scatter_results(parts: Sequence[tuple[Tensor, Any]], n: int) -> Any:
    """Per-group results put back in batch order: tensors whose first axis indexes the
    group's images are scattered into (n, ...) (None where trailing shapes differ across
    groups, as per-draw terms of different draw counts do); ints (evaluation counts) are
    summed; dataclasses and dicts are scattered field by field; anything else must agree."""
    if not parts:
        raise ValueError("scatter_results: no groups")
    first = parts[0][1]
    if isinstance(first, Tensor):
        sizes = {tuple(v.shape[1:]) for _, v in parts}
        if any(v.ndim == 0 or v.shape[0] != idx.numel() for idx, v in parts) or len(sizes) != 1:
            return None
        out = torch.zeros((n, *first.shape[1:]), dtype=first.dtype)
        for idx, v in parts:
            out[idx] = v
        return out
    if first is None:
        return None
    if isinstance(first, bool) or isinstance(first, str):
        return first
    if isinstance(first, int):
        return sum(v for _, v in parts)
    if dataclasses.is_dataclass(first):
        fields = {f.name: scatter_results([(idx, getattr(v, f.name)) for idx, v in parts], n)
                  for f in dataclasses.fields(first)}
        return type(first)(**fields)
    if isinstance(first, dict):
        return {k: scatter_results([(idx, v.get(k)) for idx, v in parts], n) for k in first}
    return first
