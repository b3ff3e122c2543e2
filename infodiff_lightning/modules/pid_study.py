"""PID studies as an analysis job: for each word pair, the four PID terms (redundancy,
unique, synergy) over the images whose captions hold both words, ranked, with
intervals, and the four maps of the first images (pid_study.py holds the math).

Each image's record holds, per pair its caption holds, the draws the image took for the
pair and the four terms with their own standard errors; an image whose caption holds no
pair is recorded with none (so a resumed run does not measure it again). With a target
(``target_stderr`` / ``target_relative``, adaptive.py) each image draws rounds of
``n_draws`` until the three informations of each of its pairs meet it (or
``max_draws``): with ``context="caption"`` its pairs share one pass and one draw count,
with ``"none"`` each pair stops on its own. Records, resume, failures and the report are
those of every analysis job (analysis_job.py). The four maps of the first
``log_images`` images of each pair go to TensorBoard (``pid_maps/<w1>+<w2>/<n>``) and
to ``figures/`` in the run folder, linked from the report.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..contrasts import pid_tag
from ..io import log_scalars
from ..measurement import MeasurementSpec, scalars
from ..metrics import PartialInformation
from ..pid import PID_TERMS
from ..analyses.pid_study import CONTEXTS, measure_pairs, pid_summary, pid_table, study_pairs
from ..runs.viz import pid_figure
from .records import Field, Group, Schema
from .text_to_image_job import TextToImageJob

__all__ = ["PIDStudy"]


def _pair_key(pair: tuple[str, str]) -> str:
    return f"{pair[0]}+{pair[1]}"


class PIDStudy(TextToImageJob):
    """Image- and pixel-level PID of word pairs over a captioned dataset.

    Args:
        pretrained: diffusers folder or hub id; lora: optional LoRA adapter folder.
        pairs: word pairs [[w1, w2], ...]; lists: two word lists whose cross product is
            studied (for example [[doctor, nurse], [man, woman]]); both may be given.
        context: "caption" (PID given the rest of the caption) or "none" (the caption cut
            to the two words).
        condition: how words are removed: "delete", "placeholder" or "mask".
        n_draws, seed: draws per image, keyed by (seed, image id); with a target, the draws
            of each round.
        target_stderr, target_relative, max_draws: adaptive precision: each image draws
            rounds of ``n_draws`` until the three informations (i1, i2, i12) of each of its
            pairs have a standard error of at most ``target_stderr`` nats or
            ``target_relative`` x |value| (or ``max_draws``); each pair's entry of the
            record says how many draws the image took for it ("draws").
        rank_by: the term pairs are ranked by in the report.
        level: level of the reported intervals.
        log_images: images per pair whose four maps are drawn.
        microbatch, torch_dtype, fail_fast: as for CaptionAnalysis.
    """

    #: per image: its caption and, per pair it holds, the draws the image took for it, the
    #: four terms, then their standard errors
    schema = Schema([Field("caption", "text"),
                     Group("pairs", (Field("draws", "count"), *(Field(t, stderr=True, map=True) for t in PID_TERMS)),
                           stderrs_last=True)])

    def __init__(self, pretrained: str, lora: str | None = None, pairs: Sequence[Sequence[str]] = (),
                 lists: Sequence[Sequence[str]] | None = None, context: str = "caption", condition: str = "delete",
                 n_draws: int = 32, seed: int = 0, rank_by: str = "synergy", level: float = 0.95,
                 log_images: int = 2, microbatch: int | None = None, torch_dtype: str | None = None,
                 fail_fast: bool = False, target_stderr: float | None = None, target_relative: float | None = None,
                 max_draws: int = MeasurementSpec.max_draws):
        study = study_pairs(pairs, lists)
        if context not in CONTEXTS:
            raise ValueError(f"context must be one of {', '.join(CONTEXTS)}, got {context!r}")
        if rank_by not in PID_TERMS:
            raise ValueError(f"rank_by must be one of {', '.join(PID_TERMS)}, got {rank_by!r}")
        if not 0 < level < 1:
            raise ValueError(f"level must be in (0, 1), got {level}")
        spec = MeasurementSpec((), study, condition, n_draws, seed, log_images > 0, microbatch, target_stderr,
                               target_relative, max_draws, mi=False)
        super().__init__(pretrained, lora, torch_dtype, log_images, fail_fast)
        self.pairs, self.spec, self.context, self.rank_by, self.level = study, spec, context, rank_by, level
        self.metrics = torch.nn.ModuleDict({_pair_key(p): PartialInformation() for p in self.pairs})

    def describe_run(self, datamodule) -> str:
        return f"PID of {len(self.pairs)} word pairs on {datamodule.describe_test_split()}"

    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        captions = [batch["caption"][k] for k in keep]
        images = batch["image"][keep].to(self.device)
        samples = [{"id": i, "caption": c, "pairs": {}} for i, c in zip(ids, captions)]
        left = {p: self.figures_left(_pair_key(p)) for p in self.pairs}
        measured = measure_pairs(self.denoiser, images, ids, captions, self.pairs, context=self.context,
                                 condition=self.spec.condition, n_draws=self.spec.n_draws, seed=self.spec.seed,
                                 maps=[p for p in self.pairs if left[p] > 0], microbatch=self.spec.microbatch,
                                 target_stderr=self.spec.target_stderr, target_relative=self.spec.target_relative,
                                 max_draws=self.spec.max_draws)
        for pair, est in measured.items():
            key = _pair_key(pair)
            for n, j in enumerate(est.rows):
                terms = {t: (est.values[n, q], est.stderrs[n, q]) for q, t in enumerate(PID_TERMS)}
                samples[j]["pairs"][key] = {"draws": est.draws[n], **terms}
            for n, j in enumerate(est.rows[:left[pair]]):
                fig = pid_figure(images[j], est.maps[n], est.values[n].tolist(),
                                 f"PID of ({pair[0]}, {pair[1]}), image {ids[j]}")
                self.save_figure(fig, f"{key}_{ids[j]}", f"pid_maps/{key}/{self.figure_slot(key)}")
        return samples

    def update_metrics(self, records: list[dict]) -> None:
        for pair in self.pairs:
            got = [(r["id"], r["pairs"][_pair_key(pair)]) for r in records if _pair_key(pair) in r["pairs"]]
            if got:
                values = torch.tensor([[v[t] for t in PID_TERMS] for _, v in got], dtype=torch.float64)
                stderrs = torch.tensor([[v[f"{t}_stderr"] for t in PID_TERMS] for _, v in got], dtype=torch.float64)
                self.metrics[_pair_key(pair)].update(values, stderrs, ids=[i for i, _ in got])

    def results(self) -> dict:
        # every rank, the same order: each compute() is one synchronisation
        summary = pid_summary({pair: self.metrics[_pair_key(pair)] for pair in self.pairs})
        log_scalars(self.trainer, scalars(summary), step=0)
        table = pid_table(summary, self.pairs, self.rank_by, self.level)
        return {"context": self.context, "rank_by": self.rank_by, "level": self.level, "pairs": table,
                "unmeasured": [list(p) for p in self.pairs if f"{pid_tag(*p)}/{PID_TERMS[0]}" not in summary]}

    def report_lines(self, results: dict) -> list[str]:
        given = "the rest of the caption" if results["context"] == "caption" else "nothing else (the two words alone)"
        lines = [f"PID of each pair given {given} (MMI redundancy), mean over the images whose caption holds both "
                 f"words, nats, with {100 * results['level']:.0f}% intervals; ranked by {results['rank_by']}.", "",
                 "| pair | images | " + " | ".join(PID_TERMS) + " |", "|---|---:|" + "---:|" * len(PID_TERMS)]
        for row in results["pairs"]:
            cells = [f"{row[t]['mean']:.3f} [{row[t]['interval'][0]:.3f}, {row[t]['interval'][1]:.3f}]"
                     for t in PID_TERMS]
            lines.append(f"| {' + '.join(row['pair'])} | {row['images']} | " + " | ".join(cells) + " |")
        if results["unmeasured"]:
            lines += ["", f"Pairs no image held: {results['unmeasured']}."]
        if self.log_images:
            lines += ["", "Figures: image | redundancy | unique1 | unique2 | synergy maps, one colour scale."]
        return lines
