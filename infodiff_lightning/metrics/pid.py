"""torchmetrics shells over the PID (pid.py): fixed-size sum states, exact under DDP.

``PartialInformation`` accumulates per-image [redundancy, unique1, unique2, synergy]
as sums, sums of squares and a count (float64, reduced with "sum"), so a sync is one
small all-reduce and gives what one process would get on the same images.
``PartialInformationMap`` accumulates the four per-element maps (summed maps + count)
for a map shape fixed at construction.
"""
from __future__ import annotations


import torch
from torch import Tensor
from torchmetrics import Metric

from ..pid import PID_TERMS, PIDEstimate
from .information import mean_and_stderr

__all__ = ["PartialInformation", "PartialInformationMap"]


def _per_image_terms(estimate: PIDEstimate | Tensor) -> Tensor:
    v = estimate.contributions() if isinstance(estimate, PIDEstimate) else torch.as_tensor(estimate)
    v = v.detach().to(torch.float64)
    if v.ndim != 2 or v.shape[1] != len(PID_TERMS):
        raise ValueError(f"PartialInformation.update: expected a PIDEstimate or an (N, 4) tensor of per-image "
                         f"[redundancy, unique1, unique2, synergy], got shape {tuple(v.shape)}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("PartialInformation.update: non-finite PID values")
    return v


class PartialInformation(Metric):
    """Dataset-level mean of each PID term over images, with its standard error.

    ``update(estimate, stderr=None)`` takes a :class:`~infodiff_lightning.pid.PIDEstimate`
    (its per-image contributions: the terms for MMI, the dataset-level contributions for
    I_min) or an (N, 4) tensor of per-image [r, u1, u2, s], optionally with their (N, 4)
    standard errors. ``compute()`` returns a flat dict (ready for ``log_dict``): ``{term}``
    the mean and ``{term}_stderr`` = std over images / sqrt(count) for term in redundancy,
    unique1, unique2, synergy, plus ``count`` and ``n_evals``. Per-image standard errors
    (draw noise) are inside the spread over images; over exactly one image the error is
    that image's own (from an MMI PIDEstimate or the given ``stderr``), else NaN.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        k = len(PID_TERMS)
        self.add_state("total", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n_evals", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        # Per-image Monte-Carlo errors: sum of stderr^2 and how many images brought one.
        self.add_state("total_own_var", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count_own", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimate: PIDEstimate | Tensor, stderr: Tensor | None = None) -> None:
        v = _per_image_terms(estimate).to(self.total.device)
        if stderr is None and isinstance(estimate, PIDEstimate) and estimate.measure == "mmi":
            stderr = estimate.stderrs()
        if stderr is not None:
            se = torch.as_tensor(stderr).detach().to(torch.float64).to(self.total.device)
            if se.shape != v.shape:
                raise ValueError(f"PartialInformation.update: stderr of shape {tuple(se.shape)} for values of shape "
                                 f"{tuple(v.shape)}")
            self.total_own_var += (se**2).sum(0)
            self.count_own += v.shape[0]
        self.total += v.sum(0)
        self.total_sq += (v**2).sum(0)
        self.count += v.shape[0]
        if isinstance(estimate, PIDEstimate):
            self.n_evals += estimate.n_evals

    def compute(self) -> dict[str, Tensor]:
        if float(self.count) == 0:
            raise ValueError("PartialInformation.compute: no samples were added (zero samples)")
        mean, stderr = mean_and_stderr(self.total, self.total_sq, self.count)
        if float(self.count) == 1 and float(self.count_own) == 1:
            stderr = self.total_own_var.sqrt()  # the one image's own Monte-Carlo error
        out: dict[str, Tensor] = {}
        for j, name in enumerate(PID_TERMS):
            out[name] = mean[j]
            out[f"{name}_stderr"] = stderr[j]
        out["count"] = self.count.clone()
        out["n_evals"] = self.n_evals.clone()
        return out


class PartialInformationMap(Metric):
    """Mean per-element PID maps over images (summed maps / count).

    ``shape`` is the map shape (fixed, so that the state has a fixed size).
    ``update`` takes a PIDEstimate computed with ``maps=True`` or an (N, 4, *shape)
    tensor of [r, u1, u2, s] maps; ``compute`` returns {term: mean map}. The synergy map
    is the mean of the estimated (unclipped) maps.
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, shape: tuple[int, ...], **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(int(s) for s in shape)
        self.add_state("total", torch.zeros((len(PID_TERMS), *self.shape), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, estimate: PIDEstimate | Tensor) -> None:
        maps = estimate.maps() if isinstance(estimate, PIDEstimate) else estimate
        if maps is None:
            raise ValueError("PartialInformationMap.update: the estimate carries no maps (call pid with maps=True)")
        maps = torch.as_tensor(maps).detach().to(torch.float64)
        if maps.ndim < 2 or maps.shape[1] != len(PID_TERMS) or tuple(maps.shape[2:]) != self.shape:
            raise ValueError(f"PartialInformationMap.update: maps of shape {tuple(maps.shape)}, expected "
                             f"(N, {len(PID_TERMS)}, *{self.shape})")
        if not bool(torch.isfinite(maps).all()):
            raise ValueError("PartialInformationMap.update: non-finite PID maps")
        self.total += maps.sum(0).to(self.total.device)
        self.count += maps.shape[0]

    def compute(self) -> dict[str, Tensor]:
        if float(self.count) == 0:
            raise ValueError("PartialInformationMap.compute: no maps were added (zero samples)")
        mean = self.total / self.count
        return {name: mean[j] for j, name in enumerate(PID_TERMS)}
