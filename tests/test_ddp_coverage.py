"""2-process DDP on a dataset whose size is not divisible by the world size.

Seven items on two ranks: the default DistributedSampler would pad rank 1 with a copy of
item 0 (4 + 4 = 8 evaluations, item 0 twice). The analysis jobs use Lightning's
UnrepeatedDistributedSampler instead: rank 0 gets items 0, 2, 4, 6 and rank 1 gets
1, 3, 5, so each item is counted exactly once and the all-reduced summary is the
1-process summary. With batch size 3 the ranks also run unequal numbers of test steps
(rank 0: [0, 2, 4] and [6]; rank 1: [1, 3, 5]), so a per-step collective would hang.

The 2-process runs are `analyze.py` in a subprocess (Lightning re-launches sys.argv for
rank 1); the 1-process reference runs the same CLI entry point in this process.
"""
import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components

ROOT = Path(__file__).resolve().parents[1]
N_ITEMS, BATCH = 7, 3
N_DRAWS = 8
WORDS = ["a", "on", "the", "red", "green", "blue", "yellow", "square", "circle", "cross", "left", "right", "top", "bottom"]


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


def analyze(tmp: Path, name: str, devices: int, *args: str) -> Path:
    """Run the analysis job on 1 process (in this process) or 2 (DDP, gloo, in a subprocess)."""
    common = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(tmp), "--trainer.logger.init_args.save_dir", str(tmp),
              "--trainer.logger.init_args.name", name]
    if devices == 1:
        import analyze as job

        with untouched_global_state():
            job.main([*args, *common])
    else:
        cmd = [sys.executable, str(ROOT / "analyze.py"), *args, *common,
               "--trainer.devices", str(devices), "--trainer.strategy", "ddp"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp / name / "version_0"


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


# ---- the ground-truth job (configs/analyze/gaussian.yaml) ---------------------------------

GAUSSIAN = ["--config", str(ROOT / "configs/analyze/gaussian.yaml"), "--model.n_samples", str(N_ITEMS),
            "--model.batch_size", str(BATCH), "--model.n_draws", str(N_DRAWS)]


@pytest.fixture(scope="module")
def gaussian_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gaussian")
    one, two = analyze(tmp, "one", 1, *GAUSSIAN), analyze(tmp, "two", 2, *GAUSSIAN)
    return summary(one)["estimators"], summary(two)["estimators"]


@pytest.mark.slow
def test_ground_truth_job_counts_each_of_7_samples_once_on_2_ranks(gaussian_runs):
    # 7, not 8: no padding duplicate. Each sample costs n_draws (alpha, eps) draws times
    # 2 conditions (null and y), so 7 * 8 * 2 = 112 denoiser evaluations, not 128.
    _, two = gaussian_runs
    for est, row in two.items():
        assert row["samples"] == N_ITEMS, est
        assert row["denoiser_evals"] == N_ITEMS * N_DRAWS * 2, est


@pytest.mark.slow
def test_ground_truth_job_on_2_ranks_gives_the_1_process_summary(gaussian_runs):
    # Samples and draws are keyed by sample id and the metric states are sums, so only
    # the order of the float64 additions differs between 1 and 2 processes: the estimate
    # agrees to rounding (observed bit-identical; the stderr differed by ~3e-15 relative).
    one, two = gaussian_runs
    assert set(two) == set(one)
    for est in one:
        assert two[est]["samples"] == one[est]["samples"] == N_ITEMS
        assert two[est]["estimate"] == pytest.approx(one[est]["estimate"], rel=1e-9, abs=0), est
        assert two[est]["stderr"] == pytest.approx(one[est]["stderr"], rel=1e-9, abs=0), est


# ---- the caption job (configs/analyze/captions.yaml) on a tiny model ----------------------

@pytest.fixture(scope="module")
def caption_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("captions")
    model = save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), tmp / "model")
    args = ["--config", str(ROOT / "configs/analyze/captions.yaml"), "--model.init_args.pretrained", str(model),
            "--model.init_args.n_draws", "4", "--model.init_args.words", "[red, bottom]",
            "--model.init_args.pairs", "[[green, square]]", "--model.init_args.maps", "false",
            "--data.init_args.n_train", "32", "--data.init_args.n_val", str(N_ITEMS),
            "--data.init_args.batch_size", str(BATCH)]
    return analyze(tmp, "one", 1, *args), analyze(tmp, "two", 2, *args)


@pytest.mark.slow
def test_caption_job_writes_each_of_7_images_once_across_2_ranks(caption_runs):
    # The held-out split is ids 32..38 (it follows n_train = 32 training items); rank 0
    # takes every other one from 32, rank 1 every other one from 33, and nothing twice.
    _, two = caption_runs
    per_rank = [[json.loads(line)["id"] for line in (two / f"per_image.rank{r}.jsonl").read_text().splitlines()]
                for r in (0, 1)]
    assert per_rank == [[32, 34, 36, 38], [33, 35, 37]]
    assert summary(two)["mi"]["images"] == N_ITEMS  # 7, not 8


@pytest.mark.slow
def test_caption_job_on_2_ranks_gives_the_1_process_summary(caption_runs):
    # Each image's draws are keyed by its id and the metric states are sums, so the
    # per-word counts are the same and the means agree to rounding (observed identical).
    # 'red' is in one of the 7 captions: its stderr is NaN (n - 1 = 0) on both sides.
    one, two = (summary(run) for run in caption_runs)
    assert set(two) == set(one)
    for key in one:
        assert two[key]["images"] == one[key]["images"], key
        assert two[key]["mean"] == pytest.approx(one[key]["mean"], rel=1e-9, abs=0), key
        assert two[key]["stderr"] == pytest.approx(one[key]["stderr"], rel=1e-9, abs=0, nan_ok=True), key
