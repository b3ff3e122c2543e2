"""The statistics of the analyses that count outcomes: plain functions, no Lightning.

* :func:`correct`: a ranking prediction is right when the true candidate's score beats
  every other strictly (a tie is a miss, so an uninformative model scores 0, not 1/K);
  a candidate whose text is the true caption's is no rival (ARO's order sets);
* :func:`accuracy_interval`: the share of hits with its Wilson score interval

      centre = (p + z^2 / 2n) / (1 + z^2 / n),
      half   = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n);

* :func:`macro_accuracy`: the mean of per-subgroup accuracies (ARO's headline figure)
  with a normal interval from the subgroups' binomial variances;
* :func:`accuracy_summary`: per group and estimator, the accuracy with its interval, and
  for a group with subgroups ("<group>/<sub>") the macro average over them.

The other analyses' statistics live beside their math: threshold selection and mean
IoU in localization.py, the correlations with bootstrap intervals in intervention.py,
the PID ranking in pid_study.py.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["correct", "accuracy_interval", "macro_accuracy", "accuracy_summary", "Z95"]

#: The two-sided 95% normal quantile.
Z95 = 1.959964


def correct(scores: Tensor, true_index: Tensor | Sequence[int], rivals: Tensor | None = None) -> Tensor:
    """(N,) bool: the true candidate's score beats every rival strictly.

    ``rivals`` (N, K) bool: the candidates that compete (default: every candidate but the
    true one). ARO's order sets keep a perturbation that equals the caption, and ARO's
    argmax gives the tie to the true caption (listed first); not counting such a copy as
    a rival is that rule (data/aro_order.py). An item without rivals is a hit, as it is there."""
    true_index = torch.as_tensor(true_index, dtype=torch.long, device=scores.device)
    true = scores.gather(1, true_index[:, None])
    others = scores.clone()
    others.scatter_(1, true_index[:, None], -math.inf)
    if rivals is not None:
        others = others.masked_fill(~torch.as_tensor(rivals, dtype=torch.bool, device=scores.device), -math.inf)
    return (true[:, 0] > others.max(1).values)


def accuracy_interval(hits: int, n: int, z: float = Z95) -> tuple[float, float, float]:
    """(accuracy, low, high): the share of hits with its Wilson score interval (95% by default)."""
    if n <= 0:
        raise ValueError("accuracy_interval: no predictions")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def macro_accuracy(counts: list[tuple[int, int]], z: float = Z95) -> tuple[float, float, float]:
    """(accuracy, low, high): the mean of per-subgroup accuracies (ARO's macro average over
    relations or attribute pairs), with a normal interval from the subgroups' binomial
    variances, sum_i p_i (1 - p_i) / n_i / K^2; p_i is shrunk to (hits + 1/2) / (n + 1) in the
    variance only, so that a subgroup at 0% or 100% does not claim to be exact."""
    counts = [(h, n) for h, n in counts if n > 0]
    if not counts:
        raise ValueError("macro_accuracy: no subgroup has predictions")
    k = len(counts)
    mean = sum(h / n for h, n in counts) / k
    var = sum(((h + 0.5) / (n + 1)) * (1 - (h + 0.5) / (n + 1)) / n for h, n in counts) / k ** 2
    half = z * math.sqrt(var)
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def accuracy_summary(counts: dict[str, dict[str, int]], groups: Sequence[str], estimators: Sequence[str],
                     prefix: str = "ranking") -> dict[str, dict]:
    """The accuracies of a ranking: ``counts`` maps "<group>/<estimator>" to {"hits", "n"}.

    Returns, in the order of ``counts``, "<prefix>/<group>/<estimator>": {"accuracy", "low",
    "high", "hits", "n"} for each group with predictions; then for each of ``groups`` that
    has subgroups ("<group>/<sub>", also in ``groups``) and each estimator,
    "<prefix>/<group>/macro/<estimator>": {"accuracy", "low", "high", "subgroups", "n"}, the
    mean over the subgroups (not over items)."""
    out = {}
    for key, c in counts.items():
        if c["n"]:
            acc, low, high = accuracy_interval(c["hits"], c["n"])
            out[f"{prefix}/{key}"] = {"accuracy": acc, "low": low, "high": high, **c}
    for group in groups:
        subgroups = [g for g in groups if g.startswith(f"{group}/")]
        for est in estimators:
            subs = [out[key] for g in subgroups if (key := f"{prefix}/{g}/{est}") in out]
            if subs:
                acc, low, high = macro_accuracy([(v["hits"], v["n"]) for v in subs])
                out[f"{prefix}/{group}/macro/{est}"] = {"accuracy": acc, "low": low, "high": high,
                                                        "subgroups": len(subs), "n": sum(v["n"] for v in subs)}
    return out
