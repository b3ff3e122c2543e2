"""How a diffusers model's input, timestep and output relate to channel (1).

Two parametrisations cover every family the adapters load:

- :class:`DDPMParametrisation`: a discrete DDPM-type schedule with the table abar_t
  (``alphas_cumprod``). x_alpha of eq. (1) *is* the model's x_t when abar = sigma(alpha),
  so the input passes unchanged, alpha maps to a continuous timestep by interpolating
  the log-SNR table (logsnr.py), and the output converts to eps_hat by the prediction
  type (prediction.py). SD 1.x/2.x, SDXL, pixel and class-conditional UNets.
- :class:`FlowParametrisation`: rectified flow (flow.py): the input is k(alpha) x_alpha
  at flow time s(alpha), the timestep is ``timestep_scale`` s, and the velocity output
  converts to eps_hat by eq. (F4). SD3 and Flux.

Each also draws the noisy training inputs and targets of its own loss
(:meth:`training_draw`), so that a fine-tuner and the estimators share one definition of
the model's parametrisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..flow import (FLOW_TIMESTEPS, eps_from_velocity, flow_channel, flow_logsnr_range, flow_scale, flow_time,
                    logsnr_from_flow_time, sample_flow_time, velocity_target)
from ..logsnr import interpolate_timesteps, logsnr_from_alphas_cumprod, timestep_from_logsnr, trained_logsnr_range
from .prediction import check_prediction_type, eps_from_prediction, prediction_target

__all__ = ["Parametrisation", "DDPMParametrisation", "FlowParametrisation", "TrainingDraw", "parametrisation_of",
           "scheduler_prediction_type"]


@dataclass(frozen=True)
class TrainingDraw:
    """One noisy training batch: the model's input and timestep, the target of its loss
    and the log-SNR alpha of each sample (for loss weights)."""

    x_in: Tensor
    t: Tensor
    target: Tensor
    logsnr: Tensor


@runtime_checkable
class Parametrisation(Protocol):
    """``timesteps(alpha)``: the model's float64 timesteps on alpha's device (the trained
    range checked when alpha is on the CPU); ``scale_input(x_alpha, alpha)``: the model's
    noisy input on x_alpha's device; ``eps_from_output(output, x_in, alpha)`` -> eps_hat; ``alpha_range`` the
    trained log-SNR range; ``prediction_type`` what the model outputs ("epsilon",
    "v_prediction", "sample" or "flow_velocity"); ``training_draw(x0, noise)`` the noisy
    inputs and targets of the model's own loss."""

    alpha_range: tuple[float, float]
    prediction_type: str

    def timesteps(self, alpha: Tensor) -> Tensor: ...

    def scale_input(self, x_alpha: Tensor, alpha: Tensor) -> Tensor: ...

    def eps_from_output(self, output: Tensor, x_in: Tensor, alpha: Tensor) -> Tensor: ...

    def training_draw(self, x0: Tensor, noise: Tensor, generator: torch.Generator | None = None) -> TrainingDraw: ...


class DDPMParametrisation:
    """A DDPM-type table abar_t and a prediction type (see module doc).

    On CPU the log-SNR range is checked when timesteps are computed; on accelerators it is
    not (that would be a host sync): the estimators check their draws beforehand.
    """

    def __init__(self, alphas_cumprod: Tensor, prediction_type: str = "epsilon"):
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        self.alpha_range = trained_logsnr_range(self.alphas_cumprod)
        self.prediction_type = check_prediction_type(prediction_type)
        self._inc_tables: dict[torch.device, Tensor] = {}

    def timesteps(self, alpha: Tensor) -> Tensor:
        """Continuous float64 timesteps t(alpha), on alpha's device."""
        alpha = torch.as_tensor(alpha)
        if alpha.device.type == "cpu":
            return timestep_from_logsnr(alpha, self.alphas_cumprod, out_of_range="error")
        table = self._inc_tables.get(alpha.device)
        if table is None:
            table = logsnr_from_alphas_cumprod(self.alphas_cumprod).flip(0).to(alpha.device)
            self._inc_tables[alpha.device] = table
        return interpolate_timesteps(alpha, table)

    def scale_input(self, x_alpha: Tensor, alpha: Tensor) -> Tensor:
        return x_alpha  # x_alpha is the DDPM x_t itself

    def eps_from_output(self, output: Tensor, x_in: Tensor, alpha: Tensor) -> Tensor:
        return eps_from_prediction(output, x_in, alpha, self.prediction_type)

    def training_draw(self, x0: Tensor, noise: Tensor, generator: torch.Generator | None = None) -> TrainingDraw:
        """t uniform over the table's steps, x_t = sqrt(abar) x0 + sqrt(1 - abar) eps and
        the prediction type's target (eq. (1) at alpha = log(abar / (1 - abar)))."""
        n = x0.shape[0]
        t = torch.randint(0, len(self.alphas_cumprod), (n,), generator=generator).to(x0.device)
        abar = self.alphas_cumprod.to(x0.device)[t]
        a = abar.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = prediction_target(x0, noise, abar.to(x0.dtype), self.prediction_type)
        return TrainingDraw(x_t, t, target, torch.log(abar) - torch.log1p(-abar))


class FlowParametrisation:
    """Rectified flow, eqs. (F1)-(F4) of flow.py.

    ``timestep_scale``: what the model's timestep is per unit of s: 1000 for SD3 (the
    scheduler's ``num_train_timesteps``), 1 for Flux (whose transformer scales s itself).
    ``alpha_range``: :func:`~infodiff_lightning.flow.flow_logsnr_range` of
    ``num_train_timesteps``; outside it the model was never trained.
    ``density``, ``logit_mean``, ``logit_std``: the training density of s
    (:func:`~infodiff_lightning.flow.sample_flow_time`).
    """

    prediction_type = "flow_velocity"

    def __init__(self, num_train_timesteps: int = FLOW_TIMESTEPS, timestep_scale: float | None = None, *,
                 density: str = "logit_normal", logit_mean: float = 0.0, logit_std: float = 1.0):
        self.num_train_timesteps = int(num_train_timesteps)
        self.alpha_range = flow_logsnr_range(self.num_train_timesteps)
        self.timestep_scale = float(self.num_train_timesteps if timestep_scale is None else timestep_scale)
        sample_flow_time(1, density, logit_mean=logit_mean, logit_std=logit_std)  # validates the options
        self.density, self.logit_mean, self.logit_std = density, float(logit_mean), float(logit_std)

    def timesteps(self, alpha: Tensor) -> Tensor:
        """timestep_scale * s(alpha), float64, on alpha's device (checked on CPU)."""
        a = torch.as_tensor(alpha).to(torch.float64)
        if a.device.type == "cpu":
            lo, hi = self.alpha_range
            bad = (a < lo - 1e-9) | (a > hi + 1e-9)
            if bool(bad.any()):
                raise ValueError(f"log-SNR {float(a[bad].flatten()[0]):.4f} is outside the trained range "
                                 f"[{lo:.4f}, {hi:.4f}] of this flow model (s in [1/T, 1 - 1/T])")
        return self.timestep_scale * flow_time(a)

    def scale_input(self, x_alpha: Tensor, alpha: Tensor) -> Tensor:
        """x_s = k(alpha) x_alpha, eq. (F3)."""
        k = flow_scale(torch.as_tensor(alpha, device=x_alpha.device).to(torch.float64))
        return x_alpha * k.reshape(k.shape + (1,) * (x_alpha.ndim - 1)).to(x_alpha.dtype)

    def eps_from_output(self, output: Tensor, x_in: Tensor, alpha: Tensor) -> Tensor:
        s = flow_time(torch.as_tensor(alpha, device=output.device).to(torch.float64))
        return eps_from_velocity(output, x_in, s)

    def training_draw(self, x0: Tensor, noise: Tensor, generator: torch.Generator | None = None) -> TrainingDraw:
        """s from the training density, x_s = (1 - s) x0 + s eps, target v = eps - x0."""
        s = sample_flow_time(x0.shape[0], self.density, logit_mean=self.logit_mean, logit_std=self.logit_std,
                             generator=generator).to(x0.device)
        x_s = flow_channel(x0, s, noise)
        return TrainingDraw(x_s, self.timestep_scale * s, velocity_target(x0, noise), logsnr_from_flow_time(s))


def scheduler_prediction_type(scheduler: Any) -> str:
    """The prediction type in a scheduler's config ("epsilon" when it names none)."""
    config = getattr(scheduler, "config", None)
    if config is None:
        return "epsilon"
    get = config.get if hasattr(config, "get") else (lambda k, d=None: getattr(config, k, d))
    return get("prediction_type", "epsilon") or "epsilon"


def _is_flow_scheduler(scheduler: Any) -> bool:
    return type(scheduler).__name__.startswith("FlowMatch")


def parametrisation_of(scheduler: Any, prediction_type: str | None = None, *,
                       timestep_scale: float | None = None) -> DDPMParametrisation | FlowParametrisation:
    """The parametrisation of a diffusers scheduler (or a 1-D tensor of abar_t): flow for
    the FlowMatch* schedulers, DDPM for any scheduler with ``alphas_cumprod``."""
    if isinstance(scheduler, (DDPMParametrisation, FlowParametrisation)):
        return scheduler
    if isinstance(scheduler, Tensor):
        return DDPMParametrisation(scheduler, prediction_type or "epsilon")
    if _is_flow_scheduler(scheduler):
        if prediction_type not in (None, "flow_velocity"):
            raise ValueError(f"a flow-matching scheduler predicts velocity; prediction_type={prediction_type!r} "
                             "does not apply")
        return FlowParametrisation(int(scheduler.config.num_train_timesteps), timestep_scale)
    table = getattr(scheduler, "alphas_cumprod", None)
    if table is None:
        raise ValueError(f"scheduler {type(scheduler).__name__} has neither an alphas_cumprod table (DDPM-type) nor "
                         "a flow-matching parametrisation; the adapters support those two")
    return DDPMParametrisation(table, prediction_type if prediction_type is not None
                               else scheduler_prediction_type(scheduler))
