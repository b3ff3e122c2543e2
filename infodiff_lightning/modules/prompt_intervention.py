"""The prompt-intervention job: does removing a word change the image as its CMI says?

For every captioned image of the test split and every tracked word in its caption (or,
with ``row_words``, for every row and the row's own word: Kong et al.'s protocol on
COCO-IT, where each CSV row names the word removed from its caption):

1. the word's conditional information io(x; w | caption without w) and its per-pixel
   map, through the shared measurement path (measurement.py; the word removed by
   ``condition``, the same edit as below); with a target (``target_stderr`` /
   ``target_relative``, adaptive.py) each image draws rounds of ``n_draws`` until the
   CMI of every word removed from it meets it (or ``max_draws``), and its record says how
   many draws it took;
2. two images generated from the same seeded noise (keyed by seed and image id) with
   the family's deterministic sampler (regeneration.py: DDIM, or Euler for flow-matching
   models; the model's scheduler config, ``steps`` steps): one from the caption, one
   from the caption without the word;
3. the change between them: per image (mean squared difference) and per pixel
   (squared difference summed over channels), in the model's x space (pixels for
   pixel models, latents for latent models, where the CMI map lives too).

Reported per word and over all words, with percentile bootstrap intervals: the
image-level Pearson correlation of CMI and change across images, and the pixel-level
correlation of the CMI map and the change map within each image, averaged over images
(the bootstrap resamples images). With ``attention_steps`` > 0 the same correlations
are computed for the baseline: the word's cross-attention map (attention_maps.py, eq.
ATT) in place of the CMI map, and its total in place of the CMI. The reference figures
(Kong et al. 2024, COCO with SD 2.1): 0.34 image level and 0.27 pixel level for CMI,
0.24 and 0.21 for attention.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch

from ..analyses.attention_maps import word_attention
from ..contrasts import cmi_tag, contains_word, unmeasurable_word, without_words
from ..draws import id_generator
from ..analyses.intervention import change_correlations, image_change, pearson
from ..analyses.regeneration import regenerate, regeneration_grid, sampler_name
from ..io import log_scalars
from ..measurement import MeasurementSpec, measure_captions
from ..metrics.samples import SampleRows
from ..protocols import LocalizationEvaluationData
from ..runs.viz import map_figure
from .records import Field, Group, Schema
from .text_to_image_job import TextToImageJob

__all__ = ["PromptIntervention"]


def _rows(values: list, ids: list[int]) -> tuple[torch.Tensor, list[int]]:
    """The rows (and their ids) whose value is defined (not None), as float64."""
    kept = [(i, v) for i, v in zip(ids, values) if v is not None]
    return torch.tensor([v for _, v in kept], dtype=torch.float64), [i for i, _ in kept]


class PromptIntervention(TextToImageJob):
    """Correlate each word's CMI with the change its removal makes to a regenerated image.

    Args:
        pretrained: diffusers folder or hub id; lora: optional LoRA adapter folder.
        words: the words removed (each measured on the images whose caption contains it).
        row_words: instead of ``words``, each row's own word (the batch's "word", as
            LocalizationData gives it: COCO-IT's correct_obj), removed from that row's caption
            only; the words reported are the datamodule's ``groups()``. A row whose word is not
            in its caption (or lies beyond the text window) is a failed sample.
        condition: how a word is removed: "delete", "placeholder" or "mask".
        n_draws: (alpha, eps) draws per image for the CMI; with a target, the draws of each round.
        target_stderr, target_relative, max_draws: adaptive precision of the CMI: each image
            draws rounds of ``n_draws`` until the CMI of every word removed from it has a
            standard error of at most ``target_stderr`` nats or ``target_relative`` x
            |value| (or ``max_draws``); the record says how many draws the image took ("draws").
        steps: sampler steps of each regeneration (DDIM, or Euler for flow models).
        seed: keys the CMI draws and the regeneration noise, with the image id.
        n_boot, level: bootstrap resamples and interval level of the correlations.
        log_images: TensorBoard figures (regenerations, change and CMI maps) for this many images.
        attention_steps: noise levels of the cross-attention baseline (0: no baseline).
        microbatch: denoiser inputs per call (None: the model's default); torch_dtype: e.g. "float16" on a GPU.
        fail_fast: stop at the first failed image.
    """

    #: per image: the draws its CMI took; per word its caption holds: the CMI, the change,
    #: their within-image r, and with attention_steps the attention total and its within-image r
    schema = Schema([Field("draws", "count"),
                     Group("words", (Field("cmi", stderr=True, map=True), Field("change", map=True),
                                     Field("r_pixel", optional=True), Field("attention", map=True),
                                     Field("r_pixel_attention", optional=True)))])

    def __init__(self, pretrained: str, lora: str | None = None, words: Sequence[str] = (),
                 condition: str = "delete", n_draws: int = 32, steps: int = 50, seed: int = 0, n_boot: int = 2000,
                 level: float = 0.95, log_images: int = 4, attention_steps: int = 0, microbatch: int | None = None,
                 torch_dtype: str | None = None, fail_fast: bool = False, row_words: bool = False,
                 target_stderr: float | None = None, target_relative: float | None = None,
                 max_draws: int = MeasurementSpec.max_draws):
        if row_words and words:
            raise ValueError("words: with row_words each row's own word is removed; give words: [] (got "
                             f"{list(words)})")
        if not words and not row_words:
            raise ValueError("words: give at least one word to remove (or row_words: true, each row's own word)")
        # with row_words the words are the rows' (known once the datamodule is): a template
        # spec holds the options, and each batch measures its rows' words with it
        spec = MeasurementSpec(tuple(words) or ("word",), (), condition, n_draws, seed, True, microbatch, target_stderr,
                               target_relative, max_draws, mi=False)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if n_boot < 100:
            raise ValueError(f"n_boot must be >= 100 for a percentile interval, got {n_boot}")
        super().__init__(pretrained, lora, torch_dtype, log_images, fail_fast)
        self.row_words, self.template = row_words, spec
        self.spec = None if row_words else spec  # what validate checks against the captions
        self.steps, self.n_boot, self.level = steps, n_boot, level
        self.grid = regeneration_grid(self.denoiser, steps)
        self.attention_steps = self.check_attention(attention_steps)
        # Per word: (cmi, change) per image, and the within-image r where it is defined;
        # the baseline: (attention total, change) per image and the attention map's within-image r.
        self.image_rows, self.pixel_rows = torch.nn.ModuleDict(), torch.nn.ModuleDict()
        self.attention_image_rows, self.attention_pixel_rows = torch.nn.ModuleDict(), torch.nn.ModuleDict()
        self.words: tuple[str, ...] = ()
        if not row_words:
            self._add_metrics(spec.words)

    def _add_metrics(self, words: Sequence[str]) -> None:
        """The per-word metrics of ``words`` (in order: the order of every rank's collectives)."""
        self.words = tuple(words)
        for w in self.words:
            self.image_rows[w], self.pixel_rows[w] = SampleRows(2), SampleRows(1)
            if self.attention_steps:
                self.attention_image_rows[w], self.attention_pixel_rows[w] = SampleRows(2), SampleRows(1)

    def check_data(self, datamodule: Any) -> None:
        if self.row_words and not isinstance(datamodule, LocalizationEvaluationData):
            raise ValueError(f"row_words: needs rows that name their word, grouped by it (the "
                             f"{LocalizationEvaluationData.__name__} protocol, e.g. LocalizationData); "
                             f"{type(datamodule).__name__} is not")

    def make_metrics(self) -> None:
        if self.row_words and not self.words:  # every rank reads the same groups(), in the same order
            self._add_metrics(self.trainer.datamodule.groups())
            for metrics in (self.image_rows, self.pixel_rows, self.attention_image_rows, self.attention_pixel_rows):
                metrics.to(self.device)

    # ---- one batch ------------------------------------------------------------
    def regenerate(self, sample_id: int, prompts: list, shape: tuple[int, ...]) -> torch.Tensor:
        """Images of ``prompts`` by the family's sampler (DDIM, or Euler for flow models) from
        one image's seeded noise (the same for each prompt).
        One image per call: the result does not depend on which images share a batch, so a
        resumed or multi-device run regenerates the same bits."""
        noise = torch.randn(shape, generator=id_generator(self.template.seed + 1, sample_id))
        return regenerate(self.denoiser, noise.expand(len(prompts), *shape).to(self.device), prompts, self.grid)

    def _measured_words(self, batch, keep: list[int], ids: list[int], images: torch.Tensor,
                        captions: list[str]) -> list[tuple[int, dict]]:
        """Per kept item, (the draws its CMI took, {word: (its CMI estimate, the item's index in
        it, its attention map or None)}) for the words removed from its caption: the listed
        words its caption holds, or with ``row_words`` the row's own word (measured per word,
        rows lacking it failed). Each item is in one measurement, so it has one draw count."""
        tok = self.denoiser.tokenizer
        if self.row_words:
            own = [batch["word"][k] for k in keep]
            groups = [(replace(self.template, words=(w,)), [j for j, o in enumerate(own) if o == w])
                      for w in dict.fromkeys(own)]
        else:
            groups = [(self.template, list(range(len(keep))))]
        found, draws, missing = [{} for _ in keep], [0 for _ in keep], []
        for spec, js in groups:
            sub_ids, sub_captions = [ids[j] for j in js], [captions[j] for j in js]
            res = measure_captions(self.denoiser, images[js], sub_ids, sub_captions, spec)
            attention = word_attention(self.denoiser, self.denoiser.encode(images[js], ids=sub_ids), sub_ids,
                                       sub_captions, spec.words, steps=self.attention_steps, seed=spec.seed) \
                if self.attention_steps else {}
            for n, j in enumerate(js):
                draws[j] = int(res.draws[n])
                for w in spec.words:
                    if self.row_words and not bool(res.present[w][n]):
                        missing.append({"id": ids[j], "error": unmeasurable_word(captions[j], w, tok)})
                    elif self.row_words or contains_word(captions[j], w, tok):
                        found[j][w] = (res.cmi[w], n, attention[w][0][n] if attention else None)
        if missing:
            self._fail(missing)
        return list(zip(draws, found))

    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        images = batch["image"][keep].to(self.device)
        captions = [batch["caption"][k] for k in keep]
        shape = tuple(self.denoiser.encode(images[:1], ids=ids[:1]).shape[1:])
        tok = self.denoiser.tokenizer
        samples = []
        measured = self._measured_words(batch, keep, ids, images, captions)
        for k, (i, caption, (draws, words)) in enumerate(zip(ids, captions, measured)):
            if not words:  # a row_words row whose word could not be measured: failed above
                continue
            out = self.regenerate(i, [caption] + [without_words(caption, [w], self.template.condition, tok)
                                                  for w in words], shape)
            sample = {"id": i, "draws": draws, "words": {}}
            for j, (w, (est, n, att)) in enumerate(words.items()):
                change, change_map = image_change(out[:1], out[j + 1:j + 2])
                r_pixel = float(pearson(est.map[n].flatten().cpu(), change_map[0].flatten().cpu()))
                sample["words"][w] = {"cmi": (est.value[n], est.stderr[n]), "change": change[0],
                                      "r_pixel": r_pixel if r_pixel == r_pixel else None}  # None: a map is constant
                if att is not None:
                    r_att = float(pearson(att.flatten().cpu(), change_map[0].flatten().cpu()))
                    sample["words"][w].update(attention=att.sum(), r_pixel_attention=r_att if r_att == r_att else None)
                self._log_example(images[k], i, out[0], out[j + 1], change_map[0], est.map[n], w)
            samples.append(sample)
        return samples

    def update_metrics(self, records: list[dict]) -> None:
        for w in self.words:
            got = [(r["id"], r["words"][w]) for r in records if w in r["words"]]
            if not got:
                continue
            ids = [i for i, _ in got]
            self.image_rows[w].update(torch.tensor([[v["cmi"], v["change"]] for _, v in got], dtype=torch.float64), ids)
            columns = [("r_pixel", self.pixel_rows)]
            if self.attention_steps:
                self.attention_image_rows[w].update(
                    torch.tensor([[v["attention"], v["change"]] for _, v in got], dtype=torch.float64), ids)
                columns.append(("r_pixel_attention", self.attention_pixel_rows))
            for name, metrics in columns:  # the within-image r where it is defined
                rs, kept = _rows([v[name] for _, v in got], ids)
                if kept:
                    metrics[w].update(rs[:, None], kept)

    # ---- the correlations ----------------------------------------------------------
    def results(self) -> dict:
        def correlations(image: torch.Tensor, pixel: torch.Tensor) -> dict:
            return change_correlations(image, pixel, self.n_boot, self.level, self.template.seed)

        per_word, images, pixels, att_images, att_pixels = {}, [], [], [], []
        for w in self.words:  # every rank, same order: each compute is one synchronisation
            im, px = self.image_rows[w].rows(), self.pixel_rows[w].rows()
            per_word[w] = correlations(im, px)
            images.append(im)
            pixels.append(px)
            if self.attention_steps:
                aim, apx = self.attention_image_rows[w].rows(), self.attention_pixel_rows[w].rows()
                per_word[w]["attention"] = _levels(correlations(aim, apx))
                att_images.append(aim)
                att_pixels.append(apx)
        pooled = correlations(torch.cat(images), torch.cat(pixels))
        if self.attention_steps:
            pooled["attention"] = _levels(correlations(torch.cat(att_images), torch.cat(att_pixels)))
        logged = {}
        for name, r in [("all", pooled)] + list(per_word.items()):
            prefix = "info/intervention/all" if name == "all" else f"info/intervention/{cmi_tag(name)}"
            for level in ("image_level", "pixel_level"):
                if r[level] is not None:
                    logged[f"{prefix}/{level}_r"] = r[level]["r"]
                if "attention" in r and r["attention"][level] is not None:
                    logged[f"{prefix}/attention_{level}_r"] = r["attention"][level]["r"]
        log_scalars(self.trainer, logged, step=0)
        return {"sampler": sampler_name(self.denoiser), "steps": self.steps, "condition": self.template.condition,
                "all_words": pooled, "words": per_word}

    def report_lines(self, results: dict) -> list[str]:
        def cell(c):
            if c is None or c["r"] is None or c["r"] != c["r"]:
                return "-"
            interval = "" if c["low"] is None or c["low"] != c["low"] else f" [{c['low']:.3f}, {c['high']:.3f}]"
            return f"{c['r']:.3f}{interval}"

        baseline = "attention" in results["all_words"]
        lines = [f"Correlation of each word's CMI with the change its removal makes ({results['sampler']}, "
                 f"{results['steps']} steps; "
                 f"{int(100 * self.level)}% bootstrap intervals)" + ("; the cross-attention baseline beside it"
                                                                     if baseline else ""), "",
                 "| word | images | image level r | pixel level r (mean over images) |"
                 + (" attention: image level r | attention: pixel level r |" if baseline else ""),
                 "|---|---:|---:|---:|" + ("---:|---:|" if baseline else "")]
        for name, r in [("all words", results["all_words"])] + list(results["words"].items()):
            att = f" {cell(r['attention']['image_level'])} | {cell(r['attention']['pixel_level'])} |" if baseline else ""
            lines.append(f"| {name} | {r['images']} | {cell(r['image_level'])} | {cell(r['pixel_level'])} |{att}")
        return lines

    def _log_example(self, image, sample_id: int, full, without, change_map, cmi_map, word: str) -> None:
        """For the first ``log_images`` (image, word) of a pixel model: the regeneration with
        the word and its change map, and the one without it with the word's CMI map (rank zero)."""
        if full.shape[0] != 3 or (n := self.figure_slot()) is None:
            return
        self.save_figure(map_figure(full.clamp(-1, 1).cpu(), change_map.cpu(),
                                    f"change when '{word}' is removed (image {sample_id})"),
                         f"{sample_id}_{word}_change", f"intervention/{n}/{word}/change")
        self.save_figure(map_figure(without.clamp(-1, 1).cpu(), cmi_map.cpu(),
                                    f"without '{word}' | CMI map (image {sample_id})"),
                         f"{sample_id}_{word}_without", f"intervention/{n}/{word}/without")


def _levels(correlations: dict) -> dict:
    """The baseline's entry: its image- and pixel-level correlations only."""
    return {"image_level": correlations["image_level"], "pixel_level": correlations["pixel_level"]}
