"""Generation as a job (modules/generation.py) and selection as a job (modules/selection.py)
on a tiny model: the caption folder they write, reproducibility by id (resume and two
processes give the same images bit for bit), and the selected folders train.py reads."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from infodiff_lightning.models import TinyTextToImageSpec, build_tiny_text_to_image, save_components
from job_helpers import records, untouched_global_state

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["a", "on", "the", "red", "blue", "square", "circle", "left", "right"]
#: line 1 is blank: prompt ids are line numbers, 0, 2 and 3
PROMPTS = "a red square on the left\n\na blue circle on the right\na blue square on the left\n"
CANDIDATES, STEPS, CHUNK = 3, 4, 2


def common(root: Path, name: str) -> list[str]:
    return ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir",
            str(root), "--trainer.logger.init_args.save_dir", str(root), "--trainer.logger.init_args.name", name]


def generate_args(files: Path) -> list[str]:
    return ["--config", str(ROOT / "configs/analyze/generate.yaml"), "--model.init_args.pretrained",
            str(files / "model"), "--model.init_args.candidates", str(CANDIDATES), "--model.init_args.steps",
            str(STEPS), "--model.init_args.guidance", "2.0", "--model.init_args.chunk", str(CHUNK),
            "--data.init_args.prompts", str(files / "prompts.txt"), "--data.init_args.world_split", "null",
            "--data.init_args.unseen", "false", "--data.init_args.unique", "false", "--data.init_args.limit", "null",
            "--data.init_args.batch_size", "2"]


def run_job(root: Path, name: str, args: list[str], devices: int = 1) -> Path:
    if devices == 1:
        import analyze

        with untouched_global_state():
            assert analyze.main([*args, *common(root, name)]) == 0
    else:
        root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(ROOT / "analyze.py"), *args, *common(root, name), "--trainer.devices",
               str(devices), "--trainer.strategy", "ddp"]
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
    [folder] = (root / name).glob("run-*")
    return folder


def pixels(run: Path) -> dict[str, np.ndarray]:
    from PIL import Image

    return {p.name: np.asarray(Image.open(p)) for p in sorted((run / "images").glob("*.png"))}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generation")
    save_components(build_tiny_text_to_image(TinyTextToImageSpec(words=WORDS, image_size=8, max_tokens=32)),
                    tmp / "model")
    (tmp / "prompts.txt").write_text(PROMPTS)
    return tmp


@pytest.fixture(scope="module")
def generated(files):
    return run_job(files / "one", "generate", generate_args(files))


def test_every_prompt_gets_its_candidates_named_by_prompt_id_and_index(generated):
    got = records(generated)
    assert [(r["prompt"], r["candidate"]) for r in got] == [(p, m) for p in (0, 2, 3) for m in range(CANDIDATES)]
    first = got[0]
    assert first["caption"] == "a red square on the left" and first["seed_key"] == [0, 0, 0]
    assert first["file"] == "images/000000_000.png" and first["id"] == 0 * CANDIDATES + 0
    assert all(r["trajectory_score"] > 0 for r in got)  # a sum of squared gaps over 3 counted steps


def test_the_generated_images_are_a_caption_folder(generated):
    from infodiff_lightning.data import CaptionFolderData

    data = CaptionFolderData(str(generated / "images"), image_size=8, n_probe=1)
    assert len(data.train_set) == 3 * CANDIDATES - 1  # strict: every image has its caption
    assert data.test_set[0]["caption"] == "a red square on the left"


def test_a_resumed_generation_writes_the_same_images_bit_for_bit(files, generated):
    # Kill after 4 of 9 candidates: prompt 2 has candidate 0 only, so its chunk {0, 1} is
    # sampled again whole (candidate 1 written) and chunk {2} after it.
    root = files / "resumed"
    shutil.copytree(files / "one", root)
    [run] = (root / "generate").glob("run-*")
    lines = (run / "per_image.rank0.jsonl").read_text().splitlines(keepends=True)
    (run / "per_image.rank0.jsonl").write_text("".join(lines[:4]) + lines[4][:20])  # and a torn line
    for line in lines[4:]:  # a killed batch wrote no record, and its images may be missing too
        (run / json.loads(line)["file"]).unlink()
    (run / "status.json").write_text('{"status": "running"}')
    again = run_job(root, "generate", generate_args(files))
    assert again == run
    assert records(again) == records(generated)
    assert json.loads((again / "summary.json").read_text())["samples"] == \
        {"total": 9, "measured": 5, "resumed": 4, "failed": 0}
    reference, resumed = pixels(generated), pixels(again)
    assert reference.keys() == resumed.keys() and all(np.array_equal(reference[k], resumed[k]) for k in reference)


@pytest.mark.slow
def test_two_processes_generate_the_same_images_bit_for_bit(files, generated):
    two = run_job(files / "two", "generate", generate_args(files), devices=2)
    assert len(list(two.glob("per_image.rank*.jsonl"))) == 2  # both ranks generated some
    assert records(two) == records(generated)
    reference, split = pixels(generated), pixels(two)
    assert reference.keys() == split.keys() and all(np.array_equal(reference[k], split[k]) for k in reference)


def test_a_generation_run_must_be_finished_before_it_is_selected_from(files, generated, tmp_path):
    from infodiff_lightning.data import GeneratedCandidatesData

    partial = tmp_path / "partial"
    shutil.copytree(generated, partial)
    (partial / "status.json").write_text('{"status": "running"}')
    with pytest.raises(ValueError, match="is not finished"):
        GeneratedCandidatesData(str(partial))


@pytest.fixture(scope="module")
def selected(files, generated):
    return run_job(files / "one", "select", [
        "--config", str(ROOT / "configs/analyze/select.yaml"), "--model.init_args.pretrained", str(files / "model"),
        "--model.init_args.n_draws", "8", "--data.init_args.run", str(generated), "--data.init_args.batch_size", "4"])


def test_selection_keeps_one_candidate_per_prompt_for_every_rule(selected):
    summary = json.loads((selected / "summary.json").read_text())
    assert {r: v["images"] for r, v in summary["rules"].items()} == \
        {"mi": 3, "mi_separated": 3, "trajectory": 3, "random": 3}
    mi = {(r["prompt"], r["candidate"]): r["mi"] for r in records(selected)}
    for line in (selected / "selected/mi/selection.jsonl").read_text().splitlines():
        kept = json.loads(line)
        assert kept["mi"] == max(v for (p, _), v in mi.items() if p == kept["prompt"])


def test_the_selected_folder_is_read_by_train_py_s_caption_folder_data(selected, generated):
    from infodiff_lightning.data import CaptionFolderData

    data = CaptionFolderData(str(selected / "selected/mi"), image_size=8, n_probe=1)
    item = data.train_set[0]
    kept = json.loads((selected / "selected/mi/selection.jsonl").read_text().splitlines()[0])
    assert item["caption"] == kept["caption"]
    source = CaptionFolderData(str(generated / "images"), image_size=8, n_probe=1)
    index = sorted(p.name for p in (generated / "images").glob("*.png")).index(kept["file"])
    assert torch.equal(item["image"], source.test_set[index]["image"])  # the generated image itself, copied


def test_selection_refuses_to_keep_more_candidates_than_were_generated(files, generated, tmp_path, capsys):
    import analyze

    with untouched_global_state():
        code = analyze.main(["--config", str(ROOT / "configs/analyze/select.yaml"), "--model.init_args.pretrained",
                             str(files / "model"), "--model.init_args.k", "4", "--data.init_args.run", str(generated),
                             *common(tmp_path, "select")])
    assert code == 2 and "k: 4 per prompt asked, but the generation run has 3" in capsys.readouterr().err
    assert not (tmp_path / "select").exists()  # found before anything is computed
