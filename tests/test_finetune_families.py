"""LoRA fine-tuning of the tiny SDXL and SD3 pipelines with the monitor on, through the
configs users run (configs/train/sdxl_lora.yaml, sd3_lora.yaml) with CPU-sized overrides:
info/* scalars reach TensorBoard, and the exported adapter loads over its base and is
measured by the caption job."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tiny_families import save_sd3_for_jobs, save_sdxl_for_jobs

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"sdxl": (save_sdxl_for_jobs, "unet_lora"),
            "sd3": (lambda folder: save_sd3_for_jobs(folder, with_t5=False), "transformer_lora")}


def tiny_overrides(tmp: Path, model: Path) -> Path:
    """The GPU config cut to a CPU run: the tiny model (the shapes' words one token each, a
    32-token window: tiny_families.py), 16x16 shapes, 2 steps, a cheap monitor on "red"."""
    cfg = {"trainer": {"accelerator": "cpu", "precision": "32-true", "max_steps": 2, "accumulate_grad_batches": 1,
                       "log_every_n_steps": 1, "enable_progress_bar": False, "default_root_dir": str(tmp),
                       "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                  "init_args": {"save_dir": str(tmp), "name": "run"}},
                       "callbacks": [{"class_path": "infodiff_lightning.callbacks.InformationMonitor",
                                      "init_args": {"words": ["red"], "probe_size": 8, "every_n_steps": 1,
                                                    "n_draws": 4, "mmse_points": 3, "mmse_eps": 1,
                                                    "max_time_share": None, "microbatch": 64}}]},
           "model": {"init_args": {"pretrained": str(model), "lora_rank": 4, "gradient_checkpointing": False,
                                   "learning_rate": 1.0e-2, "warmup_steps": 0}},
           "data": {"class_path": "infodiff_lightning.data.CaptionedShapesData",
                    "init_args": {"n_train": 16, "n_val": 8, "image_size": 16, "batch_size": 4}}}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module", params=list(FAMILIES))
def fitted(request, tmp_path_factory):
    family = request.param
    tmp = tmp_path_factory.mktemp(family)
    model = FAMILIES[family][0](tmp / "model")
    cmd = [sys.executable, str(ROOT / "train.py"), "fit", "--config", str(ROOT / f"configs/train/{family}_lora.yaml"),
           "--config", str(tiny_overrides(tmp, model))]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return family, tmp, model, tmp / "run" / "version_0"


def test_the_monitor_logs_information_scalars_while_the_family_fine_tunes(fitted):
    _, _, _, run = fitted
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in ("info/mi/value", "info/mi/stderr", "info/cmi/red/value", "train/loss"):
        values = [e.value for e in acc.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values), tag


def test_the_exported_lora_is_measured_by_the_caption_job(fitted):
    family, tmp, model, run = fitted
    lora = run / "diffusers" / FAMILIES[family][1]
    assert (lora / "adapter_config.json").is_file() or any(lora.glob("*.safetensors"))
    cmd = [sys.executable, str(ROOT / "analyze.py"), "--config", str(ROOT / "configs/analyze/captions.yaml"),
           "--model.init_args.pretrained", str(model), "--model.init_args.lora", str(lora),
           "--model.init_args.n_draws", "4", "--model.init_args.words", "[red]", "--model.init_args.pairs", "[]",
           "--model.init_args.log_images", "0",
           "--data.init_args.n_train", "16", "--data.init_args.n_val", "8", "--data.init_args.batch_size", "4",
           "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
           "--trainer.logger.init_args.save_dir", str(tmp), "--trainer.logger.init_args.name", "measured"]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    [folder] = (tmp / "measured").glob("run-*")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["mi"]["images"] == 8 and math.isfinite(summary["mi"]["mean"]) and summary["mi"]["stderr"] > 0
    assert summary["cmi/red"]["images"] == 2 and summary["samples"]["failed"] == 0  # 2 of the 8 captions hold "red"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_full_fine_tune_exports_a_folder_the_loader_reads_as_the_same_family(family, tmp_path):
    # full fine-tuning saves every component (no model_index.json): the loader must still
    # recognise the family, and the saved backbone is the trained one
    import lightning as L
    import torch

    from infodiff_lightning.data import CaptionedShapesData
    from infodiff_lightning.denoisers import load_text_to_image
    from infodiff_lightning.modules import DiffusionFineTuner

    base = FAMILIES[family][0](tmp_path / "base")
    module = DiffusionFineTuner(pretrained=str(base), learning_rate=1e-2, caption_dropout=0.0)
    L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(
        module, datamodule=CaptionedShapesData(n_train=8, n_val=4, image_size=16, batch_size=4))
    module.save_pretrained(tmp_path / "out")
    loaded = load_text_to_image(tmp_path / "out")
    assert type(loaded) is type(module.adapter)
    trained = dict(module.backbone.named_parameters())
    assert all(torch.equal(p, trained[n].detach()) for n, p in loaded.backbone.named_parameters())
