"""The ground-truth analysis job: CLI, run folder, TensorBoard, and 2-process DDP."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "analyze" / "gaussian.yaml")
SMALL = ["--model.n_samples", "300", "--model.n_draws", "16", "--model.batch_size", "64"]


def run_job(tmp: Path, name: str, *extra: str) -> Path:
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", CONFIG, *SMALL,
           "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.logger.init_args.name", name,
           "--trainer.default_root_dir", str(tmp), *extra]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [folder] = (tmp / name).glob("run-*")  # the run folder is named by the run's identity
    return folder


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run_job(tmp_path_factory.mktemp("single"), "single")


def test_job_writes_summary_with_estimate_stderr_and_truth(single):
    summary = json.loads((single / "summary.json").read_text())
    orth = summary["estimators"]["orthogonal"]
    assert summary["truth_nats"] == pytest.approx(13.2858, abs=1e-4)  # -16/2 log(1 - 0.81)
    assert abs(orth["estimate"] - orth["truth"]) < 4 * orth["stderr"]
    assert orth["samples"] == 300 and orth["denoiser_evals"] == 300 * 16 * 2


def test_job_saves_its_resolved_config(single):
    text = (single / "config.yaml").read_text()
    assert "CorrelatedGaussian" in text and "n_samples: 300" in text


def test_job_logs_scalars_to_tensorboard(single):
    acc = EventAccumulator(str(single))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for tag in ("info/mi/orthogonal", "info/mi/orthogonal_stderr", "info/mi/standard", "info/mi/truth"):
        assert tag in tags
    assert acc.Scalars("info/mi/truth")[0].value == pytest.approx(13.2858, abs=1e-3)


def test_command_line_overrides_change_the_system(tmp_path):
    out = run_job(tmp_path, "d4", "--model.system.init_args.dim", "4", "--model.estimators", "[standard]")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["truth_nats"] == pytest.approx(-2 * __import__("math").log(1 - 0.81))
    assert list(summary["estimators"]) == ["standard"]


def test_two_process_ddp_gives_the_single_process_values(single, tmp_path):
    # Each sample is evaluated once, on one rank, with draws keyed by its id; the
    # metric states are sums, so the all-reduced value is the single-process value.
    ddp = run_job(tmp_path, "ddp", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    a = json.loads((single / "summary.json").read_text())["estimators"]
    b = json.loads((ddp / "summary.json").read_text())["estimators"]
    for est in a:
        assert b[est]["samples"] == 300  # no padding duplicates
        assert b[est]["estimate"] == pytest.approx(a[est]["estimate"], rel=1e-10)
        assert b[est]["stderr"] == pytest.approx(a[est]["stderr"], rel=1e-8)


def test_bad_setting_fails_with_a_clear_message(tmp_path):
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", CONFIG, "--model.system.init_args.correlation", "1.5",
           "--trainer.default_root_dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "correlation must be in [0, 1)" in proc.stderr
