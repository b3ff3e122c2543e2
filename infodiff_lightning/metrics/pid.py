"""torchmetrics shells over the PID (pid.py).

``PartialInformation`` keeps per-image [redundancy, unique1, unique2, synergy] with
their own standard errors and the images' ids, and reduces them in id order
(samples.py), so any number of processes gives bit-identical results.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..pid import PID_TERMS, PIDEstimate
from .samples import SampleValues

__all__ = ["PartialInformation"]


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

