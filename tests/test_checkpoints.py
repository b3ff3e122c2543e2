"""Checkpoints are loaded without running code from them.

A checkpoint is a pickle. The crafted one below creates a file when it is unpickled the
unsafe way (the control shows it); every way this project loads a checkpoint must refuse
it in one line and create nothing.
"""
import pathlib

import pytest
import torch

import train
from infodiff_lightning.runs.checkpoints import UnsafeCheckpoint, load_checkpoint
from infodiff_lightning.export import main as export

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Planted:
    """Unpickled, it calls Path.touch(target): stands for any code an attacker chooses."""

    def __init__(self, target: pathlib.Path):
        self.target = target

    def __reduce__(self):
        return (pathlib.Path.touch, (self.target,))


@pytest.fixture
def crafted(tmp_path):
    target = tmp_path / "code-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "global_step": 3, "payload": Planted(target)}, path)
    return path, target


def test_the_crafted_checkpoint_runs_code_when_loaded_unsafely(crafted):
    # the control: without this, the refusals below would prove nothing
    path, target = crafted
    torch.load(path, weights_only=False)
    assert target.exists()


def test_loading_refuses_the_crafted_checkpoint_and_creates_nothing(crafted):
    path, target = crafted
    with pytest.raises(UnsafeCheckpoint, match="cannot be loaded weights-only"):
        load_checkpoint(path)
    assert not target.exists()


def test_export_refuses_the_crafted_checkpoint_in_one_line(crafted, tmp_path, capsys):
    path, target = crafted
    assert export(["--ckpt", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "refused" in err
    assert not target.exists() and not (tmp_path / "out").exists()


def fit_args(tmp_path, ckpt):
    return ["fit", "--config", str(ROOT / "configs/train/tiny_shapes.yaml"), "--trainer.default_root_dir",
            str(tmp_path / "runs"), "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
            "--ckpt_path", str(ckpt)]


def test_train_refuses_a_crafted_ckpt_path_before_building_anything(crafted, tmp_path, capsys):
    path, target = crafted
    assert train.main(fit_args(tmp_path, path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be loaded weights-only" in err[0]
    assert not target.exists() and not (tmp_path / "runs").exists()


def test_train_refuses_a_url_ckpt_path_without_fetching_it(tmp_path, capsys):
    # nothing listens on port 9 of the loopback: a fetch would fail differently
    assert train.main(fit_args(tmp_path, "http://127.0.0.1:9/model.ckpt")) == 2
    assert "URLs are refused" in capsys.readouterr().err


def test_train_refuses_weights_only_false(tmp_path, capsys):
    args = fit_args(tmp_path, "last")[:-2] + ["--weights_only", "false"]
    assert train.main(args) == 2
    assert "--weights_only false is refused" in capsys.readouterr().err
