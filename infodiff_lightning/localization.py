"""Localization: how well a word's information map covers the pixels the word describes.

A per-pixel CMI map io_j(x; w | c) (estimators, ``maps=True``) is turned into a mask by
a threshold on the map scaled to its own maximum (so one threshold serves images whose
information differs in size):

    mask_tau(j) = [ map_j / max_k map_k >= tau ]                                  (LOC)

The threshold tau is chosen on a separate split (the one that maximizes mean IoU there)
and then applied to held-out images; a map's IoU with the ground-truth mask is
|pred & true| / |pred | true|. The baseline that knows nothing about where a word is
predicts the whole image: its IoU is the mask's area fraction.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["map_to_mask", "iou", "choose_threshold", "mean_iou", "whole_image_iou", "THRESHOLDS"]

#: The thresholds tried when one is chosen (LOC).
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def map_to_mask(info_map: Tensor, tau: float, size: Sequence[int] | None = None) -> Tensor:
    """(N, H, W) bool masks of eq. LOC from (N, h, w) maps, bilinearly resized to ``size``
    first when given (latent maps are smaller than the image). Negative values count as 0."""
    m = info_map.detach().to(torch.float64)
    if size is not None and tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    m = m.clamp_min(0)
    peak = m.flatten(1).max(1).values.clamp_min(1e-300)
    return m / peak[:, None, None] >= tau


def iou(pred: Tensor, true: Tensor) -> Tensor:
    """(N,) intersection over union of boolean masks (N, H, W); 1 where both are empty."""
    inter = (pred & true).flatten(1).sum(1).double()
    union = (pred | true).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def mean_iou(maps: Tensor, masks: Tensor, tau: float) -> tuple[float, float]:
    """Mean IoU over images at threshold ``tau``, with its standard error (std / sqrt(N))."""
    values = iou(map_to_mask(maps, tau, masks.shape[-2:]), masks.bool())
    n = values.numel()
    se = float(values.std() / math.sqrt(n)) if n > 1 else math.nan
    return float(values.mean()), se


def choose_threshold(maps: Tensor, masks: Tensor, thresholds: Sequence[float] = THRESHOLDS) -> float:
    """The threshold with the highest mean IoU on (maps, masks): use a split that is not
    the one reported."""
    if maps.shape[0] == 0:
        raise ValueError("choose_threshold: no maps")
    scores = [mean_iou(maps, masks, t)[0] for t in thresholds]
    return float(thresholds[max(range(len(scores)), key=scores.__getitem__)])


def whole_image_iou(masks: Tensor) -> tuple[float, float]:
    """Mean IoU (and standard error) of predicting every pixel: each mask's area fraction."""
    values = masks.bool().flatten(1).double().mean(1)
    n = values.numel()
    return float(values.mean()), float(values.std() / math.sqrt(n)) if n > 1 else math.nan
