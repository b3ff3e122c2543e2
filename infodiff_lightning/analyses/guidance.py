"""Classifier-free guidance as a denoiser: the samplers of regeneration.py take it unchanged.

With the conditional and the unconditional (null-condition) predictions of one call,

    eps_w(x, alpha | c) = eps(x, alpha | null) + w (eps(x, alpha | c) - eps(x, alpha | null))      (CFG)

(Ho & Salimans 2022; diffusers' ``guidance_scale``). w = 1 is the plain conditional
prediction, returned as it is (not recomputed through eq. CFG, which would round it
differently). Eq. CFG is linear in eps, so for flow-matching models, whose velocity is
linear in eps at fixed x (regeneration.py, eq. F4), it is the same guidance as on the
velocity.

:class:`GuidedDenoiser` makes both predictions in one call of the wrapped denoiser (the
inputs stacked, conditional first) and hands them to an optional observer, which is how
MI-TUNE's trajectory score (trajectory_score.py) reads the guided trajectory without
extra calls. Everything else (parametrisation, scheduler, ranges, encode) is the wrapped
denoiser's.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..denoisers.base import Column, column_len, concat

__all__ = ["cfg_eps", "GuidedDenoiser", "Observer"]

#: Called once per denoiser call with (alpha (B,), eps_c (B, ...), eps_u (B, ...)).
Observer = Callable[[Tensor, Tensor, Tensor], None]


def cfg_eps(eps_c: Tensor, eps_u: Tensor, scale: float) -> Tensor:
    """Eq. CFG: eps_u + scale (eps_c - eps_u); ``eps_c`` itself at scale 1."""
    if scale == 1.0:
        return eps_c
    return eps_u + scale * (eps_c - eps_u)


class GuidedDenoiser:
    """``denoiser`` under classifier-free guidance of ``scale`` (eq. CFG).

    ``observer`` (optional) sees every call's log-SNRs and both predictions. With
    ``scale`` 1 and no observer the unconditional prediction is not needed and not
    computed (one call of B inputs instead of 2B)."""

    def __init__(self, denoiser, scale: float = 1.0, observer: Observer | None = None):
        scale = float(scale)
        if not scale >= 0 or scale != scale:
            raise ValueError(f"guidance scale must be >= 0 (1: plain conditional), got {scale}")
        self.denoiser, self.scale, self.observer = denoiser, scale, observer

    def __getattr__(self, name: str):
        # parametrisation, scheduler, alpha_range, encode, tokenizer, ...: the wrapped model's
        if name in ("denoiser", "scale", "observer"):
            raise AttributeError(name)
        return getattr(self.denoiser, name)

    def null_conditions(self, n: int) -> Column:
        return self.denoiser.null_conditions(n)

    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor:
        """Eq. CFG for B inputs: one call of the wrapped denoiser on 2B inputs (the B
        conditional ones first), or on B when neither guidance nor an observer needs the
        unconditional prediction."""
        b = int(x_alpha.shape[0])
        if column_len(conditions) != b:
            raise ValueError(f"eps_hat got {b} inputs but {column_len(conditions)} conditions")
        if self.scale == 1.0 and self.observer is None:
            return self.denoiser.eps_hat(x_alpha, alpha, conditions)
        alpha = torch.as_tensor(alpha)
        both = self.denoiser.eps_hat(torch.cat([x_alpha, x_alpha]), torch.cat([alpha, alpha]),
                                     concat([conditions, self.denoiser.null_conditions(b)]))
        eps_c, eps_u = both[:b], both[b:]
        if self.observer is not None:
            self.observer(alpha, eps_c, eps_u)
        return cfg_eps(eps_c, eps_u, self.scale)
