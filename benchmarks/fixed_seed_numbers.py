"""Record every number that fixed-seed, tiny runs of the monitor and of every analysis job produce.

Refactors of the measurement path must not change a single number. Run this before and
after a change and compare the two JSON files (``--compare``):

    python benchmarks/fixed_seed_numbers.py --out before.json
    ... change the code ...
    python benchmarks/fixed_seed_numbers.py --out after.json --compare before.json

``--jobs ranking,pid_study`` records a subset; ``--root`` measures the code of another
checkout of the project with this script (default: the checkout the script is in).

The jobs, each cut small (one function each, below):

- monitor: `train.py fit` on configs/train/tiny_shapes.yaml cut to 3 steps (monitor every
  step, 4 draws, 8 probe images); its export is the tiny model the captions job reads.
- captions: configs/analyze/captions.yaml on that export, 16 images, 4 draws.
- ranking, localization, intervention, pid_study: their configs on the bundled world model
  (models/world) and the embedded world's scenes (ranking and localization read them as
  exported files), 6 to 48 scenes and 8 draws per image.
- vector_mi: configs/train/vector_mi.yaml on examples/gaussian_pairs.npz cut to 40 steps
  (its train/ and val/ scalars are recorded too), then configs/analyze/vector_mi.yaml with it.
- gaussian, mixture: the ground-truth configs with 300 samples and 16 draws.

Per analysis job the record is summary.json (less "status" and "samples", bookkeeping, and
any path into the temporary folder) and the per-sample records sorted by id. Everything runs on the CPU with one thread, so the
numbers are bit-for-bit reproducible on one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def common(tmp: Path) -> list[str]:
    """Options every run gets: CPU, quiet, run folders under ``tmp``."""
    return ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp)]


def run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "HF_HUB_OFFLINE": "1"}  # local models only: no retries against the hub
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def analyze(tmp: Path, config: str, *args: str) -> dict:
    """Run analyze.py on configs/analyze/<config>.yaml; the summary and the records of its run."""
    run(python(str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze" / f"{config}.yaml"),
               *args, *common(tmp)), tmp)
    [job] = [p for p in (tmp / config).iterdir() if p.is_dir()]
    return job_numbers(job)


def job_numbers(job: Path) -> dict:
    """summary.json less its bookkeeping, and the per-sample records in id order."""
    rows = []
    for p in sorted(job.glob("per_image.rank*.jsonl")):
        rows += [json.loads(line) for line in p.read_text().splitlines()]
    rows.sort(key=lambda r: r["id"])
    summary = json.loads((job / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in ("status", "samples")}  # bookkeeping, not numbers
    return {"summary": summary, "records": rows}


def without_paths(x, tmp: str):
    """``x`` less the entries that name a file in the temporary folder (e.g. the vector job's model)."""
    if isinstance(x, dict):
        return {k: without_paths(v, tmp) for k, v in x.items() if not (isinstance(v, str) and tmp in v)}
    if isinstance(x, list):
        return [without_paths(v, tmp) for v in x]
    return x


def tensorboard_scalars(folder: Path, keep=lambda tag: True) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"] if keep(tag)}


# ---- shared inputs, made once per record ------------------------------------------------

class Inputs:
    """What several jobs read: the tiny model of the monitor run, the exported world files."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.monitor_scalars: dict | None = None

    def tiny_model(self) -> Path:
        if self.monitor_scalars is None:
            self.monitor_scalars = monitor_run(self.tmp)
        return self.tmp / "tiny_shapes" / "version_0" / "diffusers"

    def world(self, split: str, n: int) -> Path:
        folder = self.tmp / f"world_{split}_{n}"
        if not folder.exists():
            run(python("-m", "infodiff_lightning.data.world_export", "--out", str(folder), "--split", split,
                       "--n", str(n)), self.tmp)
        return folder


def monitor_override(tmp: Path) -> Path:
    """The monitor of the tiny config, measured at every step with few draws."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/train/tiny_shapes.yaml").read_text())
    callbacks = [c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("InformationMonitor")]
    callbacks[0]["init_args"].update(every_n_steps=1, n_draws=4, probe_size=8, mmse_points=3, mmse_eps=1,
                                       max_time_share=None)  # every step, whatever the timing
    path = tmp / "monitor.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def monitor_run(tmp: Path) -> dict:
    fit = python(str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/train/tiny_shapes.yaml"),
                 "--trainer.max_steps", "3", "--trainer.val_check_interval", "null", "--trainer.limit_val_batches", "0",
                 "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp),
                 "--config", str(monitor_override(tmp)), "--data.init_args.batch_size", "16")
    run(fit, tmp)
    return tensorboard_scalars(tmp / "tiny_shapes" / "version_0", lambda tag: tag.startswith("info/")
                               and not tag.startswith("info/monitor/time_share"))


# ---- the jobs: one function each, (shared inputs, own folder) -> numbers ------------------

def monitor(inputs: Inputs, tmp: Path) -> dict:
    """The monitor's info/ scalars of the tiny training run, per step."""
    inputs.tiny_model()
    return inputs.monitor_scalars


def captions(inputs: Inputs, tmp: Path) -> dict:
    """configs/analyze/captions.yaml on the monitor run's export: 16 held-out images, 4 draws."""
    return analyze(tmp, "captions", "--model.init_args.pretrained", str(inputs.tiny_model()),
                   "--model.init_args.n_draws", "4", "--data.init_args.n_val", "16", "--data.init_args.batch_size", "4")


def world_model() -> list[str]:
    """The bundled world model (the configs name it relative to the repository root)."""
    return ["--model.init_args.pretrained", str(ROOT / "models/world")]


# The world jobs take 8 draws per image: with 8 paired draws an image's own standard error
# is finite (with 2 or 4 it is null), so both kinds of record are compared (captions: null).

def ranking(inputs: Inputs, tmp: Path) -> dict:
    """configs/analyze/ranking.yaml on the first 12 held-out scenes (22 rows in the three files)."""
    return analyze(tmp, "ranking", *world_model(), "--model.init_args.n_draws", "8",
                   "--data.init_args.root", str(inputs.world("heldout", 12)), "--data.init_args.batch_size", "8")


def localization(inputs: Inputs, tmp: Path) -> dict:
    """configs/analyze/localization.yaml on 6 held-out and 4 threshold scenes, both attention
    baselines on (2 noise levels)."""
    return analyze(tmp, "localization", *world_model(), "--model.init_args.n_draws", "8",
                   "--model.init_args.attention_steps", "2", "--data.init_args.root", str(inputs.world("heldout", 6)),
                   "--data.init_args.selection_root", str(inputs.world("threshold", 4)),
                   "--data.init_args.batch_size", "8")


def intervention(inputs: Inputs, tmp: Path) -> dict:
    """configs/analyze/intervention.yaml on 12 held-out scenes, 3 words, 3 DDIM steps."""
    return analyze(tmp, "intervention", *world_model(), "--model.init_args.words", "[red, cross, the]",
                   "--model.init_args.n_draws", "8", "--model.init_args.steps", "3",
                   "--model.init_args.attention_steps", "2", "--model.init_args.n_boot", "200",
                   "--model.init_args.log_images", "1", "--data.init_args.limit_test", "12",
                   "--data.init_args.batch_size", "4")


def pid_study(inputs: Inputs, tmp: Path) -> dict:
    """configs/analyze/pid_study.yaml on 48 held-out scenes, three of its pairs."""
    return analyze(tmp, "pid_study", *world_model(), "--model.init_args.pairs",
                   "[[scarlet, red], [bat, baseball], [big, red]]", "--model.init_args.n_draws", "8",
                   "--model.init_args.log_images", "1", "--data.init_args.limit_test", "48",
                   "--data.init_args.batch_size", "16")


def vector_mi(inputs: Inputs, tmp: Path) -> dict:
    """configs/train/vector_mi.yaml on examples/gaussian_pairs.npz cut to 40 steps (its train/ and
    val/ scalars), then configs/analyze/vector_mi.yaml with that denoiser on the 1000 held-out pairs."""
    pairs, model = str(ROOT / "examples/gaussian_pairs.npz"), tmp / "vector_denoiser"
    run(python(str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/train/vector_mi.yaml"), "--data.x", pairs,
               "--trainer.max_steps", "40", "--trainer.val_check_interval", "20", "--model.export_dir", str(model),
               *common(tmp)), tmp)
    training = tensorboard_scalars(tmp / "vector_mi" / "version_0", lambda tag: tag.startswith(("train/", "val/")))
    (tmp / "analysis").mkdir()  # the analysis logs under the same name as the training
    analysis = analyze(tmp / "analysis", "vector_mi", "--model.model", str(model), "--data.x", pairs,
                       "--model.n_draws", "8", "--model.truth", "2.0433")
    return {"training": training, **analysis}


def gaussian(inputs: Inputs, tmp: Path) -> dict:
    """configs/analyze/gaussian.yaml with 300 samples and 16 draws (as tests/test_analyze_job.py)."""
    return analyze(tmp, "gaussian", "--model.n_samples", "300", "--model.n_draws", "16", "--model.batch_size", "64")


def mixture(inputs: Inputs, tmp: Path) -> dict:
    """configs/analyze/mixture.yaml with 300 samples and 16 draws."""
    return analyze(tmp, "mixture", "--model.n_samples", "300", "--model.n_draws", "16", "--model.batch_size", "64")


JOBS = {f.__name__: f for f in (monitor, captions, ranking, localization, intervention, pid_study, vector_mi,
                                gaussian, mixture)}


def record(tmp: Path, jobs: list[str]) -> tuple[dict, dict[str, float]]:
    """The numbers of each job, and the seconds each took (a shared input counts for the first job
    that asks for it: the tiny training run for the monitor, the world export for ranking)."""
    inputs, numbers, seconds = Inputs(tmp), {}, {}
    for name in jobs:
        folder = tmp / "jobs" / name
        folder.mkdir(parents=True)
        start = time.perf_counter()
        numbers[name] = without_paths(JOBS[name](inputs, folder), str(tmp))
        seconds[name] = time.perf_counter() - start
    return numbers, seconds


def count(x) -> int:
    """Numbers (and other leaves) in a record."""
    if isinstance(x, dict):
        return sum(count(v) for v in x.values())
    if isinstance(x, list):
        return sum(count(v) for v in x)
    return 1


def differences(a, b, path="") -> list[str]:
    """Every place where two records differ (exact comparison of numbers)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only in the first" for k in a if k not in b]
        out += [f"{path}/{k}: only in the second" for k in b if k not in a]
        for k in a:
            if k in b:
                out += differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} entries"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]


def check_imports() -> None:
    """The subprocesses must import the measured checkout's code, not an installed copy."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    got = subprocess.run(python("-c", "import infodiff_lightning; print(infodiff_lightning.__file__)"), cwd=ROOT,
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    if not Path(got).resolve().is_relative_to(ROOT):
        sys.exit(f"infodiff_lightning is imported from {got}, not from {ROOT}")


def main() -> None:
    global ROOT
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="where to write the record (JSON)")
    ap.add_argument("--compare", help="an earlier record to compare with, number for number")
    ap.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated subset of {','.join(JOBS)} (default: all)")
    ap.add_argument("--root", default=str(ROOT), help="the checkout whose code is measured (default: this one)")
    args = ap.parse_args()
    jobs = args.jobs.split(",")
    if unknown := [j for j in jobs if j not in JOBS]:
        ap.error(f"unknown jobs {unknown}; choose from {list(JOBS)}")
    ROOT = Path(args.root).resolve()
    check_imports()
    with tempfile.TemporaryDirectory() as tmp:
        rec, seconds = record(Path(tmp), jobs)
    # JSON keys are strings: round-trip so that a fresh record compares like a loaded one
    rec = json.loads(json.dumps(rec))
    Path(args.out).write_text(json.dumps(rec, indent=1, sort_keys=True))
    for name, numbers in rec.items():
        parts = (f"{len(numbers)} tags" if name == "monitor" else
                 ", ".join(f"{len(v)} {k}" for k, v in numbers.items()))
        print(f"{name:>13}: {count(numbers):6d} items ({parts}) in {seconds[name]:.0f} s")
    print(f"recorded {count(rec)} items in {args.out}")
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        diff = differences({k: v for k, v in before.items() if k in rec}, rec)
        print(f"{len(diff)} differences from {args.compare}")
        for d in diff[:40]:
            print("  " + d)
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
