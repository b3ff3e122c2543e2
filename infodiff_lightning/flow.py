"""Rectified flow (flow matching) as the Gaussian channel of eq. (1), reparametrised.

Flow-matching models (Stable Diffusion 3, Flux) are trained on the straight path

    x_s = (1 - s) x0 + s eps,        s in [0, 1],   eps ~ N(0, I)                 (F1)

with the velocity target v = eps - x0 and the timestep 1000 s (diffusers convention).
Its signal-to-noise ratio is (1 - s)^2 / s^2, so (F1) is channel (1) at

    alpha = logsnr(s) = 2 log((1 - s) / s),    s = sigma(-alpha / 2)              (F2)

scaled by k(s) = sqrt((1 - s)^2 + s^2): with the *same* eps,

    x_s = k x_alpha,     since (1 - s) = k sqrt(sigma(alpha)), s = k sqrt(sigma(-alpha)).  (F3)

Hence a VP draw (x_alpha, eps) is the flow draw (s(alpha), k x_alpha) with that eps, and
the eps the estimators need follows from the model's velocity:

    eps_hat = x_s + (1 - s) v_hat                                               (F4)

(x_s + (1 - s)(eps - x0) = eps exactly, so a perfect v gives the perfect eps). Every
estimator, map, PID term and standard error is a function of eps_hat on channel (1), so
they apply unchanged to flow models once the adapter maps its inputs by (F2)-(F3) and its
output by (F4). A shifted sampling schedule (SD3's ``shift``) only changes which s the
*sampler* visits; the model's parametrisation (F1) is the same. The algebra is written
out in docs/flow_matching.md.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["FLOW_TIMESTEPS", "flow_time", "logsnr_from_flow_time", "flow_scale", "flow_channel",
           "eps_from_velocity", "velocity_from_eps", "velocity_target", "flow_logsnr_range",
           "FLOW_TIME_DENSITIES", "sample_flow_time"]

#: diffusers' flow-matching models take the timestep 1000 s (FlowMatchEulerDiscreteScheduler's
#: num_train_timesteps); Flux's transformer takes s itself and multiplies by 1000 inside.
FLOW_TIMESTEPS = 1000


def _expand_like(v: Tensor, x: Tensor) -> Tensor:
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def flow_time(alpha: Tensor) -> Tensor:
    """s(alpha) = sigma(-alpha / 2), eq. (F2): the flow time with log-SNR alpha."""
    return torch.sigmoid(-torch.as_tensor(alpha) / 2)


def logsnr_from_flow_time(s: Tensor) -> Tensor:
    """alpha(s) = 2 log((1 - s) / s), eq. (F2), computed as -2 logit(s) (stable near 0 and 1)."""
    return -2 * torch.logit(torch.as_tensor(s))


def flow_scale(alpha: Tensor) -> Tensor:
    """k(alpha) = sqrt((1 - s)^2 + s^2), eq. (F3): x_s = k x_alpha for the same eps."""
    s = flow_time(alpha)
    return ((1 - s) ** 2 + s ** 2).sqrt()


def flow_channel(x0: Tensor, s: Tensor, eps: Tensor) -> Tensor:
    """x_s = (1 - s) x0 + s eps, eq. (F1); ``s`` has one entry per sample."""
    if x0.shape != eps.shape:
        raise ValueError(f"flow_channel: x0 has shape {tuple(x0.shape)} but eps has {tuple(eps.shape)}")
    s = _expand_like(torch.as_tensor(s, device=x0.device), x0).to(x0.dtype)
    return (1 - s) * x0 + s * eps


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """v = eps - x0: what a flow-matching model is trained to output at x_s."""
    return eps - x0


def eps_from_velocity(v: Tensor, x_s: Tensor, s: Tensor) -> Tensor:
    """eps_hat = x_s + (1 - s) v_hat, eq. (F4), in the wider of float32 and the inputs' dtype."""
    if v.shape != x_s.shape:
        raise ValueError(f"model output {tuple(v.shape)} does not match its input {tuple(x_s.shape)}")
    dtype = torch.promote_types(torch.promote_types(v.dtype, x_s.dtype), torch.float32)
    s = _expand_like(torch.as_tensor(s, device=v.device), v).to(dtype)
    return x_s.to(dtype) + (1 - s) * v.to(dtype)


def velocity_from_eps(eps: Tensor, x_s: Tensor, s: Tensor) -> Tensor:
    """v = (eps - x_s) / (1 - s), the inverse of eq. (F4) (for s < 1)."""
    s = _expand_like(torch.as_tensor(s, device=eps.device), eps).to(eps.dtype)
    return (eps - x_s.to(eps.dtype)) / (1 - s)


def flow_logsnr_range(num_train_timesteps: int = FLOW_TIMESTEPS) -> tuple[float, float]:
    """The log-SNR range a flow model is reported to be trained on: s in
    [1 / T, 1 - 1 / T] for T training timesteps, i.e. alpha in [-2 logit(1 - 1/T),
    -2 logit(1/T)] = [-13.8, 13.8] for T = 1000.

    A flow model has no alphas_cumprod table: it is trained on a continuous density of s
    over (0, 1) (uniform or logit-normal), and diffusers' flow scheduler visits s down to
    1/T. The endpoints themselves are excluded because s = 1 is pure noise (alpha = -inf)
    and s = 0 the clean image (alpha = +inf). The estimators' reference range [-5, 7] lies
    well inside, where every training density puts mass.
    """
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
    edge = torch.tensor(1.0 / num_train_timesteps, dtype=torch.float64)
    return float(logsnr_from_flow_time(1 - edge)), float(logsnr_from_flow_time(edge))


#: how fine-tuning draws the flow time s: "uniform" on (0, 1) (rectified flow's original
#: choice), "logit_normal" (s = sigma(m + sd * n), n ~ N(0, 1): SD3's default, Esser et al. 2024)
FLOW_TIME_DENSITIES = ("uniform", "logit_normal")


def sample_flow_time(n: int, density: str = "logit_normal", *, logit_mean: float = 0.0, logit_std: float = 1.0,
                     generator: torch.Generator | None = None, device=None) -> Tensor:
    """n flow times s in (0, 1) from a training density (:data:`FLOW_TIME_DENSITIES`)."""
    if density not in FLOW_TIME_DENSITIES:
        raise ValueError(f"flow time density must be one of {FLOW_TIME_DENSITIES}, got {density!r}")
    if density == "uniform":
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        eps = 1.0 / FLOW_TIMESTEPS  # keep s off the endpoints, where alpha is infinite
        s = eps + (1 - 2 * eps) * u
    else:
        if not logit_std > 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}")
        s = torch.sigmoid(logit_mean + logit_std * torch.randn(n, generator=generator, dtype=torch.float64))
    return s.to(device) if device is not None else s
