"""PID studies (DiffusionPID): how a model combines two words, over many images.

For a word pair (w1, w2) and every image whose caption holds both words, the
conditional PID of the image given the rest of the caption (contrasts.py, eq. PID-1 of
pid.py, MMI redundancy):

    i1  = io(x; w1 | c - w1 - w2),  i2 likewise,  i12 = io(x; w1, w2 | c - w1 - w2)
    r = min(i1, i2),  u1 = i1 - r,  u2 = i2 - r,  s = i12 - i1 - i2 + r

per image (image level) and per pixel (the maps). With ``context="none"`` the caption
is first cut to the two words in their caption order ("a red cross on the left" ->
"red cross"): the plain PID of the image with the two words, nothing else said.

Pairs come as a list, or as two word lists whose cross product is studied (for
example occupations x gendered words). The dataset value of a term is its mean over
the images of the pair, with the standard error over images (which holds the draw
noise of each image) and a normal interval; pairs are ranked by one term.

Adaptive precision (adaptive.py): with a target, each image draws rounds of ``n_draws``
until the three informations i1, i2, i12 of every pair measured in its pass meet it (or
``max_draws``); the PID terms' errors follow from theirs. :class:`PairPID` says how many
draws each image took for the pair.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Collection, Mapping, Sequence

import torch
from torch import Tensor

from ..contrasts import measurable, pid_tag
from ..denoisers.base import TextDenoiser
from ..measurement import MeasurementSpec, measure_captions
from ..metrics import PartialInformation
from ..pid import PID_TERMS, PIDEstimate

__all__ = ["CONTEXTS", "study_pairs", "pair_captions", "holds_pair", "measure_pair", "PairPID", "measure_pairs",
           "pid_summary", "pid_table"]

#: What a pair's PID is conditioned on: the rest of the caption, or nothing.
CONTEXTS = ("caption", "none")


def study_pairs(pairs: Sequence[Sequence[str]] = (), lists: Sequence[Sequence[str]] | None = None
                ) -> tuple[tuple[str, str], ...]:
    """The pairs of a study: ``pairs`` as given, then every (a, b) of ``lists[0] x lists[1]``.

    A pair of one word twice, a repeated pair, or ``lists`` that are not two non-empty
    lists is a ValueError naming the option."""
    out = [tuple(str(w) for w in p) for p in pairs]
    if any(len(p) != 2 for p in out):
        raise ValueError(f"pairs must be pairs of words, got {[list(p) for p in pairs]}")
    if lists is not None:
        if len(lists) != 2 or not all(len(part) for part in lists):
            raise ValueError(f"lists must be two non-empty word lists (their cross product is studied), got {lists}")
        out += [(str(a), str(b)) for a in lists[0] for b in lists[1]]
    if not out:
        raise ValueError("give word pairs (pairs) or two word lists (lists) to study")
    for p in out:
        if p[0] == p[1]:
            raise ValueError(f"a pair needs two different words, got {list(p)}")
    repeated = sorted({p for p in out if out.count(p) > 1})
    if repeated:
        raise ValueError(f"pairs studied twice: {[list(p) for p in repeated]}")
    return tuple(out)  # type: ignore[return-value]


def _position(caption: str, word: str) -> int:
    hit = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", caption, flags=re.IGNORECASE)
    return hit.start() if hit else len(caption)


def pair_captions(captions: Sequence[str], pair: tuple[str, str], context: str) -> list[str]:
    """The captions a pair is measured under: as they are ("caption": PID given the rest
    of the caption), or the two words alone in their caption order ("none")."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    if context == "caption":
        return list(captions)
    return [" ".join(sorted(pair, key=lambda w: _position(c, w))) for c in captions]


def holds_pair(caption: str, pair: tuple[str, str], tokenizer) -> bool:
    """Whether both words of ``pair`` occur in ``caption`` where the model sees them (the
    estimator's word matching, inside the text encoder's window: contrasts.measurable)."""
    return measurable(caption, pair[0], tokenizer) and measurable(caption, pair[1], tokenizer)


def measure_pair(denoiser: TextDenoiser, images: Tensor, ids: Sequence[int], captions: Sequence[str],
                 pair: tuple[str, str], *, context: str = "caption", condition: str = "delete", n_draws: int = 32,
                 seed: int = 0, maps: bool = False, microbatch: int | None = None) -> PIDEstimate:
    """Per-image PID of ``pair`` (every caption must hold both words), draws keyed by
    (seed, image id) through the shared measurement path (the caption MI, which the PID
    does not use, is not measured)."""
    missing = [c for c in captions if not holds_pair(c, pair, denoiser.tokenizer)]
    if missing:
        raise ValueError(f"measure_pair: {len(missing)} captions lack a word of {list(pair)}, e.g. {missing[0]!r}")
    spec = MeasurementSpec((), (pair,), condition, n_draws, seed, maps, microbatch, mi=False)
    return measure_captions(denoiser, images, ids, pair_captions(captions, pair, context), spec).pid[pair]


@dataclass
class PairPID:
    """The PID of one pair on the images of a batch whose caption holds both words:
    ``rows`` (their positions in the batch, in batch order), ``values`` and ``stderrs``
    (n, 4) in the order of ``PID_TERMS``, ``maps`` (n, 4, *map_shape) or None, ``draws``
    (n,) the draws each image took for the pair (``n_draws`` without a target)."""

    rows: list[int]
    values: Tensor
    stderrs: Tensor
    maps: Tensor | None
    draws: Tensor


def measure_pairs(denoiser: TextDenoiser, images: Tensor, ids: Sequence[int], captions: Sequence[str],
                  pairs: Sequence[tuple[str, str]], *, context: str = "caption", condition: str = "delete",
                  n_draws: int = 32, seed: int = 0, maps: Collection[tuple[str, str]] = (),
                  microbatch: int | None = None, target_stderr: float | None = None,
                  target_relative: float | None = None,
                  max_draws: int = MeasurementSpec.max_draws) -> dict[tuple[str, str], PairPID]:
    """Per-image PID of every pair of ``pairs`` on the images whose caption holds both of
    its words, draws keyed by (seed, image id); a pair no caption holds is left out.

    ``context="caption"``: every pair of an image is measured in one pass, with shared
    draws (:func:`measure_captions`); images are grouped by the set of pairs their caption
    holds and each group is one pass, so an image costs its own columns only (caption, the
    caption without each of its pair words, without each of its pairs; no null column: the
    caption MI is not measured).
    ``context="none"``: each pair has its own captions (the two words alone), so each
    pair is one pass. The numbers are those of :func:`measure_pair` per pair (the same
    draws; only the micro-batches the denoiser sees differ). ``maps``: the pairs whose
    maps are computed.

    ``target_stderr``, ``target_relative``, ``max_draws``: adaptive precision (as
    :class:`~infodiff_lightning.measurement.MeasurementSpec`, which validates them): each
    image draws rounds of ``n_draws`` until the informations i1, i2, i12 of every pair of
    its pass meet the target. With ``context="caption"`` that is every pair its caption
    holds, so its pairs share its draw count; with ``"none"`` each pair stops on its own."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
    template = MeasurementSpec((), tuple(pairs), condition, n_draws, seed, False, microbatch, target_stderr,
                               target_relative, max_draws, mi=False)
    ids = [int(i) for i in ids]
    held = [tuple(p for p in pairs if holds_pair(c, p, denoiser.tokenizer)) for c in captions]
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    if context == "caption":
        for j, h in enumerate(held):
            if h:
                groups.setdefault(h, []).append(j)
    else:
        for p in pairs:
            rows = [j for j, h in enumerate(held) if p in h]
            if rows:
                groups[(p,)] = rows
    parts: dict[tuple[str, str], list[tuple[list[int], PIDEstimate, Tensor]]] = {}
    for group, rows in groups.items():
        spec = replace(template, pairs=group, maps=any(p in maps for p in group))
        texts = [captions[j] for j in rows]
        if context == "none":
            texts = pair_captions(texts, group[0], context)
        result = measure_captions(denoiser, images[rows], [ids[j] for j in rows], texts, spec)
        for p in group:
            parts.setdefault(p, []).append((rows, result.pid[p], result.draws))
    out = {}
    for p in pairs:
        if p not in parts:
            continue
        rows = [j for r, _, _ in parts[p] for j in r]
        order = sorted(range(len(rows)), key=rows.__getitem__)
        pid_maps = [est.maps() for _, est, _ in parts[p]]
        out[p] = PairPID([rows[k] for k in order], torch.cat([e.values() for _, e, _ in parts[p]])[order],
                         torch.cat([e.stderrs() for _, e, _ in parts[p]])[order],
                         None if any(m is None for m in pid_maps) else torch.cat(pid_maps)[order],
                         torch.cat([d for _, _, d in parts[p]])[order])
    return out


def pid_summary(metrics: Mapping[tuple[str, str], PartialInformation]) -> dict[str, dict]:
    """"<pid tag>/<term>": {"mean", "stderr", "images"} of each pair's metric, in the
    order of ``metrics`` (each compute() is a collective: every rank calls this); a pair
    no image held on any rank is left out."""
    summary = {}
    for pair, metric in metrics.items():
        try:
            r = metric.compute()
        except ValueError:  # no image held this pair on any rank
            continue
        for term in PID_TERMS:
            summary[f"{pid_tag(*pair)}/{term}"] = {"mean": float(r[term]), "stderr": float(r[f"{term}_stderr"]),
                                                   "images": int(r["count"])}
    return summary


def pid_table(summary: dict[str, dict], pairs: Sequence[tuple[str, str]], rank_by: str = "synergy",
              level: float = 0.95) -> list[dict]:
    """One row per measured pair, ranked by the mean of ``rank_by`` (largest first).

    ``summary`` maps "<pid tag>/<term>" to {"mean", "stderr", "images"} (what
    :class:`~infodiff_lightning.measurement.CaptionMetrics` computes); each row holds the
    pair, its images and per term the mean, standard error and the normal ``level``
    interval mean +- z * stderr. Pairs no image held are left out."""
    if rank_by not in PID_TERMS:
        raise ValueError(f"rank_by must be one of {', '.join(PID_TERMS)}, got {rank_by!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    rows = []
    for pair in pairs:
        tag = pid_tag(*pair)
        if f"{tag}/{PID_TERMS[0]}" not in summary:
            continue
        row = {"pair": list(pair), "images": summary[f"{tag}/{PID_TERMS[0]}"]["images"]}
        for term in PID_TERMS:
            e = summary[f"{tag}/{term}"]
            row[term] = {"mean": e["mean"], "stderr": e["stderr"],
                         "interval": [e["mean"] - z * e["stderr"], e["mean"] + z * e["stderr"]]}
        rows.append(row)
    return sorted(rows, key=lambda r: -r[rank_by]["mean"])
