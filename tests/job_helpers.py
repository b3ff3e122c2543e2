"""What the job tests share: running analyze.main in the test process without leaking its
global state, and reading a run's per-sample records."""
import contextlib
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def untouched_global_state():
    """The job calls seed_everything (global RNGs and PL_GLOBAL_SEED): keep them from leaking.
    sys.argv is pytest's; the CLI gets its arguments explicitly. One torch thread, as each
    DDP rank has on 2 cores (Lightning gives a CPU rank cpu_count / world_size threads)."""
    env, py, npy, argv, threads = dict(os.environ), random.getstate(), np.random.get_state(), sys.argv, torch.get_num_threads()
    sys.argv = [str(ROOT / "analyze.py")]
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(env)
        random.setstate(py)
        np.random.set_state(npy)


def records(run: Path) -> list[dict]:
    """Every rank's per-sample records of a run folder, in id order."""
    rows = [json.loads(line) for p in sorted(run.glob("per_image.rank*.jsonl")) for line in p.read_text().splitlines()]
    return sorted(rows, key=lambda r: r["id"])
