"""Word maps from cross-attention (DAAM), the baseline the information maps are measured against.

For an image x with caption c and a word w of c, the attention map is

    A_w(j) = sum_t sum_layers mean_heads attn_t(j -> tokens of w)                     (ATT)

where x is noised to ``steps`` log-SNRs spread over the model's trained range (evenly in
sigmoid(alpha), as DDIM's timesteps are; one noise per image, keyed by (seed, image id)),
and each layer's map is resized to x's grid (denoisers/cross_attention.py). Kong et al.
also combine attention with information: the element-wise product of the two maps,
each scaled to its own maximum (:func:`attention_times_information`).

Before a threshold is applied, DAAM scales each word's map to [0, 1] by its minimum and
maximum (castorini/daam, ``daam/heatmap.py``, ``WordHeatMap.expand_as`` without
``absolute``): :func:`daam_normalised`. This matters because a softmax over L tokens gives
every element a floor of attention to every token; scaled to its maximum alone (eq. LOC),
a map whose floor is 0.7 of its peak keeps the whole image at every threshold up to 0.7
(docs/attention_baseline.md: on the bundled world model the floor is 0.6-0.8 of the peak).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..conditions import word_spans
from ..contrasts import contains_word
from ..denoisers.base import AttentionDenoiser
from ..draws import id_generator
from .regeneration import logsnr_grid
from ..logsnr import noise_channel

__all__ = ["attention_logsnrs", "word_attention", "daam_normalised", "attention_times_information"]


def attention_logsnrs(denoiser: AttentionDenoiser, steps: int) -> Tensor:
    """``steps`` log-SNRs inside the model's trained range, evenly spaced in sigmoid(alpha)."""
    if steps < 1:
        raise ValueError(f"attention steps must be >= 1, got {steps}")
    lo, hi = denoiser.alpha_range if denoiser.alpha_range is not None else (-6.0, 6.0)
    grid = logsnr_grid(lo, hi, steps + 1)
    return grid[1:-1] if steps > 1 else grid[[len(grid) // 2]]


def word_attention(denoiser: AttentionDenoiser, x: Tensor, ids: Sequence[int], captions: Sequence[str],
                   words: Sequence[str], *, steps: int = 10, seed: int = 0) -> dict[str, tuple[Tensor, Tensor]]:
    """Eq. ATT for each word: {word: (maps (N, H, W), present (N,) bool)}; a caption without
    the word gets a zero map and present False."""
    ids = [int(i) for i in ids]
    alphas = attention_logsnrs(denoiser, steps).tolist()
    per_image = []
    # One image per call (its noise levels as the batch): the bits do not depend on which
    # images share a batch, so resumed and multi-device runs give the same maps.
    for k, i in enumerate(ids):
        eps = torch.randn(tuple(x.shape[1:]), generator=id_generator(seed, i), dtype=torch.float32).to(x.device, x.dtype)
        a = torch.tensor(alphas, dtype=torch.float64)
        xk = x[k:k + 1].expand(len(alphas), *x.shape[1:])
        att = denoiser.cross_attention(noise_channel(xk, a.to(x.dtype), eps.expand_as(xk)), a,
                                       [captions[k]] * len(alphas))
        per_image.append(att.sum(0))
    total = torch.stack(per_image)
    out = {}
    for w in words:
        present = torch.tensor([contains_word(c, w, denoiser.tokenizer) for c in captions])
        maps = torch.zeros(x.shape[0], *total.shape[-2:], dtype=total.dtype, device=total.device)
        for k, c in enumerate(captions):
            if present[k]:
                for start, end in word_spans(c, w, denoiser.tokenizer):
                    maps[k] += total[k, start:end].sum(0)
        out[w] = (maps, present)
    return out


def daam_normalised(maps: Tensor) -> Tensor:
    """(N, H, W) maps each scaled to [0, 1] by its own minimum and maximum, DAAM's rule before
    thresholding (castorini/daam, daam/heatmap.py, ``expand_as``); a constant map becomes 0."""
    m = maps.detach().double()
    lo = m.flatten(1).min(1).values[:, None, None]
    hi = m.flatten(1).max(1).values[:, None, None]
    return (m - lo) / (hi - lo).clamp_min(1e-300)


def attention_times_information(attention: Tensor, information: Tensor) -> Tensor:
    """The element-wise product of two (N, H, W) maps, each clipped at 0 and scaled to its
    own maximum (the "attention x information" map)."""
    if attention.shape != information.shape:
        raise ValueError(f"maps of shapes {tuple(attention.shape)} and {tuple(information.shape)}")

    def scaled(m: Tensor) -> Tensor:
        m = m.detach().double().clamp_min(0)
        return m / m.flatten(1).max(1).values.clamp_min(1e-300)[:, None, None]

    return scaled(attention) * scaled(information)
