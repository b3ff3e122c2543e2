"""The exact denoiser of a Gaussian reference N(mean, cov), used by the density estimator.

For X ~ N(mu, S) with S = V diag(l) V^T the optimal noise prediction is

    eps_hat(x_a) = b V diag(1 / (a^2 l + b^2)) V^T (x_a - a mu),   a^2 = sigma(alpha), b^2 = sigma(-alpha)

and -log p_G(x) is known in closed form (``neg_log_prob``), so the pointwise -log p(x)
of a model is that of G plus half the integral of the two denoisers' error gap
(estimators.nll).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import DenoiserBase

__all__ = ["GaussianReference"]


class GaussianReference(DenoiserBase):
    """The exact denoiser of the reference N(mean, cov); cov full (d, d) or diagonal (d,)."""

    def __init__(self, mean: Tensor, cov: Tensor, d: int):
        mean = torch.as_tensor(mean, dtype=torch.float64).flatten()
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if mean.numel() == 1:
            mean = mean.expand(d)
        if mean.numel() != d:
            raise ValueError(f"reference mean has {mean.numel()} entries, data have dimension {d}")
        if cov.ndim <= 1:
            lam = cov.flatten().expand(d).clone() if cov.numel() == 1 else cov.flatten()
            vec = None
        else:
            lam, vec = torch.linalg.eigh(0.5 * (cov + cov.T))
        if lam.numel() != d or not bool((lam > 0).all()):
            raise ValueError(f"reference covariance must be positive definite of dimension {d}")
        self.mean, self.lam, self.vec = mean, lam, vec

    def null_conditions(self, n):
        return [None] * n

    def eps_hat(self, x_alpha, alpha, conditions):
        shape = x_alpha.shape
        xa = x_alpha.reshape(shape[0], -1).to(torch.float64)
        al = alpha.to(torch.float64)[:, None]
        a2, b2 = torch.sigmoid(al), torch.sigmoid(-al)
        r = xa - a2.sqrt() * self.mean
        if self.vec is not None:
            r = r @ self.vec
        r = r * b2.sqrt() / (a2 * self.lam + b2)
        if self.vec is not None:
            r = r @ self.vec.T
        return r.reshape(shape).to(x_alpha.dtype)

    def neg_log_prob(self, x: Tensor) -> Tensor:
        r = x.reshape(x.shape[0], -1).to(torch.float64) - self.mean
        if self.vec is not None:
            r = r @ self.vec
        d = self.lam.numel()
        return 0.5 * ((r**2 / self.lam).sum(1) + self.lam.log().sum() + d * math.log(2 * math.pi))
