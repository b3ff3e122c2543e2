"""MMSE curves: the denoising error of each condition as a function of log-SNR.

mmse(alpha | c) = E_x E_eps ||eps - eps_hat(x_alpha, alpha | c)||^2; half the gap between
two conditions' curves is the integrand of the standard MI estimator (eq. 5 of Kong et
al. 2024), so these are the curves whose area is the information.

Standard errors are clustered by image. The n_eps draws of one image share its x, and
images differ much more than the eps draws of one image do (at low SNR the error is
mostly ||x - E x||^2 scaled), so the N x n_eps draws at an alpha are *not* independent.
With e[n, k, g, j] the squared error of image n, condition k, alpha g, eps draw j:

    m[n, k, g]   = 1/n_eps sum_j e[n, k, g, j]                 (per-image curve)
    mmse[k, g]   = 1/N sum_n m[n, k, g]
    stderr[k, g] = std_n m[n, k, g] / sqrt(N)                   (CLU)

and a gap between two conditions, which see the same x and eps, is paired per image:
d[n, g] = m[n, ref, g] - m[n, cond, g], gap = mean_n d, stderr = std_n d / sqrt(N).
With one image the spread over images is unknown; the errors are then those of its
eps draws (std_j e / sqrt(n_eps), paired for the gap), i.e. conditional on that image:
they say how well the curve *of that image* is known, not the population curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser
from .draws import Draws, id_generator
from .measure import measure

__all__ = ["MMSECurve", "mmse_curve", "mmse_eps_for_ids", "clustered_mean_stderr"]


def clustered_mean_stderr(errors: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and image-clustered standard error (eq. CLU) of per-draw values (N, ..., n_eps).

    N > 1: the mean over images of the per-image means over the last axis, with
    std over images of those means / sqrt(N). N = 1: the mean over that image's draws
    with std over its draws / sqrt(n_eps) (conditional on the image; NaN if n_eps = 1).
    """
    n, n_eps = int(errors.shape[0]), int(errors.shape[-1])
    if n > 1:
        per_image = errors.mean(-1)
        return per_image.mean(0), per_image.std(0) / math.sqrt(n)
    own = errors[0]
    if n_eps > 1:
        return own.mean(-1), own.std(-1) / math.sqrt(n_eps)
    return own.mean(-1), torch.full_like(own[..., 0], math.nan)


@dataclass
class MMSECurve:
    """mmse[k, g] = E ||eps - eps_hat(x_alpha_g | c_k)||^2: mean over images of each
    image's mean over its eps draws, with the image-clustered stderr (module docstring).

    ``errors`` keeps every draw's squared error (N, K, G, n_eps), so that curves and gaps
    can be re-reduced per image (``per_image``) or paired (``gap``)."""

    alpha: Tensor  # (G,)
    mmse: Tensor  # (K, G)
    stderr: Tensor  # (K, G)
    n_evals: int
    errors: Tensor  # (N, K, G, n_eps) per-draw squared errors

    @property
    def per_image(self) -> Tensor:
        """(N, K, G) each image's curve: the mean over its eps draws."""
        return self.errors.mean(-1)

    def gap(self, ref: int = 0, cond: int = 1) -> tuple[Tensor, Tensor]:
        """mmse(ref) - mmse(cond) per alpha and its paired stderr; the MI integrand is half of it.

        Both conditions see the same x and eps, so the gap is taken draw by draw and its
        standard error is that of the per-image gaps (eq. CLU applied to the differences)."""
        return clustered_mean_stderr(self.errors[:, ref] - self.errors[:, cond])


def mmse_eps_for_ids(ids, n_alpha: int, n_eps: int, shape: tuple[int, ...], seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """eps (N, n_alpha, n_eps, *shape) for ``mmse_curve(eps=...)``, each image's from the
    generator keyed by (seed, its id), so an image gets the same eps on any rank or batch."""
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
    if not ids:
        raise ValueError("mmse_eps_for_ids: no sample ids given")
    return torch.stack([torch.randn((n_alpha, n_eps, *shape), generator=id_generator(seed, i), dtype=dtype)
                        for i in ids])


def mmse_curve(denoiser: Denoiser, x: Tensor, columns: Sequence[Column], alphas: Tensor, *,
               n_eps: int | None = None, generator: torch.Generator | int | None = None, eps: Tensor | None = None,
               microbatch: int | None = None) -> MMSECurve:
    """MMSE of each condition column at each log-SNR in ``alphas`` (shared eps draws).

    Every condition of an image sees the same eps at each alpha. The eps are drawn from
    ``generator`` (n_eps per image and alpha, default 8), or given as ``eps`` of shape
    (N, G, n_eps, *x.shape[1:]) (e.g. :func:`mmse_eps_for_ids`). Standard errors are
    clustered by image (module docstring, eq. CLU).
    """
    alphas = torch.as_tensor(alphas, dtype=torch.float64).flatten()
    if alphas.numel() == 0:
        raise ValueError("mmse_curve: empty alpha grid")
    n, g = int(x.shape[0]), alphas.numel()
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if eps is not None:
        if generator is not None:
            raise ValueError("mmse_curve: give eps or a generator, not both")
        want = (n, g, *x.shape[1:])
        if eps.ndim != x.ndim + 2 or (eps.shape[0], eps.shape[1], *eps.shape[3:]) != want:
            raise ValueError(f"mmse_curve: eps must be (N, G, n_eps, *shape) = ({n}, {g}, n_eps, "
                             f"{', '.join(map(str, x.shape[1:]))}), got {tuple(eps.shape)}")
        if n_eps is not None and n_eps != eps.shape[2]:
            raise ValueError(f"mmse_curve: n_eps={n_eps} but eps holds {eps.shape[2]} draws per alpha")
        n_eps = int(eps.shape[2])
    n_eps = 8 if n_eps is None else n_eps
    if n_eps < 1:
        raise ValueError(f"n_eps must be >= 1, got {n_eps}")
    if eps is None:
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        eps = torch.randn((n, g * n_eps, *x.shape[1:]), generator=generator, dtype=dtype)
    else:
        eps = eps.to(dtype).reshape(n, g * n_eps, *x.shape[1:])
    a = alphas.repeat_interleave(n_eps).expand(n, -1).clone()  # draw s = (alpha g, eps j), s = g * n_eps + j
    draws = Draws(a, torch.ones_like(a), eps)
    names = [str(k) for k in range(len(columns))]
    m = measure(denoiser, dict(zip(names, columns)), x=x, draws=draws, microbatch=microbatch)
    mse = torch.stack([m.mse(name) for name in names], -1)  # (N, S, K), duplicate columns measured once
    errors = mse.reshape(n, g, n_eps, -1).permute(0, 3, 1, 2)  # (N, K, G, n_eps)
    mean, stderr = clustered_mean_stderr(errors)
    return MMSECurve(alphas, mean, stderr, m.n_evals, errors)
