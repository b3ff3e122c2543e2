"""Localization rows from COCO's released annotation files (polygons, uncompressed and
compressed RLE) and from a generic folder with a mask table, each read the way a job reads
them; masks stay aligned with their images; malformed files are named."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infodiff_lightning.data.coco import caption_words, coco_localization_rows, coco_mask
from infodiff_lightning.data.localization_files import LocalizationData
from infodiff_lightning.data.world_export import rle_encode
from tiny_models import save_pixel_text

ROOT = Path(__file__).resolve().parents[1]
H, W = 16, 32  # COCO images are not square: masks must follow the image's resize and crop


def rect(y0, y1, x0, x1, h=H, w=W) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """COCO's val2017 layout: images/, annotations/instances_val2017.json, captions_val2017.json."""
    from pycocotools import mask as mask_utils

    root = tmp_path_factory.mktemp("coco")
    (root / "val2017").mkdir()
    (root / "annotations").mkdir()
    for image_id, size in ((7, (W, H)), (3, (16, 16)), (11, (16, 16))):
        Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(root / "val2017" / f"{image_id:012d}.jpg")
    second_dog = rect(10, 14, 16, 22)
    compressed = mask_utils.encode(np.asfortranarray(second_dog.numpy().astype(np.uint8)))
    instances = {
        "images": [{"id": 7, "file_name": "000000000007.jpg", "height": H, "width": W},
                   {"id": 3, "file_name": "000000000003.jpg", "height": 16, "width": 16},
                   {"id": 11, "file_name": "000000000011.jpg", "height": 16, "width": 16}],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 18, "name": "dog", "supercategory": "animal"},
                       {"id": 10, "name": "traffic light", "supercategory": "outdoor"}],
        "annotations": [
            # a polygon: the rectangle x 2..10, y 3..9 covers the pixels whose centres lie inside it
            {"id": 1, "image_id": 7, "category_id": 18, "iscrowd": 0, "segmentation": [[2, 3, 10, 3, 10, 9, 2, 9]]},
            {"id": 2, "image_id": 7, "category_id": 18, "iscrowd": 0,
             "segmentation": {"size": [H, W], "counts": compressed["counts"].decode()}},
            {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "segmentation": rle_encode(rect(0, 4, 24, 32))},
            {"id": 4, "image_id": 3, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 5, 1, 5, 5]]},
            {"id": 5, "image_id": 11, "category_id": 18, "iscrowd": 0, "segmentation": [[4, 4, 12, 4, 12, 12, 4, 12]]},
        ]}
    captions = {"annotations": [
        {"id": 5, "image_id": 7, "caption": "A dog and a Person on the grass."},
        {"id": 9, "image_id": 7, "caption": "Two dogs near a person"},
        {"id": 2, "image_id": 3, "caption": "a dog on a mat"},  # names a dog the image has none of
        {"id": 1, "image_id": 11, "caption": "a dog"},
    ]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(instances))
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(captions))
    return root


def coco_rows(coco, **kw):
    return coco_localization_rows(coco / "val2017", coco / "annotations" / "instances_val2017.json",
                                  coco / "annotations" / "captions_val2017.json", **kw)


def test_polygon_uncompressed_and_compressed_rle_decode_to_their_regions():
    assert torch.equal(coco_mask([[2, 3, 10, 3, 10, 9, 2, 9]], H, W), rect(3, 9, 2, 10))
    assert torch.equal(coco_mask(rle_encode(rect(0, 4, 24, 32)), H, W), rect(0, 4, 24, 32))
    # compressed RLE as COCO's JSON stores it: "31" is 3 zeros then 1 one, column-major: pixel (1, 1)
    assert coco_mask({"size": [2, 2], "counts": "31"}, 2, 2).tolist() == [[False, False], [False, True]]


@pytest.mark.parametrize("segmentation, message", [
    ([[1, 2, 3, 4]], "at least 6"),
    ({"size": [H, W], "counts": [3, 5]}, "runs cover 8 pixels, its size says 16x32"),
    ({"size": [4, 4], "counts": [16]}, "differs from the image's 16x32"),
    ({"counts": [16]}, "list of polygons or an RLE"),
])
def test_a_malformed_segmentation_says_what_is_wrong(segmentation, message):
    with pytest.raises(ValueError, match=message):
        coco_mask(segmentation, H, W)


def test_a_row_is_each_category_a_caption_names_and_its_image_has(coco):
    rows = coco_rows(coco)
    # image 3's caption names a dog it does not have; image 7's first caption names both; ids in order
    assert [(r[0].name, r[2]) for r in rows] == [("000000000007.jpg", "dog"), ("000000000007.jpg", "person"),
                                                  ("000000000011.jpg", "dog")]
    # the word's mask is the union of the category's instances: the polygon dog and the RLE dog
    _, caption, _, segs, h, w = rows[0]
    assert caption == "A dog and a Person on the grass."
    from infodiff_lightning.data.coco import union_mask

    assert torch.equal(union_mask(segs, h, w), rect(3, 9, 2, 10) | rect(10, 14, 16, 22))


def test_a_plural_names_its_category_and_more_captions_give_more_rows(coco):
    rows = coco_rows(coco, captions_per_image=2)
    assert [(r[1], r[2]) for r in rows][2:4] == [("Two dogs near a person", "dogs"),
                                                 ("Two dogs near a person", "person")]
    only_dogs = coco_rows(coco, captions_per_image=2, categories=["dog"])
    assert {r[2] for r in only_dogs} == {"dog", "dogs"}


def test_category_words_map_synonyms_and_unknown_names_are_errors(coco):
    rows = coco_rows(coco, category_words={"grass": "dog"})  # any caption word can stand for a category
    assert ("dog" in [r[2] for r in rows]) and "grass" not in [r[2] for r in rows]  # one row per category
    with pytest.raises(ValueError, match="categories: \\['cat'\\] are not categories of instances_val2017.json"):
        coco_rows(coco, categories=["cat"])
    assert caption_words("A Person's dog, running.") == ["a", "person's", "dog", "running"]


def test_a_missing_field_names_the_file_and_the_annotation(coco, tmp_path):
    inst = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    del inst["annotations"][2]["segmentation"]
    (tmp_path / "instances.json").write_text(json.dumps(inst))
    with pytest.raises(ValueError, match="instances.json annotations\\[2\\]: field 'segmentation' is missing"):
        coco_localization_rows(coco / "val2017", tmp_path / "instances.json", coco / "annotations" / "captions_val2017.json")


def test_coco_masks_follow_their_image_through_resize_and_crop(coco):
    data = LocalizationData(str(coco / "val2017"), instances=str(coco / "annotations/instances_val2017.json"),
                            captions=str(coco / "annotations/captions_val2017.json"), image_size=8)
    person = data.test_set[1]
    assert person["word"] == "person" and person["error"] == ""
    # 32x16 -> 16x8 (halved), centre crop keeps columns 4..12 of 16: the crowd at x 24..32, y 0..4
    # becomes x 12..16, y 0..2 before the crop, x 8..12 after it: outside the 8 columns kept
    assert not person["mask"].any()
    dog = data.test_set[0]["mask"]
    # nearest halving keeps source pixel 2i of output pixel i. Polygon dog (rows 3..8, cols 2..9):
    # rows 2..4, cols 1..4, after the crop (minus 4) column 0. RLE dog (rows 10..13, cols 16..21):
    # rows 5..6, cols 8..10, after the crop cols 4..6.
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:5, 0] = True
    expected[5:7, 4:7] = True
    assert torch.equal(dog, expected)


def write_mask_folder(folder: Path) -> Path:
    folder.mkdir()
    img = np.zeros((16, 16, 3), np.uint8)
    img[4:12, 2:8] = (255, 0, 0)
    Image.fromarray(img).save(folder / "a.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 2:8] = 255
    Image.fromarray(mask).save(folder / "a_red.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "small.png")
    rows = [{"file_name": "a.png", "caption": "a red square", "word": "red", "mask": "a_red.png"},
            {"file_name": "a.png", "caption": "a red square", "word": "square", "mask": "gone.png"},
            {"file_name": "a.png", "caption": "a red square", "word": "a", "mask": "small.png"}]
    (folder / "masks.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder / "masks.jsonl"


def test_a_mask_table_reads_its_masks_and_records_a_bad_one_per_row(tmp_path):
    table = write_mask_folder(tmp_path / "mine")
    data = LocalizationData(str(tmp_path / "mine"), masks=str(table), image_size=8)
    red, gone, small = (data.test_set[i] for i in range(3))
    assert red["error"] == "" and torch.equal(red["mask"], rect(2, 6, 1, 4, 8, 8))  # halved: rows 2..6, cols 1..4
    # the red pixels of the image are the mask's pixels
    assert torch.equal(red["image"][0] > 0, red["mask"])
    assert "gone.png" in gone["error"] and "small.png is 8x8, its image a.png 16x16" in small["error"]


def test_a_mask_table_without_a_mask_column_is_named(tmp_path):
    (tmp_path / "m.csv").write_text("file_name,caption,word\na.png,a red square,red\n")
    with pytest.raises(ValueError, match="m.csv: no column 'mask'"):
        LocalizationData(str(tmp_path), masks=str(tmp_path / "m.csv"))


def test_n_selection_images_sets_the_first_images_rows_aside(tmp_path):
    table = write_mask_folder(tmp_path / "mine")
    with pytest.raises(ValueError, match="leaves no image to evaluate"):
        LocalizationData(str(tmp_path / "mine"), masks=str(table), n_selection_images=1)
    with pytest.raises(ValueError, match="selection_root is a localization.json folder"):
        LocalizationData(str(tmp_path / "mine"), masks=str(table), selection_root=str(tmp_path))


def test_the_localization_job_runs_on_coco_files_with_the_threshold_chosen_on_the_first_image(coco, tmp_path):
    save_pixel_text(tmp_path / "model", max_tokens=77)  # COCO captions need more than 16 tiny tokens
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/localization.yaml"),
           "--model.init_args.pretrained", str(tmp_path / "model"), "--model.init_args.n_draws", "2",
           "--model.init_args.attention_steps", "0",
           "--data.init_args.root", str(coco / "val2017"), "--data.init_args.selection_root", "null",
           "--data.init_args.instances", str(coco / "annotations/instances_val2017.json"),
           "--data.init_args.captions", str(coco / "annotations/captions_val2017.json"),
           "--data.init_args.captions_per_image", "2", "--data.init_args.n_selection_images", "1",
           "--data.init_args.image_size", "8", "--trainer.default_root_dir", str(tmp_path / "runs"),
           "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = next((tmp_path / "runs" / "localization").glob("run-*"))
    records = [json.loads(line) for line in (run / "per_image.rank0.jsonl").read_text().splitlines()]
    # image 7 (the first with rows) chooses the threshold: its four rows; image 11's dog is evaluated
    assert sorted((r["split"], r["word"]) for r in records) == [
        ("eval", "dog"), ("selection", "dog"), ("selection", "dogs"), ("selection", "person"), ("selection", "person")]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["samples"]["measured"] == 5 and summary["status"] == "complete"
