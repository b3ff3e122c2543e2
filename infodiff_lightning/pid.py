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

so that r + u1 + u2 + s = i12. Two redundancy measures:

* ``"mmi"`` (minimum mutual information, the default): r = min(i1, i2), per image and,
  for maps, per element (pixel). Taking the minimum of two noisy estimates is biased
  low, most when the sources are equal; the minimum is therefore *cross-fitted*: the
  smaller source is chosen on one half of the draws and measured on the other (eq. XFIT
  of :func:`crossfit_min_terms`), and the standard errors come from a wild bootstrap of
  the whole decomposition, so they include the uncertainty of that choice.
* ``"imin"`` (Williams & Beer 2010): r = min_k I(X=x; Y_k), the smaller *specific
  information* of the two sources about this image (see :func:`specific_information`),
  bias-corrected. Averaged over x ~ p(x) this is I_min(X; {Y1, Y2}); its unique and
  synergy terms are dataset-level quantities (see :func:`pid_from_terms`).

One denoiser pass evaluates, for every (alpha, eps) draw of an image, the four conditions
ref (null or c), y1, y2, y1+y2 (plus the candidate tokens for ``"imin"``), so every
term is a difference of per-draw terms that share their random numbers.

Note on signs. With the orthogonal estimator i1, i2, i12 >= 0, so r, u1, u2 >= 0 under
"mmi"; the synergy can be negative pointwise (and its maps per pixel). It is reported as
estimated; ``viz.clip_for_display`` gives a clipped copy for pictures only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .denoisers.base import Column, Denoiser, column_len
from .draws import Draws
from .estimate import Estimate, check_estimator, summarize
from .integrate import AlphaSampler
from .measure import Measurement, make_draws, measure
from .uncertainty import (N_BOOTSTRAP, calibrated_stderr, degrees_of_freedom, fold_index, mean_stderr, skew_factor,
                          wild_bootstrap)

__all__ = [
    "PID_TERMS", "REDUNDANCY_MEASURES", "PIDEstimate", "pid", "conditional_pid", "pid_from_terms",
    "crossfit_min_terms", "mmi_pid_statistic", "specific_information", "imin_redundancy",
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
    (N, K) over the candidate tokens, and ``contributions`` (N, 4), the per-image values
    whose means are the dataset-level I_min terms."""

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

    def _per_image(self, what: str) -> None:
        if self.measure == "imin":
            raise ValueError(f"PIDEstimate.{what}: I_min unique and synergy terms are defined for the dataset, not per "
                             "image (use dataset_mean(), contributions() or a PartialInformation metric; use "
                             "redundancy='mmi' for per-image terms)")

    def values(self) -> Tensor:
        """(N, 4) per-image [r, u1, u2, s] (MMI only)."""
        self._per_image("values()")
        return torch.stack([t.value for t in self.terms()], 1)

    def stderrs(self) -> Tensor:
        """(N, 4) per-image standard errors of [r, u1, u2, s] (MMI only)."""
        self._per_image("stderrs()")
        return torch.stack([t.stderr for t in self.terms()], 1)

    def contributions(self) -> Tensor:
        """(N, 4) per-image values whose means over images are the dataset-level
        [r, u1, u2, s]: ``values()`` for MMI, the I_min contributions for I_min."""
        return self.extra["contributions"] if self.measure == "imin" else self.values()

    def maps(self) -> Tensor | None:
        """(N, 4, *map_shape) per-element [r, u1, u2, s] maps, or None without maps."""
        if any(t.map is None for t in self.terms()):
            return None
        return torch.stack([t.map for t in self.terms()], 1)

    def dataset_mean(self) -> dict[str, tuple[float, float]]:
        """Dataset-level (mean over images, standard error) of each term and information
        (std over images / sqrt(N); for one image under MMI, its own standard error)."""
        out = {name: getattr(self, name).dataset_mean() for name in ("i1", "i2", "i12")}
        c = self.contributions()
        n = c.shape[0]
        for j, name in enumerate(PID_TERMS):
            if n > 1:
                out[name] = (float(c[:, j].mean()), float(c[:, j].std() / math.sqrt(n)))
            else:
                out[name] = (float(c[0, j]), float(self.terms()[j].stderr[0]))
        return out


# ---------------------------------------------------------------- redundancy measures
def crossfit_min_terms(t1: Tensor, t2: Tensor) -> tuple[Tensor, Tensor]:
    """Per-draw terms of r = min(i1, i2), cross-fitted over the two folds of the draws.

    ``t1``, ``t2``: (..., S) per-draw terms of two informations on the same draws (extra
    trailing axes, e.g. map elements, are allowed after S: pass them as (..., S, *m) with
    ``S`` on axis -1 after a movedim). Fold f = draw parity (uncertainty.fold_index).
    The smaller source is chosen on one fold and its terms are taken on the other:

        r_s = t_{argmin_k mean_{fold B} t_k}[s]  for s in fold A, and vice versa        (XFIT)

    The plug-in min(mean t1, mean t2) is biased low by E|i1_hat - i2_hat| / 2 when the
    sources are equal (the worst case); XFIT is exactly unbiased there, because the
    choice made on one fold is independent of the terms it selects on the other. Where
    the sources differ by about one standard error it is biased upward by at most about
    a quarter of the standard error of i1_hat - i2_hat; where they differ clearly, it is
    the plug-in. Returns (r terms (..., S), side (..., 2): 1 where fold f chose source 2).
    """
    in_b = fold_index(t1.shape[-1]).to(t1.device) == 1
    a1, b1 = t1[..., ~in_b].mean(-1), t1[..., in_b].mean(-1)
    a2, b2 = t2[..., ~in_b].mean(-1), t2[..., in_b].mean(-1)
    side = torch.stack([a2 < a1, b2 < b1], -1)  # (..., 2): the choice made on fold A, fold B
    # Fold A takes the side chosen on fold B, and vice versa.
    use2 = torch.where(in_b, side[..., 0:1], side[..., 1:2])
    return torch.where(use2, t2, t1), side.long()


def mmi_pid_statistic(t: Tensor) -> Tensor:
    """The four MMI PID terms (..., N, 4) = [r, u1, u2, s] from per-draw terms (..., N, S, 3)
    of [i1, i2, i12], with r cross-fitted (eq. XFIT) and PID-1 for the rest."""
    t1, t2, t12 = t.unbind(-1)
    r, _ = crossfit_min_terms(t1, t2)
    return torch.stack([r, t1 - r, t2 - r, t12 - t1 - t2 + r], -1).mean(-2)


def specific_information(terms: Tensor, prior: Tensor) -> tuple[Tensor, Tensor]:
    """Williams-Beer specific information of a source Y about the image x, from standard
    pointwise-MI terms of K candidate values of Y (plug-in, from the draw means).

        p(y_k | x) = p(y_k) exp(i(x; y_k)) / sum_l p(y_l) exp(i(x; y_l))            (Bayes)
        I(X=x; Y)  = sum_k p(y_k | x) log( p(y_k | x) / p(y_k) ) = KL( p(Y|x) || p(Y) )   (WB-spec)

    (Williams & Beer 2010, eq. for the specific information I(S=s; A) with the image as
    target S and the token as source A: sum_a p(a|s) [log 1/p(s) - log 1/p(s|a)], which
    equals the KL above because p(s|a)/p(s) = p(a|s)/p(a).) The log-likelihood ratio
    i(x; y_k) = log p(x|y_k) - log p(x) must come from the *standard* estimator (eq. 5):
    the orthogonal one is not a log-likelihood ratio pointwise. A shift common to all
    i(x; y_k) (e.g. the noise of the shared reference condition) cancels in Bayes' rule.

    ``terms``: (..., N, S, K) per-draw standard terms of i(x; y_k); ``prior``: (K,) or
    (N, K), positive and summing to 1. Returns (I(X=x; Y) (..., N), posterior (..., N, K)).
    The KL of noisy i_k is biased upward (it is convex); :func:`imin_redundancy` corrects
    that bias and gives the standard error by a wild bootstrap over the draws.
    """
    if terms.ndim < 3:
        raise ValueError(f"specific_information: terms must be (N, S, K), got {tuple(terms.shape)}")
    n, _, k = terms.shape[-3:]
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
    log_post = (log_prior + terms.mean(-2)).log_softmax(-1)
    post = log_post.exp()
    return (post * (log_post - log_prior)).sum(-1), post


def imin_redundancy(candidate_terms1: Tensor, prior1: Tensor, candidate_terms2: Tensor, prior2: Tensor,
                    design: str = "iid", generator: torch.Generator | int | None = 0,
                    n_boot: int = N_BOOTSTRAP) -> tuple[Tensor, Tensor, dict]:
    """Williams-Beer I_min redundancy per image: r(x) = min_k I(X=x; Y_k)   (WB-Imin)

    from the per-draw standard terms (N, S, K_k) of each source's candidate tokens and
    their priors (see :func:`specific_information`). The mean of r(x) over x ~ p(x) is
    I_min(X; {Y1, Y2}) = sum_x p(x) min_k I(X=x; Y_k). Each specific information is
    bias-corrected with a wild bootstrap over the draws (2 * plug-in - bootstrap mean,
    which removes the second-order bias of the convex KL). It is not clipped at 0: a
    specific information within noise of 0 can come out slightly negative, and that is
    what keeps the dataset mean (the level at which I_min's terms are reported) unbiased.
    r's standard error is the bootstrap spread of the whole computation (choice of the
    smaller source included).
    Returns (r (N,), stderr (N,), dict with ``side``, ``specific1``, ``specific2``,
    ``posterior1``, ``posterior2``)."""
    k1 = candidate_terms1.shape[-1]
    both = torch.cat([candidate_terms1, candidate_terms2], -1)

    def specifics(t: Tensor, p1: Tensor, p2: Tensor) -> Tensor:
        return torch.stack([specific_information(t[..., :k1], p1)[0],
                            specific_information(t[..., k1:], p2)[0]], -1)

    n = both.shape[0]
    # The plug-in checks the priors; per image they are then (N, K), so that the
    # bootstrap can hand each chunk of images the rows of its own priors.
    plug = specifics(both, prior1, prior2)  # (N, 2)
    priors = [torch.as_tensor(p, dtype=both.dtype, device=both.device) for p in (prior1, prior2)]
    priors = [p.expand(n, -1) if p.ndim == 1 else p for p in priors]
    boot = wild_bootstrap(both, design, specifics, n_boot, generator, per_image=priors)  # (B, N, 2)
    bias = boot.mean(0) - plug
    corrected = plug - bias
    boot_r = (boot - bias).amin(-1)  # replicates of the corrected minimum
    r, side = corrected.min(-1)
    dof = degrees_of_freedom(design, both.shape[1])
    stderr = calibrated_stderr(boot_r.var(0), dof)
    _, p1 = specific_information(candidate_terms1, prior1)
    _, p2 = specific_information(candidate_terms2, prior2)
    return r, stderr, {"side": side, "specific1": corrected[:, 0], "specific2": corrected[:, 1],
                       "posterior1": p1, "posterior2": p2}


# ---------------------------------------------------------------- the decomposition
def _check_terms(*terms: Tensor) -> None:
    shape = terms[0].shape
    if len(shape) != 2:
        raise ValueError(f"per-draw terms must be (N, S) tensors, got shape {tuple(shape)}")
    if shape[1] < 2:
        raise ValueError("the PID needs at least 2 draws per image (the smaller source is chosen on one half of "
                         "the draws and measured on the other)")
    for t in terms[1:]:
        if t.shape != shape:
            raise ValueError(f"per-draw terms disagree in shape: {tuple(t.shape)} vs {tuple(shape)}; "
                             "all terms must come from the same images and draws")


def _mmi_pid_maps(maps: Sequence[Tensor], design: str) -> list[tuple[Tensor, Tensor]]:
    """Per-element MMI PID maps [r, u1, u2, s] from per-draw maps (N, S, *m) of i1, i2,
    i12, as (map, map_stderr) pairs: the minimum source is cross-fitted element by
    element (eq. XFIT); the map standard errors hold that choice fixed."""
    m1, m2, m12 = (m.movedim(1, -1) for m in maps)  # (N, *m, S)
    r, _ = crossfit_min_terms(m1, m2)
    return [mean_stderr(t, design) for t in (r, m1 - r, m2 - r, m12 - m1 - m2 + r)]


def pid_from_terms(i1_terms: Tensor, i2_terms: Tensor, i12_terms: Tensor, *, redundancy: str = "mmi",
                   candidates: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
                   maps: Sequence[Tensor] | None = None, design: str = "iid", n_evals: int = 0,
                   keep_terms: bool = False, extra: dict | None = None,
                   generator: torch.Generator | int | None = 0) -> PIDEstimate:
    """The PID (eq. PID-1 of the module docstring) from per-draw information terms.

    ``i1_terms``, ``i2_terms``, ``i12_terms``: (N, S) per-draw terms of i(x;y1), i(x;y2),
    i(x;y1,y2) [| c] computed on the *same* draws (common random numbers); ``design``:
    how the draws were made (uncertainty.DRAW_SCHEMES).

    ``redundancy="mmi"``: r = min(i1, i2) per image, cross-fitted (eq. XFIT of
    :func:`crossfit_min_terms`); every term's standard error comes from a wild bootstrap
    of the whole decomposition (the choice of the smaller source included), scaled for
    the number of draws and the skew of the terms (uncertainty.py: CAL and the skew
    factor), so no term has a zero error unless no resampling could change it.
    ``maps``: optional per-draw maps (map1, map2, map12), each (N, S, *map_shape); the
    PID maps cross-fit the minimum element by element and carry per-element standard
    errors (``map_stderr``, holding the per-element choice fixed).

    ``redundancy="imin"`` needs ``candidates`` = (terms1 (N, S, K1), prior1, terms2
    (N, S, K2), prior2): standard per-draw terms of each source's candidate values (see
    :func:`imin_redundancy`). I_min's redundancy is a function of specific informations,
    which are not on the same footing as the pointwise i1, i2, i12 of one image, so its
    unique and synergy terms are defined for the dataset only: ``mean()`` and the metrics
    give them, ``values()`` and the per-image unique/synergy estimates do not (NaN).
    """
    _check_terms(i1_terms, i2_terms, i12_terms)
    extra = dict(extra or {})
    infos = [summarize(t, n_evals, design, keep_terms, None if maps is None else m)
             for t, m in zip((i1_terms, i2_terms, i12_terms), maps or (None,) * 3)]
    if maps is not None:
        if redundancy != "mmi":
            raise ValueError("PID maps are defined for redundancy='mmi' (an element-wise minimum); I_min is an "
                             "image-level measure: use redundancy='mmi' for maps, or maps=False")
        if len(maps) != 3:
            raise ValueError(f"maps must be per-draw (map1, map2, map12), got {len(maps)} maps")
        m1, m2, m12 = maps
        if not (m1.shape == m2.shape == m12.shape) or tuple(m1.shape[:2]) != tuple(i1_terms.shape):
            raise ValueError(f"per-draw maps of shapes {tuple(m1.shape)}, {tuple(m2.shape)}, {tuple(m12.shape)} must "
                             f"agree and start with (N, S) = {tuple(i1_terms.shape)}")
    if redundancy == "mmi":
        if candidates is not None:
            raise ValueError("pid_from_terms: candidates are only for redundancy='imin'")
        stacked = torch.stack([i1_terms, i2_terms, i12_terms], -1)  # (N, S, 3)
        dof = degrees_of_freedom(design, i1_terms.shape[1])
        r_terms, side = crossfit_min_terms(i1_terms, i2_terms)
        extra.setdefault("side", side)
        per_draw = [r_terms, i1_terms - r_terms, i2_terms - r_terms, i12_terms - i1_terms - i2_terms + r_terms]
        values = torch.stack([t.mean(1) for t in per_draw], 1)  # = mmi_pid_statistic(stacked)
        if design == "grid":
            stderrs = torch.full_like(values, math.nan)
        else:
            boot = wild_bootstrap(stacked, design, mmi_pid_statistic, generator=generator)
            stderrs = calibrated_stderr(boot.var(0), dof)
            if i1_terms.shape[1] >= 4:
                # Each term gets the skew factor of the per-draw terms it is a mean of; for
                # u_k = i_k - min(i1, i2), those of i1 - i2 (u_k's per-draw terms switch
                # source between the two folds, which a resample as iid would misread).
                gap = skew_factor(i1_terms - i2_terms)
                stderrs = stderrs * torch.stack([skew_factor(r_terms), gap, gap, skew_factor(per_draw[3])], 1)
        ests = [Estimate(values[:, j], stderrs[:, j], n_evals, per_draw[j] if keep_terms else None)
                for j in range(4)]
        if maps is not None:
            for est, (m, m_stderr) in zip(ests, _mmi_pid_maps(maps, design)):
                est.map, est.map_stderr = m, m_stderr
        return PIDEstimate(*ests, *infos, measure=redundancy, n_evals=n_evals, extra=extra)
    if redundancy != "imin":
        raise ValueError(f"redundancy must be one of {REDUNDANCY_MEASURES}, got {redundancy!r}")
    if candidates is None:
        raise ValueError("pid_from_terms: redundancy='imin' needs candidates=(terms1, prior1, terms2, prior2), "
                         "the standard per-draw terms of each source's candidate values and their priors")
    t1, p1, t2, p2 = candidates
    if tuple(t1.shape[:2]) != tuple(i1_terms.shape) or tuple(t2.shape[:2]) != tuple(i1_terms.shape):
        raise ValueError(f"candidate terms {tuple(t1.shape)}, {tuple(t2.shape)} must start with (N, S) = "
                         f"{tuple(i1_terms.shape)}: the same images and draws")
    r, r_stderr, imin_extra = imin_redundancy(t1, p1, t2, p2, design, generator)
    extra.update(imin_extra)
    nan = torch.full_like(r, math.nan)
    i1, i2, i12 = (e.value for e in infos)
    # Per-image contributions whose means are the dataset-level terms (see docstring).
    extra["contributions"] = torch.stack([r, i1 - r, i2 - r, i12 - i1 - i2 + r], 1)
    ests = [Estimate(r, r_stderr, n_evals)] + [Estimate(nan, nan.clone(), n_evals) for _ in range(3)]
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
    check_estimator(estimator)
    if redundancy not in REDUNDANCY_MEASURES:
        raise ValueError(f"redundancy must be one of {REDUNDANCY_MEASURES}, got {redundancy!r}")
    if maps and redundancy != "mmi":
        raise ValueError("PID maps are defined for redundancy='mmi' (an element-wise minimum); I_min is an "
                         "image-level measure: use redundancy='mmi' for maps, or maps=False")
    n = int(x.shape[0])
    columns: dict[str, Column] = {"ref": denoiser.null_conditions(n) if ref is None else ref, "y1": y1, "y2": y2,
                                  "y12": y12}
    if redundancy == "imin":
        c1 = _candidate_columns(candidates1, n, "candidates1")
        c2 = _candidate_columns(candidates2, n, "candidates2")
        if prior1 is None or prior2 is None:
            raise ValueError("redundancy='imin' needs prior1 and prior2: the prior over each source's candidates")
        columns.update({f"candidates1/{j}": c for j, c in enumerate(c1)})
        columns.update({f"candidates2/{j}": c for j, c in enumerate(c2)})
    elif any(c is not None for c in (candidates1, candidates2, prior1, prior2)):
        raise ValueError("candidates and priors are used only by redundancy='imin'; pass redundancy='imin' "
                         "or leave them out")
    if draws is None:
        draws = make_draws(denoiser, x, n_draws, sampler, generator)
    m = measure(denoiser, columns, PID_CONTRASTS, x=x, draws=draws, maps=estimator if maps else None,
                microbatch=microbatch)
    t1, t2, t12 = (m.terms(key, estimator) for key in PID_CONTRASTS)
    candidate_terms = None
    if redundancy == "imin":
        candidate_terms = (candidate_information_terms(m, "ref", [f"candidates1/{j}" for j in range(len(c1))]),
                           prior1,
                           candidate_information_terms(m, "ref", [f"candidates2/{j}" for j in range(len(c2))]),
                           prior2)
    map_triple = None if m.errors.draw_maps is None else tuple(m.draw_map(key) for key in PID_CONTRASTS)
    return pid_from_terms(t1, t2, t12, redundancy=redundancy, candidates=candidate_terms, maps=map_triple,
                          design=m.design, n_evals=m.n_evals, keep_terms=return_terms)


#: The three contrasts of a PID pass, over the columns "ref", "y1", "y2", "y12".
PID_CONTRASTS = {"i1": ("ref", "y1"), "i2": ("ref", "y2"), "i12": ("ref", "y12")}


def candidate_information_terms(m: Measurement, ref: str, candidates: Sequence[str]) -> Tensor:
    """(N, S, K) per-draw *standard* terms (eq. 5) of each candidate column relative to
    ``ref``: the log-likelihood ratios I_min's Bayes rule needs."""
    return torch.stack([0.5 * m.errors.weight * (m.mse(ref) - m.mse(c)) for c in candidates], -1)


def conditional_pid(denoiser: Denoiser, x: Tensor, context: Column, y1: Column, y2: Column, y12: Column,
                    **kw) -> PIDEstimate:
    """CPID: :func:`pid` with the context c as the reference condition. ``y1``, ``y2`` and
    ``y12`` must include the context: (y1, c), (y2, c), (y1, y2, c)."""
    if context is None:
        raise ValueError("conditional_pid needs a context column; for the unconditional PID call pid(..., ref=None)")
    return pid(denoiser, x, context, y1, y2, y12, **kw)
