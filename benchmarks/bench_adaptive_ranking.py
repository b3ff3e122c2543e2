"""Adaptive caption ranking (successive elimination) against a fixed draw count, on the
world's ranking tasks: accuracy, denoiser evaluations (NFE) and draws per image.

    python benchmarks/bench_adaptive_ranking.py --model models/world --n 150 --out adaptive_ranking.json

The tasks are those of benchmarks/world_findings.py (its ranking part), on the first ``--n``
held-out scenes each task has: one-object colour recognition (4 candidates: the colour
named each of the four colours), two-object colour swaps and left/right swaps (2
candidates: the caption and the swapped one). Each image is ranked twice in one run:

* fixed: ``score_candidates`` with ``--fixed_draws`` draws per image over the columns
  [null, c_1, ..., c_K] (the job's fixed mode), choice = argmax of the standard estimator;
* adaptive: ``rank_adaptively`` with ``--round_draws`` draws per round, elimination from
  ``--min_draws`` on at ``--z`` standard errors, at most each of ``--max_draws`` (one run
  per value), no null column.

Both use the library's default sampler and seed 0. Reported per task: accuracy with its
Wilson 95% interval, NFE (denoiser inputs, ``n_evals``) and the ratio adaptive / fixed,
the agreement of the two choices, the hits only one of them has, and the quantiles of
draws per image (an image's draws: those of its last candidates). Prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time

import torch

from infodiff_lightning.analyses.ranking import (ELIMINATION_Z, MIN_DRAWS, PREDICTION_ESTIMATOR, rank_adaptively,
                                                 score_candidates)
from infodiff_lightning.analyses.statistics import accuracy_interval, correct
from infodiff_lightning.data.world import CaptionedWorld, attribute_swap, colour_candidates, left_right_swap
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.measure import default_sampler

TASKS = ("colour (1 object, 4 candidates)", "colour swap (2 objects)", "left/right swap (2 objects)")
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def tasks(data: CaptionedWorld, n_max: int) -> dict[str, list[tuple[int, list[str], int]]]:
    """(scene index, candidates, true index) of the first ``n_max`` scenes of each task
    (the construction of world_findings.ranking)."""
    out = {name: [] for name in TASKS}
    for i in range(len(data)):
        if all(len(rows) >= n_max for rows in out.values()):
            break
        scene = data.scene(i)
        cand = colour_candidates(scene)
        if cand is not None:
            out[TASKS[0]].append((i, *cand))
        for name, negative in ((TASKS[1], attribute_swap(scene)), (TASKS[2], left_right_swap(scene))):
            if negative is not None:
                out[name].append((i, [scene.caption, negative], 0))
    return {name: rows[:n_max] for name, rows in out.items()}


def accuracy(hits: torch.Tensor) -> dict:
    acc, low, high = accuracy_interval(int(hits.sum()), int(hits.numel()))
    return {"accuracy": acc, "low": low, "high": high, "hits": int(hits.sum()), "n": int(hits.numel())}


def run_task(denoiser, data, rows, args) -> dict:
    """Fixed and adaptive ranking of every row of one task, batch by batch."""
    fixed_hits, fixed_pred, fixed_nfe, t_fixed = [], [], 0, 0.0
    adaptive = {(m, z): {"hits": [], "pred": [], "draws": [], "nfe": 0, "seconds": 0.0}
                for m in args.max_draws for z in args.z}
    for start in range(0, len(rows), args.batch):
        chunk = rows[start:start + args.batch]
        items = [data[i] for i, _, _ in chunk]
        images, ids = torch.stack([it["image"] for it in items]), [it["id"] for it in items]
        cands, truth = [c for _, c, _ in chunk], [t for _, _, t in chunk]
        t0 = time.time()
        f = score_candidates(denoiser, images, ids, cands, n_draws=args.fixed_draws, seed=args.seed)
        t_fixed += time.time() - t0
        fixed_nfe += f.n_evals
        fixed_hits.append(correct(f.value[PREDICTION_ESTIMATOR], truth))
        fixed_pred.append(f.value[PREDICTION_ESTIMATOR].argmax(1))
        for (m, z), acc in adaptive.items():
            t0 = time.time()
            a = rank_adaptively(denoiser, images, ids, cands, round_draws=args.round_draws, max_draws=m,
                                min_draws=args.min_draws, z=z, seed=args.seed)
            acc["seconds"] += time.time() - t0
            acc["nfe"] += a.total_evals
            acc["hits"].append(correct(a.decision_scores(), truth))
            acc["pred"].append(a.prediction)
            acc["draws"].append(a.image_draws)
    fh, fp = torch.cat(fixed_hits), torch.cat(fixed_pred)
    out = {"n": len(rows), "fixed": {**accuracy(fh), "nfe": fixed_nfe, "nfe_per_image": fixed_nfe / len(rows),
                                     "seconds": t_fixed}, "adaptive": {}}
    for (m, z), acc in adaptive.items():
        ah, ap, d = torch.cat(acc["hits"]), torch.cat(acc["pred"]), torch.cat(acc["draws"]).double()
        out["adaptive"][f"max {m}, z {z:g}"] = {
            **accuracy(ah), "nfe": acc["nfe"], "nfe_per_image": acc["nfe"] / len(rows),
            "nfe_ratio": acc["nfe"] / fixed_nfe, "seconds": acc["seconds"],
            "agreement": float((ap == fp).double().mean()),
            "only_fixed_right": int((fh & ~ah).sum()), "only_adaptive_right": int((ah & ~fh).sum()),
            "draws_quantiles": {str(q): float(torch.quantile(d, q)) for q in QUANTILES},
            "draws_mean": float(d.mean()), "stopped_before_max": float((d < m).double().mean())}
    return out


def table(results: dict, args) -> str:
    def pct(r):
        return f"{100 * r['accuracy']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"

    lines = ["| task | ranking | accuracy [95%] | NFE / image | NFE ratio | agreement with fixed | only fixed right / "
             "only adaptive right | draws per image: min, 10%, 25%, 50%, 75%, 90%, max (mean) | stopped before max |",
             "|---|---|---|---:|---:|---:|---:|---|---:|"]
    for name, r in results.items():
        f = r["fixed"]
        lines.append(f"| {name} (n = {r['n']}) | fixed {args.fixed_draws} draws | {pct(f)} | {f['nfe_per_image']:.1f} "
                     f"| 1 | | | {args.fixed_draws} | |")
        for m, a in r["adaptive"].items():
            q = ", ".join(f"{v:g}" for v in a["draws_quantiles"].values())
            lines.append(f"| | adaptive, {m} | {pct(a)} | {a['nfe_per_image']:.1f} | {a['nfe_ratio']:.3f} | "
                         f"{100 * a['agreement']:.1f}% | {a['only_fixed_right']} / {a['only_adaptive_right']} | "
                         f"{q} ({a['draws_mean']:.1f}) | {100 * a['stopped_before_max']:.1f}% |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/world")
    ap.add_argument("--n", type=int, default=150, help="held-out scenes per task (at most)")
    ap.add_argument("--fixed_draws", type=int, default=64)
    ap.add_argument("--round_draws", type=int, default=4)
    ap.add_argument("--min_draws", type=int, default=MIN_DRAWS)
    ap.add_argument("--max_draws", type=int, nargs="+", default=[32])
    ap.add_argument("--z", type=float, nargs="+", default=[ELIMINATION_Z])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32, help="images per call (results do not depend on it)")
    ap.add_argument("--tasks", nargs="+", type=int, default=[0, 1, 2], help="indices into TASKS")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    # The code measured: HEAD, and whether the library differed from it (other work in progress)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    t0 = time.time()
    denoiser = load_text_to_image(args.model)
    data = CaptionedWorld("heldout", 32)
    rows = tasks(data, args.n)
    sampler = default_sampler(denoiser)
    print(f"default sampler: {sampler!r} (design {sampler.design})", flush=True)
    results = {}
    for i in args.tasks:
        name = TASKS[i]
        results[name] = run_task(denoiser, data, rows[name], args)
        print(f"[{time.time() - t0:.0f}s] {name} done\n{table({name: results[name]}, args)}", flush=True)
    print(f"\ncommit {commit}; fixed {args.fixed_draws} draws vs adaptive (round {args.round_draws}, min "
          f"{args.min_draws}, z {args.z}); torch threads {torch.get_num_threads()}\n")
    print(table(results, args))
    print(f"\n{time.time() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"commit": commit, "sampler": repr(sampler), "args": vars(args), "results": results,
                       "seconds": time.time() - t0}, f, indent=1)


if __name__ == "__main__":
    main()
