"""The demo's claim, on a shortened run: fine-tuning the bundled world model on the
shifted world raises the monitored information of the word that gained a meaning.

Before fine-tuning "lovely" is a distractor the model was trained to ignore (it never
changed an image), so deleting it changes the prediction little; in the shifted world
every cross is called "lovely" and nothing else, so as the model learns the new name
the word tells the denoiser the shape of the object's pixels. The probe and its draws
are fixed for the run, so the two points differ only because the model changed.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS = 150


@pytest.mark.slow
def test_the_new_words_monitored_information_rises_during_a_short_fine_tuning(tmp_path):
    base = yaml.safe_load((ROOT / "configs/demo/finetune.yaml").read_text())
    monitor = base["trainer"]["callbacks"][0]
    # the 64 validation scenes hold about 10 crosses: the images whose caption now says "lovely"
    monitor["init_args"].update(words=["lovely"], every_n_steps=STEPS, probe_size=64, n_draws=8, mmse_points=0,
                                maps=False, word_images=None)
    override = {"trainer": {"max_steps": STEPS, "enable_progress_bar": False, "default_root_dir": str(tmp_path),
                            "logger": {"class_path": base["trainer"]["logger"]["class_path"],
                                       "init_args": {"save_dir": str(tmp_path), "name": "demo"}},
                            "callbacks": [monitor]},
                "model": {"init_args": {"pretrained": str(ROOT / "models/world"),
                                        "export_dir": str(tmp_path / "model")}}}
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(override))
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / "configs/demo/finetune.yaml"),
                           "--config", str(tmp_path / "short.yaml")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "demo/version_0/monitor.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, STEPS]
    before, after = (r["summary"]["cmi/lovely"] for r in records)
    assert before["images"] == after["images"] > 0
    # Calibration (bundled model, this config): 0.015 +- 0.005 nats before, 0.17 +- 0.07 after
    # 150 steps over 11 probe images (2.2 combined standard errors apart; the probe and draws
    # are fixed, so this is deterministic on one machine). The word was ignored before
    # (a few hundredths of a nat), so "rises" means: many times larger, and more than two
    # combined standard errors above.
    combined_se = (before["stderr"] ** 2 + after["stderr"] ** 2) ** 0.5
    assert after["mean"] - before["mean"] > 2 * combined_se, (before, after)
    assert after["mean"] > 5 * before["mean"], (before, after)
