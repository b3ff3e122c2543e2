"""Exact flow-matching velocity of a jointly Gaussian (X, Y): ground truth for flow models.

For X | c ~ N(mu_c, S_c), S_c = V diag(lam) V^T, on the flow path x_s = (1 - s) x0 + s eps
(flow.py, eq. (F1)), x_s | c is Gaussian with mean (1 - s) mu_c and covariance
C = (1 - s)^2 S_c + s^2 I, and the optimal velocity v = E[eps - x0 | x_s, c] is

    E[eps | x_s] = s C^-1 (x_s - (1 - s) mu_c),
    E[x0  | x_s] = mu_c + (1 - s) S_c C^-1 (x_s - (1 - s) mu_c),
    v(x_s, s | c) = V diag((s - (1 - s) lam) / ((1 - s)^2 lam + s^2)) V^T (x_s - (1 - s) mu_c) - mu_c.   (G)

:class:`FlowMatchingGaussian` is a denoiser of the protocol whose eps_hat goes through a
flow model's path: x_alpha -> x_s by the parametrisation's input map (F3), v from (G) at
timestep 1000 s, eps_hat by (F4): the same FlowParametrisation the SD3 and Flux adapters
use. Its eps_hat must therefore equal the VP Gaussian's closed form (gaussian.py) draw for
draw, and the estimators must recover the system's closed-form MI on it.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .analytic import AnalyticSystem
from .gaussian import JointGaussian
from .parametrisation import FlowParametrisation

__all__ = ["gaussian_velocity", "FlowMatchingGaussian"]


def gaussian_velocity(system: JointGaussian, x_s: Tensor, s: Tensor, conditions: Tensor) -> Tensor:
    """Eq. (G): the exact velocity E[eps - x0 | x_s, c] of ``system``'s X at flow time ``s``
    (B,) given conditions (B, dim_y) (NaN = unobserved), in float64."""
    xs = x_s.to(torch.float64)
    s = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
    obs = ~torch.isnan(conditions)
    out = torch.empty_like(xs)
    for pattern in torch.unique(obs, dim=0):
        rows = (obs == pattern).all(1).nonzero().squeeze(1)
        key = tuple(bool(v) for v in pattern.tolist())
        _, _, lam, vec = system.conditional(key)
        mu_c = system.conditional_mean(conditions[rows], key)
        sr = s[rows][:, None]
        r = (xs[rows] - (1 - sr) * mu_c) @ vec
        r = r * (sr - (1 - sr) * lam) / ((1 - sr) ** 2 * lam + sr ** 2)
        out[rows] = r @ vec.T - mu_c
    return out


class FlowMatchingGaussian(AnalyticSystem):
    """``system`` (a JointGaussian) seen through an exact flow-matching model (see module doc).

    ``alpha_range`` is the flow parametrisation's (s in [1/T, 1 - 1/T]), as for a real flow
    model; samples and the true informations are ``system``'s.
    """

    def __init__(self, system: JointGaussian):
        self.system = system
        self.parametrisation = FlowParametrisation()
        self.alpha_range = self.parametrisation.alpha_range

    def velocity(self, x_s: Tensor, t: Tensor, conditions: Tensor) -> Tensor:
        """The model's call: velocity at input x_s and timestep t = 1000 s."""
        return gaussian_velocity(self.system, x_s, t / self.parametrisation.timestep_scale, conditions)

    def null_conditions(self, n: int) -> Tensor:
        return self.system.null_conditions(n)

    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Tensor) -> Tensor:
        alpha = torch.as_tensor(alpha, dtype=torch.float64)
        x_s = self.parametrisation.scale_input(x_alpha.to(torch.float64), alpha)
        v = self.velocity(x_s, self.parametrisation.timesteps(alpha), conditions)
        return self.parametrisation.eps_from_output(v, x_s, alpha).to(x_alpha.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return self.system.sample(n, generator)

    def mutual_information(self, *args, **kwargs) -> float:
        return self.system.mutual_information(*args, **kwargs)
