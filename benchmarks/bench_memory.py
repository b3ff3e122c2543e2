"""Peak resident memory of the estimator calls and of a localization job (CPU).

Each configuration runs in a fresh Python process, which reports its peak resident set
size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) before and after the measured call:
torch's CPU allocator is invisible to tracemalloc, and a process's peak never goes down,
so one process per configuration is the only honest unit. ``delta`` = peak after the
call - peak before it (after imports, data and draws exist) is what the call itself
added at its peak.

The estimator calls run on analytic systems (exact denoisers: the denoiser costs
nothing, so the numbers are those of the estimators' own tensors): ``informations``
(pointwise MI) and ``conditional_mi`` on a 16-dimensional CorrelatedGaussian, ``pid`` with
MMI and with I_min redundancy on the copy toy (4 dimensions, 2 candidates per source),
``mmse_curve`` on the Gaussian (16 log-SNRs, draws/16 eps each). Every process is capped
at ``--cap-gib`` of address space (RLIMIT_AS), so a configuration that needs more fails
with an allocation error ("over cap") instead of calling the kernel's OOM killer.

Usage:
  python benchmarks/bench_memory.py estimators [--calls pid_mmi pid_imin ...] [--images 50 100 300]
                                               [--draws 1024 4096] [--cap-gib 12]
  python benchmarks/bench_memory.py localization --rows 100 300 1000 [--draws 4] [--out runs/bench_memory]
  python benchmarks/bench_memory.py one <call> <images> <draws>       (one configuration, JSON on stdout)

The "before" numbers of BENCHMARKS.md come from running this script against an older
checkout (``PYTHONPATH=<checkout> python benchmarks/bench_memory.py ...`` from it).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CALLS = ("informations", "conditional_mi", "pid_mmi", "pid_imin", "mmse_curve")


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """This process's resident set size now (from /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def setup_call(call: str, n: int, s: int):
    """A zero-argument function running ``call`` on ``n`` images with ``s`` draws each, its
    inputs (data, conditions, draws) made before it is returned."""
    import torch

    from infodiff_lightning import informations
    from infodiff_lightning.denoisers import CorrelatedGaussian
    from infodiff_lightning.denoisers.pid_toys import binary_candidates, copy_system, pid_columns
    from infodiff_lightning.estimators import conditional_mi, make_draws
    from infodiff_lightning.mmse import mmse_curve
    from infodiff_lightning.pid import pid

    g = torch.Generator().manual_seed(0)
    if call.startswith("pid"):
        system = copy_system()
        x, y = system.sample(n, g)
        draws = make_draws(system, x, s, None, g)
        cols = pid_columns(y)
        kw = {}
        if call == "pid_imin":
            half = torch.tensor([0.5, 0.5], dtype=torch.float64)
            kw = dict(redundancy="imin", candidates1=binary_candidates(y, 0), prior1=half,
                      candidates2=binary_candidates(y, 1), prior2=half)
        return lambda: pid(system, x, *cols, draws=draws, **kw)
    system = CorrelatedGaussian(dim=16, correlation=0.9)
    x, y = system.sample(n, g)
    context = y.clone()
    context[:, 8:] = float("nan")  # half of y observed: c; y: (w, c)
    if call == "informations":
        draws = make_draws(system, x, s, None, g)
        return lambda: informations(system, x, [system.null_conditions(n), y], [(0, 1)], draws=draws)
    if call == "conditional_mi":
        draws = make_draws(system, x, s, None, g)
        return lambda: conditional_mi(system, x, y, context, draws=draws)
    if call == "mmse_curve":
        alphas = torch.linspace(-8, 8, 16)
        return lambda: mmse_curve(system, x, [system.null_conditions(n), y], alphas, n_eps=max(1, s // 16),
                                  generator=0)
    raise ValueError(f"unknown call {call!r}; one of {CALLS}")


def run_one(call: str, n: int, s: int) -> dict:
    import torch

    torch.set_num_threads(2)
    fn = setup_call(call, n, s)
    before, rss_before = peak_rss_bytes(), current_rss_bytes()
    t = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t
    peak = peak_rss_bytes()
    return {"call": call, "images": n, "draws": s, "peak": peak, "before": before, "rss_before": rss_before,
            "delta": peak - max(before, rss_before), "seconds": seconds}


def run_job(rows: int, draws: int, out: str) -> dict:
    """One localization job on the world export of ``rows`` held-out images (every (image,
    word) row of them; exported to ``out`` first, with 50 threshold images as the selection
    rows), attention baseline and figures off, run in this process through analyze.py's
    main; its peak RSS."""
    sys.path.insert(0, str(ROOT))
    import analyze

    data = Path(out) / f"world_heldout_{rows}"
    selection = Path(out) / "world_threshold_50"
    for folder, split, k in ((data, "heldout", rows), (selection, "threshold", 50)):
        if not (folder / "localization.json").is_file():
            subprocess.run([sys.executable, "-m", "infodiff_lightning.data.world_export", "--out", str(folder),
                            "--split", split, "--n", str(k)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    before = peak_rss_bytes()
    t = time.perf_counter()
    code = analyze.main(["--config", str(ROOT / "configs/analyze/localization.yaml"),
                         "--model.init_args.pretrained", str(ROOT / "models/world"),
                         "--model.init_args.n_draws", str(draws), "--model.init_args.attention_steps", "0",
                         "--model.init_args.log_images", "0",
                         "--data.init_args.root", str(data), "--data.init_args.selection_root", str(selection),
                         "--trainer.default_root_dir", str(Path(out) / "runs"),
                         "--trainer.logger.init_args.save_dir", str(Path(out) / "runs"), "--fresh", "true"])
    seconds = time.perf_counter() - t
    return {"job": "localization", "rows": rows, "draws": draws, "exit": code, "peak": peak_rss_bytes(),
            "before": before, "seconds": seconds}


def in_child(args: list[str], cap_gib: float) -> dict:
    """Run this script's ``args`` in a fresh process capped at ``cap_gib`` GiB of address space."""
    cap = int(cap_gib * 2**30)

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, preexec_fn=limit)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["?"])[-1]
        over = "can't allocate memory" in p.stderr or "MemoryError" in p.stderr
        return {"error": f"over the {cap_gib:g} GiB cap" if over else last[:160]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    est = sub.add_parser("estimators")
    est.add_argument("--calls", nargs="+", default=list(CALLS), choices=CALLS)
    est.add_argument("--images", nargs="+", type=int, default=[50, 100, 300])
    est.add_argument("--draws", nargs="+", type=int, default=[1024, 4096])
    est.add_argument("--cap-gib", type=float, default=12.0)
    loc = sub.add_parser("localization")
    loc.add_argument("--rows", nargs="+", type=int, default=[100, 300, 1000])
    loc.add_argument("--draws", type=int, default=4)
    loc.add_argument("--out", default="runs/bench_memory")
    loc.add_argument("--cap-gib", type=float, default=12.0)
    one = sub.add_parser("one")
    one.add_argument("call")
    one.add_argument("images", type=int)
    one.add_argument("draws", type=int)
    job = sub.add_parser("job")
    job.add_argument("rows", type=int)
    job.add_argument("draws", type=int)
    job.add_argument("out")
    args = ap.parse_args()

    if args.mode == "one":
        print(json.dumps(run_one(args.call, args.images, args.draws)))
        return
    if args.mode == "job":
        print(json.dumps(run_job(args.rows, args.draws, args.out)))
        return
    if args.mode == "estimators":
        print("| call | images | draws | peak RSS (MiB) | added by the call (MiB) | seconds |")
        print("|---|---:|---:|---:|---:|---:|")
        for call in args.calls:
            for s in args.draws:
                for n in args.images:
                    r = in_child(["one", call, str(n), str(s)], args.cap_gib)
                    if "error" in r:
                        print(f"| {call} | {n} | {s} | {r['error']} | | |", flush=True)
                    else:
                        print(f"| {call} | {n} | {s} | {mib(r['peak'])} | {mib(r['delta'])} | {r['seconds']:.1f} |",
                              flush=True)
        return
    print("| job | rows | draws | peak RSS (MiB) | seconds | exit |")
    print("|---|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        r = in_child(["job", str(rows), str(args.draws), args.out], args.cap_gib)
        if "error" in r:
            print(f"| localization | {rows} | {args.draws} | {r['error']} | | |", flush=True)
        else:
            print(f"| localization | {rows} | {args.draws} | {mib(r['peak'])} | {r['seconds']:.0f} | {r['exit']} |",
                  flush=True)


if __name__ == "__main__":
    main()
