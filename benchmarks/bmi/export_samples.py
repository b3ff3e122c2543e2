"""Export the bmi ("Beyond Normal") benchmark's 40 tasks as .npz files.

Runs in its own environment (bmi needs an old JAX that the project does not depend
on); ``make bmi-samples`` creates that environment and runs this script:

    .venv-bmi/bin/python benchmarks/bmi/export_samples.py --out benchmarks/bmi/samples

For each task and seed it writes ``<out>/<task_id>/seed<k>.npz`` with arrays ``x``
(n, dim_x) and ``y`` (n, dim_y), and one ``<out>/tasks.json`` listing every task's id,
name, dimensions and true mutual information in nats. The benchmark's own protocol
draws 5000 samples per task and seed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/bmi/samples", help="output folder")
    p.add_argument("--n-samples", type=int, default=5000, help="samples per task and seed (bmi's protocol: 5000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds (bmi's protocol: 0..9)")
    args = p.parse_args()

    import bmi  # noqa: F401  (fails here, with bmi's own message, outside the bmi environment)
    from bmi.benchmark import BENCHMARK_TASKS

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for k, (task_id, task) in enumerate(BENCHMARK_TASKS.items()):
        folder = out / task_id
        folder.mkdir(exist_ok=True)
        for seed in args.seeds:
            path = folder / f"seed{seed}.npz"
            if not path.exists():
                x, y = task.sample(args.n_samples, seed)
                np.savez_compressed(path, x=np.asarray(x, dtype=np.float64), y=np.asarray(y, dtype=np.float64))
        listing.append({"task_id": task_id, "task_name": task.name, "dim_x": task.dim_x, "dim_y": task.dim_y,
                        "mi_true": float(task.mutual_information), "n_samples": args.n_samples, "seeds": args.seeds})
        print(f"[{k + 1}/{len(BENCHMARK_TASKS)}] {task_id}: dims {task.dim_x}x{task.dim_y}, "
              f"MI {task.mutual_information:.4f}", flush=True)
    (out / "tasks.json").write_text(json.dumps(listing, indent=1) + "\n")


if __name__ == "__main__":
    main()
