"""The bmi ("Beyond Normal") benchmark: I(X;Y) on its 40 tasks with one fixed recipe.

    make bmi-samples                                   # once: bmi's samples as .npz (own environment)
    .venv/bin/python benchmarks/bmi/run_benchmark.py   # every task; resumes task by task
    .venv/bin/python benchmarks/bmi/run_benchmark.py --tasks 1v1-normal-0.75 --max-steps 500

Each task is trained with ``train.py fit --config configs/train/vector_mi.yaml`` and
estimated with ``analyze.py --config configs/analyze/vector_mi.yaml`` (run in this
process, through the same entry points a user runs; no per-task option other than the
data file and the output folders). The data are bmi's 5000 samples of seed 0,
split as the config splits them: 4000 train the denoiser, the 1000 held-out samples give
the estimate. ``--folds K`` (K >= 2) cross-fits instead: the samples cut into K parts,
one model trained per part on the others and estimated on it, the fold estimates merged
(infodiff_lightning.crossfit), so every sample is measured by a model that never saw it
(K times the training time).

A task counts as within the goal when |estimate - truth| <= 10% of the truth, or
<= 0.05 nats where the truth is below 0.5. Results go to ``<out>/<task_id>.json`` as
each task finishes (a task with a result is skipped when the script runs again) and
the table to ``<out>/results.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FORMS = ("standard", "orthogonal")


def within_goal(estimate: float, truth: float) -> bool:
    return abs(estimate - truth) <= (0.05 if truth < 0.5 else 0.1 * truth)


def run_fold(task: dict, data: str, work: Path, folds: int, fold: int, max_steps: int | None,
             train_set: list[str]) -> dict:
    """Train on every fold but ``fold`` and estimate on ``fold``, through train.py and analyze.py."""
    import analyze
    import train

    name = f"fold{fold}"
    model = work / name / "vector_denoiser"
    split = [] if folds == 1 else ["--data.folds", str(folds), "--data.fold", str(fold)]  # 1: the config's split
    common = ["--data.x", data, *split, "--trainer.enable_progress_bar", "false"]
    train_args = ["fit", "--config", str(ROOT / "configs/train/vector_mi.yaml"), *common,
                  "--model.export_dir", str(model), "--trainer.default_root_dir", str(work / "train"),
                  "--trainer.logger.init_args.save_dir", str(work / "train"), "--trainer.logger.init_args.name", name]
    if max_steps is not None:
        train_args += ["--trainer.max_steps", str(max_steps)]
    train_args += [f"--{option}" for option in train_set]
    analyze_args = ["--config", str(ROOT / "configs/analyze/vector_mi.yaml"), *common, "--model.model", str(model),
                    "--model.truth", str(task["mi_true"]), "--trainer.default_root_dir", str(work / "analyze"),
                    "--trainer.logger.init_args.save_dir", str(work / "analyze"), "--trainer.logger.init_args.name", name]
    t0 = time.perf_counter()
    if train.main(train_args) != 0:
        raise RuntimeError(f"train.py failed on {task['task_id']} fold {fold}")
    t1 = time.perf_counter()
    if analyze.main(analyze_args) != 0:
        raise RuntimeError(f"analyze.py failed on {task['task_id']} fold {fold}")
    t2 = time.perf_counter()
    [summary] = [json.loads(p.read_text()) for p in (work / "analyze" / name).glob("run-*/summary.json")]
    [ckpt] = sorted((work / "train" / name).glob("version_*/checkpoints/last.ckpt"))[-1:]
    import torch

    steps = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    return {"summary": summary, "train_s": t1 - t0, "estimate_s": t2 - t1, "train_steps": steps}


def run_task(task: dict, samples: Path, out: Path, folds: int, max_steps: int | None,
             train_set: list[str]) -> dict:
    """Cross-fitted estimate of one task: every fold trained and estimated, then merged."""
    from infodiff_lightning.crossfit import combine_summaries

    tid = task["task_id"]
    log = out / "logs" / f"{tid}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        parts = [run_fold(task, str(samples / tid / "seed0.npz"), out / "runs" / tid, folds, k, max_steps, train_set)
                 for k in range(folds)]
    combined = combine_summaries([p["summary"] for p in parts])
    row = {**task, "folds": folds, "train_set": train_set, "train_s": sum(p["train_s"] for p in parts),
           "estimate_s": sum(p["estimate_s"] for p in parts), "train_steps": [p["train_steps"] for p in parts]}
    for form in FORMS:
        r = combined[form]
        row[form] = {**r, "within_goal": within_goal(r["estimate"], task["mi_true"]),
                     "per_fold": [p["summary"]["estimators"][form]["estimate"] for p in parts]}
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| task | dims | truth | standard ± s.e. | rel. err | orthogonal ± s.e. | rel. err | steps | train s | estimate s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = []
        for form in FORMS:
            f = r[form]
            mark = "" if f["within_goal"] else " ✗"
            cells += [f"{f['estimate']:.3f} ± {f['stderr']:.3f}", f"{100 * f['relative_error']:+.1f}%{mark}"]
        lines.append(f"| {r['task_id']} | {r['dim_x']}×{r['dim_y']} | {r['mi_true']:.3f} | {' | '.join(cells)} | "
                     f"{'/'.join(map(str, r['train_steps']))} | {r['train_s']:.0f} | {r['estimate_s']:.0f} |")
    n = len(rows)
    lines.append("")
    for form in FORMS:
        ok = sum(r[form]["within_goal"] for r in rows)
        lines.append(f"- {form}: {ok} of {n} tasks within the goal (10% of the truth, or 0.05 nats below 0.5)")
    total = sum(r["train_s"] + r["estimate_s"] for r in rows)
    lines.append(f"- time: {total / 60:.1f} min for {n} tasks (training and estimation)")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", default=str(ROOT / "benchmarks/bmi/samples"), help="folder written by export_samples.py")
    p.add_argument("--out", default=str(ROOT / "benchmarks/bmi/results"), help="results folder")
    p.add_argument("--tasks", nargs="*", help="task ids (default: all of tasks.json)")
    p.add_argument("--folds", type=int, default=1,
                   help="cross-fitting folds, one model each, every sample estimated (default 1: the config's "
                        "split, 5 folds of which fold 0 is held out and estimated)")
    p.add_argument("--max-steps", type=int, default=None, help="override the recipe's training steps (smoke runs)")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a train.py option for every task, for ablations of the recipe (repeatable), for example "
                        "--train-set model.gaussian_baseline=false; recorded in each task's JSON")
    args = p.parse_args()
    samples, out = Path(args.samples), Path(args.out)
    listing = samples / "tasks.json"
    if not listing.is_file():
        sys.exit(f"error: {listing} not found; run `make bmi-samples` first")
    tasks = json.loads(listing.read_text())
    if args.tasks:
        unknown = sorted(set(args.tasks) - {t["task_id"] for t in tasks})
        if unknown:
            sys.exit(f"error: unknown task ids {unknown}")
        tasks = [t for t in tasks if t["task_id"] in args.tasks]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, task in enumerate(tasks, 1):
        path = out / f"{task['task_id']}.json"
        if path.exists():
            row = json.loads(path.read_text())
            if row.get("train_set", []) != args.train_set or row["folds"] != args.folds:
                sys.exit(f"error: {path} was made with --folds {row['folds']} and --train-set "
                         f"{row.get('train_set', [])}, not these options; choose another --out")
            rows.append(row)
            print(f"[{k}/{len(tasks)}] {task['task_id']}: done earlier", flush=True)
            continue
        row = run_task(task, samples, out, args.folds, args.max_steps, args.train_set)
        path.write_text(json.dumps(row, indent=1) + "\n")
        rows.append(row)
        s, o = row["standard"], row["orthogonal"]
        print(f"[{k}/{len(tasks)}] {task['task_id']}: truth {task['mi_true']:.3f}, standard {s['estimate']:.3f} ± "
              f"{s['stderr']:.3f}, orthogonal {o['estimate']:.3f} ± {o['stderr']:.3f} "
              f"({row['train_s']:.0f} s + {row['estimate_s']:.0f} s)", flush=True)
    lines = table(rows)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
