"""Cross-fitting: merge I(X;Y) estimates of K folds into one estimate over all pairs.

With the rows cut into K folds and one model trained per fold on the other K - 1, fold k
gives the mean m_k of i(x;y) over its n_k held-out pairs with standard error s_k. Every
pair is then measured by a model that never saw it, and the estimate over all N pairs is

    m = sum_k n_k m_k / N,     s = sqrt(sum_k n_k^2 s_k^2) / N,

the folds being disjoint samples measured with independent draws.

    python -m infodiff_lightning.crossfit runs/analyze/vector_mi/run-*/summary.json
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Sequence

__all__ = ["combine_folds", "combine_summaries"]


def combine_folds(parts: Sequence[tuple[float, float, int]]) -> tuple[float, float, int]:
    """(mean, stderr, count) over all pairs from (mean_k, stderr_k, count_k) per fold."""
    if not parts:
        raise ValueError("combine_folds: no folds given")
    if any(n < 1 for _, _, n in parts):
        raise ValueError(f"combine_folds: every fold needs at least one pair, got counts {[n for _, _, n in parts]}")
    total = sum(n for _, _, n in parts)
    mean = sum(n * m for m, _, n in parts) / total
    stderr = math.sqrt(sum((n * s) ** 2 for _, s, n in parts)) / total
    return mean, stderr, total


def combine_summaries(summaries: Sequence[dict]) -> dict[str, dict]:
    """{estimator: {estimate, stderr, samples, truth}} from the summary.json of each fold's analysis."""
    forms = [list(s["estimators"]) for s in summaries]
    if any(f != forms[0] for f in forms):
        raise ValueError(f"the folds' summaries measure different estimators: {forms}")
    out = {}
    for form in forms[0]:
        rows = [s["estimators"][form] for s in summaries]
        mean, se, n = combine_folds([(r["estimate"], r["stderr"], r["samples"]) for r in rows])
        truth = rows[0]["truth"]
        out[form] = {"estimate": mean, "stderr": se, "samples": n, "truth": truth,
                     "relative_error": (mean - truth) / truth if truth else None}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summaries", nargs="+", help="summary.json of each fold's analysis")
    args = p.parse_args(argv)
    combined = combine_summaries([json.loads(Path(f).read_text()) for f in args.summaries])
    for form, r in combined.items():
        truth = "" if r["truth"] is None else f" (truth {r['truth']:.4f})"
        print(f"{form}: I(X;Y) = {r['estimate']:.4f} ± {r['stderr']:.4f} nats over {r['samples']} pairs{truth}")


if __name__ == "__main__":
    main()
