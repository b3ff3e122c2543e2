"""The denoiser protocol every model family implements.

A denoiser predicts the noise eps_hat(x_alpha, alpha | c) of eq. (1) in logsnr.py.
Conditions travel in *columns*: one column holds one condition per image, either a
tensor whose leading dimension indexes images (analytic denoisers, class labels) or a
list (prompts). Estimators gather entries of several columns into one micro-batch, so
``eps_hat`` receives a column of exactly B conditions for B noisy inputs.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence, Union, runtime_checkable

import torch
from torch import Tensor

from ..integrate import Piecewise

Column = Union[Tensor, Sequence[Any]]

__all__ = ["Column", "Denoiser", "TextDenoiser", "AttentionDenoiser", "DenoiserBase", "column_len", "take", "concat"]


@runtime_checkable
class Denoiser(Protocol):
    """eps_hat(x_alpha (B, ...), alpha (B,), conditions: Column of B) -> (B, ...).

    ``null_conditions(n)`` is a column of n unconditional entries (empty prompt, null
    class, nothing observed). ``alpha_range`` is the log-SNR range the model was
    trained on (None when any alpha is valid, as for analytic denoisers).
    ``alpha_proposal`` is the log-SNR proposal fitted to the model's integrand
    (proposal.py; read from the model folder's ``logsnr_proposal.json``), or None: the
    estimators then draw from the reference sampler (measure.default_sampler).
    ``default_microbatch`` is how many inputs one eps_hat call takes by default.
    ``encode(images, ids)`` gives the clean x the estimators integrate over (VAE latents
    for latent models; the images themselves otherwise).
    """

    alpha_range: tuple[float, float] | None
    alpha_proposal: Piecewise | None
    default_microbatch: int

    def eps_hat(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor: ...

    def null_conditions(self, n: int) -> Column: ...

    def encode(self, images: Tensor, ids: Sequence[Any] | None = None) -> Tensor: ...


@runtime_checkable
class TextDenoiser(Denoiser, Protocol):
    """A denoiser conditioned on prompts: conditions are prompt strings (or
    :class:`~infodiff_lightning.conditions.Condition`), the null condition is "", and
    ``tokenizer`` decides what a whole word is when words are removed from a prompt
    (None: words are separated by white space and punctuation)."""

    tokenizer: Any


@runtime_checkable
class AttentionDenoiser(TextDenoiser, Protocol):
    """A text denoiser whose cross-attention can be read (the attention baseline of
    localization and intervention): ``cross_attention(x_alpha, alpha, conditions)`` gives
    (B, L, H, W), for each of the L text-encoder positions the attention that each element
    of x pays to it, averaged over heads and summed over the cross-attention layers."""

    def cross_attention(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor: ...


class DenoiserBase:
    """The protocol's defaults: any alpha is valid, no fitted proposal, 4096 inputs per
    call (cheap analytic denoisers), and x is the input as given. Model families override
    what differs."""

    alpha_range: tuple[float, float] | None = None
    alpha_proposal: Piecewise | None = None
    default_microbatch: int = 4096

    def encode(self, images: Tensor, ids: Sequence[Any] | None = None) -> Tensor:
        return images


def column_len(col: Column) -> int:
    return int(col.shape[0]) if isinstance(col, Tensor) else len(col)


def take(col: Column, index: Tensor) -> Column:
    """Entries ``index`` of a column, keeping its kind (tensor or list)."""
    if isinstance(col, Tensor):
        return col[index.to(col.device)]
    return [col[i] for i in index.tolist()]


def concat(cols: Sequence[Column]) -> Column:
    """Concatenate columns of the same kind."""
    if all(isinstance(c, Tensor) for c in cols):
        return torch.cat(list(cols), 0)
    if any(isinstance(c, Tensor) for c in cols):
        raise ValueError("condition columns mix tensors and lists; use one kind for all columns")
    out: list = []
    for c in cols:
        out.extend(c)
    return out
