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
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..measurement import CaptionMetrics, measure_captions

__all__ = ["map_to_mask", "iou", "best_threshold", "select_threshold", "miou_at", "choose_threshold", "mean_iou", "whole_image_iou", "THRESHOLDS", "WordMaps",
           "collect_word_maps", "localization"]

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


def best_threshold(mean_ious: Sequence[float] | Tensor) -> int:
    """The index of the threshold with the highest mean IoU (the first of equal ones): the
    one rule by which a threshold is chosen, by the job and by :func:`localization`."""
    scores = torch.as_tensor(mean_ious, dtype=torch.float64).reshape(-1)
    if scores.numel() == 0:
        raise ValueError("best_threshold: no mean IoU to choose from")
    return int(torch.argmax(scores))


def select_threshold(selection_mean_ious: Sequence[float] | Tensor, selection_rows: int,
                     given: float | None = None, thresholds: Sequence[float] = THRESHOLDS) -> tuple[int, str]:
    """(index into ``thresholds``, what it was chosen on): ``given`` as it is, or the
    :func:`best_threshold` of the mean IoUs over ``selection_rows`` rows of a split that is
    not the one reported."""
    if given is not None:
        return list(thresholds).index(given), "given"
    if selection_rows == 0:
        raise ValueError("no selection row was measured: the threshold cannot be chosen")
    return best_threshold(selection_mean_ious), f"{selection_rows} selection rows"


def miou_at(mean_ious: Tensor, stderrs: Tensor, index: int) -> dict:
    """{"miou", "stderr", "miou_swept_on_eval"}: mean IoU (and its standard error) at the
    chosen threshold, and the best over every threshold on the same rows (what the reference
    papers report; optimistic, as that threshold has seen the answers)."""
    return {"miou": float(mean_ious[index]), "stderr": float(stderrs[index]),
            "miou_swept_on_eval": float(mean_ious.max())}


def choose_threshold(maps: Tensor, masks: Tensor, thresholds: Sequence[float] = THRESHOLDS) -> float:
    """The threshold with the highest mean IoU on (maps, masks): use a split that is not
    the one reported."""
    if maps.shape[0] == 0:
        raise ValueError("choose_threshold: no maps")
    index, _ = select_threshold([mean_iou(maps, masks, t)[0] for t in thresholds], int(maps.shape[0]),
                                thresholds=thresholds)
    return float(thresholds[index])


def whole_image_iou(masks: Tensor) -> tuple[float, float]:
    """Mean IoU (and standard error) of predicting every pixel: each mask's area fraction."""
    values = masks.bool().flatten(1).double().mean(1)
    n = values.numel()
    return float(values.mean()), float(values.std() / math.sqrt(n)) if n > 1 else math.nan


@dataclass
class WordMaps:
    """Per-word CMI maps of the images that contain the word, with their true masks, and
    the measurement summary of the same images (:class:`~infodiff_lightning.measurement.CaptionMetrics`)."""

    maps: dict[str, list[Tensor]] = field(default_factory=dict)
    masks: dict[str, list[Tensor]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    def stacked(self, words: Iterable[str]) -> tuple[Tensor, Tensor]:
        """(maps, masks) of ``words`` pooled, each (N, H, W); N may be 0."""
        maps = [m for w in words for m in self.maps.get(w, [])]
        masks = [m for w in words for m in self.masks.get(w, [])]
        if not maps:
            return torch.zeros(0, 1, 1), torch.zeros(0, 1, 1, dtype=torch.bool)
        return torch.stack(maps), torch.stack(masks)


def collect_word_maps(denoiser, items: Iterable[dict], true_masks: Callable[[dict], dict[str, Tensor]],
                      spec, batch_size: int = 16, progress: str | None = None) -> WordMaps:
    """Measure captioned ``items`` ({"id", "image", "caption"}) through the shared path
    (measure_captions, CaptionMetrics) with ``spec`` (maps on) and keep, for each word of
    ``spec`` that an item's caption contains and that has a true mask
    (``true_masks(item)``), the item's CMI map and mask. ``progress``: show a progress bar
    over the items with this description."""
    if not spec.maps:
        raise ValueError("collect_word_maps needs a MeasurementSpec with maps=True")
    metrics = CaptionMetrics(spec)
    out = WordMaps({w: [] for w in spec.words}, {w: [] for w in spec.words})
    items = list(items)
    bar = tqdm(total=len(items), desc=progress, unit="image", disable=progress is None)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        ids = [it["id"] for it in chunk]
        res = measure_captions(denoiser, torch.stack([it["image"] for it in chunk]), ids,
                               [it["caption"] for it in chunk], spec)
        metrics.update(res, ids)
        for k, item in enumerate(chunk):
            truth = true_masks(item)
            for w in spec.words:
                if bool(res.present[w][k]) and w in truth:
                    # Copies, not views: a view of row k keeps the whole batch's map (and
                    # per-draw state) alive for as long as the collection lives.
                    out.maps[w].append(res.cmi[w].map[k].detach().cpu().clone())
                    out.masks[w].append(truth[w].detach().cpu().clone())
        bar.update(len(chunk))
    bar.close()
    out.summary = metrics.compute()
    return out


def localization(selection: WordMaps, heldout: WordMaps, words: Sequence[str]) -> dict:
    """Eq. LOC for a group of words: the threshold chosen on ``selection``, mean IoU
    (with its standard error) on ``heldout``, and the whole-image baseline there.
    {"threshold", "miou": (mean, se), "whole_image": (mean, se), "maps": N}."""
    sel_maps, sel_masks = selection.stacked(words)
    maps, masks = heldout.stacked(words)
    if maps.shape[0] == 0 or sel_maps.shape[0] == 0:
        raise ValueError(f"localization: no image of the selection or held-out split contains {', '.join(words)}")
    tau = choose_threshold(sel_maps, sel_masks)
    return {"threshold": tau, "miou": mean_iou(maps, masks, tau), "whole_image": whole_image_iou(masks),
            "maps": int(maps.shape[0])}
