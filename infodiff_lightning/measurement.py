"""What to measure on captioned images, how, and the metrics that collect it.

Every job that measures captioned images (the fine-tuning monitor, the caption
analysis, later jobs) goes through the same three steps:

1. :class:`MeasurementSpec`: the validated description of what to measure (words,
   pairs, how a word is removed, draws, seed, maps, micro-batch);
2. :func:`measure_captions`: images -> x (the denoiser's ``encode``) -> draws keyed by
   image id -> one pass of :func:`~infodiff_lightning.contrasts.caption_contrasts`;
3. :class:`CaptionMetrics`: one torchmetric per tag, updated with the images each
   quantity is defined for, reduced across processes once per metric, and returned as
   ``{tag: {"mean", "stderr", "images"}}`` (PID terms under "<tag>/<term>").

:func:`per_image_rows` gives the per-image records and :func:`scalars` the logged
scalars (``info/<tag>/value`` and ``info/<tag>/stderr``) from the same tags.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from .conditions import REMOVAL_METHODS
from .contrasts import ContrastResult, caption_contrasts, cmi_tag, contains_word, mi_tag, pid_tag
from .denoisers.base import TextDenoiser
from .estimate import Estimate
from .adaptive import Precision
from .measure import DrawSpec
from .metrics import PartialInformation, PointwiseInformation
from .pid import PID_TERMS

__all__ = ["MeasurementSpec", "measure_captions", "CaptionMetrics", "per_image_rows", "scalars", "saved_number"]


@dataclass(frozen=True)
class MeasurementSpec:
    """What to measure on each captioned image.

    Args:
        words: words whose CMI io(x; w | caption without w) is measured.
        pairs: word pairs whose conditional PID (given the rest of the caption) is measured.
        condition: how a word is removed: "delete", "placeholder" or "mask".
        n_draws: (alpha, eps) draws per image (>= 2, for a standard error); with a
            target, the draws of each round (the first included).
        seed: with the image id, keys each image's draws (the same on any rank or batch).
        maps: also compute per-pixel maps.
        microbatch: denoiser inputs per call (None: the denoiser's default).
        target_stderr, target_relative: adaptive precision (adaptive.py): each image draws
            rounds of ``n_draws`` until every quantity's standard error is at most
            ``target_stderr`` nats or ``target_relative`` times its |value|, or
            ``max_draws`` is reached. None (both): a fixed ``n_draws`` per image. The
            quantities watched are MI (when measured), each CMI and the three informations
            of each PID (its terms' errors follow from theirs).
        max_draws: the most draws an image takes under a target.
        mi: also measure the caption MI io(x; caption). False: no null-prompt column is
            evaluated (one denoiser input fewer per image and draw), the MI is neither
            measured nor watched, and it has no tag, metric or per-image column; the other
            quantities come from the same draws and columns as with it.
    """

    words: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()
    condition: str = "delete"
    n_draws: int = 32
    seed: int = 0
    maps: bool = True
    microbatch: int | None = None
    target_stderr: float | None = None
    target_relative: float | None = None
    max_draws: int = 256
    mi: bool = True

    def __post_init__(self):
        words = tuple(str(w) for w in self.words)
        pairs = tuple(tuple(str(w) for w in p) for p in self.pairs)
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "pairs", pairs)
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"pairs must be pairs of words, got {[list(p) for p in pairs]}")
        for w in words + tuple(w for p in pairs for w in p):
            # a phrase is measured as one unit ("dining table": COCO-IT's multi-word categories);
            # spaces only between its words, so that it matches the caption as written
            if not w.strip() or w != " ".join(w.split()):
                raise ValueError(f"words must be words or phrases (words separated by single spaces), got {w!r}")
        if self.condition not in REMOVAL_METHODS:
            raise ValueError(f"condition must be one of {', '.join(REMOVAL_METHODS)}, got {self.condition!r}")
        if self.n_draws < 2:
            raise ValueError(f"n_draws must be >= 2 for a standard error, got {self.n_draws}")
        if self.microbatch is not None and self.microbatch < 1:
            raise ValueError(f"microbatch must be >= 1 (or null for the model's default), got {self.microbatch}")
        if not (self.mi or words or pairs):
            raise ValueError("nothing to measure: mi is off and no words or pairs are given")
        self.precision  # validates the target options now, with their names

    @property
    def precision(self) -> Precision | None:
        """The adaptive precision asked for, or None for a fixed ``n_draws``."""
        if self.target_stderr is None and self.target_relative is None:
            return None
        try:
            return Precision(self.target_stderr, self.target_relative, self.n_draws, self.n_draws, self.max_draws)
        except ValueError as e:
            raise ValueError(f"target_stderr / target_relative / max_draws: {e}") from None

    @property
    def tags(self) -> list[str]:
        """The tags measured, in the order they are reduced (every rank the same)."""
        return ([mi_tag()] if self.mi else []) + [cmi_tag(w) for w in self.words] + [pid_tag(*p) for p in self.pairs]

    def check_captions(self, captions: Sequence[str], tokenizer: Any, what: str = "captions") -> None:
        """Raise a ValueError naming the word (or pair) that occurs in none of ``captions``:
        its information would be measured on no image."""
        for w in dict.fromkeys(self.words + tuple(w for p in self.pairs for w in p)):
            if not any(contains_word(c, w, tokenizer) for c in captions):
                option = "words" if w in self.words else "pairs"
                raise ValueError(f"{option}: the word {w!r} occurs in none of the {len(captions)} {what}")
        for w1, w2 in self.pairs:
            if not any(contains_word(c, w1, tokenizer) and contains_word(c, w2, tokenizer) for c in captions):
                raise ValueError(f"pairs: [{w1}, {w2}]: none of the {len(captions)} {what} contains both words")


def measure_captions(denoiser: TextDenoiser, images: Tensor, ids: Sequence[int], captions: Sequence[str],
                     spec: MeasurementSpec, where: Mapping[str, Sequence[bool]] | None = None) -> ContrastResult:
    """MI (unless ``spec.mi`` is False), CMI and PID of ``spec`` for captioned images:
    x = denoiser.encode(images), draws keyed by (spec.seed, image id), one
    :func:`caption_contrasts` pass. ``where`` ({tag: [bool per image]}): measure a
    quantity only on the images it marks (the others cost no denoiser input for it); an
    image's numbers do not depend on which other images or quantities share the pass."""
    ids = [int(i) for i in ids]
    x = denoiser.encode(images, ids=ids)
    return caption_contrasts(denoiser, x, captions, spec.words, spec.pairs, method=spec.condition, ids=ids,
                             draws=DrawSpec(spec.n_draws, spec.seed), maps=spec.maps, microbatch=spec.microbatch,
                             precision=spec.precision, mi=spec.mi, where=where)


class CaptionMetrics(torch.nn.Module):
    """One torchmetric per tag of a :class:`MeasurementSpec` (a module, so it follows the
    device of the module that holds it).

    ``update(result, ids)`` adds the images each quantity is defined for (its ``present``
    mask), with each image's own standard error and id (values are reduced in id order,
    so any number of processes gives the same bits); ``compute()`` is a collective (every
    rank must call it) and returns ``{tag: {"mean", "stderr", "images"}}`` with PID terms
    under "<tag>/<term>"; a tag that no image had is left out.
    """

    def __init__(self, spec: MeasurementSpec):
        super().__init__()
        self.tags = spec.tags
        metrics = {mi_tag(): PointwiseInformation()} if spec.mi else {}
        metrics.update({cmi_tag(w): PointwiseInformation() for w in spec.words})
        metrics.update({pid_tag(*p): PartialInformation() for p in spec.pairs})
        self.metrics = torch.nn.ModuleDict(metrics)

    def update(self, result: ContrastResult, ids: Sequence[int]) -> None:
        """Add a batch's results; ``ids`` (one per image) fix the order of the reduction."""
        ids = torch.as_tensor([int(i) for i in ids], dtype=torch.long)
        for m in result.measured():
            has = m.present.to(torch.bool)
            if not bool(has.any()):
                continue
            est = m.estimate
            if isinstance(est, Estimate):
                self.metrics[m.tag].update(Estimate(est.value[has], est.stderr[has], est.n_evals), ids=ids[has])
            else:  # the MMI PID of caption_contrasts: per-image terms with their own errors
                self.metrics[m.tag].update(est.values()[has], est.stderrs()[has], ids=ids[has])

    def replay(self, records: Sequence[dict]) -> None:
        """Add per-image records of :func:`per_image_rows` (saved by an earlier run) as if
        their images had been measured now."""
        for tag, metric in self.metrics.items():
            if isinstance(metric, PartialInformation):
                names = [f"{tag}/{t}" for t in PID_TERMS]
                rows = [r for r in records if names[0] in r]
                if rows:
                    values = torch.tensor([[r[n] for n in names] for r in rows], dtype=torch.float64)
                    stderrs = torch.tensor([[saved_number(r[f"{n}_stderr"]) for n in names] for r in rows],
                                           dtype=torch.float64)
                    metric.update(values, stderrs, ids=[r["id"] for r in rows])
            else:
                rows = [r for r in records if tag in r]
                if rows:
                    values = torch.tensor([r[tag] for r in rows], dtype=torch.float64)
                    stderrs = torch.tensor([saved_number(r[f"{tag}_stderr"]) for r in rows], dtype=torch.float64)
                    metric.update(Estimate(values, stderrs, 0), ids=[r["id"] for r in rows])

    def compute(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for tag in self.tags:  # every rank, the same order: each compute() is one synchronisation
            metric = self.metrics[tag]
            try:
                r = metric.compute()
            except ValueError:  # no image had this word: the synced count is zero on every rank
                continue
            if isinstance(metric, PartialInformation):
                for term in PID_TERMS:
                    out[f"{tag}/{term}"] = _entry(r[term], r[f"{term}_stderr"], r["count"])
            else:
                out[tag] = _entry(r["mean"], r["stderr"], r["count"])
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


#: Why a standard error can be undefined (written beside the null it becomes in JSON).
UNDEFINED_STDERR = ("undefined: a single image whose own Monte-Carlo error is unknown "
                    "(grid draws have no sampling error to estimate)")


def _entry(mean, stderr, count) -> dict:
    """A summary entry; an undefined standard error says why."""
    entry = {"mean": float(mean), "stderr": float(stderr), "images": int(count)}
    if not math.isfinite(entry["stderr"]):
        entry["stderr_note"] = UNDEFINED_STDERR
    return entry


def saved_number(value) -> float:
    """A saved number: JSON null (an undefined standard error) reads back as NaN."""
    return math.nan if value is None else float(value)


def per_image_rows(result: ContrastResult, ids: Sequence[int], captions: Sequence[str]) -> list[dict]:
    """One record per image: id, caption, the draws it took, and "<tag>" / "<tag>_stderr"
    for each quantity defined for it (PID terms as "<tag>/<term>")."""
    rows = [{"id": int(i), "caption": c, "draws": int(d)} for i, c, d in zip(ids, captions, result.draws)]
    for m in result.measured():
        if isinstance(m.estimate, Estimate):
            columns = {m.tag: (m.estimate.value, m.estimate.stderr)}
        else:
            columns = {f"{m.tag}/{t}": (e.value, e.stderr) for t, e in zip(PID_TERMS, m.estimate.terms())}
        for k, row in enumerate(rows):
            if bool(m.present[k]):
                for name, (value, stderr) in columns.items():
                    row[name], row[f"{name}_stderr"] = float(value[k]), float(stderr[k])
    return rows


def scalars(summary: dict[str, dict[str, float]], prefix: str = "info") -> dict[str, float]:
    """The logged scalars of a :meth:`CaptionMetrics.compute` summary:
    "<prefix>/<tag>/value" and "<prefix>/<tag>/stderr"."""
    out = {}
    for tag, r in summary.items():
        out[f"{prefix}/{tag}/value"] = r["mean"]
        out[f"{prefix}/{tag}/stderr"] = r["stderr"]
    return out
