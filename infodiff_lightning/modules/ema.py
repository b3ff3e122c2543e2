"""An exponential moving average of trained weights, for LightningModules that train.

theta_ema <- decay * theta_ema + (1 - decay) * theta after every optimizer step
(diffusers' EMAModel, with its warm-up of the decay). Lightning's own weight-averaging
callback copies the module when callbacks are set up, before a module that builds its
network from the data (VectorMITrainer) has one; this helper is created by the module
itself once its parameters exist.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch

__all__ = ["EMAWeights"]


class EMAWeights:
    """EMA of ``params``; :meth:`update` after each optimizer step, :meth:`applied` to use it."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        from diffusers.training_utils import EMAModel

        self.model = EMAModel(list(params), decay=decay)
        self.step = 0  # the optimizer step the average last took in

    def update(self, params: Sequence[torch.nn.Parameter], global_step: int, device: torch.device) -> None:
        """Take in the current weights once per optimizer step (a no-op between accumulation steps)."""
        if global_step != self.step:
            self.step = global_step
            self.model.to(device)
            self.model.step(list(params))

    @contextlib.contextmanager
    def applied(self, params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
        """Temporarily swap the averaged weights into ``params``."""
        params = list(params)
        self.model.store(params)
        self.model.copy_to(params)
        try:
            yield
        finally:
            self.model.restore(params)

    def save(self, checkpoint: dict) -> None:
        checkpoint["ema"], checkpoint["ema_step"] = self.model.state_dict(), self.step

    def load(self, checkpoint: dict) -> None:
        if "ema" in checkpoint:
            self.model.load_state_dict(checkpoint["ema"])
        self.step = checkpoint.get("ema_step", 0)
