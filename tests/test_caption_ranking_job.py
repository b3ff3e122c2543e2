"""The caption-ranking job: ARO-layout files in, accuracy per benchmark file out, on the
shared analysis-job path (records, resume, failures, report)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infodiff_lightning.data.ranking_files import RankingFiles
from infodiff_lightning.data.world_export import export_world
from tiny_models import save_pixel_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ranking")
    export_world(tmp / "world", "heldout", n=20)
    save_pixel_text(tmp / "model")
    return tmp


def analyze(tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/ranking.yaml"),
           "--model.init_args.pretrained", str(tmp / "model"), "--model.init_args.n_draws", "2",
           "--data.init_args.root", str(tmp / "world"), "--data.init_args.image_size", "8",
           "--trainer.default_root_dir", str(tmp / "runs"), "--trainer.logger.init_args.save_dir", str(tmp / "runs"),
           "--trainer.enable_progress_bar", "false", *extra]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)


def test_each_file_is_a_group_and_each_row_an_item_with_the_true_caption_first(exported):
    data = RankingFiles(exported / "world", image_size=8)
    rows = {name: json.loads((exported / "world" / f"{name}.json").read_text())
            for name in ("vg_attribution", "vg_relation", "coco_order")}
    files = list(rows)
    assert data.groups[:3] == files and len(data) == sum(len(r) for r in rows.values())
    # then the subgroups ARO macro-averages over: each relation, each attribute pair
    assert "vg_relation/left of" in data.groups
    pairs = {"vg_attribution/" + "_".join(r["attributes"]) for r in rows["vg_attribution"]}
    assert pairs <= set(data.groups[3:])
    first = data[0]
    assert first["candidates"][0] == rows["vg_attribution"][0]["true_caption"] and first["error"] == ""
    assert len(data[len(data) - 1]["candidates"]) == 5  # coco order: the caption and four shuffles


def test_the_job_reports_per_group_accuracy_that_matches_its_records(exported):
    proc = analyze(exported)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next((exported / "runs" / "ranking").glob("run-*"))
    summary = json.loads((run / "summary.json").read_text())
    records = [json.loads(line) for line in (run / "per_image.rank0.jsonl").read_text().splitlines()]
    assert summary["status"] == "complete" and summary["samples"]["measured"] == len(records)
    for group in ("vg_attribution", "vg_relation", "coco_order", "all"):
        rows = [r for r in records if group in (r["group"], "all")]
        entry = summary[f"ranking/{group}/standard"]
        assert entry["n"] == len(rows) and entry["hits"] == sum(r["correct_standard"] for r in rows)
        assert entry["low"] <= entry["accuracy"] <= entry["high"]
    for r in records:  # a record is correct when the true (first) candidate strictly wins
        assert r["correct_standard"] == (r["standard"][0] > max(r["standard"][1:]))
    report = (run / "report.md").read_text()
    assert "| vg_relation | standard |" in report
    # log_images (4 by default): the first items drawn, kept in figures/ and linked from the report
    figures = sorted((run / "figures").glob("*.png"))
    assert len(figures) == 4 and all(f"figures/{f.name}" in report for f in figures)
    # ARO's headline: the mean over subgroups (attribute pairs), not over items
    pairs = [k for k in summary if k.startswith("ranking/vg_attribution/") and k.count("/") == 3
             and k.endswith("/standard") and "/macro/" not in k]
    macro = summary["ranking/vg_attribution/macro/standard"]
    assert macro["subgroups"] == len(pairs) > 1
    assert macro["accuracy"] == pytest.approx(sum(summary[k]["accuracy"] for k in pairs) / len(pairs))


def test_an_unreadable_image_is_a_recorded_failure_and_the_rest_is_ranked(exported, tmp_path):
    import shutil

    shutil.copytree(exported / "world", tmp_path / "world")
    shutil.copytree(exported / "model", tmp_path / "model")
    rows = json.loads((tmp_path / "world" / "vg_relation.json").read_text())
    (tmp_path / "world" / rows[0]["image_path"]).write_bytes(b"not a png")
    proc = analyze(tmp_path, "--data.init_args.files", "[vg_relation.json]")
    assert proc.returncode == 3, proc.stderr[-3000:]  # finished, with a failed sample
    run = next((tmp_path / "runs" / "ranking").glob("run-*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["samples"]["failed"] == 1 and summary["ranking/vg_relation/standard"]["n"] == len(rows) - 1


def test_a_file_without_caption_fields_is_named_in_one_line(exported, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "vg_relation.json").write_text(json.dumps([{"image_path": "x.png", "caption": "a"}]))
    proc = analyze(exported, "--data.init_args.root", str(tmp_path / "bad"), "--data.init_args.files",
                   "[vg_relation.json]")
    assert proc.returncode == 2 and "vg_relation.json row 0" in proc.stderr


def test_a_resumed_ranking_reports_what_an_uninterrupted_one_does(exported, tmp_path):
    proc = analyze(exported, "--trainer.logger.init_args.name", "resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next((exported / "runs" / "resume").glob("run-*"))
    whole = json.loads((run / "summary.json").read_text())
    lines = (run / "per_image.rank0.jsonl").read_text().splitlines()
    (run / "per_image.rank0.jsonl").write_text("\n".join(lines[:4]) + "\n")  # as if killed after 4 items
    assert analyze(exported, "--trainer.logger.init_args.name", "resume").returncode == 0
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["samples"]["resumed"] == 4 and resumed["samples"]["measured"] == whole["samples"]["total"] - 4
    assert {k: v for k, v in resumed.items() if k != "samples"} == {k: v for k, v in whole.items() if k != "samples"}


def test_a_vg_row_is_cropped_to_its_box_as_aro_does(tmp_path):
    from PIL import Image

    import numpy as np

    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half blue
    arr[:, 20:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "scene.png")
    row = {"image_path": "scene.png", "true_caption": "a blue thing", "false_caption": "a red thing",
           "relation_name": "on", "bbox_x": 22, "bbox_y": 2, "bbox_w": 16, "bbox_h": 16}
    (tmp_path / "vg_relation.json").write_text(json.dumps([row]))
    cropped = RankingFiles(tmp_path, ["vg_relation.json"], image_size=8)[0]["image"]
    whole = RankingFiles(tmp_path, ["vg_relation.json"], image_size=8, crop_to_bbox=False)[0]["image"]
    assert torch.allclose(cropped[2], torch.ones(8, 8)) and torch.allclose(cropped[0], -torch.ones(8, 8))
    # without the crop the centre square straddles both halves: red on its left, blue on its right
    assert whole[0, :, 0].mean() > 0.9 and whole[2, :, -1].mean() > 0.9


def test_a_box_with_a_missing_side_is_named_in_one_line(tmp_path):
    row = {"image_path": "x.png", "true_caption": "a", "false_caption": "b", "bbox_x": 1, "bbox_y": 1, "bbox_w": 3}
    (tmp_path / "vg_relation.json").write_text(json.dumps([row]))
    with pytest.raises(ValueError, match="vg_relation.json row 0: a box needs all of bbox_x"):
        RankingFiles(tmp_path, ["vg_relation.json"])


ADAPTIVE = ("--model.init_args.adaptive", "true", "--model.init_args.round_draws", "2",
            "--model.init_args.min_draws", "4", "--model.init_args.max_draws", "8")


def test_adaptive_ranking_records_the_draws_of_each_candidate_and_image(exported):
    proc = analyze(exported, *ADAPTIVE, "--trainer.logger.init_args.name", "adaptive")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next((exported / "runs" / "adaptive").glob("run-*"))
    records = [json.loads(line) for line in (run / "per_image.rank0.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["samples"]["measured"] == len(records)
    assert not any(k.endswith("/orthogonal") for k in summary)  # no null column: no orthogonal scores
    for r in records:
        draws = r["candidate_draws"]
        # rounds of 2 draws, the first look at 4, at most 8; the image's draws are its survivors'
        assert all(d in (4, 6, 8) for d in draws) and r["draws"] == max(draws) and r["nfe"] == sum(draws)
        # the choice got every draw of the image, and its score relative to itself is 0
        assert draws[r["choice"]] == r["draws"] and r["standard_gap"][r["choice"]] == 0
        # a hit: the true (first) caption chosen and strictly ahead of every other candidate
        # still running at the end (a tie at max_draws is a miss, as in fixed mode)
        last = [k for k, d in enumerate(draws) if d == r["draws"] and k != r["choice"]]
        assert r["correct_standard"] == (r["choice"] == 0 and all(r["standard_gap"][k] < 0 for k in last))
    assert summary["ranking/all/standard"]["hits"] == sum(r["correct_standard"] for r in records)
    assert summary["ranking/all/standard"]["n"] == len(records)


def test_adaptive_ranking_of_an_item_does_not_depend_on_its_batch_on_a_unet(exported):
    # The job's model and items, ranked all together and five at a time: other neighbours
    # in every pass. The decisions (draws of each candidate, choice) and the scores must be
    # the same bits. (Until 2026-12-06 the scores differed by up to 4e-5 relative: the noisy
    # input's float32 sigmoid coefficients were rounded differently at another position in
    # the batch; logsnr.noise_channel now forms them in float64.)
    from infodiff_lightning.analyses.ranking import rank_adaptively
    from infodiff_lightning.denoisers import load_text_to_image

    denoiser = load_text_to_image(str(exported / "model"))
    data = RankingFiles(exported / "world", ["vg_attribution.json", "vg_relation.json"], image_size=8,
                        crop_to_bbox=False)
    items = [data[i] for i in range(len(data))]
    images, ids = torch.stack([it["image"] for it in items]), [int(it["id"]) for it in items]
    cands = [it["candidates"] for it in items]
    # z = 0.5: the untrained model separates little at z = 3, and the point here is that
    # items stop at different rounds
    kw = dict(round_draws=2, min_draws=4, max_draws=8, z=0.5)
    whole = rank_adaptively(denoiser, images, ids, cands, **kw)
    assert len(set(whole.image_draws.tolist())) > 1  # some items stopped early, some ran on
    for s in range(0, len(items), 5):
        part = rank_adaptively(denoiser, images[s:s + 5], ids[s:s + 5], cands[s:s + 5], **kw)
        assert torch.equal(part.draws, whole.draws[s:s + 5]) and torch.equal(part.prediction, whole.prediction[s:s + 5])
        assert torch.equal(part.value, whole.value[s:s + 5]) and torch.equal(part.stderr, whole.stderr[s:s + 5])
