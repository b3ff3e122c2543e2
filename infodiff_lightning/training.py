"""What the two trainers share (modules/finetune.py and modules/vector_training.py).

- :func:`min_snr_weight`: the Min-SNR loss weight (Hang et al. 2023) of each sample;
- :func:`default_vector_sampler`: the log-SNR distribution vector training draws from,
  which the vector analysis job also uses by default (so measurement looks where
  training spent its effort);
- :func:`adamw_with_schedule`: AdamW and a diffusers learning-rate schedule stepped per
  optimizer step, in the form ``LightningModule.configure_optimizers`` returns.
"""
from __future__ import annotations

from typing import Iterable

import torch

from .integrate import TruncatedLogistic

__all__ = ["min_snr_weight", "default_vector_sampler", "adamw_with_schedule"]


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """The Min-SNR loss weight of each sample, given its snr = abar / (1 - abar).

    min(snr, gamma)/snr (epsilon), min(snr, gamma)/(snr + 1) (v_prediction), min(snr, gamma) (sample).
    At snr = 0 (the last step of a zero-terminal-SNR schedule) the epsilon weight is its
    limit 1, not 0/0 = NaN.
    """
    clipped = snr.clamp(max=gamma)
    if prediction_type == "epsilon":
        return torch.where(snr > 0, clipped / snr, torch.ones_like(snr))
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def default_vector_sampler() -> TruncatedLogistic:
    """Logistic(0, 2) on [-8, 8]: for standardised x, information outside that range is
    negligible unless I(X;Y) is many nats per dimension."""
    return TruncatedLogistic(0.0, 2.0, 4.0, stratified=True)


def adamw_with_schedule(parameters: Iterable[torch.nn.Parameter], learning_rate: float, weight_decay: float,
                        lr_schedule: str, warmup_steps: int, training_steps: int) -> dict:
    """AdamW over ``parameters`` and the diffusers schedule ``lr_schedule`` ("constant",
    "linear", "cosine", ...) with ``warmup_steps`` over ``training_steps`` (at least 1),
    stepped per optimizer step."""
    from diffusers.optimization import get_scheduler  # diffusers is imported when a trainer starts, not with the package

    opt = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    sched = get_scheduler(lr_schedule, opt, num_warmup_steps=warmup_steps, num_training_steps=max(1, training_steps))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
