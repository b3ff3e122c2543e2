"""The Gaussian noise channel in log-SNR form, and conversions to discrete schedules.

Kong et al. (2023, 2024) parameterise the channel by alpha = log-SNR:

    x_alpha = sqrt(sigma(alpha)) * x + sqrt(sigma(-alpha)) * eps,   eps ~ N(0, I)     (1)

with sigma the logistic function. A discrete DDPM-style scheduler carries the table
abar_t (``alphas_cumprod``); its log-SNR is logsnr(t) = log(abar_t / (1 - abar_t)),
monotone decreasing in t. Diffusers UNets accept float timesteps, so any alpha inside
the trained range maps to a continuous timestep by interpolating that table (the
reference code rounds to the nearest integer step, which costs up to ~0.7 nats of
alpha error near t = 0).
"""
from __future__ import annotations


import torch
from torch import Tensor

__all__ = [
    "noise_channel",
    "logsnr_from_alphas_cumprod",
    "trained_logsnr_range",
    "timestep_from_logsnr",
    "interpolate_timesteps",
    "logsnr_from_timestep",
]


def _expand_like(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-sample vector (B,) so it broadcasts against x (B, ...)."""
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def noise_channel(x: Tensor, alpha: Tensor, eps: Tensor) -> Tensor:
    """x_alpha of eq. (1). ``alpha`` has one entry per sample (leading dim of x)."""
    if x.shape != eps.shape:
        raise ValueError(f"noise_channel: x has shape {tuple(x.shape)} but eps has {tuple(eps.shape)}")
    # The coefficients in float64, then in x's dtype: a vectorised sigmoid rounds an element
    # differently from the scalar loop that takes a vector's tail, so in float32 an input's
    # x_alpha would depend on its position in the batch (and so on which inputs share its
    # call); a float64 result rounded to float32 does not, but for ties 2^-29 apart.
    a = _expand_like(torch.as_tensor(alpha).to(torch.float64), x)
    return torch.sigmoid(a).sqrt().to(x.dtype) * x + torch.sigmoid(-a).sqrt().to(x.dtype) * eps


def logsnr_from_alphas_cumprod(alphas_cumprod: Tensor) -> Tensor:
    """logsnr(t) = log(abar_t) - log(1 - abar_t), computed in float64."""
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if abar.ndim != 1 or abar.numel() < 2:
        raise ValueError("alphas_cumprod must be a 1-D table with at least two entries")
    if not bool(((abar > 0) & (abar < 1)).all()):
        raise ValueError("alphas_cumprod entries must lie strictly between 0 and 1")
    return torch.log(abar) - torch.log1p(-abar)


def _monotone_table(alphas_cumprod: Tensor) -> Tensor:
    table = logsnr_from_alphas_cumprod(alphas_cumprod)
    if not bool((table[1:] < table[:-1]).all()):
        raise ValueError("the scheduler's log-SNR table is not strictly decreasing in t")
    return table


def trained_logsnr_range(alphas_cumprod: Tensor) -> tuple[float, float]:
    """(logsnr(t_max), logsnr(t_min)): the alphas a discrete model was trained on."""
    table = _monotone_table(alphas_cumprod)
    return float(table[-1]), float(table[0])


def timestep_from_logsnr(alpha: Tensor, alphas_cumprod: Tensor, out_of_range: str = "error") -> Tensor:
    """Continuous timestep t(alpha) by linear interpolation of the monotone logsnr table.

    ``out_of_range``: "error" refuses alphas outside the trained range, "clip" clamps
    them to its ends.
    """
    table = _monotone_table(alphas_cumprod)
    a = torch.as_tensor(alpha, dtype=torch.float64, device=table.device)
    lo, hi = float(table[-1]), float(table[0])
    if out_of_range == "error":
        bad = (a < lo - 1e-9) | (a > hi + 1e-9)
        if bool(bad.any()):
            raise ValueError(
                f"log-SNR {float(a[bad].flatten()[0]):.4f} is outside the trained range "
                f"[{lo:.4f}, {hi:.4f}]; narrow the sampler or pass out_of_range='clip'"
            )
    elif out_of_range != "clip":
        raise ValueError(f"out_of_range must be 'error' or 'clip', got {out_of_range!r}")
    return interpolate_timesteps(a, table.flip(0))


def interpolate_timesteps(alpha: Tensor, inc_table: Tensor) -> Tensor:
    """The interpolation core of :func:`timestep_from_logsnr` (out_of_range="clip"), with
    the table given *increasing* (``logsnr_table.flip(0)``, index i <-> t = T-1-i) and on
    alpha's device: no validation, hence no host synchronisation on an accelerator."""
    a = alpha.to(torch.float64).clamp(inc_table[0], inc_table[-1])
    idx = torch.searchsorted(inc_table, a).clamp(1, inc_table.numel() - 1)
    x0, x1 = inc_table[idx - 1], inc_table[idx]
    t_inc = (idx - 1).to(torch.float64) + (a - x0) / (x1 - x0)
    return (inc_table.numel() - 1) - t_inc


def logsnr_from_timestep(t: Tensor, alphas_cumprod: Tensor) -> Tensor:
    """Inverse of :func:`timestep_from_logsnr`: linear interpolation at float t."""
    table = _monotone_table(alphas_cumprod)
    t = torch.as_tensor(t, dtype=torch.float64, device=table.device)
    if bool(((t < 0) | (t > table.numel() - 1)).any()):
        raise ValueError(f"timesteps must lie in [0, {table.numel() - 1}]")
    i0 = t.floor().long().clamp(0, table.numel() - 2)
    frac = t - i0.to(torch.float64)
    return table[i0] * (1 - frac) + table[i0 + 1] * frac

