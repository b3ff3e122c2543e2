"""Exact denoiser for jointly Gaussian (X, Y): ground truth for the estimators.

For X ~ N(mu, S) the MMSE noise prediction is

    eps_hat(x_a) = b (a^2 S + b^2 I)^-1 (x_a - a mu),   a = sqrt(sigma(alpha)), b = sqrt(sigma(-alpha))

and conditioning on observed coordinates of Y replaces (mu, S) by the Gaussian
conditional (mu_x|o, S_x|o). I(X; Y_A | Y_B) = 1/2 (log det S_x|B - log det S_x|A,B).

Conditions are float tensors (B, dim_y); NaN marks an unobserved coordinate, so the
null condition is all-NaN and conditional MI uses partly observed rows.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..gaussian_conditional import GaussianConditional, gaussian_conditional
from .analytic import AnalyticSystem

__all__ = ["JointGaussian", "CorrelatedGaussian"]


class JointGaussian(AnalyticSystem):
    """(X, Y) ~ N(mean, cov) with X the first ``dim_x`` coordinates."""

    def __init__(self, mean: Tensor, cov: Tensor, dim_x: int):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        n = mean.numel()
        if cov.shape != (n, n):
            raise ValueError(f"cov must be ({n}, {n}) to match mean, got {tuple(cov.shape)}")
        if not 0 < dim_x < n:
            raise ValueError(f"dim_x must be in (0, {n}), got {dim_x}")
        if not bool(torch.allclose(cov, cov.T)):
            raise ValueError("cov must be symmetric")
        self.mean, self.cov, self.dim_x, self.dim_y = mean, cov, dim_x, n - dim_x
        self._chol = torch.linalg.cholesky(cov)  # raises if not positive definite
        self._cache: dict[tuple[bool, ...], GaussianConditional] = {}

    # ---- conditioning -------------------------------------------------
    def conditional(self, observed: tuple[bool, ...]) -> GaussianConditional:
        """X given Y's coordinates flagged in ``observed``: (observed indices, gain K,
        S_c eigenvalues, eigenvectors) with mu_c = mu_x + K (y_o - mu_o); cached per pattern."""
        if observed not in self._cache:
            self._cache[observed] = gaussian_conditional(self.cov, self.dim_x, observed)
        return self._cache[observed]

    def conditional_mean(self, y: Tensor, observed: tuple[bool, ...]) -> Tensor:
        o, gain, _, _ = self.conditional(observed)
        mu_x = self.mean[: self.dim_x]
        if o.numel() == 0:
            return mu_x.expand(y.shape[0], -1)
        return mu_x + (y[:, o - self.dim_x].to(torch.float64) - self.mean[o]) @ gain.T

    def log_det_conditional(self, observed: tuple[bool, ...]) -> float:
        return float(torch.log(self.conditional(tuple(observed)).eigenvalues).sum())

    # ---- the denoiser protocol ----------------------------------------
    def null_conditions(self, n: int) -> Tensor:
        return torch.full((n, self.dim_y), float("nan"), dtype=torch.float64)

    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Tensor) -> Tensor:
        if x_alpha.ndim != 2 or x_alpha.shape[1] != self.dim_x:
            raise ValueError(f"x_alpha must be (B, {self.dim_x}), got {tuple(x_alpha.shape)}")
        if conditions.shape != (x_alpha.shape[0], self.dim_y):
            raise ValueError(f"conditions must be (B, {self.dim_y}), got {tuple(conditions.shape)}")
        xa = x_alpha.to(torch.float64)
        al = alpha.to(torch.float64)
        a2, b2 = torch.sigmoid(al), torch.sigmoid(-al)
        obs = ~torch.isnan(conditions)
        out = torch.empty_like(xa)
        # Group rows by their observation pattern; a pattern is read as a binary number
        # (sorting 1-D codes is much cheaper than torch.unique over rows).
        bits = 2 ** torch.arange(self.dim_y, dtype=torch.float64)
        codes = obs.to(torch.float64) @ bits if self.dim_y <= 52 else None
        patterns = torch.unique(obs, dim=0) if codes is None else None
        for code in (torch.unique(codes).tolist() if codes is not None else range(len(patterns))):
            if codes is not None:
                rows = (codes == code).nonzero().squeeze(1)
                pattern = obs[rows[0]]
            else:
                pattern = patterns[code]
                rows = (obs == pattern).all(1).nonzero().squeeze(1)
            key = tuple(bool(v) for v in pattern.tolist())
            _, _, lam, vec = self.conditional(key)
            mu_c = self.conditional_mean(conditions[rows], key)
            r = (xa[rows] - a2[rows].sqrt()[:, None] * mu_c) @ vec
            r = r * b2[rows].sqrt()[:, None] / (a2[rows][:, None] * lam + b2[rows][:, None])
            out[rows] = r @ vec.T
        return out.to(x_alpha.dtype)

    # ---- the generative system and its truth ---------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        xy = self.mean + z @ self._chol.T
        return xy[:, : self.dim_x], xy[:, self.dim_x :]

    def mutual_information(self, target: tuple[bool, ...] | None = None, given: tuple[bool, ...] | None = None) -> float:
        """I(X; Y_target | Y_given) in nats; defaults: all of Y, nothing given."""
        target = tuple([True] * self.dim_y) if target is None else tuple(target)
        given = tuple([False] * self.dim_y) if given is None else tuple(given)
        both = tuple(t or g for t, g in zip(target, given))
        return 0.5 * (self.log_det_conditional(given) - self.log_det_conditional(both))


class CorrelatedGaussian(JointGaussian):
    """A ground-truth system set by a few numbers (the analysis job's default).

    Y ~ N(0, I_dim); X = mean + R D (rho Y + sqrt(1 - rho^2) Z), Z ~ N(0, I), R a random
    rotation (seeded) and D = diag of standard deviations log-spaced over [1/spread, 1] * scale.
    Then I(X; Y) = -dim/2 log(1 - rho^2) whatever R and D. ``noise`` (if given) sets
    rho = 1 / sqrt(1 + noise^2), i.e. X = Y + noise * Z before R and D.
    """

    def __init__(self, dim: int = 16, correlation: float = 0.9, noise: float | None = None,
                 mean: float = 0.0, scale: float = 1.0, spread: float = 1.0, rotate: bool = True, seed: int = 0):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if noise is not None:
            if not noise > 0:
                raise ValueError(f"noise must be > 0, got {noise}")
            correlation = 1.0 / math.sqrt(1.0 + noise**2)
        if not 0 <= correlation < 1:
            raise ValueError(f"correlation must be in [0, 1), got {correlation}")
        if not (scale > 0 and spread >= 1):
            raise ValueError(f"need scale > 0 and spread >= 1, got scale={scale}, spread={spread}")
        g = torch.Generator().manual_seed(seed)
        rot = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0] if rotate else torch.eye(dim, dtype=torch.float64)
        d = scale * torch.logspace(-math.log10(spread), 0, dim, dtype=torch.float64)
        m = rot * d  # R D
        rho = correlation
        cov = torch.zeros(2 * dim, 2 * dim, dtype=torch.float64)
        cov[:dim, :dim] = m @ m.T
        cov[:dim, dim:] = rho * m
        cov[dim:, :dim] = rho * m.T
        cov[dim:, dim:] = torch.eye(dim, dtype=torch.float64)
        mu = torch.cat([torch.full((dim,), float(mean), dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)])
        super().__init__(mu, cov, dim)
        self.correlation = rho
        self.analytic_mi = -0.5 * dim * math.log1p(-rho**2)
