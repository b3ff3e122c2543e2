"""Word-level contrasts of captioned images from one denoiser pass.

For images x with captions c and tracked words / word pairs, the condition columns are

    null, c, c - w (each word w), c - w1 - w2 (each pair)

and the contrasts (reference -> condition) give, with shared draws:

    MI        io(x; c)             null      -> c
    CMI       io(x; w | c - w)     c - w     -> c
    CPID      i1 = io(x; w1 | c - w1 - w2): c - w1 - w2 -> c - w2,  i2 likewise,
              i12 = io(x; w1, w2 | c - w1 - w2): c - w1 - w2 -> c; then pid_from_terms.

Where a word is absent from a caption, "c - w" is c itself, so its gap is exactly zero;
``present`` masks say which images each quantity is defined for.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .conditions import Condition, remove_word, word_spans
from .denoisers.base import Denoiser
from .draws import Draws
from .estimators import Estimate, information_terms, summarize
from .evaluate import denoiser_errors
from .pid import PIDEstimate, pid_from_terms

__all__ = ["ContrastResult", "caption_contrasts", "contains_word", "without_words"]


def contains_word(caption: str, word: str, tokenizer=None) -> bool:
    """Whether ``word`` occurs in ``caption`` as a whole word (the estimator's matching)."""
    try:
        remove_word(caption, word, method="delete", tokenizer=tokenizer)
        return True
    except ValueError:
        return False


def without_words(caption: str, words: Sequence[str], method: str, tokenizer):
    """The caption with each present word removed by ``method`` ("delete", "placeholder",
    "mask"); a single Condition masking all their tokens for "mask"."""
    present = [w for w in words if contains_word(caption, w, tokenizer)]
    if not present:
        return caption
    if method == "mask":
        spans = sorted(sp for w in present for sp in word_spans(caption, w, tokenizer))
        return Condition(caption, tuple(spans))
    for w in present:
        caption = remove_word(caption, w, method=method, tokenizer=tokenizer)
    return caption


@dataclass
class ContrastResult:
    mi: Estimate
    cmi: dict[str, Estimate] = field(default_factory=dict)
    pid: dict[tuple[str, str], PIDEstimate] = field(default_factory=dict)
    present: dict = field(default_factory=dict)  # word or (w1, w2) -> (N,) bool
    n_evals: int = 0


def caption_contrasts(denoiser: Denoiser, x: Tensor, captions: Sequence[str], words: Sequence[str] = (),
                      pairs: Sequence[Sequence[str]] = (), *, tokenizer=None, method: str = "delete",
                      draws: Draws, maps: bool = False, microbatch: int = 256) -> ContrastResult:
    """MI, per-word CMI and per-pair conditional PID (orthogonal estimator, "mmi"
    redundancy) of captioned images, all from one pass over the shared ``draws``."""
    captions = list(captions)
    pairs = [tuple(p) for p in pairs]
    cols = {"null": denoiser.null_conditions(len(captions)), "full": captions}
    for w in dict.fromkeys(list(words) + [w for p in pairs for w in p]):
        cols[f"-{w}"] = [without_words(c, [w], method, tokenizer) for c in captions]
    for w1, w2 in pairs:
        cols[f"-{w1}-{w2}"] = [without_words(c, [w1, w2], method, tokenizer) for c in captions]
    names = list(cols)
    idx = {n: i for i, n in enumerate(names)}
    contrasts = [(idx["null"], idx["full"])] + [(idx[f"-{w}"], idx["full"]) for w in words]
    for w1, w2 in pairs:
        ref = idx[f"-{w1}-{w2}"]
        contrasts += [(ref, idx[f"-{w2}"]), (ref, idx[f"-{w1}"]), (ref, idx["full"])]
    err = denoiser_errors(denoiser, x, [cols[n] for n in names], draws, contrasts,
                          maps="orthogonal" if maps else None, microbatch=microbatch)

    def terms(p):
        return information_terms(err, p, contrasts[p], "orthogonal")

    def map_of(p):
        return err.draw_map(p)

    out = ContrastResult(mi=summarize(terms(0), err.n_evals, err.design, draw_map=map_of(0)), n_evals=err.n_evals)
    for j, w in enumerate(words, start=1):
        out.cmi[w] = summarize(terms(j), err.n_evals, err.design, draw_map=map_of(j))
        out.present[w] = torch.tensor([contains_word(c, w, tokenizer) for c in captions])
    base = 1 + len(words)
    for q, (w1, w2) in enumerate(pairs):
        p = base + 3 * q
        pid_maps = None if err.draw_maps is None else (map_of(p), map_of(p + 1), map_of(p + 2))
        out.pid[(w1, w2)] = pid_from_terms(terms(p), terms(p + 1), terms(p + 2), maps=pid_maps, design=err.design,
                                           n_evals=err.n_evals)
        out.present[(w1, w2)] = torch.tensor([contains_word(c, w1, tokenizer) and contains_word(c, w2, tokenizer)
                                              for c in captions])
    return out
