"""Peak resident memory of the estimator calls and of the localization and map-export jobs (CPU).

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

The jobs (``jobs``) run as their users run them, ``python analyze.py --config ...``, in a
child process on the bundled world model (models/world) and the held-out world:
``localization`` on N rows (configs/analyze/localization.yaml; a row is a (scene, word)
annotation, about 6 a scene; the threshold chosen on about 100 rows of 16 threshold
scenes; attention baseline off) and ``maps`` on N images (configs/analyze/maps.yaml: MI,
7 CMI and 2 PID maps of each image written to maps/<id>.npz). Figures off. Peak RSS is the kernel's
ru_maxrss of that child (wait4); its RSS is also sampled every second (/proc), kept with
the result in <out>/<job>_<N>.json. If nothing is kept per sample, the peak at N = 1000 is
that of N = 100 plus a small constant.

Usage:
  python benchmarks/bench_memory.py estimators [--calls pid_mmi pid_imin ...] [--images 50 100 300]
                                               [--draws 1024 4096] [--cap-gib 12]
  python benchmarks/bench_memory.py jobs [--jobs localization maps] [--n 100 300 1000] [--draws 4]
                                         [--microbatch 16] [--threads 2] [--out runs/bench_memory]
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


#: The analysis jobs measured by ``jobs`` (:func:`job_command`).
JOBS = ("localization", "maps")


def job_command(job: str, n: int, draws: int, out: Path, microbatch: int | None) -> list[str]:
    """The analyze.py command line of ``job`` on ``n`` samples of the held-out world, with
    the bundled model (models/world), ``draws`` draws per sample, figures off, and
    ``microbatch`` UNet inputs per call (None: the config's).

    localization: configs/analyze/localization.yaml on the first ``n`` rows (every (scene,
    word) annotation is a row, about 6 a scene) of a world export of n / 4 held-out scenes,
    the threshold chosen on the rows of 16 threshold scenes (about 100); attention baseline
    off. maps: configs/analyze/maps.yaml (MI, 7 CMI and 2 PID maps of each image, each
    written to maps/<id>.npz) on the first ``n`` held-out scenes (CaptionedWorldData
    limit_test)."""
    runs = out / "runs"
    common = ["--model.init_args.pretrained", str(ROOT / "models/world"), "--model.init_args.n_draws", str(draws),
              "--model.init_args.log_images", "0", "--model.init_args.microbatch", str(microbatch or "null"),
              "--trainer.default_root_dir", str(runs), "--trainer.logger.init_args.save_dir", str(runs),
              "--trainer.logger.init_args.name", f"{job}_{n}", "--trainer.enable_progress_bar", "false",
              "--fresh", "true"]
    if job == "localization":
        scenes = -(-n // 4)
        data, selection = out / f"world_heldout_{scenes}", out / "world_threshold_16"
        for folder, split, k in ((data, "heldout", scenes), (selection, "threshold", 16)):
            if not (folder / "localization.json").is_file():
                subprocess.run([sys.executable, "-m", "infodiff_lightning.data.world_export", "--out", str(folder),
                                "--split", split, "--n", str(k)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        return [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/localization.yaml"),
                *common, "--model.init_args.attention_steps", "0", "--data.init_args.root", str(data),
                "--data.init_args.selection_root", str(selection), "--data.init_args.limit", str(n)]
    if job == "maps":
        return [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/maps.yaml"),
                *common, "--data.init_args.limit_test", str(n)]
    raise ValueError(f"unknown job {job!r}; one of {JOBS}")


def proc_rss_bytes(pid: int) -> int | None:
    """The resident set size of process ``pid`` now (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def run_job(job: str, n: int, draws: int, out: Path, microbatch: int | None, threads: int, cap_gib: float,
            every: float = 1.0) -> dict:
    """Run ``job`` (:func:`job_command`) in a child process capped at ``cap_gib`` GiB of
    address space: its peak RSS (the kernel's ru_maxrss of that child, from wait4), its RSS
    sampled every ``every`` seconds (/proc/<pid>/statm), wall seconds, and the sample
    counts of its summary. The child's stderr goes to <out>/<job>_<n>.stderr."""
    cmd = job_command(job, n, draws, out, microbatch)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cap = int(cap_gib * 2**30)
    log = out / f"{job}_{n}.stderr"
    with open(log, "w") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err,
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)))
        trace: list[tuple[float, int]] = []
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            rss = proc_rss_bytes(p.pid)
            if rss is not None:
                trace.append((round(time.perf_counter() - t0, 1), rss))
            time.sleep(every)
        seconds = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, by wait4
    summaries = sorted((out / "runs" / f"{job}_{n}").glob("run-*/summary.json"))
    samples = json.loads(summaries[-1].read_text())["samples"] if summaries else None
    lines = log.read_text().strip().splitlines()
    return {"job": job, "n": n, "draws": draws, "microbatch": microbatch, "exit": p.returncode,
            "peak": usage.ru_maxrss * 1024,
            "last_rss": trace[-1][1] if trace else 0, "seconds": seconds, "samples": samples, "trace": trace,
            "error": "" if p.returncode in (0, 3) else (lines or ["?"])[-1][:300]}


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
    jobs = sub.add_parser("jobs")
    jobs.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    jobs.add_argument("--n", nargs="+", type=int, default=[100, 300, 1000],
                      help="rows (localization) or images (maps) per run")
    jobs.add_argument("--draws", type=int, default=4)
    jobs.add_argument("--microbatch", type=int, default=None, help="UNet inputs per call (default: the config's)")
    jobs.add_argument("--threads", type=int, default=2)
    jobs.add_argument("--out", default="runs/bench_memory")
    jobs.add_argument("--cap-gib", type=float, default=12.0)
    one = sub.add_parser("one")
    one.add_argument("call")
    one.add_argument("images", type=int)
    one.add_argument("draws", type=int)
    args = ap.parse_args()

    if args.mode == "one":
        print(json.dumps(run_one(args.call, args.images, args.draws)))
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
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print("| job | N | samples measured | draws | microbatch | peak RSS (MiB) | RSS at the end (MiB) | wall (s) | exit |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for job in args.jobs:
        for n in args.n:
            r = run_job(job, n, args.draws, out, args.microbatch, args.threads, args.cap_gib)
            (out / f"{job}_{n}.json").write_text(json.dumps(r))
            measured = r["samples"]["measured"] if r["samples"] else "?"
            print(f"| {job} | {n} | {measured} | {args.draws} | {args.microbatch or 'config'} | {mib(r['peak'])} | "
                  f"{mib(r['last_rss'])} | {r['seconds']:.0f} | {r['exit']}{' ' + r['error'] if r['error'] else ''} |",
                  flush=True)


if __name__ == "__main__":
    main()
