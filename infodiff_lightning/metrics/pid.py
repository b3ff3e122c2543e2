"""torchmetrics shells over the PID (pid.py).

``PartialInformation`` keeps per-image [redundancy, unique1, unique2, synergy] with
their own standard errors and the images' ids, and reduces them in id order
(samples.py), so any number of processes gives bit-identical results.
``PartialInformationMap`` accumulates the four per-element maps (summed maps + count)
for a map shape fixed at construction.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from ..pid import PID_TERMS, PIDEstimate
from .samples import SampleValues

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


class PartialInformation(SampleValues):
    """Dataset-level mean of each PID term over images, with its standard error.

    ``update(estimate, stderr=None, ids=None)`` takes a
    :class:`~infodiff_lightning.pid.PIDEstimate` (its per-image contributions: the terms
    for MMI, the dataset-level contributions for I_min) or an (N, 4) tensor of per-image
    [r, u1, u2, s], optionally with their (N, 4) standard errors, and the images' ids.
    ``compute()`` returns a flat dict (ready for ``log_dict``): ``{term}`` the mean and
    ``{term}_stderr`` = std over images / sqrt(count) for term in redundancy, unique1,
    unique2, synergy, plus ``count`` and ``n_evals``. Per-image standard errors (draw
    noise) are inside the spread over images; over exactly one image the error is that
    image's own (from an MMI PIDEstimate or the given ``stderr``), else NaN. Values are
    reduced in id order (samples.py): the same on any number of processes.
    """

    width = len(PID_TERMS)

    def update(self, estimate: PIDEstimate | Tensor, stderr: Tensor | None = None,
               ids: Sequence[int] | Tensor | None = None) -> None:
        v = _per_image_terms(estimate)
        if stderr is None and isinstance(estimate, PIDEstimate) and estimate.measure == "mmi":
            stderr = estimate.stderrs()
        if stderr is not None and tuple(torch.as_tensor(stderr).shape) != tuple(v.shape):
            raise ValueError(f"PartialInformation.update: stderr of shape {tuple(torch.as_tensor(stderr).shape)} for "
                             f"values of shape {tuple(v.shape)}")
        self._add(v, stderr, ids, estimate.n_evals if isinstance(estimate, PIDEstimate) else 0)

    def compute(self) -> dict[str, Tensor]:
        mean, stderr, count = self.summary()
        out: dict[str, Tensor] = {}
        for j, name in enumerate(PID_TERMS):
            out[name] = mean[j]
            out[f"{name}_stderr"] = stderr[j]
        out["count"] = torch.tensor(float(count), dtype=torch.float64)
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
