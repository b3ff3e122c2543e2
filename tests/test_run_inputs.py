"""A continued run checks that its inputs are the ones it started with.

The run folder is named by the config; the files the config names can change under it.
Each case edits one input between two identical commands: the second must stop with a
line naming what changed (never resume silently), and ``--fresh true`` must then measure
the new input. Unchanged inputs still resume.
"""
import json
from pathlib import Path

import numpy as np
import pytest

import analyze
from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components
from infodiff_lightning.runs.run_inputs import changes, fingerprint, input_paths

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["a", "on", "the", "red", "green", "blue", "square", "circle", "left", "right"]


def save_model(folder: Path, seed: int) -> Path:
    return save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS, seed=seed)), folder)


def write_images(root: Path) -> None:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, caption in (("a", "a red square on the left"), ("b", "a green circle"), ("c", "a red circle")):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"{name}.png")
        (root / f"{name}.txt").write_text(caption)


@pytest.fixture
def setup(tmp_path):
    model = save_model(tmp_path / "model", seed=0)
    write_images(tmp_path / "images")
    return tmp_path, model


def job(tmp: Path, model: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "configs/analyze/captions.yaml"), "--model.init_args.pretrained", str(model),
            "--model.init_args.n_draws", "2", "--model.init_args.words", "[red]", "--model.init_args.pairs", "[]",
            "--model.init_args.maps", "false", "--model.init_args.log_images", "0",
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.logger.init_args.save_dir", str(tmp / "out"), "--trainer.default_root_dir", str(tmp / "out"),
            "--data", "infodiff_lightning.data.CaptionFolderData", "--data.root", str(tmp / "images"),
            "--data.image_size", "16", "--data.batch_size", "4", "--data.num_workers", "0", *extra]


def summary(tmp: Path) -> dict:
    [folder] = [p for p in (tmp / "out" / "captions").glob("run-*") if ".superseded-" not in p.name]
    return json.loads((folder / "summary.json").read_text())


def test_unchanged_inputs_resume(setup):
    tmp, model = setup
    assert analyze.main(job(tmp, model)) == 0
    assert analyze.main(job(tmp, model)) == 0
    assert summary(tmp)["samples"]["resumed"] == 3


def test_an_edited_caption_stops_the_rerun_and_fresh_measures_the_new_caption(setup, capsys):
    tmp, model = setup
    assert analyze.main(job(tmp, model)) == 0
    assert summary(tmp)["cmi/red"]["images"] == 2  # "a" and "c" name red
    (tmp / "images" / "a.txt").write_text("a square on the left")  # red removed from one caption
    capsys.readouterr()
    assert analyze.main(job(tmp, model)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.init_args.root: 1 modified (a.txt)" in err[0] and "--fresh true" in err[0]
    assert analyze.main(job(tmp, model, "--fresh", "true")) == 0
    assert summary(tmp)["cmi/red"]["images"] == 1 and summary(tmp)["samples"]["resumed"] == 0


def test_a_replaced_image_stops_the_rerun(setup, capsys):
    tmp, model = setup
    assert analyze.main(job(tmp, model)) == 0
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp / "images" / "b.png")
    capsys.readouterr()
    assert analyze.main(job(tmp, model)) == 2
    assert "1 modified (b.png)" in capsys.readouterr().err


def test_a_re_exported_model_stops_the_rerun(setup, capsys):
    tmp, model = setup
    assert analyze.main(job(tmp, model)) == 0
    save_model(model, seed=1)  # other weights, same folder
    capsys.readouterr()
    assert analyze.main(job(tmp, model)) == 2
    err = capsys.readouterr().err
    assert "model.init_args.pretrained:" in err and "modified" in err


def test_the_output_folder_is_not_an_input(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "data.csv").write_text("x")
    config = {"model": {"init_args": {"table": str(tmp_path / "data.csv"), "log_dir": str(tmp_path / "out"),
                                      "name": "not a path"}}}
    assert list(input_paths(config, exclude=(tmp_path / "out",))) == ["model.init_args.table"]


def test_a_copy_with_the_same_content_is_not_a_change(tmp_path):
    f = tmp_path / "captions.csv"
    f.write_text("file_name,text\na.png,a red square\n")
    before = fingerprint({"data.table": f})
    f.write_text("file_name,text\na.png,a red square\n")  # rewritten: a new time, the same bytes
    assert changes(before, fingerprint({"data.table": f})) == []
    f.write_text("file_name,text\na.png,a tan square\n")  # same size, other bytes
    assert changes(before, fingerprint({"data.table": f})) == ["data.table: 1 modified (captions.csv)"]


def test_a_word_past_the_text_encoders_window_is_named_in_the_record_not_averaged_as_zero(setup):
    # the tiny text encoder sees 16 positions: "red" as the 20th word is cut off
    tmp, model = setup
    long = " ".join(["a square on the left"] * 4) + " red"
    (tmp / "images" / "b.txt").write_text(long)
    assert analyze.main(job(tmp, model)) == 0
    [folder] = (tmp / "out" / "captions").glob("run-*")
    rows = {json.loads(line)["id"]: json.loads(line) for line in (folder / "per_image.rank0.jsonl").read_text()
            .splitlines()}
    assert rows[1]["beyond_window"] == ["red"] and "cmi/red" not in rows[1]
    assert "cmi/red" in rows[0] and "beyond_window" not in rows[0]
    assert summary(tmp)["cmi/red"]["images"] == 2  # "a" and "c": the cut-off one is not a zero among them
