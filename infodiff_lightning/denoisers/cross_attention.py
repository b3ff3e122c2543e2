"""Reading a UNet's cross-attention (the baseline the information maps are compared with).

DAAM-style aggregation (Tang et al. 2023): every cross-attention layer of the UNet maps
each element of its feature grid to a distribution over the L text tokens; averaged over
heads, resized to x's spatial size and summed over layers, that gives one (L, H, W)
attention map per input. :class:`CrossAttentionRecorder` is a diffusers attention
processor that keeps those distributions while computing the layer exactly as the
classic ``AttnProcessor`` does (the explicit softmax(QK^T/sqrt(d)) it records, instead
of the fused kernel); :func:`recorded_cross_attention` installs it on the
cross-attention layers for one forward pass and puts the model's own processors back.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor
from torch import Tensor

__all__ = ["CrossAttentionRecorder", "recorded_cross_attention", "summed_attention"]


class CrossAttentionRecorder(AttnProcessor):
    """AttnProcessor that also keeps each call's attention probabilities, averaged over
    heads: (B, Q, K) per call, in call order."""

    def __init__(self):
        super().__init__()
        self.probs: list[Tensor] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        scores = attn.get_attention_scores

        def keep(query, key, mask=None):
            probs = scores(query, key, mask)
            self.probs.append(probs.reshape(-1, attn.heads, *probs.shape[1:]).float().mean(1))
            return probs

        # The processor computes softmax(QK^T) through attn.get_attention_scores; reading it
        # there keeps the layer's arithmetic the classic processor's, bit for bit.
        attn.get_attention_scores = keep
        try:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        finally:
            del attn.get_attention_scores  # the class's method again


def _cross_attention_names(unet) -> list[str]:
    names = []
    for name in unet.attn_processors:
        module = unet.get_submodule(name[: -len(".processor")])
        if getattr(module, "is_cross_attention", False):
            names.append(name)
    return names


def _to_grid(probs: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, Q, K) probabilities of a Q-element feature grid -> (B, K, H, W) at ``size``."""
    b, q, k = probs.shape
    h, w = size
    scale = math.sqrt(h * w / q)  # the layer's grid is the input's, downsampled by `scale`
    gh = max(1, round(h / scale))
    gw = q // gh
    if gh * gw != q:
        raise ValueError(f"a cross-attention layer has {q} queries, not a grid of the input's aspect {h}x{w}")
    grid = probs.transpose(1, 2).reshape(b, k, gh, gw)
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False) if (gh, gw) != size else grid


@contextlib.contextmanager
def recorded_cross_attention(unet) -> Iterator[CrossAttentionRecorder]:
    """Within the block, the UNet's cross-attention layers record their attention (the
    other processors stay); the model's own processors are restored on exit."""
    names = _cross_attention_names(unet)
    if not names:
        raise ValueError("this UNet has no cross-attention layers to read")
    original = unet.attn_processors
    recorder = CrossAttentionRecorder()
    unet.set_attn_processor({name: recorder if name in names else proc for name, proc in original.items()})
    try:
        yield recorder
    finally:
        unet.set_attn_processor(original)


def summed_attention(recorder: CrossAttentionRecorder, size: tuple[int, int]) -> Tensor:
    """(B, K, H, W): the recorded layers' maps resized to ``size`` and summed."""
    if not recorder.probs:
        raise ValueError("no cross-attention was recorded")
    return torch.stack([_to_grid(p, size) for p in recorder.probs]).sum(0)
