"""Standalone analysis of a pretrained (or fine-tuned) text-to-image model on captioned images.

For every image of the datamodule's test split: io(x; caption), io(x; w | rest) for each
tracked word present in the caption, and the conditional PID (redundancy, unique,
synergy) of each tracked word pair, with standard errors. The measurement is the one
every job shares (infodiff_lightning.measurement); records, resume, failures and the
report are those of every analysis job (analysis_job.py). Dataset means go to
``summary.json`` and TensorBoard, with heat-map overlays of the CMI maps and of the four
PID maps for the first images. With ``export_maps`` every image's maps are also written
to ``maps/<id>.npz`` in the run folder (map_files.py: float16, compressed, at the
model's resolution), named in the image's record.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info

from ..contrasts import ContrastResult
from ..denoisers import load_text_to_image
from ..io import log_scalars
from ..map_files import image_maps, save_maps
from ..measurement import CaptionMetrics, MeasurementSpec, measure_captions, per_image_rows, scalars
from ..pid import PID_TERMS, PIDEstimate
from ..viz import map_figure
from .analysis_job import AnalysisJob, torch_dtype_of
from ..protocols import CaptionedEvaluationData

__all__ = ["CaptionAnalysis"]


class CaptionAnalysis(AnalysisJob):
    """MI / CMI / conditional PID of a text-to-image model over a captioned dataset.

    Args:
        pretrained: diffusers folder or hub id (a fine-tuned export works the same way).
        lora: optional LoRA adapter folder saved by the fine-tuning module (unet_lora/).
        words: words whose CMI is measured; pairs: word pairs whose conditional PID is measured.
        condition: how words are removed: "delete", "placeholder" or "mask".
        n_draws: (alpha, eps) draws per image (keyed by image id and seed).
        maps: compute per-pixel maps (needed for overlays); log_images: overlays for this many images.
        export_maps: write every image's maps to maps/<id>.npz in the run folder (needs maps).
        microbatch: denoiser inputs per call (None: the model's default); torch_dtype: e.g. "float16" on a GPU.
        fail_fast: stop at the first failed image instead of recording it and going on.
    """

    def __init__(self, pretrained: str, lora: str | None = None, words: Sequence[str] = (),
                 pairs: Sequence[Sequence[str]] = (), condition: str = "delete", n_draws: int = 32, seed: int = 0,
                 maps: bool = True, log_images: int = 4, export_maps: bool = False, microbatch: int | None = None,
                 torch_dtype: str | None = None, fail_fast: bool = False):
        super().__init__(fail_fast=fail_fast)
        self.spec = MeasurementSpec(tuple(words), tuple(tuple(p) for p in pairs), condition, n_draws, seed, maps,
                                    microbatch)
        if log_images < 0:
            raise ValueError(f"log_images must be >= 0, got {log_images}")
        if export_maps and not maps:
            raise ValueError("export_maps needs maps: true (the maps it writes)")
        self.log_images, self.export_maps = log_images, export_maps
        self.denoiser = load_text_to_image(pretrained, lora, torch_dtype=torch_dtype_of(torch_dtype))
        self.info = CaptionMetrics(self.spec)
        self._logged_images = 0

    def validate(self, datamodule: Any) -> None:
        """Every word and pair must occur in some caption of the test split."""
        if isinstance(datamodule, CaptionedEvaluationData):
            captions = [c for c in datamodule.test_captions() if c]
            self.spec.check_captions(captions, self.denoiser.tokenizer, "captions of the test split")
            rank_zero_info(f"measuring {datamodule.describe_test_split()}")

    def setup(self, stage: str) -> None:
        self.denoiser.to(self.device)

    def measure(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        images = batch["image"][keep]
        captions = [batch["caption"][k] for k in keep]
        res = measure_captions(self.denoiser, images.to(self.device), ids, captions, self.spec)
        self.info.update(res, ids)
        if self.trainer.is_global_zero and self.spec.maps:
            self._log_maps(images, ids, res)
        rows = per_image_rows(res, ids, captions)
        if self.export_maps:  # each rank writes the files of its own images, as it does their records
            for k, row in enumerate(rows):
                name = f"maps/{row['id']}.npz"
                save_maps(Path(self._out) / name, image_maps(res, k))
                row["maps"] = name
        return rows

    def replay(self, records: list[dict]) -> None:
        self.info.replay(records)

    def results(self) -> dict:
        summary = self.info.compute()  # one synchronisation per metric
        log_scalars(self.trainer, scalars(summary), step=0)
        return summary

    def report_lines(self, results: dict) -> list[str]:
        lines = ["| quantity | mean (nats) | stderr | images |", "|---|---:|---:|---:|"]
        for tag, r in results.items():
            lines.append(f"| {tag} | {r['mean']:.4f} | {r['stderr']:.4f} | {r['images']} |")
        return lines

    def _log_maps(self, images, ids: list[int], res: ContrastResult) -> None:
        """image | map | overlay figures (upsampled, with a colour scale and the value)
        for the first ``log_images`` images: maps/<n>/<tag>[/<term>] in TensorBoard and
        figures/<id>_<tag>.png in the run folder."""
        for k in range(images.shape[0]):
            if self._logged_images >= self.log_images:
                return
            n = self._logged_images
            for m in res.measured():
                if not bool(m.present[k]):
                    continue
                named = zip([f"{m.tag}/{t}" for t in PID_TERMS], m.estimate.terms()) \
                    if isinstance(m.estimate, PIDEstimate) else [(m.tag, m.estimate)]
                for tag, e in named:
                    title = f"{tag} = {float(e.value[k]):.3f} +- {float(e.stderr[k]):.3f} nats (image {ids[k]})"
                    self.save_figure(map_figure(images[k], e.map[k], title), f"{ids[k]}_{tag.replace('/', '_')}",
                                     f"maps/{n}/{tag}")
            self._logged_images += 1
