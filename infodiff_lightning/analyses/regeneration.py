"""Regenerating an image from seeded noise with the model family's own sampler.

- DDPM-type models: deterministic DDIM (eta = 0) over any denoiser of the protocol,
  written in log-SNR. From x at alpha_k, with eps_hat = eps_hat(x, alpha_k | c),

      x0_hat = (x - sqrt(sigma(-alpha_k)) eps_hat) / sqrt(sigma(alpha_k))
      x     <- sqrt(sigma(alpha_{k+1})) x0_hat + sqrt(sigma(-alpha_{k+1})) eps_hat          (DDIM)

  over an increasing grid of log-SNRs. On the log-SNRs of a diffusers DDIMScheduler's
  timesteps this is that scheduler's update (tested against it).
- Flow-matching models (SD3, Flux): Euler on the flow path (flow.py), as diffusers'
  FlowMatchEulerDiscreteScheduler steps: from x at flow time s_k,

      v_hat = (eps_hat(x / k, alpha(s_k) | c) - x) / (1 - s_k)     (eq. (F4) inverted)
      x    <- x + (s_{k+1} - s_k) v_hat                                             (Euler)

  over the scheduler's (shifted) sigmas, down to s = 0. The scheduler's first sigma is 1
  (pure noise, alpha = -inf), where eps_hat is not defined; it is taken at the top of the
  model's trained range, 1 - 1/T (x_s differs from the noise by 1/T of the image there).

:func:`regeneration_grid`, :func:`regenerate` and :func:`sampler_name` choose by the model's
parametrisation.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..denoisers.base import Column, Denoiser
from ..denoisers.parametrisation import FlowParametrisation
from ..flow import flow_scale, logsnr_from_flow_time
from ..logsnr import logsnr_from_alphas_cumprod

__all__ = ["logsnr_grid", "ddim_alphas", "ddim_sample", "flow_sigmas", "flow_euler_sample", "regeneration_grid",
           "regenerate", "sampler_name"]


def logsnr_grid(lo: float, hi: float, steps: int) -> Tensor:
    """``steps`` + 1 log-SNRs from ``lo`` (the noise the sampler starts from) to ``hi``,
    evenly spaced in sigma(alpha) = abar (as DDIM's evenly spaced timesteps of a linear
    schedule roughly are)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not hi > lo:
        raise ValueError(f"need hi > lo, got [{lo}, {hi}]")
    s = torch.linspace(torch.sigmoid(torch.tensor(lo, dtype=torch.float64)).item(),
                       torch.sigmoid(torch.tensor(hi, dtype=torch.float64)).item(), steps + 1, dtype=torch.float64)
    return torch.logit(s)


def ddim_alphas(scheduler_config: dict, steps: int) -> Tensor:
    """The log-SNRs of the timesteps a diffusers DDIMScheduler built from a model's
    scheduler config takes in ``steps`` steps (noisiest first): the grid of :func:`ddim_sample`."""
    from diffusers import DDIMScheduler

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ddim = DDIMScheduler.from_config(scheduler_config)
    ddim.set_timesteps(steps)
    return logsnr_from_alphas_cumprod(ddim.alphas_cumprod)[ddim.timesteps.long()]


@torch.no_grad()
def ddim_sample(denoiser: Denoiser, noise: Tensor, conditions: Column, alphas: Tensor,
                clip_range: float | None = None) -> Tensor:
    """Eq. DDIM from x = ``noise`` at ``alphas[0]`` through ``alphas`` (increasing, one
    denoiser call each); returns x0_hat of the last call (DDIM with the final abar = 1).
    ``noise`` (B, ...) is x_T, as diffusers' samplers start from it. ``clip_range``: clip
    x0_hat to [-r, r] at every step (eps unchanged), as diffusers' DDIMScheduler does with
    ``clip_sample`` (pixel-space models are trained on [-1, 1])."""
    alphas = torch.as_tensor(alphas, dtype=torch.float64)
    if alphas.ndim != 1 or alphas.numel() < 2:
        raise ValueError("alphas must be a 1-D grid of at least two log-SNRs")
    if not bool((alphas[1:] > alphas[:-1]).all()):
        raise ValueError("alphas must increase (from noise towards the image)")
    dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
    x = noise.to(dtype)  # diffusers' convention: the sampler starts from the noise itself
    b = noise.shape[0]
    for k in range(alphas.numel()):
        a = alphas[k]
        eps = denoiser.eps_hat(x.to(noise.dtype), torch.full((b,), float(a), dtype=torch.float64), conditions).to(dtype)
        x0_hat = (x - torch.sigmoid(-a).sqrt().to(dtype) * eps) / torch.sigmoid(a).sqrt().to(dtype)
        if clip_range is not None:  # eps is kept, as diffusers' default use_clipped_model_output=False
            x0_hat = x0_hat.clamp(-clip_range, clip_range)
        if k + 1 < alphas.numel():
            a_next = alphas[k + 1]
            x = torch.sigmoid(a_next).sqrt().to(dtype) * x0_hat + torch.sigmoid(-a_next).sqrt().to(dtype) * eps
    return x0_hat


def flow_sigmas(scheduler_config: dict, steps: int) -> Tensor:
    """The flow times a diffusers FlowMatchEulerDiscreteScheduler built from a model's
    scheduler config visits in ``steps`` steps (noisiest first, its shift applied), the
    first clipped to 1 - 1/T (see module doc), followed by the final 0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    sched = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.to(torch.float64).clone()
    top = 1.0 - 1.0 / sched.config.num_train_timesteps
    sigmas[:-1] = sigmas[:-1].clamp(max=top)
    return sigmas


@torch.no_grad()
def flow_euler_sample(denoiser: Denoiser, noise: Tensor, conditions: Column, sigmas: Tensor) -> Tensor:
    """Eq. (Euler) from x = ``noise`` at ``sigmas[0]`` through the decreasing ``sigmas`` (the
    last one 0; one denoiser call per step before it); returns the x at s = 0."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError("sigmas must be a 1-D grid of at least two flow times")
    if not bool((sigmas[1:] < sigmas[:-1]).all()) or float(sigmas[-1]) != 0.0 or not float(sigmas[0]) < 1.0:
        raise ValueError("sigmas must decrease from below 1 to exactly 0 (from noise towards the image)")
    dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
    x = noise.to(dtype)
    b = noise.shape[0]
    for k in range(sigmas.numel() - 1):
        s = sigmas[k]
        alpha = logsnr_from_flow_time(s)
        a = torch.full((b,), float(alpha), dtype=torch.float64)
        eps = denoiser.eps_hat((x / flow_scale(alpha).to(dtype)).to(noise.dtype), a, conditions).to(dtype)
        v = (eps - x) / (1 - s).to(dtype)
        x = x + (sigmas[k + 1] - s).to(dtype) * v
    return x


def sampler_name(denoiser) -> str:
    """The name of the sampler :func:`regenerate` uses for ``denoiser``: "Euler" (flow
    matching) or "DDIM" (DDPM-type), as a report or summary states it."""
    return "Euler" if isinstance(denoiser.parametrisation, FlowParametrisation) else "DDIM"


def regeneration_grid(denoiser, steps: int) -> Tensor:
    """The grid the family's sampler steps over: DDIM log-SNRs (DDPM-type models) or flow
    sigmas (flow-matching models), from the model's own scheduler config."""
    if isinstance(denoiser.parametrisation, FlowParametrisation):
        return flow_sigmas(denoiser.scheduler.config, steps)
    return ddim_alphas(denoiser.scheduler.config, steps)


def regenerate(denoiser, noise: Tensor, conditions: Column, grid: Tensor) -> Tensor:
    """Images (in the model's x) from ``noise`` with the family's sampler over ``grid``
    (:func:`regeneration_grid`); DDIM clips x0_hat when the model's scheduler config sets
    ``clip_sample``."""
    if isinstance(denoiser.parametrisation, FlowParametrisation):
        return flow_euler_sample(denoiser, noise, conditions, grid)
    config = denoiser.scheduler.config
    clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample", False) else None
    return ddim_sample(denoiser, noise, conditions, grid, clip_range=clip)
