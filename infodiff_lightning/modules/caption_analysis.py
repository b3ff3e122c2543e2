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
from typing import Sequence

from ..contrasts import ContrastResult, contains_word, measurable
from ..io import log_scalars
from ..runs.map_files import image_maps, named_estimates, save_maps
from ..measurement import CaptionMetrics, MeasurementSpec, measure_captions, scalars
from ..pid import PID_TERMS
from ..runs.viz import map_figure
from .records import Field, Schema
from .text_to_image_job import TextToImageJob

__all__ = ["CaptionAnalysis"]


class CaptionAnalysis(TextToImageJob):
    """MI / CMI / conditional PID of a text-to-image model over a captioned dataset.

    Args:
        pretrained: diffusers folder or hub id (a fine-tuned export works the same way).
        lora: optional LoRA adapter folder saved by the fine-tuning module (unet_lora/).
        words: words whose CMI is measured; pairs: word pairs whose conditional PID is measured.
        condition: how words are removed: "delete", "placeholder" or "mask".
        n_draws: (alpha, eps) draws per image (keyed by image id and seed); with a target,
            the draws of each round.
        target_stderr, target_relative, max_draws: adaptive precision: each image draws
            rounds of ``n_draws`` until every quantity's standard error is at most
            ``target_stderr`` nats or ``target_relative`` x |value| (or ``max_draws``);
            the record says how many draws each image took ("draws").
        maps: compute per-pixel maps (needed for overlays); log_images: overlays for this many images.
        export_maps: write every image's maps to maps/<id>.npz in the run folder (needs maps).
        microbatch: denoiser inputs per call (None: the model's default); torch_dtype: e.g. "float16" on a GPU.
        fail_fast: stop at the first failed image instead of recording it and going on.
    """

    def __init__(self, pretrained: str, lora: str | None = None, words: Sequence[str] = (),
                 pairs: Sequence[Sequence[str]] = (), condition: str = "delete", n_draws: int = 32, seed: int = 0,
                 maps: bool = True, log_images: int = 4, export_maps: bool = False, microbatch: int | None = None,
                 torch_dtype: str | None = None, fail_fast: bool = False, target_stderr: float | None = None,
                 target_relative: float | None = None, max_draws: int = 256):
        spec = MeasurementSpec(tuple(words), tuple(tuple(p) for p in pairs), condition, n_draws, seed, maps,
                               microbatch, target_stderr, target_relative, max_draws)
        if export_maps and not maps:
            raise ValueError("export_maps needs maps: true (the maps it writes)")
        super().__init__(pretrained, lora, torch_dtype, log_images, fail_fast)
        self.spec, self.export_maps = spec, export_maps
        self.info = CaptionMetrics(self.spec)
        # per image: its caption, each tag its caption holds (PID terms as <tag>/<term>), the map file
        tags = [t for tag in spec.tags for t in ([f"{tag}/{term}" for term in PID_TERMS] if tag.startswith("pid/")
                                                  else [tag])]
        # beyond_window: tracked words the caption holds past the text encoder's window (the
        # model never sees them): left out of their averages, named here instead of a zero
        self.schema = Schema([Field("caption", "text"), Field("draws", "count"),
                              *(Field(t, stderr=True, map=maps) for t in tags),
                              Field("maps", "text"), Field("beyond_window", "text")])

    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        images = batch["image"][keep]
        captions = [batch["caption"][k] for k in keep]
        res = measure_captions(self.denoiser, images.to(self.device), ids, captions, self.spec)
        samples = [{"id": i, "caption": c, "draws": int(res.draws[k]),
                    **{tag: (e.value[k], e.stderr[k]) for tag, e in named_estimates(res, k)}}
                   for k, (i, c) in enumerate(zip(ids, captions))]
        tracked = dict.fromkeys(self.spec.words + tuple(w for p in self.spec.pairs for w in p))
        for sample, caption in zip(samples, captions):
            cut = [w for w in tracked if contains_word(caption, w, self.denoiser.tokenizer)
                   and not measurable(caption, w, self.denoiser.tokenizer)]
            if cut:
                sample["beyond_window"] = cut
        if self.spec.maps:
            self._log_maps(images, ids, res)
        if self.export_maps:  # each rank writes the files of its own images, as it does their records
            for k, sample in enumerate(samples):
                sample["maps"] = f"maps/{sample['id']}.npz"
                save_maps(Path(self._out) / sample["maps"], image_maps(res, k))
        return samples

    def update_metrics(self, records: list[dict]) -> None:
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
            n = self.figure_slot()
            if n is None:
                return
            for tag, e in named_estimates(res, k):
                title = f"{tag} = {float(e.value[k]):.3f} +- {float(e.stderr[k]):.3f} nats (image {ids[k]})"
                self.save_figure(map_figure(images[k], e.map[k], title), f"{ids[k]}_{tag.replace('/', '_')}",
                                 f"maps/{n}/{tag}")
