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
def test_config_parses_and_validates(config, tmp_path, monkeypatch, capsys):
    # --print_config resolves every class_path and type-checks every init_arg without
    # building the model (the SD 2.1 config needs a GPU and weights to run, not to validate).
    # In this process: a new interpreter per config cost 13-16 s of imports each.
    import analyze
    import train

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [config.parent.name])  # the CLI reads only the args given
    main = train.main if config.parent.name == "train" else analyze.main
    args = (["fit"] if config.parent.name == "train" else []) + ["--config", str(config), "--print_config"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code in (0, None), capsys.readouterr().err[-2000:]
    assert "class_path: infodiff_lightning.modules." in capsys.readouterr().out


def test_a_misspelt_option_is_refused():
    config = ROOT / "configs/train/sd21_lora.yaml"
    proc = subprocess.run([sys.executable, *entry_point(config), "--config", str(config), "--print_config",
                           "--model.init_args.lora_rnk", "4"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "lora_rnk" in proc.stderr
