"""torchmetrics shells over the estimators: per-sample states, reduced in id order.

``PointwiseInformation`` keeps each image's value, its own Monte-Carlo standard error
and its id (samples.py), so 1 and N processes, any batch size and a resumed job give
bit-identical results. ``InformationMap`` keeps a fixed-size sum of maps (too large to
keep per image), so across processes it agrees to float64 rounding.

Standard error of the dataset mean: over several images, std over images / sqrt(count)
(sample and integration noise together). Over exactly one image the spread over images
is unknown; the error is then that image's own Monte-Carlo standard error
(``Estimate.stderr``, conditional on the image); a plain tensor carries none, so a
single image given as a tensor has a NaN standard error (unknown, never 0).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from ..estimators import Estimate
from .samples import SampleValues, mean_and_stderr

__all__ = ["PointwiseInformation", "InformationMap", "mean_and_stderr"]


class PointwiseInformation(SampleValues):
    """Dataset-level mean of per-image information estimates, with its standard error.

    One metric for every pointwise information: i(x; y), i(x; w | c) and each PID term
    differ only in the conditions the estimator was given.

    ``update(estimate, ids=None)`` takes an :class:`Estimate` (or a tensor of per-image
    values) and the images' ids; ``compute()`` returns {"mean", "stderr", "count",
    "n_evals"} where stderr is std over images / sqrt(count), or, for exactly one image,
    that image's ``Estimate.stderr`` (NaN if the image came as a plain tensor).
    """

    width = 1

    def update(self, estimate: Estimate | Tensor, ids: Sequence[int] | Tensor | None = None) -> None:
        if isinstance(estimate, Estimate):
            self._add(estimate.value, estimate.stderr, ids, estimate.n_evals)
        else:
            self._add(torch.as_tensor(estimate), None, ids)

    def compute(self) -> dict[str, Tensor]:
        mean, stderr, count = self.summary()
        return {"mean": mean[0], "stderr": stderr[0], "count": torch.tensor(float(count), dtype=torch.float64),
                "n_evals": self.n_evals.clone()}


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
