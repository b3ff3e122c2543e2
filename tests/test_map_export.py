"""Map export: every image's MI / CMI / PID maps in one compressed float16 file, at the
model's resolution, that sum to the values in the image's record."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import analyze
from infodiff_lightning.runs.map_files import load_maps, save_maps

ROOT = Path(__file__).resolve().parents[1]


def test_a_map_file_round_trips_at_float16_precision(tmp_path):
    maps = {"mi": torch.rand(32, 32, dtype=torch.float64) * 1e-2, "pid/a+b/synergy": -torch.rand(4, 4)}
    path = save_maps(tmp_path / "maps" / "7.npz", maps)
    with np.load(path) as archive:
        assert sorted(archive.files) == sorted(maps) and archive["mi"].dtype == np.float16
    back = load_maps(path)
    for tag, m in maps.items():
        # float16 has an 11-bit significand: relative rounding error at most 2^-11
        assert torch.allclose(back[tag].double(), m.double(), rtol=2 ** -11, atol=1e-7)
    assert [p.name for p in path.parent.iterdir()] == ["7.npz"]  # no temporary file left


def test_a_missing_map_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no map file at"):
        load_maps(tmp_path / "nothing.npz")


def export(tmp: Path, *extra: str) -> Path:
    rc = analyze.main(["--config", str(ROOT / "configs/analyze/maps.yaml"), "--model.init_args.n_draws", "2",
                       "--model.init_args.words", "[red, cross]", "--model.init_args.pairs", "[[bat, cave]]",
                       "--model.init_args.log_images", "0", "--data.init_args.limit_test", "8",
                       "--trainer.default_root_dir", str(tmp / "runs"), "--trainer.logger.init_args.save_dir",
                       str(tmp / "runs"), "--trainer.enable_progress_bar", "false", *extra])
    assert rc == 0
    [folder] = (tmp / "runs" / "maps").glob("run-*")
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export(tmp_path_factory.mktemp("maps"))


def test_a_resumed_export_writes_the_maps_of_the_images_it_measures_again(exported, tmp_path):
    # Killed after the first of two batches: the second batch's records and map files are
    # lost. The resumed run writes them again, and every map equals the uninterrupted run's
    # (draws are keyed by image id; batches of 4 vs 8 differ by float rounding only).
    folder = export(tmp_path, "--data.init_args.batch_size", "4")
    per_image = folder / "per_image.rank0.jsonl"
    lost = [json.loads(line) for line in per_image.read_text().splitlines()[4:]]
    per_image.write_text("\n".join(per_image.read_text().splitlines()[:4]) + "\n")
    for r in lost:
        (folder / r["maps"]).unlink()
    assert export(tmp_path, "--data.init_args.batch_size", "4") == folder
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["samples"]["resumed"] == 4 and summary["samples"]["measured"] == 4
    whole = {r["id"]: r for r in map(json.loads, (exported / "per_image.rank0.jsonl").read_text().splitlines())}
    for line in per_image.read_text().splitlines():
        r = json.loads(line)
        again, first = load_maps(folder / r["maps"]), load_maps(exported / whole[r["id"]]["maps"])
        assert set(again) == set(first)
        for tag in first:
            assert torch.allclose(again[tag], first[tag], rtol=2e-3, atol=2e-3), (r["id"], tag)


def test_every_image_has_a_map_file_with_a_map_per_measured_quantity(exported):
    records = [json.loads(line) for line in (exported / "per_image.rank0.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for r in records:
        maps = load_maps(exported / r["maps"])
        measured = {k for k in r if k not in ("id", "caption", "maps", "draws") and not k.endswith("_stderr")}
        assert set(maps) == measured  # "mi", and the words / pair the caption holds
        assert all(m.shape == (32, 32) for m in maps.values())  # the world model's 32x32 pixels


def test_the_exported_mi_and_cmi_maps_sum_to_the_recorded_values(exported):
    # Orthogonal maps split each image's MI / CMI over its elements: the sum of the exported
    # map is the recorded value, up to float16 rounding of 1024 elements. (PID maps are
    # not sums: their redundancy is the minimum per element, not of the image totals.)
    for line in (exported / "per_image.rank0.jsonl").read_text().splitlines():
        r = json.loads(line)
        maps = load_maps(exported / r["maps"])
        for tag, m in maps.items():
            if tag.startswith("pid/"):
                continue
            assert float(m.double().sum()) == pytest.approx(r[tag], rel=2e-3, abs=1e-3), tag


def test_export_without_maps_is_a_configuration_error(tmp_path, capsys):
    rc = analyze.main(["--config", str(ROOT / "configs/analyze/maps.yaml"), "--model.init_args.maps", "false",
                       "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
                       str(tmp_path)])
    assert rc == 2 and "export_maps needs maps: true" in capsys.readouterr().err
