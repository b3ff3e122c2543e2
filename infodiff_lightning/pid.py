"""Partial information decomposition (PID) and conditional PID (CPID) of a diffusion model.

DiffusionPID (Dewan et al., NeurIPS 2024, arXiv 2406.05191) decomposes what two prompt
tokens y1, y2 (the *sources*) tell about an image x (the *target*), optionally given a
context c (the rest of the prompt: CPID). With pointwise informations from the
denoiser (estimators.py, eqs. 5 and 7 of Kong et al. 2024)

    i1 = i(x; y1 [| c]),   i2 = i(x; y2 [| c]),   i12 = i(x; y1, y2 [| c])

and a redundancy measure r = R(x; y1, y2), the four PID terms are

    redundancy   r
    unique       u1 = i1 - r,   u2 = i2 - r                                        (PID-1)
    synergy      s  = i12 - i1 - i2 + r

so that r + u1 + u2 + s = i12 by construction. Two redundancy measures:

* ``"mmi"`` (minimum mutual information, the default): r = min(i1, i2). At image level
  the minimum is taken of the two image-level estimates; for maps it is taken per
  element (pixel), r_j = min(i1_j, i2_j).
* ``"imin"`` (Williams & Beer 2010): r = min_k I(X=x; Y_k), the smaller *specific
  information* of the two sources about this image (see :func:`specific_information`).
  Averaged over x ~ p(x) this is I_min(X; {Y1, Y2}) = sum_x p(x) min_k I(X=x; Y_k).

One denoiser pass evaluates, for every (alpha, eps) draw of an image, the four conditions
ref (null or c), y1, y2, y1+y2 (plus the candidate tokens for ``"imin"``), so every
term is a difference of per-draw terms that share their random numbers. Each term is
the mean of its per-draw terms and its standard error is std(per-draw terms)/sqrt(S).

Note on signs. With the orthogonal estimator i1, i2, i12 >= 0, so r, u1, u2 >= 0 under
"mmi"; the synergy can be negative pointwise (and its maps per pixel). It is reported as
estimated; :func:`clip_synergy_for_display` gives a clipped copy for pictures only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser, column_len
from .draws import Draws
from .estimators import ESTIMATORS, Estimate, _check_alpha_range, make_draws, summarize
from .evaluate import denoiser_errors
from .integrate import AlphaSampler

__all__ = [
    "PID_TERMS", "REDUNDANCY_MEASURES", "PIDEstimate", "pid", "conditional_pid", "pid_from_terms",
    "mmi_redundancy", "specific_information", "imin_redundancy", "clip_synergy_for_display",
]

PID_TERMS = ("redundancy", "unique1", "unique2", "synergy")
REDUNDANCY_MEASURES = ("mmi", "imin")


@dataclass
class PIDEstimate:
    """The four PID terms per image, each an :class:`Estimate` with value (N,), stderr (N,)
    and (for "mmi" with maps) a per-element map (N, *map_shape); plus the three
    informations they are built from. ``extra`` holds what the redundancy measure
    decided: ``side`` (N,) = 0 where source 1 gave the redundancy, 1 where source 2 did;
    for "imin" also ``specific1``/``specific2`` (N,) and ``posterior1``/``posterior2``
    (N, K) over the candidate tokens."""

    redundancy: Estimate
    unique1: Estimate
    unique2: Estimate
    synergy: Estimate
    i1: Estimate
    i2: Estimate
    i12: Estimate
    measure: str = "mmi"
    n_evals: int = 0
    extra: dict = field(default_factory=dict)

    def terms(self) -> tuple[Estimate, Estimate, Estimate, Estimate]:
        """(redundancy, unique1, unique2, synergy), in the order of ``PID_TERMS``."""
        return self.redundancy, self.unique1, self.unique2, self.synergy

    def values(self) -> Tensor:
        """(N, 4) per-image [r, u1, u2, s]."""
        return torch.stack([t.value for t in self.terms()], 1)

    def stderrs(self) -> Tensor:
        """(N, 4) per-image standard errors of [r, u1, u2, s]."""
        return torch.stack([t.stderr for t in self.terms()], 1)

    def maps(self) -> Tensor | None:
        """(N, 4, *map_shape) per-element [r, u1, u2, s] maps, or None without maps."""
        if any(t.map is None for t in self.terms()):
            return None
        return torch.stack([t.map for t in self.terms()], 1)

    def mean(self) -> dict[str, tuple[float, float]]:
        """Dataset-level (mean over images, standard error) of each term and information."""
        names = PID_TERMS + ("i1", "i2", "i12")
        return {name: getattr(self, name).mean() for name in names}


# ---------------------------------------------------------------- redundancy measures
def mmi_redundancy(i1_terms: Tensor, i2_terms: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-mutual-information redundancy from per-draw terms (N, S) of i1 and i2.

    r(x) = min(i1(x), i2(x)) with i_k = mean_s t_k[s]. The per-draw terms of r are those
    of the source with the smaller image-level estimate (ties: source 1), so r, u1, u2
    and s all share the draws. Returns (per-draw terms of r (N, S), side (N,) in {0, 1}).
    """
    side = (i2_terms.mean(1) < i1_terms.mean(1)).long()
    return torch.where(side.bool()[:, None], i2_terms, i1_terms), side


def specific_information(terms: Tensor, prior: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Williams-Beer specific information of a source Y about the image x, from standard
    pointwise-MI terms of K candidate values of Y.

        p(y_k | x) = p(y_k) exp(i(x; y_k)) / sum_l p(y_l) exp(i(x; y_l))            (Bayes)
        I(X=x; Y)  = sum_k p(y_k | x) log( p(y_k | x) / p(y_k) ) = KL( p(Y|x) || p(Y) )   (WB-spec)

    (Williams & Beer 2010, eq. for the specific information I(S=s; A) with the image as
    target S and the token as source A: sum_a p(a|s) [log 1/p(s) - log 1/p(s|a)], which
    equals the KL above because p(s|a)/p(s) = p(a|s)/p(a).) The log-likelihood ratio
    i(x; y_k) = log p(x|y_k) - log p(x) must come from the *standard* estimator (eq. 5):
    the orthogonal one is not a log-likelihood ratio pointwise. A shift common to all
    i(x; y_k) (e.g. the noise of the shared reference condition) cancels in Bayes' rule.

    ``terms``: (N, S, K) per-draw standard terms of i(x; y_k); ``prior``: (K,) or (N, K),
    positive and summing to 1. Returns (I(X=x; Y) (N,), per-draw terms (N, S), posterior
    (N, K)). The per-draw terms are the first-order (delta-method) expansion of the
    specific information around the estimates, whose mean is the estimate itself:
    I + sum_k p(y_k|x) (i_k - sum_l p(y_l|x) i_l) (t_k[s] - i_k); their std/sqrt(S) is the
    standard error.
    """
    if terms.ndim != 3:
        raise ValueError(f"specific_information: terms must be (N, S, K), got {tuple(terms.shape)}")
    n, _, k = terms.shape
    prior = torch.as_tensor(prior, dtype=terms.dtype, device=terms.device)
    if prior.ndim == 1:
        prior = prior.expand(n, -1)
    if prior.shape != (n, k):
        raise ValueError(f"specific_information: prior must be ({k},) or ({n}, {k}) for {k} candidates, "
                         f"got {tuple(prior.shape)}")
    if not bool((prior > 0).all()) or not bool(((prior.sum(-1) - 1).abs() < 1e-6).all()):
        raise ValueError("specific_information: the prior over candidate tokens must be positive and sum to 1 "
                         "(per image); normalise it yourself so that the measure is what you meant")
    log_prior = prior.log()
    i_hat = terms.mean(1)  # (N, K)
    log_post = (log_prior + i_hat).log_softmax(-1)
    post = log_post.exp()
    value = (post * (log_post - log_prior)).sum(-1)
    grad = post * (i_hat - (post * i_hat).sum(-1, keepdim=True))  # d KL / d i_k
    draw_terms = value[:, None] + ((terms - i_hat[:, None, :]) * grad[:, None, :]).sum(-1)
    return value, draw_terms, post


def imin_redundancy(candidate_terms1: Tensor, prior1: Tensor, candidate_terms2: Tensor,
                    prior2: Tensor) -> tuple[Tensor, dict]:
    """Williams-Beer I_min redundancy per image: r(x) = min_k I(X=x; Y_k)   (WB-Imin)

    from the per-draw standard terms (N, S, K_k) of each source's candidate tokens and
    their priors (see :func:`specific_information`). The mean of r(x) over x ~ p(x) is
    I_min(X; {Y1, Y2}) = sum_x p(x) min_k I(X=x; Y_k). Returns (per-draw terms of r
    (N, S) - those of the source with the smaller specific information - and a dict with
    ``side``, ``specific1``, ``specific2``, ``posterior1``, ``posterior2``)."""
    s1, t1, p1 = specific_information(candidate_terms1, prior1)
    s2, t2, p2 = specific_information(candidate_terms2, prior2)
    side = (s2 < s1).long()
    r_terms = torch.where(side.bool()[:, None], t2, t1)
    return r_terms, {"side": side, "specific1": s1, "specific2": s2, "posterior1": p1, "posterior2": p2}


# ---------------------------------------------------------------- the decomposition
def _check_terms(*terms: Tensor) -> None:
    shape = terms[0].shape
    if len(shape) != 2:
        raise ValueError(f"per-draw terms must be (N, S) tensors, got shape {tuple(shape)}")
    for t in terms[1:]:
        if t.shape != shape:
            raise ValueError(f"per-draw terms disagree in shape: {tuple(t.shape)} vs {tuple(shape)}; "
                             "all terms must come from the same images and draws")


def pid_from_terms(i1_terms: Tensor, i2_terms: Tensor, i12_terms: Tensor, *, redundancy: str = "mmi",
                   redundancy_terms: Tensor | None = None, maps: Sequence[Tensor] | None = None,
                   n_evals: int = 0, keep_terms: bool = False, extra: dict | None = None) -> PIDEstimate:
    """The PID (eq. PID-1 of the module docstring) from per-draw information terms.

    ``i1_terms``, ``i2_terms``, ``i12_terms``: (N, S) per-draw terms of i(x;y1), i(x;y2),
    i(x;y1,y2) [| c] computed on the *same* draws (common random numbers). The per-draw
    terms of each PID term are the same linear combination of these as the term itself
    (e.g. s_s = t12_s - t1_s - t2_s + r_s), so each standard error is std/sqrt(S) of a
    difference that shares its noise: e.g. for "mmi" s_s = t12_s - t_max_s, the draws of
    i12 minus those of the source with the larger estimate.

    ``redundancy``: "mmi" (r from the smaller of i1, i2 per image) or "imin", which
    needs ``redundancy_terms`` (N, S) from :func:`imin_redundancy`. ``maps``: optional
    (map1, map2, map12), each (N, *map_shape), the per-element maps of i1, i2, i12; the
    PID maps are then r_j = min(map1_j, map2_j) per element (only for "mmi"), u1_j, u2_j,
    s_j as in PID-1, and r + u1 + u2 + s = map12 element by element. The elementwise
    minimum makes the r map sum to at most the image-level r (a sum of minima is at most
    the minimum of sums), so the u maps sum to at least u1, u2 and the s map to at most s.
    """
    _check_terms(i1_terms, i2_terms, i12_terms)
    extra = dict(extra or {})
    if redundancy == "mmi":
        if redundancy_terms is not None:
            raise ValueError("pid_from_terms: redundancy_terms are only for redundancy='imin' "
                             "('mmi' takes the smaller of i1 and i2 itself)")
        r_terms, side = mmi_redundancy(i1_terms, i2_terms)
        extra.setdefault("side", side)
    elif redundancy == "imin":
        if redundancy_terms is None:
            raise ValueError("pid_from_terms: redundancy='imin' needs redundancy_terms (N, S) from imin_redundancy()")
        _check_terms(i1_terms, redundancy_terms)
        r_terms = redundancy_terms
    else:
        raise ValueError(f"redundancy must be one of {REDUNDANCY_MEASURES}, got {redundancy!r}")

    pid_maps: list[Tensor | None] = [None] * 4
    info_maps: list[Tensor | None] = [None] * 3
    if maps is not None:
        if redundancy != "mmi":
            raise ValueError("PID maps are defined for redundancy='mmi' (an element-wise minimum); I_min is an "
                             "image-level measure: use redundancy='mmi' for maps, or maps=False")
        if len(maps) != 3:
            raise ValueError(f"maps must be (map1, map2, map12), got {len(maps)} maps")
        m1, m2, m12 = maps
        if not (m1.shape == m2.shape == m12.shape) or m1.shape[0] != i1_terms.shape[0]:
            raise ValueError(f"maps of shapes {tuple(m1.shape)}, {tuple(m2.shape)}, {tuple(m12.shape)} must agree "
                             f"and have one row per image ({i1_terms.shape[0]})")
        r_map = torch.minimum(m1, m2)
        pid_maps = [r_map, m1 - r_map, m2 - r_map, m12 - m1 - m2 + r_map]
        info_maps = [m1, m2, m12]

    pid_terms = [r_terms, i1_terms - r_terms, i2_terms - r_terms, i12_terms - i1_terms - i2_terms + r_terms]
    ests = [summarize(t, n_evals, keep_terms, m) for t, m in zip(pid_terms, pid_maps)]
    infos = [summarize(t, n_evals, keep_terms, m) for t, m in zip((i1_terms, i2_terms, i12_terms), info_maps)]
    return PIDEstimate(*ests, *infos, measure=redundancy, n_evals=n_evals, extra=extra)


def _candidate_columns(candidates, n: int, name: str) -> list[Column]:
    if candidates is None or len(candidates) < 1:
        raise ValueError(f"redundancy='imin' needs {name}: a list of K >= 1 condition columns, one per candidate "
                         "value of the source token (each with one entry per image)")
    cols = list(candidates)
    for j, col in enumerate(cols):
        if column_len(col) != n:
            raise ValueError(f"{name}[{j}] has {column_len(col)} entries but x has {n} images")
    return cols


def pid(denoiser: Denoiser, x: Tensor, ref: Column | None, y1: Column, y2: Column, y12: Column, *,
        estimator: str = "orthogonal", redundancy: str = "mmi", maps: bool = False, n_draws: int = 64,
        sampler: AlphaSampler | None = None, generator: torch.Generator | int | None = None,
        draws: Draws | None = None, microbatch: int | None = None, candidates1: Sequence[Column] | None = None,
        prior1: Tensor | None = None, candidates2: Sequence[Column] | None = None, prior2: Tensor | None = None,
        return_terms: bool = False) -> PIDEstimate:
    """PID of image x with sources y1, y2 (CPID when ``ref`` is a context c).

    Columns (one entry per image): ``ref`` the reference condition (None: the null
    condition, i.e. PID; the context c: CPID), ``y1`` = (y1[, c]), ``y2`` = (y2[, c]),
    ``y12`` = (y1, y2[, c]). The pass evaluates all four per (alpha, eps) draw; i1, i2,
    i12 use ``estimator`` ("orthogonal", eq. 7, or "standard", eq. 5) for the pairs
    (ref, y1), (ref, y2), (ref, y12). ``maps=True`` adds per-element maps of the
    estimator's kind and the PID maps of :func:`pid_from_terms` ("mmi" only).

    ``redundancy="imin"`` needs, for each source k, ``candidates{k}``: K_k condition
    columns, candidate j holding the condition with the source's token replaced by its
    j-th candidate value (with the context, for CPID), and ``prior{k}``: (K_k,) or
    (N, K_k) prior over the candidates. Their i(x; y) use the *standard* estimator
    (a log-likelihood ratio is needed for Bayes' rule) relative to ``ref``, computed in the
    same pass with the same draws. See :func:`specific_information` for the formula.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if redundancy not in REDUNDANCY_MEASURES:
        raise ValueError(f"redundancy must be one of {REDUNDANCY_MEASURES}, got {redundancy!r}")
    if maps and redundancy != "mmi":
        raise ValueError("PID maps are defined for redundancy='mmi' (an element-wise minimum); I_min is an "
                         "image-level measure: use redundancy='mmi' for maps, or maps=False")
    n = int(x.shape[0])
    columns: list[Column] = [denoiser.null_conditions(n) if ref is None else ref, y1, y2, y12]
    if redundancy == "imin":
        c1 = _candidate_columns(candidates1, n, "candidates1")
        c2 = _candidate_columns(candidates2, n, "candidates2")
        if prior1 is None or prior2 is None:
            raise ValueError("redundancy='imin' needs prior1 and prior2: the prior over each source's candidates")
        columns += c1 + c2
    elif any(c is not None for c in (candidates1, candidates2, prior1, prior2)):
        raise ValueError("candidates and priors are used only by redundancy='imin'; pass redundancy='imin' "
                         "or leave them out")
    if draws is None:
        draws = make_draws(denoiser, x, n_draws, sampler, generator)
    _check_alpha_range(denoiser, draws)
    pairs = [(0, 1), (0, 2), (0, 3)]
    err = denoiser_errors(denoiser, x, columns, draws, pairs, maps=estimator if maps else None,
                          microbatch=microbatch)
    if estimator == "orthogonal":
        t1, t2, t12 = (0.5 * err.weight * err.gap[..., p] for p in range(3))
    else:
        t1, t2, t12 = (0.5 * err.weight * (err.mse[..., 0] - err.mse[..., p + 1]) for p in range(3))
    r_terms, extra = None, {}
    if redundancy == "imin":
        standard = 0.5 * err.weight[..., None] * (err.mse[..., :1] - err.mse[..., 4:])  # (N, S, K1 + K2)
        k1 = len(c1)
        r_terms, extra = imin_redundancy(standard[..., :k1], prior1, standard[..., k1:], prior2)
    map_triple = None if err.maps is None else (err.maps[:, 0], err.maps[:, 1], err.maps[:, 2])
    return pid_from_terms(t1, t2, t12, redundancy=redundancy, redundancy_terms=r_terms, maps=map_triple,
                          n_evals=err.n_evals, keep_terms=return_terms, extra=extra)


def conditional_pid(denoiser: Denoiser, x: Tensor, context: Column, y1: Column, y2: Column, y12: Column,
                    **kw) -> PIDEstimate:
    """CPID: :func:`pid` with the context c as the reference condition. ``y1``, ``y2`` and
    ``y12`` must include the context: (y1, c), (y2, c), (y1, y2, c)."""
    if context is None:
        raise ValueError("conditional_pid needs a context column; for the unconditional PID call pid(..., ref=None)")
    return pid(denoiser, x, context, y1, y2, y12, **kw)


def clip_synergy_for_display(synergy_map: Tensor | Estimate, quantile: float | None = None) -> Tensor:
    """A copy of synergy maps (N, *map_shape) with negative values set to 0 (and, with
    ``quantile``, values above that quantile of each image's map set to it), for pictures only.

    The estimated synergy is a difference of informations and can be negative per pixel
    (and per image); sums, means and tests must use the unclipped map.
    """
    m = synergy_map.map if isinstance(synergy_map, Estimate) else synergy_map
    if m is None:
        raise ValueError("clip_synergy_for_display: the estimate carries no map (call pid with maps=True)")
    out = m.detach().clamp_min(0)
    if quantile is not None:
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        flat = out.reshape(out.shape[0], -1)
        hi = torch.quantile(flat.to(torch.float64), quantile, dim=1).to(out.dtype)
        out = torch.minimum(flat, hi[:, None]).reshape(out.shape)
    return out
