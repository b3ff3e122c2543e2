"""Base class of the ground-truth systems: exact denoiser, sampler and information."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import DenoiserBase

__all__ = ["AnalyticSystem"]


class AnalyticSystem(DenoiserBase):
    """A generative system p(x, y) whose optimal denoiser and information are known exactly.

    Subclasses implement the denoiser protocol (``eps_hat``, ``null_conditions``) and
    ``sample(n, generator) -> (x, conditions)`` and ``mutual_information() -> I(X;Y)``.
    Any alpha is valid for an exact denoiser, hence ``alpha_range = None`` (DenoiserBase).
    """

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def mutual_information(self) -> float:
        raise NotImplementedError
