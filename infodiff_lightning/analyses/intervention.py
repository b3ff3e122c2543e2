"""Prompt intervention: regenerate an image without a word and compare with its information.

The question (Kong et al. 2024, section on interventions): when a word is removed from a
prompt, does the image change where, and as much as, the word's conditional mutual
information says it should? Three pieces, each a plain function:

1. regeneration.py: the family's own deterministic sampler (DDIM for DDPM-type models,
   Euler for flow-matching ones) from seeded noise; the same noise with two prompts gives
   the paired images of an intervention.
2. :func:`image_change`: per image, the mean squared difference of the two images; per
   pixel, the squared difference summed over channels.
3. :func:`pearson` and :func:`bootstrap_pearson`: the correlation of the change with
   the information, across images (image level) or across the pixels of one image
   (pixel level), with a percentile bootstrap interval over the units resampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["image_change", "pearson", "bootstrap_pearson", "bootstrap_mean",
           "Correlation", "change_correlations"]


def image_change(with_word: Tensor, without_word: Tensor, channel_dim: int = 1) -> tuple[Tensor, Tensor]:
    """(per image: mean squared difference (B,), per pixel: squared difference summed over
    channels (B, H, W)) of two batches of images regenerated from the same noise."""
    if with_word.shape != without_word.shape:
        raise ValueError(f"image_change: shapes differ, {tuple(with_word.shape)} vs {tuple(without_word.shape)}")
    sq = (with_word.to(torch.float64) - without_word.to(torch.float64)) ** 2
    return sq.flatten(1).mean(1), sq.sum(channel_dim)


def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson's r along the last axis (NaN where either side is constant)."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    xc, yc = x - x.mean(-1, keepdim=True), y - y.mean(-1, keepdim=True)
    den = (xc.pow(2).sum(-1) * yc.pow(2).sum(-1)).sqrt()
    return torch.where(den > 0, (xc * yc).sum(-1) / torch.where(den > 0, den, torch.ones_like(den)),
                       torch.full_like(den, float("nan")))


@dataclass(frozen=True)
class Correlation:
    """Pearson's r with a percentile bootstrap interval (``level``) and the unit count."""

    r: float
    low: float
    high: float
    n: int
    level: float

    def as_dict(self) -> dict:
        return {"r": self.r, "low": self.low, "high": self.high, "n": self.n, "level": self.level}


def bootstrap_pearson(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor, n_boot: int = 2000,
                      level: float = 0.95, seed: int = 0, groups: Sequence[int] | Tensor | None = None) -> Correlation:
    """Pearson's r of paired values with a percentile bootstrap interval.

    ``groups`` (optional, one id per pair): resample whole groups (the pixels of one image
    are not independent; resampling images keeps that dependence in the interval) and
    average the within-group r, which is then the statistic (pixel level: the mean over
    images of the within-image correlation)."""
    x, y = torch.as_tensor(x, dtype=torch.float64).flatten(), torch.as_tensor(y, dtype=torch.float64).flatten()
    if x.shape != y.shape:
        raise ValueError(f"bootstrap_pearson: {x.numel()} values against {y.numel()}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    g = torch.Generator().manual_seed(seed)
    if groups is None:
        if x.numel() < 3:
            raise ValueError(f"bootstrap_pearson: need at least 3 pairs, got {x.numel()}")
        r = float(pearson(x, y))
        idx = torch.randint(x.numel(), (n_boot, x.numel()), generator=g)
        boot = pearson(x[idx], y[idx])
    else:
        groups = torch.as_tensor(groups).flatten()
        per = torch.stack([pearson(x[groups == i], y[groups == i]) for i in torch.unique(groups)])
        return bootstrap_mean(per[~torch.isnan(per)], n_boot, level, seed)
    return _percentile_interval(r, boot, x.numel(), level)


def bootstrap_mean(values: Sequence[float] | Tensor, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> Correlation:
    """The mean of per-unit correlations (one r per image, say) with a percentile bootstrap
    interval over the units."""
    per = torch.as_tensor(values, dtype=torch.float64).flatten()
    if per.numel() < 2:
        raise ValueError(f"bootstrap_mean: need at least 2 values, got {per.numel()}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    g = torch.Generator().manual_seed(seed)
    boot = per[torch.randint(per.numel(), (n_boot, per.numel()), generator=g)].mean(1)
    return _percentile_interval(float(per.mean()), boot, per.numel(), level)


def _percentile_interval(r: float, boot: Tensor, n: int, level: float) -> Correlation:
    boot = boot[~torch.isnan(boot)]
    if boot.numel() == 0:  # every resample had a constant side: no interval (NaN, written as null)
        return Correlation(r, float("nan"), float("nan"), int(n), level)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(boot, q).tolist()
    return Correlation(r, low, high, int(n), level)


def change_correlations(image: Tensor, pixel: Tensor, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> dict:
    """The correlations of one word (or of words pooled) with the change its removal makes.

    ``image`` (N, 2): per image (information, change); ``pixel`` (M, 1): per image the
    within-image r of the map and the change map, where defined. Returns {"images",
    "mean_cmi", "mean_change", "image_level": Pearson's r across images with a bootstrap
    interval (None below 3 images), "pixel_level": the mean within-image r with a bootstrap
    interval over images (None below 2)}."""
    out = {"images": int(image.shape[0]), "mean_cmi": float(image[:, 0].mean()) if image.numel() else None,
           "mean_change": float(image[:, 1].mean()) if image.numel() else None}
    out["image_level"] = bootstrap_pearson(image[:, 0], image[:, 1], n_boot, level,
                                           seed).as_dict() if image.shape[0] >= 3 else None
    out["pixel_level"] = bootstrap_mean(pixel[:, 0], n_boot, level, seed).as_dict() if pixel.shape[0] >= 2 else None
    return out
