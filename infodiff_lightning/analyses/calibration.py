"""Calibration of standard errors against long-run values, on systems with exact denoisers.

A standard error is calibrated when, over many images, z = (estimate - long-run value) /
stderr has standard deviation about 1 and |z| <= 1.96 about 95% of the time. The long-run
value of an image is what its estimator converges to with infinitely many draws; here it
is estimated with many independent draws (``long_run_draws``), and its own small error is
included in the denominator: z = (estimate - long_run) / sqrt(stderr^2 + se_long_run^2).

:func:`calibration_study` runs one (system, quantity, design, draw count) cell: MI or CMI
of a Gaussian, MI of a mixture, or the four PID terms of a toy (MMI, or I_min's
redundancy). ``benchmarks/bench_calibration.py`` runs the full table; the tests run a few
cells at the draw counts the jobs use.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from ..denoisers.base import Column, Denoiser
from ..draws import sample_draws
from ..estimators import informations
from ..integrate import AlphaSampler, TruncatedLogistic
from ..measure import measure
from ..pid import PID_CONTRASTS, candidate_information_terms, crossfit_min_terms, imin_redundancy, pid_from_terms
from ..uncertainty import mean_stderr

__all__ = ["z_scores", "calibration_stats", "calibration_study", "STUDY_SAMPLER"]

#: Wide enough that a unit-scale system's information outside alpha in [-12, 12] is negligible.
STUDY_SAMPLER = TruncatedLogistic(0.0, 2.0, 6.0)


def z_scores(value: Tensor, stderr: Tensor, long_run: Tensor, long_run_stderr: Tensor | None = None) -> Tensor:
    """(value - long_run) / sqrt(stderr^2 + long_run_stderr^2), per image.

    An estimate that equals its long-run value exactly with zero errors on both sides (a
    term that is exactly determined, such as an MMI unique term whose source is the smaller
    one on every draw) has z = 0; a zero error on a wrong estimate gives an infinite z."""
    var = stderr.to(torch.float64) ** 2
    if long_run_stderr is not None:
        var = var + long_run_stderr.to(torch.float64) ** 2
    diff = (value - long_run).to(torch.float64)
    return torch.where((diff == 0) & (var == 0), torch.zeros_like(diff), diff / var.sqrt())


def _cell(value: Tensor, stderr: Tensor, long_run: Tensor, long_run_stderr: Tensor) -> dict[str, Tensor]:
    return {"z": z_scores(value, stderr, long_run, long_run_stderr), "sq_err": (value - long_run) ** 2}


def calibration_stats(z: Tensor) -> dict[str, float]:
    """SD of z, coverage of |z| <= 1.96, and how many z were finite (n) of all (n_total).

    A non-finite z comes from a zero error on a wrong estimate or a NaN standard error: it
    is counted, not hidden."""
    finite = torch.isfinite(z)
    zf = z[finite]
    n = int(zf.numel())
    return {"sd": float(zf.std()) if n > 1 else math.nan,
            "coverage": float((zf.abs() <= 1.96).double().mean()) if n else math.nan,
            "n": n, "n_total": int(z.numel())}


def calibration_study(system: Denoiser, x: Tensor, columns: list[Column], *, kind: str, n_draws: int,
                      stratified: bool, long_run_draws: int = 2048, sampler: AlphaSampler = STUDY_SAMPLER,
                      seed: int = 0, candidates: tuple | None = None) -> dict[str, Tensor]:
    """z-scores per image of one calibration cell (draws of ``sampler``, iid or
    ``stratified``; the long run of the same sampler, stratified).

    ``kind``: "info" (columns = [reference, condition]; orthogonal information) or
    "pid" (columns = [ref, y1, y2, y12]; MMI PID terms redundancy/unique1/unique2/synergy)
    or "imin" (the same columns plus ``candidates`` = (cols1, prior1, cols2, prior2); the
    I_min redundancy). Returns {quantity: {"z": (N,), "sq_err": (N,) squared error
    against the long run}}.
    """
    # any sampler with a stratified design (TruncatedLogistic, Uniform, Piecewise): the short
    # run in the design asked, the long run stratified, both over the same density and range
    s_short = dataclasses.replace(sampler, stratified=stratified)
    s_long = dataclasses.replace(sampler, stratified=True)
    g = torch.Generator().manual_seed(seed)
    n = int(x.shape[0])
    dtype = x.dtype
    short = sample_draws(n, n_draws, tuple(x.shape[1:]), s_short, g, dtype)
    long = sample_draws(n, long_run_draws, tuple(x.shape[1:]), s_long, g, dtype)
    if kind == "info":
        est = informations(system, x, columns, [(0, 1)], draws=short)[0]
        lr = informations(system, x, columns, [(0, 1)], draws=long)[0]
        return {"info": _cell(est.value, est.stderr, lr.value, lr.stderr)}
    cols = dict(zip(("ref", "y1", "y2", "y12"), columns))
    names1, names2 = [], []
    if kind == "imin":
        c1, p1, c2, p2 = candidates
        names1, names2 = [f"candidates1/{j}" for j in range(len(c1))], [f"candidates2/{j}" for j in range(len(c2))]
        cols.update(zip(names1, c1))
        cols.update(zip(names2, c2))
    out = {}
    results = []
    for draws in (short, long):
        m = measure(system, cols, PID_CONTRASTS, x=x, draws=draws)
        results.append((m, [m.terms(key) for key in PID_CONTRASTS]))
    (m_s, (t1, t2, t12)), (m_l, (l1, l2, l12)) = results
    if kind == "pid":
        est = pid_from_terms(t1, t2, t12, design=m_s.design)
        r, _ = crossfit_min_terms(l1, l2)  # long run: selection held fixed (its error is small)
        long_terms = {"redundancy": r, "unique1": l1 - r, "unique2": l2 - r, "synergy": l12 - l1 - l2 + r}
        for name, t in long_terms.items():
            lr, lr_se = mean_stderr(t, m_l.design)
            out[name] = _cell(getattr(est, name).value, getattr(est, name).stderr, lr, lr_se)
        return out
    r, r_se, _ = imin_redundancy(candidate_information_terms(m_s, "ref", names1), candidates[1],
                                 candidate_information_terms(m_s, "ref", names2), candidates[3], m_s.design, seed)
    r_lr, r_lr_se, _ = imin_redundancy(candidate_information_terms(m_l, "ref", names1), candidates[1],
                                       candidate_information_terms(m_l, "ref", names2), candidates[3], m_l.design,
                                       seed, n_boot=50)
    return {"imin_redundancy": _cell(r, r_se, r_lr, r_lr_se)}
