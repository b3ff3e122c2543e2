"""Every YAML under configs/ loads and validates through its entry point's LightningCLI."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def entry_point(config: Path) -> list[str]:
    if config.parent.name == "train":
        return [str(ROOT / "train.py"), "fit"]
    return [str(ROOT / "analyze.py")]


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(ROOT / "configs")) for c in CONFIGS])
def test_config_parses_and_validates(config, tmp_path):
    # --print_config resolves every class_path and type-checks every init_arg without
    # building the model (the SD 2.1 config needs a GPU and weights to run, not to validate).
    proc = subprocess.run([sys.executable, *entry_point(config), "--config", str(config), "--print_config"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "class_path: infodiff_lightning.modules." in proc.stdout


def test_a_misspelt_option_is_refused():
    config = ROOT / "configs/train/sd21_lora.yaml"
    proc = subprocess.run([sys.executable, *entry_point(config), "--config", str(config), "--print_config",
                           "--model.init_args.lora_rnk", "4"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "lora_rnk" in proc.stderr
