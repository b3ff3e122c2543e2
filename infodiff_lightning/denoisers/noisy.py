"""An imperfect denoiser for calibration studies: an exact one plus fresh Gaussian noise.

eps_hat_noisy(x_a, a | c) = eps_hat(x_a, a | c) + scale * 2 sqrt(sigma(a) sigma(-a)) * xi,
xi ~ N(0, I) new at every call.

The noise is independent across calls, conditions and draws, so two conditions that the
exact denoiser treats identically (the copy toy's y1 and y2) have equal long-run
informations but different per-draw terms: the worst case for choosing the smaller of
two sources. Like a real denoiser's errors between conditions, the noise is largest at
alpha = 0 (where it is ``scale``) and vanishes at both ends, so importance-weighted
terms stay light-tailed. Each orthogonal information over [lo, hi] grows by exactly

    1/2 Int E||n_1 - n_0||^2 da = 4 d scale^2 (sigma(hi) - sigma(lo))            (NOISE)

(d the dimension), and stays a well-defined per-image integral.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import Column, Denoiser, DenoiserBase

__all__ = ["NoisyDenoiser"]


class NoisyDenoiser(DenoiserBase):
    """Wraps ``base`` and adds ``scale`` * N(0, I) to every prediction (seeded by ``seed``)."""

    def __init__(self, base: Denoiser, scale: float, seed: int = 0):
        if not scale >= 0:
            raise ValueError(f"NoisyDenoiser: scale must be >= 0, got {scale}")
        self.base, self.scale = base, float(scale)
        self.alpha_range, self.default_microbatch = base.alpha_range, base.default_microbatch
        self.alpha_proposal = base.alpha_proposal
        self.generator = torch.Generator().manual_seed(seed)

    def null_conditions(self, n: int) -> Column:
        return self.base.null_conditions(n)

    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor:
        out = self.base.eps_hat(x_alpha, alpha, conditions)
        noise = torch.randn(out.shape, generator=self.generator, dtype=out.dtype).to(out.device)
        a = alpha.to(out.dtype).reshape(-1, *([1] * (out.ndim - 1)))
        return out + self.scale * 2 * (torch.sigmoid(a) * torch.sigmoid(-a)).sqrt() * noise
