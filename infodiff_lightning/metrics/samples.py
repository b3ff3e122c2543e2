"""Per-sample states reduced in the order of sample ids: the same sum on any number of ranks.

A float64 sum depends on the order of its terms. Metrics that kept running sums gave
1 and N processes results that agreed to about 1e-15, not bit for bit. These metrics
keep the per-sample values with their sample ids ("cat" states: a few floats per
sample), gather them once at ``compute()``, sort them by id and reduce them in that
order, so the result depends only on which samples were measured: not on the number
of processes, the batch size or the order of updates (a resumed job included).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

__all__ = ["SampleValues", "SampleHits", "SampleVectors", "SampleRows", "mean_and_stderr"]


def mean_and_stderr(values: Tensor) -> tuple[Tensor, Tensor]:
    """Mean over samples (dim 0) and its standard error std / sqrt(n) (two-pass, in the
    given order); NaN standard error for one sample."""
    n = values.shape[0]
    mean = values.sum(0) / n
    if n <= 1:
        return mean, torch.full_like(mean, math.nan)
    var = ((values - mean) ** 2).sum(0) / (n - 1)
    return mean, (var / n).sqrt()


class SampleValues(Metric):
    """Base: ``width`` values per sample with their own standard errors and sample ids.

    Samples given without ids are ordered after the ones with ids, in arrival order on
    each rank (then the result is exact only on one process)."""

    full_state_update = False
    higher_is_better = None
    is_differentiable = False
    width = 1

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Flat 1-D float64 states: a rank without samples sends an empty one of the same kind.
        for name in ("ids", "values", "own_stderr"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self.add_state("n_evals", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _add(self, values: Tensor, stderr: Tensor | None, ids, n_evals: int = 0) -> None:
        v = values.detach().to(torch.float64).reshape(-1, self.width)
        n = v.shape[0]
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{type(self).__name__}.update: non-finite information values")
        if stderr is None:
            se = torch.full_like(v, math.nan)  # unknown, never 0
        else:
            se = torch.as_tensor(stderr).detach().to(torch.float64).reshape(-1, self.width)
            if se.shape != v.shape:
                raise ValueError(f"{type(self).__name__}.update: {se.shape[0]} standard errors for {n} values")
        if ids is None:
            key = torch.full((n,), math.inf, dtype=torch.float64)  # after every id; stable sort keeps arrival order
        else:
            key = torch.as_tensor([int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)],
                                  dtype=torch.float64)
            if key.numel() != n:
                raise ValueError(f"{type(self).__name__}.update: {key.numel()} ids for {n} samples")
        dev = self.n_evals.device
        self.ids.append(key.to(dev))
        self.values.append(v.flatten().to(dev))
        self.own_stderr.append(se.flatten().to(dev))
        self.n_evals += n_evals

    def _sync_dist(self, dist_sync_fn=gather_all_tensors, process_group=None) -> None:
        for name in ("ids", "values", "own_stderr"):
            state = getattr(self, name)
            if isinstance(state, list) and not state:  # the same dtype as the other ranks' states
                state.append(torch.empty(0, dtype=torch.float64, device=self.n_evals.device))
        super()._sync_dist(dist_sync_fn, process_group)

    def _no_samples(self) -> bool:
        """True when no rank added a sample (the states are empty lists, or empty after a sync)."""
        states = self.ids if isinstance(self.ids, list) else [self.ids]
        return not any(t.numel() for t in states)

    def _sorted(self) -> tuple[Tensor, Tensor, Tensor]:
        """(ids (n,), values (n, width), own standard errors (n, width)) in id order."""
        ids = dim_zero_cat(self.ids) if len(self.ids) else torch.empty(0, dtype=torch.float64)
        if ids.numel() == 0:
            raise ValueError(f"{type(self).__name__}.compute: no samples were added (zero samples)")
        values = dim_zero_cat(self.values).reshape(-1, self.width)
        own = dim_zero_cat(self.own_stderr).reshape(-1, self.width)
        order = torch.sort(ids, stable=True).indices
        return ids[order], values[order], own[order]

    def summary(self) -> tuple[Tensor, Tensor, int]:
        """(mean (width,), stderr (width,), count): std over samples / sqrt(count), or for
        exactly one sample its own Monte-Carlo standard error (NaN if none was given)."""
        _, values, own = self._sorted()
        mean, stderr = mean_and_stderr(values)
        if values.shape[0] == 1:
            stderr = own[0]
        return mean, stderr, values.shape[0]


class SampleHits(SampleValues):
    """Per-sample outcomes (1 hit, 0 miss) with their ids; ``compute()`` gives
    {"hits", "n"} counted over the samples in id order (exact on any number of ranks;
    {"hits": 0, "n": 0} when no rank saw a sample)."""

    def update(self, hits: Tensor, ids) -> None:
        hits = torch.as_tensor(hits).to(torch.float64)
        self._add(hits, torch.zeros_like(hits), ids)

    def compute(self) -> dict[str, int]:
        if self._no_samples():
            return {"hits": 0, "n": 0}
        _, values, _ = self._sorted()
        return {"hits": int(values.sum()), "n": int(values.shape[0])}


class SampleVectors(SampleValues):
    """Per-sample vectors of ``width`` values (an IoU per threshold, say) with their ids;
    ``compute()`` gives {"mean" (width,), "stderr" (width,), "n"} in id order, or n = 0
    with empty tensors when no rank saw a sample."""

    def __init__(self, width: int, **kwargs):
        self.width = int(width)
        super().__init__(**kwargs)

    def update(self, values: Tensor, ids) -> None:
        self._add(torch.as_tensor(values), None, ids)

    def compute(self) -> dict:
        if self._no_samples():
            return {"mean": torch.empty(0), "stderr": torch.empty(0), "n": 0}
        _, values, _ = self._sorted()
        mean, stderr = mean_and_stderr(values)
        return {"mean": mean, "stderr": stderr, "n": int(values.shape[0])}


class SampleRows(SampleValues):
    """Per-sample rows of ``width`` values with their ids, returned whole by ``compute()``:
    {"ids" (n,), "values" (n, width)} in id order (for statistics that need every row, such
    as a bootstrap correlation); n = 0 with empty tensors when no rank saw a sample."""

    def __init__(self, width: int, **kwargs):
        self.width = int(width)
        super().__init__(**kwargs)

    def update(self, values: Tensor, ids) -> None:
        self._add(torch.as_tensor(values), None, ids)

    def compute(self) -> dict:
        if self._no_samples():
            return {"ids": torch.empty(0), "values": torch.empty(0, self.width), "n": 0}
        ids, values, _ = self._sorted()
        return {"ids": ids, "values": values, "n": int(values.shape[0])}

    def rows(self) -> Tensor:
        """``compute()["values"]`` as (n, width) (a collective, like compute): torchmetrics
        squeezes a result of one element to a 0-d tensor, one row of width 1 included."""
        return self.compute()["values"].reshape(-1, self.width)
