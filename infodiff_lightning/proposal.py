"""A log-SNR proposal fitted once per model to the shape of its information integrand.

Every estimate is a Monte-Carlo integral over log-SNR alpha,

    I = Int f(alpha) d alpha,     f(alpha) = 1/2 E_eps[gap(alpha, eps)],

estimated by mean_s gap_s / (2 q(alpha_s)) with alpha_s ~ q. Its variance per draw,
Int E[gap^2 / 4 | alpha] / q(alpha) d alpha - I^2, is smallest for

    q*(alpha)  proportional to  sqrt(E[f_s^2 | alpha])                            (OPT)

(Cauchy-Schwarz), where f_s = gap_s / 2 is one draw's integrand. The *shape* of that
curve over alpha is a property of the model (where along the noise scale its conditions
change its predictions) and is stable across images and contrasts of one model, so it is
fitted once, on a few images, from draws spread uniformly over the range, and saved as a
:class:`~infodiff_lightning.integrate.Piecewise` density (one value per log-SNR bin).

Two guards keep the estimate unbiased and its error honest:

* the fitted density is mixed with a *defensive* one (``floor`` = 25% by default): the
  reference proposal's mass in each bin when it is given (proposal_fit.py does), a uniform
  one otherwise. So every bin keeps mass, and no weight exceeds 1/floor times the
  defensive density's: where the information moves away from where the pilot saw it (a
  fine-tuned model whose word now matters at other noise levels, say), the estimate is
  at worst about 1/floor times as noisy as with the defensive proposal alone, never
  unboundedly worse (defensive importance sampling, Hesterberg 1995);
* each (image, quantity) is normalised by its own mean square before pooling, so one
  large information does not decide the shape for every small one.

The proposal spans the same log-SNR range as the reference sampler (measure.py), so an
estimate with it is an estimate of the same integral, only with less noise.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from .integrate import Piecewise

__all__ = ["fit_proposal", "save_proposal", "load_proposal", "PROPOSAL_FILE", "DEFAULT_BINS", "DEFAULT_FLOOR"]

#: File name of a model's fitted proposal, beside its unet/ (read by the model loaders).
PROPOSAL_FILE = "logsnr_proposal.json"
FORMAT = "infodiff-logsnr-proposal"
DEFAULT_BINS = 24
#: Share of the defensive density mixed into the fitted one (see the module doc), chosen
#: by measurement (BENCHMARKS.md "Draw schemes", the defensive share): on the world model
#: 0.25 had a smaller error than 0.5 in every cell measured (MI and a colour word's CMI at
#: 4-16 draws), with errors as well calibrated on the analytic systems. It bounds every
#: weight at 4x the reference sampler's.
DEFAULT_FLOOR = 0.25


def fit_proposal(alpha: Tensor, integrand: Sequence[Tensor], lo: float, hi: float, n_bins: int = DEFAULT_BINS,
                 floor: float = DEFAULT_FLOOR, defensive: Sequence[float] | None = None) -> Piecewise:
    """Eq. OPT on ``n_bins`` equal bins of [lo, hi]: q_j proportional to the root mean square
    of the pooled, per-(image, quantity) normalised integrand values in bin j, mixed with
    the defensive masses per bin (``defensive``, n_bins values summing to 1; None: uniform)
    with weight ``floor``.

    ``alpha``: (N, S) pilot draws in [lo, hi] (best spread evenly, e.g. stratified uniform);
    ``integrand``: per-draw integrand values f_s (N, S) of one or more quantities (the
    per-draw terms divided by their weights).
    """
    if not hi > lo:
        raise ValueError(f"fit_proposal: empty range [{lo}, {hi}]")
    if n_bins < 1:
        raise ValueError(f"fit_proposal: n_bins must be >= 1, got {n_bins}")
    if not 0 < floor <= 1:
        raise ValueError(f"fit_proposal: floor must be in (0, 1], got {floor}")
    if not integrand:
        raise ValueError("fit_proposal: no integrand values given")
    alpha = alpha.to(torch.float64)
    if alpha.ndim != 2 or any(f.shape != alpha.shape for f in integrand):
        raise ValueError(f"fit_proposal: alpha {tuple(alpha.shape)} and every integrand must be (N, S) alike")
    if float(alpha.min()) < lo - 1e-9 or float(alpha.max()) > hi + 1e-9:
        raise ValueError(f"fit_proposal: pilot draws span [{float(alpha.min()):.3f}, {float(alpha.max()):.3f}], "
                         f"outside [{lo}, {hi}]")
    edges = torch.linspace(lo, hi, n_bins + 1, dtype=torch.float64)
    b = torch.bucketize(alpha, edges[1:-1], right=True)
    sq_sum = torch.zeros(n_bins, dtype=torch.float64)
    count = torch.zeros(n_bins, dtype=torch.float64)
    for f in integrand:
        f2 = f.to(torch.float64) ** 2
        scale = f2.mean(1, keepdim=True)
        # a quantity that is zero on an image (a word it does not hold) says nothing of the shape
        used = (scale > 0).expand_as(f2)
        norm = torch.where(used, f2 / scale.clamp_min(1e-300), torch.zeros_like(f2))
        sq_sum.index_add_(0, b[used], norm[used])
        count.index_add_(0, b[used], torch.ones_like(norm[used]))
    rms = (sq_sum / count.clamp_min(1)).sqrt()
    width = edges[1:] - edges[:-1]
    fitted = rms * width
    uniform = width / (hi - lo)
    if defensive is not None:
        guard = torch.tensor(list(defensive), dtype=torch.float64)
        if guard.shape != (n_bins,) or bool((guard <= 0).any()):
            raise ValueError(f"fit_proposal: defensive must be {n_bins} positive bin masses")
        guard = guard / guard.sum()
    else:
        guard = uniform
    mass = guard if float(fitted.sum()) == 0 else (1 - floor) * fitted / fitted.sum() + floor * guard
    return Piecewise(tuple(edges.tolist()), tuple(mass.tolist()))


def save_proposal(proposal: Piecewise, path: str | Path, fitted_on: dict | None = None) -> Path:
    """Write ``proposal`` as JSON (edges, masses, and what it was fitted on)."""
    path = Path(path)
    body = {"format": FORMAT, "version": 1, "edges": list(proposal.edges), "mass": list(proposal.mass),
            "fitted_on": fitted_on or {}}
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def load_proposal(path: str | Path) -> Piecewise:
    """Read a proposal written by :func:`save_proposal`; a malformed file is an error
    naming the file and the field."""
    path = Path(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the log-SNR proposal: {e}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError(f"{path}: not a log-SNR proposal (field 'format' must be {FORMAT!r})")
    for key in ("edges", "mass"):
        vals = body.get(key)
        if not isinstance(vals, list) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals):
            raise ValueError(f"{path}: field {key!r} must be a list of finite numbers")
    try:
        return Piecewise(tuple(body["edges"]), tuple(body["mass"]))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
