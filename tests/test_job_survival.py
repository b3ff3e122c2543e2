"""Analysis jobs that survive: resume after SIGKILL, per-sample failures, whole-job checks.

Every job here is `analyze.py` in a subprocess on a tiny text-to-image model saved to
disk, as a user runs it. Exit statuses: 0 complete, 2 configuration mistake (nothing
computed, no run folder), 3 complete with failed samples.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["a", "on", "the", "red", "green", "blue", "yellow", "square", "circle", "cross", "left", "right", "top", "bottom"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)),
                           tmp_path_factory.mktemp("model") / "tiny")


def command(model: Path, save_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "analyze.py"), *job_args(model, save_dir, *extra)]


def job_args(model: Path, save_dir: Path, *extra: str) -> list[str]:
    """The caption job's arguments on the tiny model, saved under ``save_dir``."""
    return ["--config", str(ROOT / "configs/analyze/captions.yaml"),
            "--model.init_args.pretrained", str(model), "--model.init_args.n_draws", "4",
            "--model.init_args.words", "[red, bottom]", "--model.init_args.pairs", "[[green, square]]",
            "--model.init_args.maps", "false", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(save_dir), *extra]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=ENV)


def run_folders(save_dir: Path) -> list[Path]:
    return sorted(p for p in save_dir.glob("*/run-*") if p.is_dir() and ".superseded-" not in p.name)


def records(folder: Path, stem: str = "per_image") -> list[dict]:
    rows = []
    for p in sorted(folder.glob(f"{stem}.rank*.jsonl")):
        rows += [json.loads(line) for line in p.read_text().splitlines()]
    return sorted(rows, key=lambda r: r["id"])


# ---- resume after a real SIGKILL -------------------------------------------------------

SHAPES_24 = ["--data.init_args.n_train", "8", "--data.init_args.n_val", "24", "--data.init_args.batch_size", "2"]


@pytest.fixture(scope="module")
def uninterrupted(model, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The caption job on 24 shapes, run to the end: its save dir and its process."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    proc = run(command(model, tmp / "whole", *SHAPES_24), tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "whole", proc


@pytest.mark.slow
def test_a_killed_job_continues_in_its_folder_and_ends_as_an_uninterrupted_one(model, uninterrupted, tmp_path):

    killed_dir = tmp_path / "killed"
    cmd = command(model, killed_dir, *SHAPES_24)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 300
    while time.time() < deadline:
        folders = run_folders(killed_dir)
        if folders and len(records(folders[0])) >= 6:  # 3 of the 12 batches written
            break
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [folder] = run_folders(killed_dir)
    done = len(records(folder))
    assert 6 <= done < 24 and not (folder / "summary.json").exists()
    assert json.loads((folder / "status.json").read_text())["status"] == "running"  # marked incomplete

    again = run(cmd, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert run_folders(killed_dir) == [folder]  # the same folder, not a new version
    assert f"{done} samples already measured" in again.stderr + again.stdout
    rows = records(folder)
    assert [r["id"] for r in rows] == list(range(8, 32))  # each image once: nothing computed twice
    [whole_folder] = run_folders(uninterrupted[0])
    assert folder.name == whole_folder.name  # the run's identity does not depend on where it is saved
    assert rows == records(whole_folder)
    summary, reference = (json.loads((f / "summary.json").read_text()) for f in (folder, whole_folder))
    assert summary["samples"] == {"total": 24, "measured": 24 - done, "resumed": done, "failed": 0}
    summary.pop("samples"), reference.pop("samples")
    assert summary == reference  # bit for bit: values are reduced in id order


def test_fresh_starts_afresh_and_keeps_the_earlier_run_aside(model, tmp_path):
    args = ["--data.init_args.n_train", "8", "--data.init_args.n_val", "4", "--model.init_args.words", "[a]",
            "--model.init_args.pairs", "[]"]  # "a" is in every caption
    assert run(command(model, tmp_path / "out", *args), tmp_path).returncode == 0
    again = run(command(model, tmp_path / "out", *args, "--fresh", "true"), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    [folder] = run_folders(tmp_path / "out")
    assert json.loads((folder / "summary.json").read_text())["samples"]["resumed"] == 0
    assert len(list((tmp_path / "out").glob("*/run-*.superseded-*"))) == 1


# ---- per-sample failures -----------------------------------------------------------------

def write_folder(root: Path) -> dict[str, str]:
    """Six readable images (RGB, RGBA, grey, 16-bit among them) and three bad samples."""
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(0)
    rgb = lambda: Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))  # noqa: E731
    items = {"a_rgb": rgb(), "b_rgb": rgb(), "c_rgb": rgb(),
             "d_rgba": Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="RGBA"),
             "e_grey": Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L"),
             "f_16bit": Image.fromarray(rng.integers(0, 65536, (16, 16), dtype=np.uint16))}
    for name, img in items.items():
        img.save(root / f"{name}.png")
        (root / f"{name}.txt").write_text("a red square on the bottom")
    (root / "g_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    (root / "g_corrupt.txt").write_text("a red square on the left")
    rgb().save(root / "h_nocaption.png")
    rgb().save(root / "i_empty.png")
    (root / "i_empty.txt").write_text("   \n")
    return {"g_corrupt.png": "cannot read image", "h_nocaption.png": "has no caption file", "i_empty.txt": "is empty"}


def folder_args(root: Path) -> list[str]:
    return ["--data", "infodiff_lightning.data.CaptionFolderData", "--data.root", str(root), "--data.image_size", "16",
            "--data.batch_size", "4", "--data.num_workers", "0", "--model.init_args.pairs", "[]"]


@pytest.fixture(scope="module")
def folder_run(model, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, dict[str, str]]:
    """The caption job on the folder of six good and three bad samples: its save dir, its
    process, and the reason expected for each bad sample."""
    tmp = tmp_path_factory.mktemp("folder")
    reasons = write_folder(tmp / "images")
    return tmp / "out", run(command(model, tmp / "out", *folder_args(tmp / "images")), tmp), reasons


def test_bad_samples_are_recorded_with_reasons_and_the_others_measured(folder_run):
    out, proc, reasons = folder_run
    assert proc.returncode == 3, proc.stderr[-3000:]  # finished, with failures: scripts notice
    [folder] = run_folders(out)
    assert [r["id"] for r in records(folder)] == [0, 1, 2, 3, 4, 5]  # RGB, RGBA, grey and 16-bit read
    failures = records(folder, "failures")
    assert [f["id"] for f in failures] == [6, 7, 8]
    for failure, (name, reason) in zip(failures, reasons.items()):
        assert name in failure["error"] and reason in failure["error"], failure
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "complete_with_failures"
    assert summary["samples"] == {"total": 9, "measured": 6, "resumed": 0, "failed": 3}
    assert summary["mi"]["images"] == 6
    assert "3 of 9 samples failed" in proc.stderr + proc.stdout
    assert "3 of 9 samples failed" in (folder / "report.md").read_text()


# The papers' jobs share the caption job's path, so they keep its rules on bad samples too.
PAPER_JOBS = {
    "intervention": ["--model.init_args.words", "[red, square]", "--model.init_args.steps", "2",
                     "--model.init_args.attention_steps", "0", "--model.init_args.n_boot", "100"],
    "pid_study": ["--model.init_args.pairs", "[[red, square]]"],
}


@pytest.mark.parametrize("job", sorted(PAPER_JOBS))
def test_the_papers_jobs_record_bad_samples_and_measure_the_rest(model, tmp_path, job):
    write_folder(tmp_path / "images")
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / f"configs/analyze/{job}.yaml"),
           "--model.init_args.pretrained", str(model), "--model.init_args.n_draws", "2",
           "--model.init_args.log_images", "0", *PAPER_JOBS[job], "--trainer.accelerator", "cpu",
           "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(tmp_path / "out"),
           "--data", "infodiff_lightning.data.CaptionFolderData", "--data.root", str(tmp_path / "images"),
           "--data.image_size", "16", "--data.batch_size", "4", "--data.num_workers", "0",
           "--data.test_split", "all"]  # the configs' world data ask for the held-out split
    proc = run(cmd, tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    [folder] = run_folders(tmp_path / "out")
    assert [r["id"] for r in records(folder)] == [0, 1, 2, 3, 4, 5]
    assert [f["id"] for f in records(folder, "failures")] == [6, 7, 8]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "complete_with_failures"
    assert summary["samples"] == {"total": 9, "measured": 6, "resumed": 0, "failed": 3}


def test_fail_fast_stops_at_the_first_bad_sample(model, tmp_path):
    write_folder(tmp_path / "images")
    proc = run(command(model, tmp_path / "out", *folder_args(tmp_path / "images"),
                       "--model.init_args.fail_fast", "true"), tmp_path)
    assert proc.returncode == 3
    assert "sample 6 failed" in proc.stderr and "g_corrupt.png" in proc.stderr
    [folder] = run_folders(tmp_path / "out")
    assert len(records(folder, "failures")) == 1 and not (folder / "summary.json").exists()


def test_a_folder_job_measures_every_image_by_default(folder_run):
    _, proc, _ = folder_run
    out = proc.stderr + proc.stdout
    assert "measuring 9 images of" in out and "test_split=all" in out


def test_the_console_carries_no_advertising_or_internal_deprecations(uninterrupted):
    _, proc = uninterrupted
    out = proc.stderr + proc.stdout
    assert proc.returncode == 0 and "all 24 samples measured" in out
    for noise in ("Tip:", "LeafSpec", "module(s) in eval mode", "was called before the ``update``", "v_num"):
        assert noise not in out, noise


# ---- whole-job mistakes: one line, before anything is computed, no run folder ---------------
# The cases run analyze.main in this process (a new interpreter per case cost 10-14 s of
# imports); one more runs the script in a subprocess, as a user's console shows it.

def mistaken_job(model: Path, tmp_path: Path, extra: list[str], capfd, monkeypatch) -> tuple[int, str]:
    """analyze.main in this process on the 24 shapes with ``extra``: exit status and stderr."""
    import analyze

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(ROOT / "analyze.py")])  # the CLI reads only the args given
    capfd.readouterr()
    status = analyze.main(job_args(model, tmp_path / "out", *SHAPES_24, *extra))
    return status, capfd.readouterr().err


def assert_one_line_mistake(status: int, err: str, message: str, out_dir: Path) -> None:
    assert status == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and message in lines[-1], lines[-3:]
    assert not out_dir.exists() or not any(out_dir.rglob("*"))  # no run folder


@pytest.mark.parametrize("extra, message", [
    (["--model.init_args.words", "[red, zebra]"], "words: the word 'zebra' occurs in none of the 24 captions"),
    (["--model.init_args.pairs", "[[red, zebra]]"], "pairs: the word 'zebra' occurs in none of the 24 captions"),
    (["--model.init_args.pairs", "[[red, blue]]"], "pairs: [red, blue]: none of the 24 captions"),
    (["--model.init_args.microbatch", "-4"], "microbatch must be >= 1"),
    (["--model.init_args.n_draws", "1"], "n_draws must be >= 2"),
    (["--model.init_args.condition", "erase"], "condition must be one of delete, placeholder, mask"),
    (["--model.init_args.pretrained", "no/such/folder"], "no/such/folder does not exist"),
], ids=["word", "pair-word", "pair", "microbatch", "n_draws", "condition", "model"])
def test_a_whole_job_mistake_fails_in_one_line_before_computing(model, tmp_path, extra, message, capfd,
                                                               monkeypatch):
    assert_one_line_mistake(*mistaken_job(model, tmp_path, extra, capfd, monkeypatch), message, tmp_path / "out")


def test_the_console_shows_a_whole_job_mistake_as_its_last_line_with_exit_status_2(model, tmp_path):
    proc = run(command(model, tmp_path / "out", *SHAPES_24, "--model.init_args.words", "[red, zebra]"), tmp_path)
    assert_one_line_mistake(proc.returncode, proc.stderr, "words: the word 'zebra' occurs in none of the 24 captions",
                            tmp_path / "out")
    # In this process's tests a traceback could only escape main() as an exception; here one
    # printed on the way out would show. (In-process, Lightning's log handler keeps the stream
    # of the first captured test and reports "Logging error" tracebacks: not the product's.)
    assert "Traceback" not in proc.stderr


def test_a_finished_run_leaves_no_process_group_for_the_interpreter_to_tear_down(tmp_path):
    # A process group left alive at exit is torn down racing gloo's threads; a rank can then
    # die of SIGABRT after writing its results. Entry points end with finish_distributed.
    import torch.distributed as dist

    from infodiff_lightning.runs.cli import finish_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    finish_distributed()
    assert not dist.is_initialized()
    finish_distributed()  # no group: nothing to do, no error
