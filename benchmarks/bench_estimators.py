"""Estimator-core benchmarks on the exact Gaussian denoiser (CPU, no model needed).

Measured side by side in one run:
1. common random numbers: spread of a CMI estimate when the two conditions share
   (alpha, eps) draws vs when each condition gets its own draws;
2. stratified vs plain truncated-logistic draws: spread of the MI estimate;
3. throughput of the one-pass evaluation vs micro-batch size.

Usage: python benchmarks/bench_estimators.py [--repeats 30]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from infodiff_lightning import TruncatedLogistic, informations, pointwise_mi, sample_draws
from infodiff_lightning.denoisers import CorrelatedGaussian
from infodiff_lightning.evaluate import denoiser_errors


def spread(values):
    return statistics.pstdev(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--draws", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(2)
    system = CorrelatedGaussian(dim=16, correlation=0.9, spread=3.0)
    x, y = system.sample(64, torch.Generator().manual_seed(0))
    ctx = y.clone()
    ctx[:, 8:] = float("nan")
    sampler = TruncatedLogistic(0.0, 2.0, 6.0)

    # 1. common random numbers
    shared, separate = [], []
    for r in range(args.repeats):
        est = informations(system, x, [ctx, y], [(0, 1)], estimator="standard", n_draws=args.draws,
                           sampler=sampler, generator=r)[0]
        shared.append(est.dataset_mean()[0])
        d1 = sample_draws(64, args.draws, (16,), sampler, torch.Generator().manual_seed(1000 + r), torch.float64)
        d2 = sample_draws(64, args.draws, (16,), sampler, torch.Generator().manual_seed(2000 + r), torch.float64)
        e1 = denoiser_errors(system, x, [ctx], d1)
        e2 = denoiser_errors(system, x, [y], d2)
        sep = 0.5 * (e1.weight * e1.mse[..., 0]).mean() - 0.5 * (e2.weight * e2.mse[..., 0]).mean()
        separate.append(float(sep))
    print(f"CMI (standard estimator), {args.repeats} repeats, 64 images x {args.draws} draws")
    print(f"  spread with shared draws   : {spread(shared):.4f} nats")
    print(f"  spread with separate draws : {spread(separate):.4f} nats")
    print(f"  ratio separate / shared    : {spread(separate) / spread(shared):.1f}x")

    # 2. stratified draws
    plain, strat = [], []
    for r in range(args.repeats):
        plain.append(pointwise_mi(system, x, y, n_draws=args.draws, sampler=sampler, generator=r).dataset_mean()[0])
        strat.append(pointwise_mi(system, x, y, n_draws=args.draws, generator=r,
                                  sampler=TruncatedLogistic(0.0, 2.0, 6.0, stratified=True)).dataset_mean()[0])
    print(f"MI (orthogonal), same images, {args.repeats} repeats")
    print(f"  spread plain      : {spread(plain):.4f} nats")
    print(f"  spread stratified : {spread(strat):.4f} nats")
    print(f"  ratio             : {spread(plain) / spread(strat):.2f}x")

    # 3. throughput vs micro-batch size
    xb, yb = system.sample(512, torch.Generator().manual_seed(1))
    draws = sample_draws(512, 32, (16,), sampler, torch.Generator().manual_seed(2), torch.float64)
    print("one-pass throughput (exact Gaussian denoiser, 2 conditions)")
    print(f"  {'microbatch':>10} {'evals/s':>12}")
    for mb in (64, 512, 4096, 32768):
        t = time.perf_counter()
        err = denoiser_errors(system, xb, [system.null_conditions(512), yb], draws, [(0, 1)], microbatch=mb)
        dt = time.perf_counter() - t
        print(f"  {mb:>10} {err.n_evals / dt:>12.0f}")


if __name__ == "__main__":
    main()
