"""One job at a time in a run folder: a second identical job stops in one line, and a
lock left by a killed job does not block the resume."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import analyze
from infodiff_lightning.runs.run_lock import RunFolderBusy, lock_run_folder
from test_run_inputs import job, setup, summary  # noqa: F401 (the fixture is used by name)

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_job_in_a_held_run_folder_stops_in_one_line_and_writes_nothing(setup, capsys):
    tmp, model = setup
    assert analyze.main(job(tmp, model)) == 0
    [folder] = (tmp / "out" / "captions").glob("run-*")
    records = sorted(p.read_text() for p in folder.glob("per_image.rank*.jsonl"))
    held = lock_run_folder(folder)  # stands for the first job, still running
    capsys.readouterr()
    assert analyze.main(job(tmp, model)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"another job (pid {os.getpid()}) is running in {folder}" in err[0]
    assert sorted(p.read_text() for p in folder.glob("per_image.rank*.jsonl")) == records
    held.close()  # the first job ends: the same command continues the run
    assert analyze.main(job(tmp, model)) == 0
    assert summary(tmp)["samples"]["resumed"] == 3


def test_a_lock_held_by_a_killed_process_is_released(tmp_path):
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from infodiff_lightning.runs.run_lock import "
            "lock_run_folder; h = lock_run_folder(__import__('pathlib').Path(sys.argv[1])); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run"), str(ROOT)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunFolderBusy, match=f"pid {proc.pid}"):
        lock_run_folder(tmp_path / "run")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    lock_run_folder(tmp_path / "run").close()  # no stale lock: the kernel released it with the process


def test_a_full_disk_is_one_line_naming_the_path_and_the_folder_says_stopped(setup, capsys, monkeypatch):
    import errno
    import json

    from infodiff_lightning.modules.analysis_job import AnalysisJob

    tmp, model = setup

    def full(self, stem, records):  # the first batch's records cannot be written
        raise OSError(errno.ENOSPC, "No space left on device", f"{self._out}/{stem}.rank0.jsonl")

    monkeypatch.setattr(AnalysisJob, "_append", full)
    assert analyze.main(job(tmp, model)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: analyze.py: No space left on device: ") and err[-1].endswith("per_image.rank0.jsonl")
    assert not any("Traceback" in line for line in err)
    [folder] = (tmp / "out" / "captions").glob("run-*")
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "stopped" and status["reason"].startswith("No space left on device: ")
    monkeypatch.undo()  # space again: the same command finishes the run
    assert analyze.main(job(tmp, model)) == 0
    assert json.loads((folder / "status.json").read_text())["status"] == "complete"


def test_fresh_does_not_move_a_folder_another_job_is_running_in(setup, capsys):
    tmp, model = setup
    assert analyze.main(job(tmp, model)) == 0
    [folder] = (tmp / "out" / "captions").glob("run-*")
    held = lock_run_folder(folder)
    assert analyze.main(job(tmp, model, "--fresh", "true")) == 2
    assert "another job" in capsys.readouterr().err
    assert [p.name for p in (tmp / "out" / "captions").iterdir()] == [folder.name]  # not moved aside
    held.close()
