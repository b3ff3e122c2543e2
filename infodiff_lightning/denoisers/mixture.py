"""Exact denoiser for a Gaussian mixture with discrete labels: ground truth for MI and PID.

Components k carry a label tuple L_k = (y_1, ..., y_m), a prior weight p_k and a mean
mu_k; X | k ~ N(mu_k, s^2 I). A condition observes some label coordinates (-1 marks
"unobserved"), which restricts the mixture to the compatible components. The MMSE
noise prediction is the posterior-weighted mixture of per-component denoisers:

    eps_hat(x_a | obs) = sum_k p(k | x_a, obs) * b (x_a - a mu_k) / (a^2 s^2 + b^2)

with p(k | x_a, obs) proportional to p_k N(x_a; a mu_k, (a^2 s^2 + b^2) I) on compatible k.
Information terms I(X; Y_A | Y_B) = H(Y_A | Y_B) - H(Y_A | X, Y_B) are computed by a large
Monte-Carlo sum with exact densities (``mutual_information``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .analytic import AnalyticSystem

__all__ = ["DiscreteMixture", "GaussianMixture"]


class DiscreteMixture(AnalyticSystem):
    def __init__(self, labels: Tensor, probs: Tensor, means: Tensor, sigma: float = 1.0):
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.ndim == 1:
            labels = labels[:, None]
        probs = torch.as_tensor(probs, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        k = labels.shape[0]
        if probs.shape != (k,) or means.ndim != 2 or means.shape[0] != k:
            raise ValueError(f"labels ({k} components), probs {tuple(probs.shape)} and means {tuple(means.shape)} disagree")
        if bool((labels < 0).any()):
            raise ValueError("labels must be >= 0 (-1 is reserved for 'unobserved')")
        if not (bool((probs > 0).all()) and abs(float(probs.sum()) - 1) < 1e-9):
            raise ValueError("probs must be positive and sum to 1")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.labels, self.probs, self.means, self.sigma = labels, probs, means, float(sigma)
        self.dim_x, self.num_labels = means.shape[1], labels.shape[1]

    def null_conditions(self, n: int) -> Tensor:
        return torch.full((n, self.num_labels), -1, dtype=torch.long)

    def _compatible(self, obs: Tensor) -> Tensor:
        """(B, K) mask: component k agrees with every observed coordinate of obs."""
        obs = obs.to(torch.long)
        if obs.ndim == 1:
            obs = obs[:, None]
        if obs.shape[1] != self.num_labels:
            raise ValueError(f"conditions must be (B, {self.num_labels}) label tuples, got {tuple(obs.shape)}")
        agree = (obs[:, None, :] < 0) | (obs[:, None, :] == self.labels[None])
        compat = agree.all(-1)
        if not bool(compat.any(1).all()):
            raise ValueError("a condition matches no mixture component (label out of range?)")
        return compat

    def _logits(self, x: Tensor, mean_scale: Tensor, var: Tensor, obs: Tensor) -> Tensor:
        """log p_k + log N(x; mean_scale mu_k, var I) up to a k-independent constant,
        -inf on components incompatible with obs."""
        d2 = ((x[:, None, :] - mean_scale[:, None, None] * self.means[None]) ** 2).sum(-1)
        logits = self.probs.log()[None] - d2 / (2 * var[:, None])
        return logits.masked_fill(~self._compatible(obs), -math.inf)

    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Tensor) -> Tensor:
        if x_alpha.ndim != 2 or x_alpha.shape[1] != self.dim_x:
            raise ValueError(f"x_alpha must be (B, {self.dim_x}), got {tuple(x_alpha.shape)}")
        xa, al = x_alpha.to(torch.float64), alpha.to(torch.float64)
        a, b2 = torch.sigmoid(al).sqrt(), torch.sigmoid(-al)
        var = a**2 * self.sigma**2 + b2
        post = self._logits(xa, a, var, conditions).softmax(-1)  # p(k | x_a, obs), (B, K)
        mean_mix = post @ self.means  # sum_k p(k|.) mu_k
        return (b2.sqrt() / var)[:, None] * (xa - a[:, None] * mean_mix)

    # ---- the generative system and its truth ---------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        k = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        x = self.means[k] + self.sigma * torch.randn(n, self.dim_x, generator=generator, dtype=torch.float64)
        return x, self.labels[k]

    def _log_prob_obs_given_x(self, x: Tensor, obs: Tensor) -> Tensor:
        one = torch.ones(x.shape[0], dtype=torch.float64)
        var = one * self.sigma**2
        return (self._logits(x, one, var, obs).logsumexp(-1)
                - self._logits(x, one, var, torch.full_like(obs, -1)).logsumexp(-1))

    def _log_prior_obs(self, obs: Tensor) -> Tensor:
        return (self.probs.log()[None].expand(obs.shape[0], -1)).masked_fill(~self._compatible(obs), -math.inf).logsumexp(-1)

    def mutual_information(self, target=None, given=None, n: int = 200_000, seed: int = 0) -> float:
        """I(X; Y_target | Y_given) in nats (Monte-Carlo; see ``mutual_information_mc``)."""
        return self.mutual_information_mc(target, given, n, seed)[0]

    def mutual_information_mc(self, target=None, given=None, n: int = 200_000, seed: int = 0) -> tuple[float, float]:
        """(I(X; Y_target | Y_given), Monte-Carlo standard error) in nats.

        Pointwise term: log p(y_T, y_G | x) - log p(y_G | x) - log p(y_T, y_G) + log p(y_G),
        averaged over (x, y) ~ p with exact densities.
        """
        m = self.num_labels
        target = torch.tensor([True] * m if target is None else list(target))
        given = torch.tensor([False] * m if given is None else list(given))
        g = torch.Generator().manual_seed(seed)
        x, y = self.sample(n, g)
        obs_both = torch.where(target | given, y, torch.full_like(y, -1))
        obs_given = torch.where(given, y, torch.full_like(y, -1))
        terms = (self._log_prob_obs_given_x(x, obs_both) - self._log_prob_obs_given_x(x, obs_given)
                 - self._log_prior_obs(obs_both) + self._log_prior_obs(obs_given))
        return float(terms.mean()), float(terms.std() / math.sqrt(n))


class GaussianMixture(DiscreteMixture):
    """A single class label over ``n_classes`` components with seeded random means.

    Means are drawn N(0, I) and scaled so the mean pairwise distance is
    ``separation * sigma``; class weights are uniform.
    """

    def __init__(self, n_classes: int = 4, dim: int = 8, separation: float = 3.0, sigma: float = 1.0, seed: int = 0):
        if n_classes < 2 or dim < 1:
            raise ValueError(f"need n_classes >= 2 and dim >= 1, got {n_classes}, {dim}")
        g = torch.Generator().manual_seed(seed)
        mu = torch.randn(n_classes, dim, generator=g, dtype=torch.float64)
        dist = torch.cdist(mu, mu)
        mean_dist = dist.sum() / (n_classes * (n_classes - 1))
        mu = mu * (separation * sigma / mean_dist)
        super().__init__(torch.arange(n_classes), torch.full((n_classes,), 1.0 / n_classes, dtype=torch.float64), mu, sigma)
