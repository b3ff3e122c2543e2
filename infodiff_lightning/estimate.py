"""Per-draw information terms of one denoiser pass and their per-image summary.

With the squared errors of a pass (evaluate.py) and importance weights w, the per-draw
terms of a contrast (reference column c, condition column y) are

    standard   t_s = 1/2 w_s (||eps - eps_hat(.|c)||^2 - ||eps - eps_hat(.|y)||^2)     (eq. 5)
    orthogonal t_s = 1/2 w_s  ||eps_hat(.|c) - eps_hat(.|y)||^2                         (eq. 7)

(Kong et al., ICLR 2024). The estimate of an image is their mean over its S draws, with
the standard error of the draws' design (uncertainty.py, eq. CAL). This module is pure
arithmetic on :class:`~infodiff_lightning.evaluate.Errors`: it calls no denoiser.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

from .evaluate import Errors
from .uncertainty import estimate_stderr, mean_stderr

__all__ = ["ESTIMATORS", "Estimate", "summarize", "information_terms", "contrast_estimate"]

#: The two estimators of pointwise information (eq. 5 and eq. 7).
ESTIMATORS = ("standard", "orthogonal")


@dataclass
class Estimate:
    """Per-image estimates (N,), their standard errors, and what they cost.

    ``stderr`` is the calibrated standard error of the Monte-Carlo integral of each image
    (uncertainty.py, eq. CAL; NaN for grid draws). ``map`` / ``map_stderr``: per-element
    map (N, *map_shape) and its per-element standard error."""

    value: Tensor
    stderr: Tensor
    n_evals: int
    terms: Tensor | None = None  # (N, S) per-draw terms; value = terms.mean(1)
    map: Tensor | None = None  # (N, *map_shape); sums to value for orthogonal maps
    extra: dict = field(default_factory=dict)
    map_stderr: Tensor | None = None  # (N, *map_shape)

    def dataset_mean(self) -> tuple[float, float]:
        """Dataset-level mean over images and its standard error (std over images /
        sqrt(N); for one image, that image's own standard error)."""
        n = self.value.numel()
        if n == 1:
            return float(self.value), float(self.stderr)
        return float(self.value.mean()), float(self.value.std() / math.sqrt(n))


def summarize(terms: Tensor, n_evals: int, design: str = "iid", keep_terms: bool = False,
              draw_map: Tensor | None = None) -> Estimate:
    """Mean of per-draw terms (N, S) per image with its calibrated standard error
    (uncertainty.estimate_stderr), and of per-draw map terms (N, S, *map_shape) when
    given, element by element (with the CAL formula: a bootstrap per pixel costs too much)."""
    value, stderr = estimate_stderr(terms, design)
    est = Estimate(value, stderr, n_evals, terms if keep_terms else None)
    if draw_map is not None:
        est.map, est.map_stderr = mean_stderr(draw_map.movedim(1, -1), design)
    return est


def check_estimator(estimator: str) -> None:
    """Raise a ValueError naming the valid estimators."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def information_terms(errors: Errors, pair_index: int, pair: tuple[int, int], estimator: str) -> Tensor:
    """Per-draw terms (N, S) of eq. 5 (standard) or eq. 7 (orthogonal) for pair
    ``pair`` = (reference column, condition column), the pass's pair number ``pair_index``."""
    check_estimator(estimator)
    if estimator == "orthogonal":
        d = errors.gap[..., pair_index]
    else:
        d = errors.mse[..., pair[0]] - errors.mse[..., pair[1]]
    return 0.5 * errors.weight * d


def contrast_estimate(errors: Errors, pair_index: int, pair: tuple[int, int], estimator: str = "orthogonal",
                      keep_terms: bool = False) -> Estimate:
    """The information of one (reference, condition) contrast of a denoiser pass: its
    per-draw terms (eq. 5 or 7, :func:`information_terms`) summarized per image, with its
    per-element map when the pass kept maps."""
    terms = information_terms(errors, pair_index, pair, estimator)
    return summarize(terms, errors.n_evals, errors.design, keep_terms, errors.draw_map(pair_index))
