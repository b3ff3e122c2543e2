"""Calibration of the standard errors: SD of z and coverage of +-1.96 stderr, per image.

For each system (exact denoisers; the PID toys with added denoiser noise so that no term
is degenerate), each draw design (plain = iid, stratified = two draws per stratum) and
each draw count S in 8, 16, 32, 64, one set of draws per image gives an estimate and its
standard error; an independent long run (2048 stratified draws) gives the image's
long-run value; z = (estimate - long run) / sqrt(stderr^2 + se_long_run^2).

Also measured: the effective gain of stratification, the ratio of mean squared errors
(plain / stratified) at equal S, i.e. how many times more plain draws reach the same error.

``--proposal fitted``: instead of the wide truncated logistic, the library's default for a
model folder with a fitted proposal: a proposal fitted (eq. OPT, proposal_fit.py, the
defensive share included) on the first ``--pilot`` images of each system over the
reference range, drawn iid ("plain") or stratified, the long run stratified from it. The
pilot images are among those evaluated (the proposal is fixed before any evaluation
draw, so each image's estimate stays unbiased given the image).

Usage: python benchmarks/bench_calibration.py [--images 400] [--draws 8 16 32 64] [--out calibration.json]
       [--only "Gaussian MI" "flow Gaussian MI"] [--proposal fitted [--floor 0.25]]
Prints a markdown table (the one in BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from infodiff_lightning.analyses.calibration import STUDY_SAMPLER, calibration_stats, calibration_study
from infodiff_lightning.denoisers.base import take
from infodiff_lightning.pid import PID_CONTRASTS
from infodiff_lightning.proposal import DEFAULT_FLOOR
from infodiff_lightning.proposal_fit import fit_model_proposal
from infodiff_lightning.denoisers import CorrelatedGaussian, GaussianMixture
from infodiff_lightning.denoisers.gaussian_flow import FlowMatchingGaussian
from infodiff_lightning.denoisers.noisy import NoisyDenoiser
from infodiff_lightning.denoisers.pid_toys import (binary_candidates, copy_system, pid_columns, unique_system,
                                                   xor_system)

HALF = torch.tensor([0.5, 0.5], dtype=torch.float64)
NOISE = 0.3  # added denoiser noise (per coordinate) for the PID toys


def cells(n_images: int, seed: int):
    """(name, system, x, columns, kind, extra) for every row of the table."""
    g = torch.Generator().manual_seed(seed)
    gauss = CorrelatedGaussian(dim=8, correlation=0.9)
    x, y = gauss.sample(n_images, g)
    yield "Gaussian MI", gauss, x, [gauss.null_conditions(n_images), y], "info", None
    half = y.clone()
    half[:, :4] = float("nan")  # context: the last 4 coordinates of y; condition: all of y
    yield "Gaussian CMI", gauss, x, [half, y], "info", None
    # the same system and images through an exact flow-matching model (flow.py, gaussian_flow.py)
    yield "flow Gaussian MI", FlowMatchingGaussian(gauss), x, [gauss.null_conditions(n_images), y], "info", None
    mix = GaussianMixture(4, 8)
    xm, ym = mix.sample(n_images, g)
    yield "mixture MI", mix, xm, [mix.null_conditions(n_images), ym], "info", None
    for name, make in (("xor", xor_system), ("copy", copy_system), ("unique", unique_system)):
        toy = make()
        xt, yt = toy.sample(n_images, g)
        noisy = NoisyDenoiser(toy, NOISE, seed)
        yield f"{name} PID (MMI)", noisy, xt, list(pid_columns(yt)), "pid", None
    toy = copy_system()
    xt, yt = toy.sample(n_images, g)
    cands = (binary_candidates(yt, 0), HALF, binary_candidates(yt, 1), HALF)
    yield "copy PID (I_min)", NoisyDenoiser(toy, NOISE, seed), xt, list(pid_columns(yt)), "imin", cands


def fitted(system, x, cols, kind, pilot: int, floor: float = DEFAULT_FLOOR):
    """The proposal fitted on the first ``pilot`` images of a cell (eq. OPT, 96 stratified
    uniform draws each), over the reference range, as fit_proposal does for a model."""
    idx = torch.arange(pilot)
    if kind == "info":
        columns, contrasts = {"ref": take(cols[0], idx), "cond": take(cols[1], idx)}, {"info": ("ref", "cond")}
    else:  # the PID's four columns (I_min's candidate columns follow them)
        columns = {k: take(c, idx) for k, c in zip(("ref", "y1", "y2", "y12"), cols)}
        contrasts = PID_CONTRASTS
    return fit_model_proposal(system, x[:pilot], columns, contrasts, ids=range(pilot), n_draws=96, floor=floor)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--draws", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--long-run", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write all figures as JSON here")
    ap.add_argument("--only", nargs="+", default=None, help="run only these systems (e.g. 'flow Gaussian MI')")
    ap.add_argument("--proposal", choices=["logistic", "fitted"], default="logistic",
                    help="logistic: the wide truncated logistic (loc 0, scale 2, clip 6); fitted: see above")
    ap.add_argument("--pilot", type=int, default=16, help="images the fitted proposal is fitted on")
    ap.add_argument("--floor", type=float, default=DEFAULT_FLOOR,
                    help="the fitted proposal's defensive share (the reference density mixed in)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    print("| system | quantity | S | plain SD(z) | plain cover | stratified SD(z) | stratified cover | "
          "MSE plain / stratified |")
    print("|---|---|---|---|---|---|---|---|")
    for name, system, x, cols, kind, extra in cells(args.images, args.seed):
        if args.only and name not in args.only:
            continue
        sampler = STUDY_SAMPLER if args.proposal == "logistic" else fitted(system, x, cols, kind, args.pilot, args.floor)
        for s in args.draws:
            t0 = time.perf_counter()
            res = {}
            for strat in (False, True):
                res[strat] = calibration_study(system, x, cols, kind=kind, n_draws=s, stratified=strat,
                                               long_run_draws=args.long_run, seed=args.seed + s,
                                               candidates=extra, sampler=sampler)
            for q in res[False]:
                a, b = calibration_stats(res[False][q]["z"]), calibration_stats(res[True][q]["z"])
                gain = float(res[False][q]["sq_err"].mean() / res[True][q]["sq_err"].mean())
                row = {"system": name, "quantity": q, "draws": s, "plain": a, "stratified": b,
                       "mse_ratio": gain, "seconds": time.perf_counter() - t0}
                rows.append(row)
                flag = "" if a["n"] == a["n_total"] and b["n"] == b["n_total"] else \
                    f" ({a['n_total'] - a['n']}/{b['n_total'] - b['n']} z not finite)"
                print(f"| {name} | {q} | {s} | {a['sd']:.2f} | {100 * a['coverage']:.1f}% | {b['sd']:.2f} | "
                      f"{100 * b['coverage']:.1f}% | {gain:.2f}{flag} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
