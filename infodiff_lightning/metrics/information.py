"""torchmetrics shells over the estimators: fixed-size sum states, exact under DDP.

The states are sums (of values, of squared values, of counts, of maps), reduced with
"sum" across processes, so a sync is one small all-reduce and gives exactly the value
that one process would get on the same samples (up to float summation order).

Standard error of the dataset mean: over several images, std over images / sqrt(count)
(sample and integration noise together). Over exactly one image the spread over images
is unknown; the error is then that image's own Monte-Carlo standard error
(``Estimate.stderr``, conditional on the image), kept as a sum of squared per-image
standard errors; a plain tensor carries none, so a single image given as a tensor has a
NaN standard error (unknown, never 0).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from ..estimators import Estimate

__all__ = ["PointwiseInformation", "MutualInformation", "ConditionalMutualInformation", "InformationMap"]


def mean_and_stderr(total: Tensor, total_sq: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard error (sample std / sqrt(count)) from sum states; NaN stderr for one sample."""
    mean = total / count
    if float(count) <= 1:
        return mean, torch.full_like(mean, math.nan)
    var = (total_sq / count - mean**2).clamp_min(0) * count / (count - 1)
    return mean, (var / count).sqrt()


def _values(estimate: Estimate | Tensor) -> Tensor:
    v = estimate.value if isinstance(estimate, Estimate) else torch.as_tensor(estimate)
    return v.detach().to(torch.float64).flatten()


class PointwiseInformation(Metric):
    """Dataset-level mean of per-image information estimates, with its standard error.

    ``update(estimate)`` takes an :class:`Estimate` (or a tensor of per-image values);
    ``compute()`` returns {"mean", "stderr", "count", "n_evals"} where stderr is
    std over images / sqrt(count) (sample and integration noise together), or, for
    exactly one image, that image's ``Estimate.stderr`` (the error of its Monte-Carlo
    integral over the draws; NaN if the image came as a plain tensor).
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_evals", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        # Per-image Monte-Carlo errors: sum of stderr^2 and how many images brought one.
        self.add_state("total_own_var", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count_own", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimate: Estimate | Tensor) -> None:
        v = _values(estimate).to(self.total.device)
        if not bool(torch.isfinite(v).all()):
            raise ValueError("PointwiseInformation.update: non-finite information values")
        self.total += v.sum()
        self.total_sq += (v**2).sum()
        self.count += v.numel()
        if isinstance(estimate, Estimate):
            self.n_evals += estimate.n_evals
            se = estimate.stderr.detach().to(torch.float64).flatten().to(self.total.device)
            if se.numel() != v.numel():
                raise ValueError(f"PointwiseInformation.update: {se.numel()} standard errors for {v.numel()} values")
            self.total_own_var += (se**2).sum()  # NaN (grid draws) stays NaN: unknown
            self.count_own += se.numel()

    def compute(self) -> dict[str, Tensor]:
        if float(self.count) == 0:
            raise ValueError("PointwiseInformation.compute: no samples were added (zero samples)")
        mean, stderr = mean_and_stderr(self.total, self.total_sq, self.count)
        if float(self.count) == 1 and float(self.count_own) == 1:
            stderr = self.total_own_var.sqrt()  # the one image's own Monte-Carlo error
        return {"mean": mean, "stderr": stderr, "count": self.count.clone(), "n_evals": self.n_evals.clone()}


#: Names under which users look for the same shell: i(x;y) and i(x;w|c) differ only in
#: the conditions the estimator was given.
MutualInformation = PointwiseInformation
ConditionalMutualInformation = PointwiseInformation


class InformationMap(Metric):
    """Mean per-element information map over images (summed maps / count).

    ``shape`` is the map shape (fixed, so that the state has a fixed size).
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, shape: tuple[int, ...], **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(int(s) for s in shape)
        self.add_state("total", torch.zeros(self.shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimate: Estimate | Tensor) -> None:
        maps = estimate.map if isinstance(estimate, Estimate) else estimate
        if maps is None:
            raise ValueError("InformationMap.update: the estimate carries no map (call the estimator with maps=True)")
        maps = torch.as_tensor(maps).detach().to(torch.float64)
        if tuple(maps.shape[1:]) != self.shape:
            raise ValueError(f"InformationMap.update: maps of shape {tuple(maps.shape[1:])}, expected {self.shape}")
        self.total += maps.sum(0).to(self.total.device)
        self.count += maps.shape[0]

    def compute(self) -> Tensor:
        if float(self.count) == 0:
            raise ValueError("InformationMap.compute: no maps were added (zero samples)")
        return self.total / self.count
