"""The caption analysis job (analyze.py) on a tiny text-to-image model saved to disk."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["a", "on", "the", "red", "green", "blue", "yellow", "square", "circle", "cross", "left", "right", "top", "bottom"]


def analyze(tmp: Path, model: Path, name: str, *extra: str) -> Path:
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/captions.yaml"),
           "--model.init_args.pretrained", str(model), "--model.init_args.n_draws", "4",
           "--model.init_args.words", "[red, bottom]", "--model.init_args.pairs", "[[green, square]]",
           "--data.init_args.n_train", "32", "--data.init_args.n_val", "8", "--data.init_args.batch_size", "4",
           "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
           "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.logger.init_args.name", name, *extra]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [folder] = (tmp / name).glob("run-*")  # the run folder is named by the run's identity
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("captions")
    model = save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS)), tmp / "model")
    return analyze(tmp, model, "one"), tmp, model


def test_summary_has_mi_cmi_and_pid_terms_with_stderr(run):
    summary = json.loads((run[0] / "summary.json").read_text())
    for key in ("mi", "cmi/red", "cmi/bottom", "pid/green+square/redundancy", "pid/green+square/synergy"):
        assert key in summary and summary[key]["stderr"] >= 0
    assert summary["mi"]["images"] == 8  # every held-out image once
    # the first 8 validation captions: 'red' occurs in 2 of them, 'bottom' in 4 (see CaptionedShapes seed 0)
    assert summary["cmi/red"]["images"] == 2 and summary["cmi/bottom"]["images"] == 4


def test_per_image_rows_are_written_for_every_image(run):
    rows = [json.loads(line) for line in (run[0] / "per_image.rank0.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == list(range(32, 40))
    assert all("cmi/red" in r for r in rows if " red " in f" {r['caption']} ")
    assert not (run[0] / "failures.rank0.jsonl").exists()


def test_pid_maps_are_logged_as_overlays(run):
    acc = EventAccumulator(str(run[0]), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()["images"]
    for term in ("redundancy", "unique1", "unique2", "synergy"):
        assert any(t.endswith(f"pid/green+square/{term}") for t in tags), term


def test_map_figures_are_large_enough_to_read(run):
    # A 16x16 map shown as it is is a smudge: each figure has three panels (image | map
    # with its colour scale | overlay) of 256 px each, so it is at least 768 px wide.
    acc = EventAccumulator(str(run[0]), size_guidance={"images": 0})
    acc.Reload()
    event = acc.Images("maps/0/mi")[0]
    assert event.width >= 3 * 256 and event.height >= 256


def test_two_process_analysis_gives_the_single_process_values(run):
    one, tmp, model = run
    two = analyze(tmp, model, "two", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    a = json.loads((one / "summary.json").read_text())
    b = json.loads((two / "summary.json").read_text())
    # Draws are keyed by image id and values are reduced in id order: the same bits.
    assert b == a and b["mi"]["images"] == 8


def test_a_failing_batch_is_recorded_and_the_job_goes_on(run, tmp_path, monkeypatch):
    import lightning as L

    import infodiff_lightning.modules.caption_analysis as job
    from infodiff_lightning.data import CaptionedShapesData

    real, calls = job.measure_captions, []

    def flaky(*args, **kwargs):  # the second batch (ids 36..39) breaks
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated out-of-memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(job, "measure_captions", flaky)
    module = job.CaptionAnalysis(pretrained=str(run[2]), words=["red"], n_draws=2, maps=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.test(module, datamodule=CaptionedShapesData(n_train=32, n_val=8, batch_size=4, test_split="heldout"), verbose=False)
    rows = [json.loads(x) for x in (tmp_path / "per_image.rank0.jsonl").read_text().splitlines()]
    failures = [json.loads(x) for x in (tmp_path / "failures.rank0.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == [32, 33, 34, 35]  # the first batch is kept
    assert [f["id"] for f in failures] == [36, 37, 38, 39]  # each sample of the failed batch, with the reason
    assert all("simulated out-of-memory" in f["error"] for f in failures)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["mi"]["images"] == 4
    assert summary["status"] == "complete_with_failures" and summary["samples"]["failed"] == 4
    assert module.failed_samples == 4  # analyze.py turns this into exit status 3


@pytest.fixture(scope="module")
def adaptive(run):
    _, tmp, model = run
    # rounds of 4 draws until each quantity's error is within 30% of its value, at most 16
    opts = ("--model.init_args.target_relative", "0.3", "--model.init_args.max_draws", "16")
    return analyze(tmp, model, "adaptive", *opts), tmp, model, opts


def test_with_a_target_each_record_says_how_many_draws_its_image_took(adaptive):
    rows = [json.loads(line) for line in (adaptive[0] / "per_image.rank0.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["draws"] in (4, 8, 12, 16) for r in rows)
    for r in rows:  # stopped because MI and every CMI met the target, or at the maximum (the
        # PID terms are functions of three watched informations, not watched themselves)
        errs = [(r[k], r[f"{k}_stderr"]) for k in r if (k == "mi" or k.startswith("cmi/")) and f"{k}_stderr" in r]
        assert r["draws"] == 16 or all(se <= 0.3 * abs(v) + 1e-12 for v, se in errs)
    assert any(r["draws"] < 16 for r in rows)  # some image stopped early


def test_an_adaptive_job_on_two_processes_gives_the_single_process_values(adaptive):
    one, tmp, model, opts = adaptive
    two = analyze(tmp, model, "adaptive-two", *opts, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    # each image's rounds are keyed by (seed, id, round): where it stops cannot depend on the rank
    assert json.loads((two / "summary.json").read_text()) == json.loads((one / "summary.json").read_text())
