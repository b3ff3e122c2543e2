"""Alignment of a set of generated world images, per category, and how fine-tuning arms compare.

Each image of a world prompt is judged by the exact scorer (analyses/world_alignment.py).
The categories are defined from the prompt (issue #28):

==============  ===================  ==================================================
category        prompts              an image counts as right when
==============  ===================  ==================================================
colour          one object           the object is present in the claimed colour
                                     (purity >= PURITY)
shape           one object           the object is present with the claimed shape
                                     (fit >= SHAPE_FIT)
position        one object           an object is read at the claimed slot
binding         two objects          both objects right in colour, shape, position and
                                     size, nothing else drawn (aligned, dot not checked;
                                     two-object captions claim no dot)
aligned         all                  ``aligned`` with the dot checked (the world's
                                     definition)
aligned_no_dot  all                  ``aligned`` with ``check_dot=False``
==============  ===================  ==================================================

A rate is hits / images with its Wilson 95% interval (statistics.accuracy_interval).
Images of one prompt share the prompt, so the arms are compared on the *prompts*: every
arm generates the same prompts from the same noise (keyed by prompt id and candidate), so
per prompt p the arm's rate a_p and the random control's r_p are paired, and

    difference  d = mean_p (a_p - r_p),   SE(d) = sd_p(a_p - r_p) / sqrt(P)              (DIFF)
    recovered   R = (A - Rnd) / (T - Rnd)                                             (REC)

(A, Rnd, T: the mean rates of the arm, the random control and the truth-selected arm over
the prompts of the category), with a percentile bootstrap interval of R over prompts
(the prompts resampled with replacement, the same resample for the three arms).

Diversity of a set of images: the mean pairwise RMS pixel distance (pixels in [-1, 1]),
over all pairs of the set, or within each prompt's images, and the share of distinct
scene readings (read_scene's objects: slot, shape, colour, size, dot).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from .statistics import accuracy_interval
from .world_alignment import judge_reading, parse_prompt

__all__ = ["CATEGORIES", "ONE_OBJECT", "TWO_OBJECTS", "outcomes", "rates", "per_prompt_rates", "difference",
           "recovered", "pairwise_distance", "within_prompt_distance", "distinct_readings", "reading_key"]

ONE_OBJECT = ("colour", "shape", "position")
TWO_OBJECTS = ("binding",)
CATEGORIES = (*ONE_OBJECT, *TWO_OBJECTS, "aligned", "aligned_no_dot")


def outcomes(seen: list, prompt: str) -> dict[str, bool]:
    """The categories that apply to ``prompt`` and whether the image read as ``seen``
    (world_alignment.read_scene) is right in each (module doc)."""
    with_dot = judge_reading(seen, prompt, check_dot=True)
    no_dot = judge_reading(seen, prompt, check_dot=False)
    out = {"aligned": bool(with_dot["aligned"]), "aligned_no_dot": bool(no_dot["aligned"])}
    if len(parse_prompt(prompt)) == 1:
        out.update(colour=bool(with_dot["colour"]), shape=bool(with_dot["shape"]),
                   position=bool(with_dot["position"]))
    else:
        out["binding"] = bool(no_dot["aligned"])
    return out


def rates(items: Sequence[dict]) -> dict[str, dict]:
    """Per category: {"hits", "n", "rate", "low", "high"} (Wilson 95%) over the images;
    ``items``: each image's outcomes (:func:`outcomes`). Categories no image has are left out."""
    out = {}
    for c in CATEGORIES:
        hits = [it[c] for it in items if c in it]
        if hits:
            rate, low, high = accuracy_interval(sum(hits), len(hits))
            out[c] = {"hits": sum(hits), "n": len(hits), "rate": rate, "low": low, "high": high}
    return out


def per_prompt_rates(items: Sequence[dict], prompts: Sequence[int], category: str) -> dict[int, float]:
    """{prompt id: the share of its images right in ``category``} over the prompts it applies to."""
    acc: dict[int, list[bool]] = {}
    for it, p in zip(items, prompts):
        if category in it:
            acc.setdefault(int(p), []).append(bool(it[category]))
    return {p: sum(v) / len(v) for p, v in acc.items()}


def _paired(arm: dict[int, float], ref: dict[int, float]) -> tuple[list[int], Tensor, Tensor]:
    keys = sorted(set(arm) & set(ref))
    if not keys:
        raise ValueError("no prompt is scored in both arms")
    return keys, torch.tensor([arm[k] for k in keys], dtype=torch.float64), \
        torch.tensor([ref[k] for k in keys], dtype=torch.float64)


def difference(arm: dict[int, float], control: dict[int, float]) -> dict:
    """Eq. DIFF: the mean per-prompt difference of rates, its standard error over the
    prompts and how many standard errors it is from 0 (``z``; None when SE is 0)."""
    keys, a, r = _paired(arm, control)
    d = a - r
    se = float(d.std(unbiased=True) / math.sqrt(len(keys))) if len(keys) > 1 else float("nan")
    mean = float(d.mean())
    return {"difference": mean, "stderr": se, "z": mean / se if se > 0 else None, "prompts": len(keys)}


def recovered(arm: dict[int, float], control: dict[int, float], truth: dict[int, float], n_boot: int = 2000,
              seed: int = 0) -> dict:
    """Eq. REC: the share of the truth-selected gain over the control that ``arm`` reaches,
    with a 95% percentile bootstrap interval over prompts (resamples whose truth gain is 0
    are left out and counted). None where the truth gain itself is 0."""
    keys = sorted(set(arm) & set(control) & set(truth))
    if not keys:
        raise ValueError("no prompt is scored in all three arms")
    a, r, t = (torch.tensor([x[k] for k in keys], dtype=torch.float64) for x in (arm, control, truth))
    gain = float(t.mean() - r.mean())
    point = float((a.mean() - r.mean()) / gain) if gain != 0 else None
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(keys), (n_boot, len(keys)), generator=g)
    num = a[idx].mean(1) - r[idx].mean(1)
    den = t[idx].mean(1) - r[idx].mean(1)
    ok = den != 0
    boot = (num[ok] / den[ok]).sort().values
    low = high = None
    if boot.numel() >= 20:
        low, high = float(boot[int(0.025 * (boot.numel() - 1))]), float(boot[int(0.975 * (boot.numel() - 1))])
    return {"recovered": point, "low": low, "high": high, "truth_gain": gain, "arm_gain": float(a.mean() - r.mean()),
            "prompts": len(keys), "resamples": int(ok.sum()), "resamples_without_gain": int((~ok).sum())}


def pairwise_distance(images: Tensor) -> float:
    """The mean RMS pixel distance over all pairs of ``images`` (N, 3, H, W) (NaN for N < 2)."""
    n = images.shape[0]
    if n < 2:
        return float("nan")
    flat = images.reshape(n, -1).double()
    d = torch.cdist(flat, flat) / math.sqrt(flat.shape[1])
    return float(d.sum() / (n * (n - 1)))


def within_prompt_distance(images: Tensor, prompts: Sequence[int]) -> float:
    """The mean over prompts with two or more images of :func:`pairwise_distance` within the prompt."""
    groups: dict[int, list[int]] = {}
    for j, p in enumerate(prompts):
        groups.setdefault(int(p), []).append(j)
    per = [pairwise_distance(images[idx]) for idx in groups.values() if len(idx) > 1]
    return sum(per) / len(per) if per else float("nan")


def reading_key(seen: list) -> tuple:
    """A hashable form of a scene reading: (slot, shape, colour, size, dot) per object, sorted."""
    return tuple(sorted((s.position, s.shape, s.colour, s.size, s.dot) for s in seen))


def distinct_readings(readings: Sequence[tuple]) -> float:
    """The share of distinct readings (:func:`reading_key`) in a set (1: no two images read alike)."""
    return len(set(readings)) / len(readings) if readings else float("nan")
