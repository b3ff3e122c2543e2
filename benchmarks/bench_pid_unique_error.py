"""The MMI unique terms' standard error: the library's, and a bound that was tried.

u1 = i1 - min(i1, i2) = max(0, i1 - i2). The library cross-fits the minimum (pid.py, eq.
XFIT) and takes the error from a wild bootstrap of the decomposition. Where i1 - i2 is
one to three standard errors, the two halves of the draws sometimes both pick the wrong
source, and the estimate is biased low with a small bootstrap error (the choice looks
settled on the draws at hand): the dominant source's unique term undercovers.

Tried: a lower bound from the plug-in's Lipschitz property (|max(0, a) - max(0, b)| <=
|a - b|): stderr(u_k) = max(library stderr, stderr of the mean of i1 - i2). For each toy
(noisy denoiser, as bench_calibration.py) and draw count: SD of z and coverage of
+-1.96 stderr against a 2048-draw stratified long run, under both rules.

    python benchmarks/bench_pid_unique_error.py [--images 400] [--draws 8 16 32]
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

from infodiff_lightning.analyses.calibration import STUDY_SAMPLER, calibration_stats, z_scores
from infodiff_lightning.denoisers.noisy import NoisyDenoiser
from infodiff_lightning.denoisers.pid_toys import copy_system, pid_columns, unique_system, xor_system
from infodiff_lightning.draws import sample_draws
from infodiff_lightning.measure import measure
from infodiff_lightning.pid import PID_CONTRASTS, crossfit_min_terms, pid_from_terms
from infodiff_lightning.uncertainty import estimate_stderr, mean_stderr

NOISE = 0.3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--draws", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--long_run", type=int, default=2048)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print("| toy | term | S | library SD(z) | library cover | mean z | bounded SD(z) | bounded cover |")
    print("|---|---|---|---|---|---|---|---|")
    for name, make in (("xor", xor_system), ("copy", copy_system), ("unique", unique_system)):
        g = torch.Generator().manual_seed(0)
        toy = make()
        x, y = toy.sample(args.images, g)
        system = NoisyDenoiser(toy, NOISE, 0)
        cols = dict(zip(("ref", "y1", "y2", "y12"), pid_columns(y)))
        shape = tuple(x.shape[1:])
        long = sample_draws(args.images, args.long_run, shape, dataclasses.replace(STUDY_SAMPLER, stratified=True),
                            g, x.dtype)
        ml = measure(system, cols, PID_CONTRASTS, x=x, draws=long)
        l1, l2, _ = (ml.terms(k) for k in PID_CONTRASTS)
        r, _ = crossfit_min_terms(l1, l2)  # the long run's choice is settled
        truth = {"unique1": mean_stderr(l1 - r, ml.design), "unique2": mean_stderr(l2 - r, ml.design)}
        for s in args.draws:
            short = sample_draws(args.images, s, shape, STUDY_SAMPLER, g, x.dtype)
            ms = measure(system, cols, PID_CONTRASTS, x=x, draws=short)
            t = [ms.terms(k) for k in PID_CONTRASTS]
            est = pid_from_terms(*t, design=ms.design)
            _, gap_se = estimate_stderr(t[0] - t[1], ms.design)
            for term, (lr, lr_se) in truth.items():
                e = getattr(est, term)
                z = z_scores(e.value, e.stderr, lr, lr_se)
                zb = z_scores(e.value, torch.maximum(e.stderr, gap_se), lr, lr_se)
                c, cb = calibration_stats(z), calibration_stats(zb)
                print(f"| {name} | {term} | {s} | {c['sd']:.2f} | {100 * c['coverage']:.1f}% | "
                      f"{float(z[torch.isfinite(z)].mean()):+.2f} | {cb['sd']:.2f} | {100 * cb['coverage']:.1f}% |",
                      flush=True)


if __name__ == "__main__":
    main()
