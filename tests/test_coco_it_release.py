"""COCO-IT as Kong et al. release it (COCO-IT.csv beside val2017/ and
annotations/instances_val2017.json), read with ``root`` alone: one row per CSV row, the
word as written, the mask the union of every instance of the label (polygons,
uncompressed and compressed RLE, crowd ones included) equal to what the test painted."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infodiff_lightning.contrasts import without_words
from infodiff_lightning.data.coco_it import COCO_IT_COLUMNS, read_coco_it
from infodiff_lightning.data.localization_files import LocalizationData
from infodiff_lightning.data.world_export import rle_encode
from job_helpers import records
from tiny_families import save_tiny_sd

ROOT = Path(__file__).resolve().parents[1]
S = 32  # square images at the world model's size: masks and images are compared pixel for pixel


def rect(y0, y1, x0, x1) -> torch.Tensor:
    m = torch.zeros(S, S, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


# The painted truth of image 139: two people (a polygon and a crowd region as uncompressed
# RLE), a dog (compressed RLE) and a dining table (a polygon); image 285: a dog (polygon).
PERSON = rect(1, 5, 1, 5)          # polygon x 1..5, y 1..5 covers the pixels whose centres lie inside
CROWD = rect(0, 3, 10, 16)         # iscrowd 1, uncompressed RLE
DOG = rect(9, 14, 2, 7)            # compressed RLE
TABLE = rect(10, 16, 9, 16)        # polygon x 9..16, y 10..16
DOG_285 = rect(4, 12, 4, 12)
COLOURS = {"person": (230, 20, 20), "dog": (20, 20, 230), "dining table": (20, 200, 20)}
CAPTION = "Two people and a dog at a dining table"
ROWS = [(139, "person", CAPTION, "Two  and a dog at a dining table", "people"),
        (139, "dog", CAPTION, "Two people and a  at a dining table", "dog"),
        (139, "dining table", CAPTION, "Two people and a dog at a ", "dining table"),
        (285, "dog", "A dog on the grass", "A  on the grass", "dog")]


def paint(path: Path, regions) -> None:
    arr = np.full((S, S, 3), 128, np.uint8)
    for mask, colour in regions:
        arr[mask.numpy()] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_table(path: Path, rows) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COCO_IT_COLUMNS)
        w.writerows(rows)


def write_coco_it(root: Path) -> Path:
    from pycocotools import mask as mask_utils

    (root / "annotations").mkdir(parents=True)
    paint(root / "val2017" / "000000000139.png", [(PERSON | CROWD, COLOURS["person"]), (DOG, COLOURS["dog"]),
                                                  (TABLE, COLOURS["dining table"])])
    paint(root / "val2017" / "000000000285.png", [(DOG_285, COLOURS["dog"])])
    compressed = mask_utils.encode(np.asfortranarray(DOG.numpy().astype(np.uint8)))["counts"].decode()
    instances = {
        "images": [{"id": 139, "file_name": "000000000139.png", "height": S, "width": S},
                   {"id": 285, "file_name": "000000000285.png", "height": S, "width": S}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 67, "name": "dining table"}],
        "annotations": [
            {"id": 1, "image_id": 139, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 5, 1, 5, 5, 1, 5]]},
            {"id": 2, "image_id": 139, "category_id": 1, "iscrowd": 1, "segmentation": rle_encode(CROWD)},
            {"id": 3, "image_id": 139, "category_id": 18, "iscrowd": 0,
             "segmentation": {"size": [S, S], "counts": compressed}},
            {"id": 4, "image_id": 139, "category_id": 67, "iscrowd": 0,
             "segmentation": [[9, 10, 16, 10, 16, 16, 9, 16]]},
            {"id": 5, "image_id": 285, "category_id": 18, "iscrowd": 0, "segmentation": [[4, 4, 12, 4, 12, 12, 4, 12]]},
        ]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    write_table(root / "COCO-IT.csv", ROWS)
    return root


@pytest.fixture(scope="module")
def coco_it(tmp_path_factory):
    return write_coco_it(tmp_path_factory.mktemp("coco_it") / "coco")


def test_root_alone_gives_one_row_per_csv_row_with_the_word_as_written(coco_it):
    data = LocalizationData(str(coco_it), n_selection_images=1, image_size=S)
    rows = data.test_set.rows
    assert [(r.image.name, r.caption, r.word, r.error) for r in rows] == [
        (f"{i:012d}.png", caption, word, "") for i, _, caption, _, word in ROWS]
    # the first image's rows choose the threshold, the second image's are evaluated
    assert [r.split for r in rows] == ["selection"] * 3 + ["eval"]


@pytest.mark.parametrize("k, truth", [(0, PERSON | CROWD), (1, DOG), (2, TABLE), (3, DOG_285)])
def test_each_mask_is_the_union_of_every_instance_of_the_label_as_painted(coco_it, k, truth):
    item = LocalizationData(str(coco_it), n_selection_images=1, image_size=S).test_set[k]
    assert item["error"] == "" and torch.equal(item["mask"], truth)
    # the painted colour of the label is exactly where the mask is
    colour = torch.tensor(COLOURS[ROWS[k][1]], dtype=torch.float32) / 127.5 - 1
    painted = (item["image"] - colour[:, None, None]).abs().amax(0) < 0.02
    assert torch.equal(painted, truth)


def test_a_bad_row_is_a_failed_row_naming_file_line_and_field(coco_it, tmp_path):
    import shutil

    shutil.copytree(coco_it, tmp_path / "coco")
    write_table(tmp_path / "coco" / "COCO-IT.csv", [ROWS[3], ("abc", "dog", "a dog", "a ", "dog"),
                                                    (285, "cat", "a cat", "a ", "cat"),
                                                    (285, "person", "a person", "a ", "person"),
                                                    (999, "dog", "a dog", "a ", "dog"), (285, "dog", "", "x", "dog")])
    rows = read_coco_it(tmp_path / "coco")
    assert [r.error for r in rows] == [
        "",
        "COCO-IT.csv line 3: field 'Image ID' must be a COCO image id, got 'abc'",
        "COCO-IT.csv line 4: field 'Label': 'cat' is not a category of instances_val2017.json",
        "COCO-IT.csv line 5: field 'Label': image 285 has no instance of 'person'",
        "COCO-IT.csv line 6: field 'Image ID': image 999 is not in instances_val2017.json",
        "COCO-IT.csv line 7: field 'correct_obj+context' is missing or empty"]


def test_a_table_without_its_columns_or_instances_is_one_line_naming_the_file(coco_it, tmp_path):
    (tmp_path / "COCO-IT.csv").write_text("Image ID,Label,correct_obj\n139,dog,dog\n")
    with pytest.raises(FileNotFoundError, match="COCO-IT.csv needs COCO's instances file beside it"):
        read_coco_it(tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(
        (coco_it / "annotations" / "instances_val2017.json").read_text())
    with pytest.raises(ValueError, match="COCO-IT.csv: no column 'correct_obj\\+context'"):
        read_coco_it(tmp_path)


def test_an_unreadable_image_is_a_failed_item(coco_it, tmp_path):
    import shutil

    shutil.copytree(coco_it, tmp_path / "coco")
    (tmp_path / "coco" / "val2017" / "000000000285.png").write_bytes(b"not a png")
    data = LocalizationData(str(tmp_path / "coco"), n_selection_images=1, image_size=S)
    assert "cannot read image 000000000285.png" in data.test_set[3]["error"]


def test_coco100_it_is_read_by_name_with_the_same_columns(coco_it, tmp_path):
    import shutil

    shutil.copytree(coco_it, tmp_path / "coco")
    (tmp_path / "coco" / "COCO-IT.csv").rename(tmp_path / "coco" / "COCO100-IT.csv")
    assert len(read_coco_it(tmp_path / "coco")) == 4  # found without naming it
    assert len(LocalizationData(str(tmp_path / "coco"), table="COCO100-IT.csv", n_selection_images=1).test_set) == 4


# ---- the jobs on the released layout: bundled world model (1 and 2 processes), tiny SD ---------

def job(config: str, tmp: Path, name: str, devices: int, *extra: str, pretrained: Path = ROOT / "models/world",
        status: int = 0, threads: int | None = None) -> Path:
    """The run folder of ``analyze.py`` with ``config`` on ``devices`` CPU processes; ``status``:
    its expected exit status (3: every result written, some rows failed); ``threads``: torch
    threads per process (None: Lightning's share of the cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / f"configs/analyze/{config}.yaml"),
           "--model.init_args.pretrained", str(pretrained), "--model.init_args.n_draws", "2",
           "--model.init_args.log_images", "0", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
           "--trainer.strategy", "ddp" if devices > 1 else "auto", "--trainer.default_root_dir", str(tmp),
           "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.logger.init_args.name", name,
           "--trainer.enable_progress_bar", "false", *extra]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == status, proc.stderr[-3000:]
    [run] = (tmp / name).glob("run-*")
    return run


LOCALIZE = ("--model.init_args.attention_steps", "0", "--data.init_args.selection_root", "null",
            "--data.init_args.n_selection_images", "1", "--data.init_args.image_size", str(S),
            "--data.init_args.batch_size", "2")


@pytest.fixture(scope="module")
def localized(coco_it, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("localized")
    args = ("--data.init_args.root", str(coco_it), *LOCALIZE)
    return job("localization", tmp, "one", 1, *args), job("localization", tmp, "two", 2, *args)


def assert_every_row_localized_against_its_union_mask(run: Path) -> None:
    summary, recs = json.loads((run / "summary.json").read_text()), records(run)
    assert summary["samples"]["measured"] == summary["samples"]["total"] == len(recs) == len(ROWS)
    assert [r["word"] for r in recs] == [r[4] for r in ROWS]
    # the whole-image baseline is the mask's area: the union's, crowd included
    areas = [float((PERSON | CROWD).float().mean()), float(DOG.float().mean()), float(TABLE.float().mean()),
             float(DOG_285.float().mean())]
    assert [r["whole_image"] for r in recs] == pytest.approx(areas)
    assert summary["localization/all"]["n"] == 1 and "miou_swept_on_eval" in summary["localization/all"]


@pytest.mark.slow
def test_the_localization_job_measures_every_coco_it_row_against_its_union_mask(localized):
    assert_every_row_localized_against_its_union_mask(localized[0])


@pytest.mark.slow
def test_the_localization_job_on_coco_it_gives_the_same_summary_on_2_processes(localized):
    one, two = localized
    assert records(two) == records(one)
    assert json.loads((two / "summary.json").read_text()) == json.loads((one / "summary.json").read_text())


@pytest.mark.slow
def test_the_localization_job_reads_coco_it_with_a_tiny_stable_diffusion_pipeline(coco_it, tmp_path):
    # the same rows through a latent model with a VAE (32x32 images -> 16x16 latents, the
    # masks fitted to the map's size): every row measured against its union mask
    sd = save_tiny_sd(tmp_path / "sd", [w for row in ROWS for w in row[2].lower().split()])
    run = job("localization", tmp_path, "sd", 1, "--data.init_args.root", str(coco_it), *LOCALIZE, pretrained=sd)
    assert_every_row_localized_against_its_union_mask(run)


# Kong et al.'s intervention on COCO-IT rows: each row's own word removed from its caption,
# the image regenerated from the same seeded noise. One more row names a word its caption
# lacks ("cat" in a caption about a dog): a failed row, not an error of the job.
NOT_IN_CAPTION = (285, "dog", "A dog on the grass", "A dog on the grass", "cat")


@pytest.fixture(scope="module")
def intervened(coco_it, tmp_path_factory):
    import shutil

    tmp = tmp_path_factory.mktemp("intervened")
    shutil.copytree(coco_it, tmp / "coco")
    write_table(tmp / "coco" / "COCO-IT.csv", ROWS + [NOT_IN_CAPTION])
    args = ("--model.init_args.row_words", "true", "--model.init_args.words", "[]", "--model.init_args.steps", "2",
            "--model.init_args.attention_steps", "0", "--model.init_args.n_boot", "200",
            "--data", "infodiff_lightning.data.LocalizationData", "--data.init_args.root", str(tmp / "coco"),
            "--data.init_args.image_size", str(S), "--data.init_args.batch_size", "3")
    # one torch thread per process in both runs: a regeneration's convolutions sum in an
    # order that depends on the thread count (last bits), and the 2-process run has one each
    return tuple(job("intervention", tmp, name, n, *args, status=3, threads=1) for name, n in (("one", 1), ("two", 2)))


def test_deleting_a_rows_word_gives_the_csv_context_up_to_spaces():
    # the job removes the row's word by its condition (delete): on these rows that is
    # Kong et al.'s context column, whose generator leaves the spaces around the word
    for _, _, caption, context, word in ROWS:
        assert without_words(caption, [word], "delete", None) == " ".join(context.split())


@pytest.mark.slow
def test_the_intervention_job_removes_each_coco_it_rows_own_word(intervened):
    run = intervened[0]
    summary, recs = json.loads((run / "summary.json").read_text()), records(run)
    # every row measured, each record holding its own row's word alone (the caption of the
    # first three rows names people, a dog and a dining table: one word each, not all three)
    assert summary["samples"] == {"total": 5, "measured": 4, "resumed": 0, "failed": 1}
    assert [list(r["words"]) for r in recs] == [[row[4]] for row in ROWS]
    assert all(r["words"][row[4]]["change"] > 0 for r, row in zip(recs, ROWS))
    # the words reported are the datamodule's groups, every row's word: "dog" on two rows,
    # "cat" on none measured
    assert {w: v["images"] for w, v in summary["words"].items()} == {"cat": 0, "dining table": 1, "dog": 2,
                                                                     "people": 1}
    assert summary["all_words"]["images"] == 4 and summary["all_words"]["image_level"] is not None
    [failure] = [json.loads(line) for line in (run / "failures.rank0.jsonl").read_text().splitlines()]
    assert failure["id"] == 4 and failure["error"].startswith("word 'cat' is not in its caption")


@pytest.mark.slow
def test_the_intervention_job_on_coco_it_rows_gives_the_same_summary_on_2_processes(intervened):
    one, two = intervened
    assert records(two) == records(one)
    assert json.loads((two / "summary.json").read_text()) == json.loads((one / "summary.json").read_text())
