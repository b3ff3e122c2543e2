"""Word-level contrasts of captioned images from one denoiser pass.

For images x with captions c and tracked words / word pairs, the condition columns are

    null, c, c - w (each word w), c - w1 - w2 (each pair)

and the contrasts (reference -> condition) give, with shared draws:

    MI        io(x; c)             null      -> c          (unless mi=False: no null column then)
    CMI       io(x; w | c - w)     c - w     -> c
    CPID      i1 = io(x; w1 | c - w1 - w2): c - w1 - w2 -> c - w2,  i2 likewise,
              i12 = io(x; w1, w2 | c - w1 - w2): c - w1 - w2 -> c; then pid_from_terms.

Where a word is absent from a caption, or lies beyond the text encoder's window (the model
never sees it), "c - w" is c itself, so its gap is exactly zero; each quantity carries a
``present`` mask saying which images it is defined for, and such images are left out of
its averages (never a zero averaged in).

Every quantity has one *tag* ("mi", "cmi/<w>", "pid/<w1>+<w2>"), spelled only here
(:func:`mi_tag`, :func:`cmi_tag`, :func:`pid_tag`); metrics, per-image records, summary
keys and TensorBoard tags are all built from it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence, Union

import torch
from torch import Tensor

from .conditions import Condition, remove_word, shorten, token_window, word_in_window, word_spans
from .denoisers.base import TextDenoiser
from .draws import Draws
from .estimate import Estimate
from .adaptive import Precision, measure_adaptively
from .measure import DrawSpec, Measurement, measure
from .pid import PIDEstimate, pid_from_terms

__all__ = ["Measured", "ContrastResult", "caption_columns", "caption_contrasts", "contains_word", "measurable", "unmeasurable_word",
           "without_words", "mi_tag", "cmi_tag",
           "pid_tag"]


def mi_tag() -> str:
    """Tag of io(x; caption)."""
    return "mi"


def cmi_tag(word: str) -> str:
    """Tag of io(x; word | caption without the word)."""
    return f"cmi/{word}"


def pid_tag(w1: str, w2: str) -> str:
    """Tag of the conditional PID of a word pair; its terms are "<tag>/<term>"."""
    return f"pid/{w1}+{w2}"


def contains_word(caption: str, word: str, tokenizer=None) -> bool:
    """Whether ``word`` occurs in ``caption`` as a whole word (the estimator's matching)."""
    try:
        remove_word(caption, word, method="delete", tokenizer=tokenizer)
        return True
    except ValueError:
        return False


def measurable(caption: str, word: str, tokenizer) -> bool:
    """Whether the model sees ``word`` in ``caption``: it occurs as a whole word, inside the
    text encoder's window (conditions.word_in_window)."""
    if tokenizer is None:
        return contains_word(caption, word)
    return word_in_window(caption, word, tokenizer)


def unmeasurable_word(caption: str, word: str, tokenizer) -> str:
    """Why :func:`measurable` is False for ``word`` in ``caption`` (a failure record's reason)."""
    if not contains_word(caption, word, tokenizer):
        return f"word {word!r} is not in its caption {shorten(caption)}"
    return (f"word {word!r} lies beyond the text encoder's {token_window(tokenizer)}-token window of its caption "
            f"{shorten(caption)}: the model never sees it, so its information cannot be measured")


def without_words(caption: str, words: Sequence[str], method: str, tokenizer):
    """The caption with each measurable word removed by ``method`` ("delete",
    "placeholder", "mask"); a single Condition masking all their tokens for "mask"."""
    return _removed(caption, [w for w in words if measurable(caption, w, tokenizer)], method, tokenizer)


def _removed(caption: str, present: Sequence[str], method: str, tokenizer):
    """:func:`without_words` for words already known to be measurable in ``caption``."""
    if not present:
        return caption
    if method == "mask":
        window = token_window(tokenizer) or 10**9  # spans beyond the window are cut off anyway
        spans = sorted(sp for w in present for sp in word_spans(caption, w, tokenizer) if sp[1] <= window - 1)
        return Condition(caption, tuple(spans))
    for w in present:
        caption = remove_word(caption, w, method=method, tokenizer=tokenizer)
    return caption


@dataclass
class Measured:
    """One measured quantity: its tag, its per-image estimate and where it is defined."""

    tag: str
    estimate: Union[Estimate, PIDEstimate]
    present: Tensor  # (N,) bool


@dataclass
class ContrastResult:
    """MI, per-word CMI and per-pair PID of a batch, keyed by word / pair."""

    mi: Estimate | None = None  # None: the caption MI was not measured (mi=False)
    cmi: dict[str, Estimate] = field(default_factory=dict)
    pid: dict[tuple[str, str], PIDEstimate] = field(default_factory=dict)
    present: dict = field(default_factory=dict)  # word or (w1, w2) -> (N,) bool
    mi_present: Tensor | None = None  # (N,) bool: the images the MI was measured on (None: all)
    n_evals: int = 0
    draws: Tensor | None = None  # (N,) draws each image took

    def measured(self) -> Iterator[Measured]:
        """Every quantity measured, under its tag, in a fixed order (MI, words, pairs)."""
        if self.mi is not None:
            every = torch.ones(self.mi.value.shape[0], dtype=torch.bool)
            yield Measured(mi_tag(), self.mi, every if self.mi_present is None else self.mi_present)
        for w, est in self.cmi.items():
            yield Measured(cmi_tag(w), est, self.present[w])
        for (w1, w2), est in self.pid.items():
            yield Measured(pid_tag(w1, w2), est, self.present[(w1, w2)])


def caption_columns(denoiser: TextDenoiser, captions: Sequence[str], words: Sequence[str] = (),
                    pairs: Sequence[Sequence[str]] = (), method: str = "delete", mi: bool = True,
                    where: Mapping[str, Sequence[bool]] | None = None):
    """The condition columns and named contrasts of MI, per-word CMI and per-pair PID of
    captioned images, and where each quantity is defined: (columns, contrasts, defined)
    with contrasts "mi", ("cmi", w), ("i1"|"i2"|"i12", w1, w2) -> (reference, condition)
    and ``defined`` {tag: [bool per image]}. ``mi`` False: no null column and no "mi"
    contrast (the other columns and contrasts are the same).

    ``where`` ({tag: [bool per image]}, tags of :func:`mi_tag`, :func:`cmi_tag`,
    :func:`pid_tag`): measure a quantity only on the images marked True (a tag left out:
    every image). On an unmarked image the quantity's reference entry is the condition
    itself, so it shares that entry's prediction (evaluate.py): it costs no denoiser input
    and its gap is exactly zero, and it is not defined there."""
    n, tok = len(captions), denoiser.tokenizer
    tags = ([mi_tag()] if mi else []) + [cmi_tag(w) for w in words] + [pid_tag(*p) for p in pairs]
    wanted = {t: [True] * n for t in tags}
    for tag, mask in (where or {}).items():
        if tag not in wanted:
            raise ValueError(f"where: {tag!r} is not a quantity measured here (those are {', '.join(tags)})")
        if len(mask) != n:
            raise ValueError(f"where[{tag!r}] has {len(mask)} entries for {n} images")
        wanted[tag] = [bool(b) for b in mask]
    # whether the model sees each tracked word in each caption: tokenized once, used for the
    # columns and for the masks of where each quantity is defined
    sees = {w: [measurable(c, w, tok) for c in captions] for w in dict.fromkeys(list(words) + [w for p in pairs
                                                                                          for w in p])}
    defined = {mi_tag(): wanted[mi_tag()]} if mi else {}
    defined.update({cmi_tag(w): [a and b for a, b in zip(sees[w], wanted[cmi_tag(w)])] for w in words})
    defined.update({pid_tag(w1, w2): [a and b and c for a, b, c in zip(sees[w1], sees[w2], wanted[pid_tag(w1, w2)])]
                    for w1, w2 in pairs})
    # a word is removed from an image's caption where its CMI, or a PID of a pair holding it, is measured
    removed = {w: [False] * n for w in sees}
    for tag, w in [(cmi_tag(w), w) for w in words] + [(pid_tag(*p), w) for p in pairs for w in p]:
        removed[w] = [r or d for r, d in zip(removed[w], defined[tag])]
    cols = {}
    if mi:
        nulls = denoiser.null_conditions(n)
        cols["null"] = [nulls[i] if defined[mi_tag()][i] else captions[i] for i in range(n)]
    cols["full"] = list(captions)
    for w, r in removed.items():
        cols[f"-{w}"] = [_removed(c, [w] if ri else [], method, tok) for c, ri in zip(captions, r)]
    for w1, w2 in pairs:
        on = defined[pid_tag(w1, w2)]
        cols[f"-{w1}-{w2}"] = [_removed(c, [w1, w2] if on[i] else [], method, tok) for i, c in enumerate(captions)]
    # Each contrast by key: (reference column, condition column).
    contrasts = {"mi": ("null", "full")} if mi else {}
    contrasts.update({("cmi", w): (f"-{w}", "full") for w in words})
    for w1, w2 in pairs:
        ref = f"-{w1}-{w2}"
        contrasts.update({("i1", w1, w2): (ref, f"-{w2}"), ("i2", w1, w2): (ref, f"-{w1}"),
                          ("i12", w1, w2): (ref, "full")})
    return cols, contrasts, defined


def caption_contrasts(denoiser: TextDenoiser, x: Tensor, captions: Sequence[str], words: Sequence[str] = (),
                      pairs: Sequence[Sequence[str]] = (), *, method: str = "delete", draws: Draws | DrawSpec,
                      ids: Sequence[int] | None = None, maps: bool = False,
                      microbatch: int | None = None, precision: Precision | None = None,
                      mi: bool = True, where: Mapping[str, Sequence[bool]] | None = None) -> ContrastResult:
    """MI, per-word CMI and per-pair conditional PID (orthogonal estimator, "mmi"
    redundancy) of captioned images, all from one pass over the shared ``draws`` (a
    :class:`~infodiff_lightning.measure.DrawSpec` keys them by ``ids``). Words are matched
    with the denoiser's tokenizer. With ``precision`` (adaptive.py), each image draws
    rounds of ``draws.n_draws`` until every quantity meets it (``draws`` a DrawSpec, ``ids`` given).
    ``mi`` False: the caption MI is not measured (no null column: N x S fewer denoiser
    inputs, and not watched under ``precision``); ``mi`` of the result is None. ``where``:
    measure each quantity only on the images it marks (:func:`caption_columns`); a
    quantity's ``present`` mask is False elsewhere."""
    captions = list(captions)
    pairs = [tuple(p) for p in pairs]
    if not (mi or words or pairs):
        raise ValueError("caption_contrasts: nothing to measure (mi=False and no words or pairs)")
    cols, contrasts, defined = caption_columns(denoiser, captions, words, pairs, method, mi, where)
    map_kind = "orthogonal" if maps else None
    if precision is None:
        m = measure(denoiser, cols, contrasts, x=x, ids=ids, draws=draws, maps=map_kind, microbatch=microbatch)
        out = _contrast_result(m, words, pairs, mi)
        out.draws = torch.full((len(captions),), m.errors.mse.shape[1], dtype=torch.long)
    else:
        if not isinstance(draws, DrawSpec) or ids is None:
            raise ValueError("caption_contrasts: adaptive precision draws rounds keyed by sample id: give a DrawSpec "
                             "and the images' ids")
        am = measure_adaptively(denoiser, cols, contrasts, precision=precision, ids=ids, seed=draws.seed,
                                sampler=draws.sampler, x=x, maps=map_kind, microbatch=microbatch)
        out = am.per_group(lambda m: _contrast_result(m, words, pairs, mi))
        out.n_evals, out.draws = am.n_evals, am.draws
    if mi:
        out.mi_present = torch.tensor(defined[mi_tag()])
    for w in words:
        out.present[w] = torch.tensor(defined[cmi_tag(w)])
    for w1, w2 in pairs:
        out.present[(w1, w2)] = torch.tensor(defined[pid_tag(w1, w2)])
    return out


def _contrast_result(m: Measurement, words: Sequence[str], pairs: Sequence[tuple[str, str]],
                     mi: bool) -> ContrastResult:
    """MI (when measured), CMI and PID estimates of one measurement of
    :func:`caption_columns`' contrasts (every image with the same draw count)."""
    out = ContrastResult(mi=m.estimate("mi") if mi else None, n_evals=m.n_evals)
    for w in words:
        out.cmi[w] = m.estimate(("cmi", w))
    for w1, w2 in pairs:
        parts = [("i1", w1, w2), ("i2", w1, w2), ("i12", w1, w2)]
        terms = [m.terms(k) for k in parts]
        pid_maps = None if m.errors.draw_maps is None else tuple(m.draw_map(k) for k in parts)
        out.pid[(w1, w2)] = pid_from_terms(*terms, maps=pid_maps, design=m.design, n_evals=m.n_evals)
    return out
