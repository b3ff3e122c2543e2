"""An analysis job holds nothing per sample measured beyond its record (issue #29, memory):
after a run the denoiser's caches (text embeddings per condition, latents per sample id)
are empty, and a metric holds one update per batch, not one per row. Before, both grew
with every sample: a 1000-row localization kept some 1,200 prompt embeddings (315 kB each
for SD 2.1) and 22,000 small metric tensors."""
from pathlib import Path

import lightning as L
import pytest

from infodiff_lightning.data import CaptionedWorldData, LocalizationData
from infodiff_lightning.data.world_export import export_world
from infodiff_lightning.modules import CaptionAnalysis, WordLocalization
from tiny_models import save_pixel_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job_memory")
    export_world(tmp / "heldout", "heldout", n=4)
    save_pixel_text(tmp / "model", max_tokens=77)  # the world's captions need a wide window
    return tmp


def finished(job, datamodule, folder):
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=str(folder),
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.test(job, datamodule=datamodule, verbose=False)
    return job


def test_a_localization_keeps_no_embedding_and_one_metric_update_per_batch(world, one_thread):
    data = LocalizationData(root=str(world / "heldout"), selection_root=None, image_size=8, batch_size=4)
    job = finished(WordLocalization(str(world / "model"), n_draws=2, threshold=0.5, log_images=0, microbatch=8),
                 data, world / "localization")
    rows = job.summary["samples"]["measured"]
    assert rows > 8 and job.summary["samples"]["failed"] == 0
    assert len(job.denoiser.text) == 0
    assert len(job.metrics["eval/all/iou_cmi"].values) == -(-rows // 4)  # batches, not rows


def test_a_map_export_keeps_no_embedding(world, one_thread):
    data = CaptionedWorldData(image_size=32, batch_size=4, limit_test=8)
    job = finished(CaptionAnalysis(str(ROOT / "models/world"), words=["red", "cross"], pairs=[["bat", "cave"]],
                                   n_draws=2, export_maps=True, log_images=0, microbatch=16), data, world / "maps")
    assert job.summary["samples"]["measured"] == 8
    assert len(job.denoiser.text) == 0
    assert len(job.info.metrics["mi"].values) == 2
