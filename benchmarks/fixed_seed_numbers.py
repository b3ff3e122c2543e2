"""Record every number a fixed-seed monitor run and a fixed-seed caption analysis produce.

Refactors of the measurement path must not change a single number. Run this before and
after a change and compare the two JSON files (``--compare``):

    python benchmarks/fixed_seed_numbers.py --out before.json
    ... change the code ...
    python benchmarks/fixed_seed_numbers.py --out after.json --compare before.json

The monitor run is `train.py fit` on configs/train/tiny_shapes.yaml cut to 3 steps
(monitor every step, 4 draws, 8 probe images); the analysis is `analyze.py` on
configs/analyze/captions.yaml pointed at that run's export. Both run on the CPU with
one thread, so the numbers are bit-for-bit reproducible on one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]
            if tag.startswith("info/") and not tag.startswith("info/monitor/time_share")}


def monitor_override(tmp: Path) -> Path:
    """The monitor of the tiny config, measured at every step with few draws."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/train/tiny_shapes.yaml").read_text())
    callbacks = [c for c in cfg["trainer"]["callbacks"] if c["class_path"].endswith("InformationMonitor")]
    callbacks[0]["init_args"].update(every_n_steps=1, n_draws=4, probe_size=8, mmse_points=3, mmse_eps=1)
    path = tmp / "monitor.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return path


def record(tmp: Path) -> dict:
    fit = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/train/tiny_shapes.yaml"),
           "--trainer.max_steps", "3", "--trainer.val_check_interval", "null", "--trainer.limit_val_batches", "0",
           "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
           "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp),
           "--config", str(monitor_override(tmp)), "--data.init_args.batch_size", "16"]
    run(fit, tmp)
    train_run = tmp / "tiny_shapes" / "version_0"
    model = train_run / "diffusers"
    analyze = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/captions.yaml"),
               "--model.init_args.pretrained", str(model), "--model.init_args.n_draws", "4",
               "--data.init_args.n_val", "16", "--data.init_args.batch_size", "4",
               "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp)]
    run(analyze, tmp)
    [job] = [p for p in (tmp / "captions").iterdir() if p.is_dir()]
    rows = []
    for p in sorted(job.glob("per_image.rank*.jsonl")):
        rows += [json.loads(line) for line in p.read_text().splitlines()]
    rows.sort(key=lambda r: r["id"])
    summary = json.loads((job / "summary.json").read_text())
    summary = {k: v for k, v in summary.items() if k not in ("status", "samples")}  # bookkeeping, not numbers
    return {"monitor": tensorboard_scalars(train_run), "analysis_summary": summary, "analysis_rows": rows}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="where to write the record (JSON)")
    ap.add_argument("--compare", help="an earlier record to compare with, number for number")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rec = record(Path(tmp))
    # JSON keys are strings: round-trip so that a fresh record compares like a loaded one
    rec = json.loads(json.dumps(rec))
    Path(args.out).write_text(json.dumps(rec, indent=1, sort_keys=True))
    n = sum(len(v) for v in rec["monitor"].values()) + len(rec["analysis_summary"]) + len(rec["analysis_rows"])
    print(f"recorded {len(rec['monitor'])} monitor tags, {len(rec['analysis_summary'])} summary entries and "
          f"{len(rec['analysis_rows'])} per-image rows ({n} items) in {args.out}")
    if args.compare:
        diff = differences(json.loads(Path(args.compare).read_text()), rec)
        print(f"{len(diff)} differences from {args.compare}")
        for d in diff[:40]:
            print("  " + d)
        sys.exit(1 if diff else 0)


if __name__ == "__main__":
    main()
