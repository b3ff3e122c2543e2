"""The word-localization job: COCO-layout word masks in, mean IoU per word out, with the
threshold chosen on a separate set of rows, on the shared analysis-job path."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from infodiff_lightning.data.localization_files import LocalizationRows, read_localization_json
from infodiff_lightning.data.world_export import export_world
from infodiff_lightning.analyses.localization import THRESHOLDS
from tiny_models import save_pixel_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loc")
    export_world(tmp / "heldout", "heldout", n=6)
    export_world(tmp / "threshold", "threshold", n=4)
    # the world's captions, spelled in many pieces by the tiny vocabulary, need a wider
    # window than 16 tokens: a word beyond it would be a recorded failure, not a row
    save_pixel_text(tmp / "model", max_tokens=77)
    return tmp


@pytest.fixture(scope="module")
def default_run(exported):
    """One run of the job as configured (word types and both attention baselines on), read
    by every test that checks what such a run reports."""
    return localized(exported, "localization")


def localize(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/localization.yaml"),
           "--model.init_args.pretrained", str(tmp / "model"), "--model.init_args.n_draws", "2",
           "--data.init_args.root", str(tmp / "heldout"), "--data.init_args.selection_root", str(tmp / "threshold"),
           "--data.init_args.image_size", "8", "--trainer.default_root_dir", str(tmp / "runs"),
           "--trainer.logger.init_args.save_dir", str(tmp / "runs"), "--trainer.enable_progress_bar", "false", *extra]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)


def localized(tmp: Path, name: str, *extra: str) -> tuple[Path, dict, list[dict]]:
    """A localization run logged under ``name``: its folder, summary and records."""
    proc = localize(tmp, "--trainer.logger.init_args.name", name, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next((tmp / "runs" / name).glob("run-*"))
    records = [json.loads(line) for line in (run / "per_image.rank0.jsonl").read_text().splitlines()]
    return run, json.loads((run / "summary.json").read_text()), records


def test_rows_are_annotations_with_masks_at_the_asked_size(exported):
    rows = LocalizationRows(read_localization_json(exported / "heldout"), image_size=8)
    n = len(json.loads((exported / "heldout" / "localization.json").read_text())["annotations"])
    item = rows[0]
    assert len(rows) == n and item["mask"].shape == (8, 8) and item["mask"].any()
    assert item["word"] in item["caption"].split()


def test_the_threshold_is_chosen_on_the_selection_rows_and_the_eval_rows_are_reported(default_run):
    _, summary, records = default_run
    sel = [r for r in records if r["split"] == "selection"]
    evaluated = [r for r in records if r["split"] == "eval"]
    # the chosen threshold is the one with the best mean IoU over the selection rows
    means = [sum(r["iou"][t] for r in sel) / len(sel) for t in range(len(THRESHOLDS))]
    best = max(range(len(THRESHOLDS)), key=means.__getitem__)
    assert summary["localization/threshold"]["value"] == THRESHOLDS[best]
    overall = summary["localization/all"]
    assert overall["n"] == len(evaluated)
    assert overall["miou"] == pytest.approx(sum(r["iou"][best] for r in evaluated) / len(evaluated))
    assert overall["whole_image"] == pytest.approx(sum(r["whole_image"] for r in evaluated) / len(evaluated))
    cmi = torch.tensor([r["cmi"] for r in evaluated], dtype=torch.float64)
    assert overall["cmi"] == pytest.approx(float(cmi.mean()))
    assert overall["cmi_stderr"] == pytest.approx(float(cmi.std() / len(evaluated) ** 0.5))  # over rows


def test_a_word_type_pools_the_rows_of_its_words_at_the_chosen_threshold(default_run):
    # The config types the world's colour and shape words; a type's mIoU is the mean over
    # the evaluated rows of its words (not the mean of the words' means).
    _, summary, records = default_run
    t = THRESHOLDS.index(summary["localization/threshold"]["value"])
    types = yaml.safe_load((ROOT / "configs/analyze/localization.yaml").read_text())["model"]["init_args"]["word_types"]
    assert set(types) == {"colour", "shape"}
    for name, words in types.items():
        rows = [r for r in records if r["split"] == "eval" and r["word"] in words]
        entry = summary[f"localization/type/{name}"]
        assert entry["n"] == len(rows) > 0
        assert entry["miou"] == pytest.approx(sum(r["iou"][t] for r in rows) / len(rows))


@pytest.mark.parametrize("types", ["{colour: []}", "{a/b: [red]}"])
def test_a_word_type_without_words_or_with_a_slash_is_named(exported, types):
    proc = localize(exported, "--model.init_args.word_types", types)
    assert proc.returncode == 2 and "word_types:" in proc.stderr.splitlines()[-1]


def test_without_selection_rows_a_threshold_must_be_given(exported):
    proc = localize(exported, "--data.init_args.selection_root", "null")
    assert proc.returncode == 2 and "threshold: give one" in proc.stderr
    assert localize(exported, "--data.init_args.selection_root", "null", "--model.init_args.threshold", "0.5",
                    "--fresh", "true").returncode == 0


def test_each_baseline_has_its_own_threshold_chosen_on_the_selection_rows(default_run):
    # The config measures the cross-attention baseline (attention_steps 10) and attention x
    # CMI on the same rows; each method's threshold is the best one for that method on the
    # selection rows, and the reported mIoU is its mean over the evaluated rows there.
    run, summary, records = default_run
    sel = [r for r in records if r["split"] == "selection"]
    evaluated = [r for r in records if r["split"] == "eval"]
    for method in ("attention", "attention_x_cmi"):
        field = f"iou_{method}"
        means = [sum(r[field][t] for r in sel) / len(sel) for t in range(len(THRESHOLDS))]
        best = max(range(len(THRESHOLDS)), key=means.__getitem__)
        assert summary["localization/threshold"][method] == THRESHOLDS[best]
        entry = summary["localization/all"][method]
        assert entry["miou"] == pytest.approx(sum(r[field][best] for r in evaluated) / len(evaluated))
        # the swept figure is the best over thresholds on the evaluated rows: never below the held-out one
        assert entry["miou_swept_on_eval"] >= entry["miou"]
    # log_images (4 by default): image | mask | CMI | attention | attention x CMI, linked from the report
    figures = sorted((run / "figures").glob("*.png"))
    report = (run / "report.md").read_text()
    assert len(figures) == 4 and all(f"figures/{f.name}" in report for f in figures)


def test_a_resumed_localization_reports_what_an_uninterrupted_one_does(exported):
    proc = localize(exported, "--trainer.logger.init_args.name", "resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next((exported / "runs" / "resume").glob("run-*"))
    whole = json.loads((run / "summary.json").read_text())
    lines = (run / "per_image.rank0.jsonl").read_text().splitlines()
    # As if killed after the first batch (16 rows, the config's batch size). A cut inside a
    # batch regroups the rest of it, and a word the tiny model ignores has a map of rounding
    # noise (CMI ~1e-10) whose thresholded IoU moves with the rows it is computed beside.
    (run / "per_image.rank0.jsonl").write_text("\n".join(lines[:16]) + "\n")
    assert localize(exported, "--trainer.logger.init_args.name", "resume").returncode == 0
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["samples"]["resumed"] == 16 and resumed["samples"]["measured"] == whole["samples"]["total"] - 16
    assert {k: v for k, v in resumed.items() if k != "samples"} == {k: v for k, v in whole.items() if k != "samples"}


def test_collected_word_maps_own_their_pixels_and_keep_no_batch_alive():
    # collect_word_maps holds one map and mask per (item, word) for the whole collection: each
    # must own exactly its (h, w) elements. A view of row k would keep its batch's maps alive
    # with it, so the memory held would grow with the batch size, not the rows kept.
    from infodiff_lightning.analyses.localization import collect_word_maps
    from infodiff_lightning.measurement import MeasurementSpec
    from test_localization import RegionWords, region_masks

    items = [{"id": i, "image": torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(i)), "caption": c}
             for i, c in enumerate(["a top thing", "a left thing", "a top left thing", "a thing"])]
    spec = MeasurementSpec(("top", "left"), n_draws=2, maps=True)
    collected = collect_word_maps(RegionWords(), items, region_masks, spec, batch_size=4)
    kept = [t for w in ("top", "left") for t in collected.maps[w] + collected.masks[w]]
    assert len(kept) == 8
    for t in kept:
        assert t.shape == (8, 8)
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_with_a_target_each_row_records_the_draws_it_took(exported):
    # rounds of 4 draws until the row's CMI error is within half its value, at most 12
    _, _, records = localized(exported, "adaptive", "--model.init_args.n_draws", "4",
                              "--model.init_args.target_relative", "0.5", "--model.init_args.max_draws", "12")
    assert records and all(r["draws"] in (4, 8, 12) for r in records)
    assert all(r["draws"] == 12 or r["cmi_stderr"] <= 0.5 * abs(r["cmi"]) for r in records)
