"""A caption folder read through one table of captions (JSONL or CSV) instead of .txt
files: rows in file order, images named by the table, and a malformed table named by
file, line and field."""
import json

import numpy as np
import pytest
from PIL import Image

from infodiff_lightning.data.caption_folder import CaptionFolder, CaptionFolderData, read_caption_table


def images(root, names):
    root.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.fromarray(np.full((8, 8, 3), 40 * k, dtype=np.uint8)).save(root / name)


def test_a_jsonl_table_gives_items_in_its_row_order(tmp_path):
    images(tmp_path / "imgs", ["b.png", "a.png"])
    table = tmp_path / "captions.jsonl"
    table.write_text('{"file_name": "b.png", "caption": "a red square"}\n\n'
                     '{"file_name": "a.png", "caption": "a blue circle"}\n')
    data = CaptionFolder(tmp_path / "imgs", image_size=8, captions=table)
    # ids are table rows (b first), not sorted file names
    assert [data[i]["caption"] for i in range(2)] == ["a red square", "a blue circle"]
    assert data[0]["image"].shape == (3, 8, 8) and float(data[0]["image"].mean()) == pytest.approx(-1.0)


def test_a_csv_table_reads_like_the_jsonl_one(tmp_path):
    table = tmp_path / "captions.csv"
    table.write_text('file_name,caption\nb.png,"a red square, small"\na.png,a blue circle\n')
    assert read_caption_table(table) == [("b.png", "a red square, small"), ("a.png", "a blue circle")]


@pytest.mark.parametrize("name, text, message", [
    ("c.jsonl", '{"file_name": "a.png", "caption": "x"}\nnot json\n', "c.jsonl line 2: not a JSON object"),
    ("c.jsonl", '{"file_name": "a.png"}\n', "c.jsonl line 1: field 'caption' is missing or empty"),
    ("c.csv", "file,caption\na.png,x\n", "c.csv: no column 'file_name'"),
    ("c.csv", "file_name,caption\na.png,\n", "c.csv line 2: field 'caption' is missing or empty"),
    ("c.txt", "a.png x\n", "expected a .jsonl or .csv file"),
])
def test_a_malformed_table_is_named_by_file_line_and_field(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        read_caption_table(tmp_path / name)


def test_an_image_the_table_names_but_the_folder_lacks_is_a_recorded_failure_in_evaluation(tmp_path):
    images(tmp_path / "imgs", ["a.png"])
    table = tmp_path / "captions.jsonl"
    table.write_text("\n".join(json.dumps({"file_name": f, "caption": "a cat"}) for f in ("a.png", "gone.png")))
    with pytest.raises(ValueError, match="1 images named in captions.jsonl are not in"):
        CaptionFolder(tmp_path / "imgs", image_size=8, captions=table)  # training: strict
    data = CaptionFolderData(str(tmp_path / "imgs"), image_size=8, captions=str(table))
    assert data.test_set[0]["error"] == "" and "gone.png does not exist" in data.test_set[1]["error"]
    assert data.test_captions() == ["a cat", "a cat"]
