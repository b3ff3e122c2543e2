"""User tables are read row by row, inside their folder.

Each case plants a readable image *outside* the data folder and names it from a table:
the row must be a recorded failure that does not say what is there, while the good rows
are read. A field that is missing, null or not text costs its row only.
"""
import json

import numpy as np
import pytest
from PIL import Image

from infodiff_lightning.data.caption_folder import CaptionFolderData, read_caption_table
from infodiff_lightning.data.localization_files import LocalizationRows, read_localization_json, read_mask_table
from infodiff_lightning.data.ranking_files import RankingFiles
from infodiff_lightning.data.rows import RowError, inside, read_json, read_table

REFUSED = "is not a path inside the folder"


@pytest.fixture
def tree(tmp_path):
    """root/a.png (inside) and secret.png beside root (outside, readable)."""
    root = tmp_path / "root"
    root.mkdir()
    for path in (root / "a.png", tmp_path / "secret.png", root / "m.png"):
        Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(path)
    return root


@pytest.mark.parametrize("name", ["../secret.png", "sub/../../secret.png", "/etc/hostname"])
def test_a_path_that_leaves_the_folder_is_refused_without_looking_at_it(tree, name):
    with pytest.raises(RowError, match=REFUSED) as err:
        inside(tree, name, "file_name")
    assert "secret" not in str(err.value) and "hostname" not in str(err.value)


def test_a_link_out_of_the_folder_is_refused(tree):
    (tree / "link.png").symlink_to(tree.parent / "secret.png")
    with pytest.raises(RowError, match="leads outside the folder"):
        inside(tree, "link.png", "file_name")
    assert inside(tree, "a.png", "file_name") == tree / "a.png"


def test_caption_table_rows_outside_the_folder_or_without_text_fail_alone(tree):
    table = tree.parent / "captions.jsonl"
    table.write_text("\n".join(json.dumps(r) for r in [
        {"file_name": "a.png", "caption": "a red square"},
        {"file_name": "../secret.png", "caption": "a red square"},
        {"file_name": "a.png", "caption": 7},
        {"file_name": None, "caption": "a red square"},
    ]))
    data = CaptionFolderData(str(tree), image_size=8, captions=str(table)).test_set
    errors = [data[i]["error"] for i in range(4)]
    assert errors[0] == ""
    assert "captions.jsonl line 2: file_name " + REFUSED in errors[1]
    assert "line 3: field 'caption' must be text, got int" in errors[2]
    assert "line 4: field 'file_name' is missing or empty" in errors[3]
    assert float(data[1]["image"].abs().sum()) == 0.0  # the outside image was not read


def test_a_csv_table_saved_with_a_byte_order_mark_is_read(tmp_path):
    table = tmp_path / "captions.csv"
    table.write_bytes("\ufefffile_name,caption\na.png,a red square\n".encode("utf-8"))
    assert read_caption_table(table) == [("a.png", "a red square")]


def test_an_invalid_utf8_line_fails_its_row_in_jsonl_and_names_the_line_in_csv(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_bytes(b'{"file_name": "a.png", "caption": "ok"}\n{"file_name": "b.png", "caption": "\xff"}\n')
    rows = read_table(jsonl, ("file_name", "caption"))
    assert rows[0]["error"] == "" and rows[1]["error"] == "t.jsonl line 2: not valid UTF-8"
    csv = tmp_path / "t.csv"
    csv.write_bytes(b"file_name,caption\na.png,ok\nb.png,\xff\n")
    with pytest.raises(ValueError, match="t.csv line 3: not valid UTF-8"):
        read_table(csv, ("file_name", "caption"))


def test_truncated_json_is_named_by_file_line_and_column(tmp_path):
    path = tmp_path / "vg_relation.json"
    path.write_text('[{"image_path": "a.png",\n "true_caption": "x"')
    with pytest.raises(ValueError, match=r"vg_relation.json line 2 column \d+: not valid JSON"):
        read_json(path)


def test_ranking_rows_with_a_bad_field_or_an_outside_image_fail_alone(tree):
    rows = [{"image_path": "a.png", "true_caption": "a red square", "false_caption": "a square red"},
            {"image_path": "a.png", "true_caption": 3, "false_caption": "a square red"},
            {"image_path": None, "true_caption": "a red square", "false_caption": "a square red"},
            {"image_path": "../secret.png", "true_caption": "a red square", "false_caption": "a square red"},
            {"image_path": "a.png", "true_caption": "a red square", "false_caption": None}]
    (tree / "vg_relation.json").write_text(json.dumps(rows))
    data = RankingFiles(tree, files=["vg_relation.json"], image_size=8, crop_to_bbox=False)
    errors = [data[i]["error"] for i in range(5)]
    assert errors[0] == "" and data[0]["candidates"] == ["a red square", "a square red"]
    assert "row 1: field 'true_caption' must be text, got int" in errors[1]
    assert "row 2: field 'image_path' is missing or empty" in errors[2]
    assert "row 3: image_path " + REFUSED in errors[3]
    assert "row 4: field 'false_caption' is missing or empty" in errors[4]


def test_localization_json_and_mask_table_rows_outside_the_folder_fail_alone(tree):
    layout = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8, "caption": "a red square"},
                         {"id": 2, "file_name": "../secret.png", "height": 8, "width": 8, "caption": "a red square"}],
              "annotations": [{"image_id": 1, "word": "red", "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
                              {"image_id": 2, "word": "red", "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
                              {"image_id": 1, "word": None, "segmentation": [[0, 0, 4, 0, 4, 4]]}]}
    (tree / "localization.json").write_text(json.dumps(layout))
    rows = LocalizationRows(read_localization_json(tree), image_size=8)
    errors = [rows[i]["error"] for i in range(3)]
    assert errors[0] == "" and int(rows[0]["mask"].sum()) > 0
    assert "annotation 1: file_name " + REFUSED in errors[1]
    assert "annotation 2: field 'word' is missing or empty" in errors[2]
    assert rows.words() == ["red"]
    table = tree.parent / "masks.csv"
    table.write_text("file_name,caption,word,mask\na.png,a red square,red,m.png\na.png,a red square,red,../secret.png\n")
    masks = LocalizationRows(read_mask_table(tree, table), image_size=8)
    assert masks[0]["error"] == "" and "masks.csv line 3: mask " + REFUSED in masks[1]["error"]


def test_a_table_without_one_usable_row_is_a_mistake_of_the_whole_job(tree):
    # every row lacking the layout's fields means the wrong file or layout, not bad rows
    (tree / "vg_relation.json").write_text(json.dumps([{"image_path": "a.png", "caption": "a"}] * 2))
    with pytest.raises(ValueError, match=r"vg_relation.json row 0: .* \(no row of vg_relation.json is usable\)"):
        RankingFiles(tree, files=["vg_relation.json"], image_size=8)


def test_a_coco_image_outside_the_images_folder_fails_its_rows_alone(tree):
    from infodiff_lightning.data.localization_files import LocalizationData

    square = [[0, 0, 4, 0, 4, 4, 0, 4]]
    instances = {"images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8},
                            {"id": 2, "file_name": "../secret.png", "height": 8, "width": 8}],
                 "categories": [{"id": 18, "name": "dog"}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 18, "segmentation": square},
                                 {"id": 2, "image_id": 2, "category_id": 18, "segmentation": square}]}
    captions = {"annotations": [{"id": 1, "image_id": 1, "caption": "a dog"},
                                {"id": 2, "image_id": 2, "caption": "a dog"}]}
    (tree.parent / "instances.json").write_text(json.dumps(instances))
    (tree.parent / "captions.json").write_text(json.dumps(captions))
    data = LocalizationData(str(tree), instances=str(tree.parent / "instances.json"),
                            captions=str(tree.parent / "captions.json"), image_size=8).test_set
    assert data[0]["error"] == "" and data[0]["word"] == "dog"
    assert "file_name is not a path inside root" in data[1]["error"] and "secret" not in data[1]["error"]


def test_aro_vg_as_released_reads_its_images_from_the_images_folder(tmp_path):
    # ARO's zip: visual_genome_relation.json beside images/, image_path naming the file alone
    root = tmp_path / "aro"
    (root / "images").mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(root / "images" / "2315375.jpg")
    rows = [{"image_id": "2315375", "relation_name": "on", "image_path": "2315375.jpg",
             "true_caption": "the cup is on the table", "false_caption": "the table is on the cup",
             "bbox_x": 0, "bbox_y": 0, "bbox_w": 8, "bbox_h": 8},
            {"image_id": "1", "relation_name": "on", "image_path": "../secret.jpg",
             "true_caption": "the cup is on the table", "false_caption": "the table is on the cup"}]
    (root / "visual_genome_relation.json").write_text(json.dumps(rows))
    data = RankingFiles(root, files=["visual_genome_relation.json"], image_size=8)
    assert data[0]["error"] == "" and float(data[0]["image"].mean()) > 0.5  # the bright image was read
    assert data[0]["groups"] == ["vg_relation", "vg_relation/on"]  # the released file is the vg_relation benchmark
    assert "image_path " + REFUSED in data[1]["error"]
