"""The conditioning algebra of a jointly Gaussian (X, Y): the one place it is written.

For (X, Y) ~ N(mu, S) with X the first ``dim_x`` coordinates and Y_o the observed
coordinates of Y,

    X | Y_o = y_o  ~  N(mu_x + K (y_o - mu_o), S_c),   K = S_xo S_oo^-1,   S_c = S_xx - K S_xo^T,

and S_c = V diag(lam) V^T is what the exact denoiser of the Gaussian and the
log-determinants of its informations are read from. Used by the Gaussian ground-truth
system (denoisers/gaussian.py) and by the Gaussian baseline of the vector MLP
(models/vector_mlp.py); plain torch, no other project import.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["GaussianConditional", "gaussian_conditional"]


class GaussianConditional(NamedTuple):
    """X given the observed coordinates of Y: ``observed`` (the indices of Y's observed
    coordinates in the joint vector), ``gain`` K (dim_x, n_observed), and the eigenvalues
    and eigenvectors of the conditional covariance S_c."""

    observed: Tensor
    gain: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor


def gaussian_conditional(cov: Tensor, dim_x: int, observed: tuple[bool, ...]) -> GaussianConditional:
    """The conditional of X given Y's coordinates flagged in ``observed`` (one flag per
    coordinate of Y), for the float64 joint covariance ``cov``."""
    dx = dim_x
    o = torch.tensor([dx + j for j, v in enumerate(observed) if v], dtype=torch.long)
    sxx = cov[:dx, :dx]
    if o.numel():
        sxo = cov[:dx][:, o]
        soo = cov[o][:, o]
        gain = torch.linalg.solve(soo, sxo.T).T
        sc = sxx - gain @ sxo.T
    else:
        gain = torch.zeros(dx, 0, dtype=torch.float64)
        sc = sxx
    sc = 0.5 * (sc + sc.T)
    lam, vec = torch.linalg.eigh(sc)
    return GaussianConditional(o, gain, lam, vec)
