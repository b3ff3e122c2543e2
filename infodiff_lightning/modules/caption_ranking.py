"""Caption ranking as an analysis job (the ARO protocol of Kong et al. 2024).

For each image, its candidate captions (the true one first) are scored by pointwise MI
from one denoiser pass with draws keyed by the image id and shared by the candidates
(``ranking.score_candidates``); the prediction is the candidate with the largest score of
the standard estimator (the pointwise identity; see ranking.py), and the orthogonal
estimator's choice is reported beside it. Accuracy per group (the benchmark file: VG
attribution, VG relation, COCO order, ...; and each relation or attribute pair within a
file) and overall, with Wilson 95% intervals; for a file with subgroups also ARO's
headline figure, the macro average over its subgroups (``ranking/<file>/macro/<est>``).

The first ``log_images`` items measured (rank zero) are drawn: the image and each
candidate's score with its standard error (figures/ and TensorBoard ``ranking/<n>``).

Records, resume, failures and the report are those of every analysis job (analysis_job.py).
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from ..denoisers import load_text_to_image
from ..estimators import ESTIMATORS
from ..io import log_scalars
from ..metrics.samples import SampleHits
from ..viz import ranking_figure
from ..ranking import PREDICTION_ESTIMATOR, accuracy_interval, correct, macro_accuracy, score_candidates
from .analysis_job import AnalysisJob, torch_dtype_of
from ..protocols import GroupedEvaluationData

__all__ = ["CaptionRanking", "OVERALL"]

#: The group name of the accuracy over every item.
OVERALL = "all"


class CaptionRanking(AnalysisJob):
    """Accuracy of choosing the true caption by pointwise MI.

    Args:
        pretrained: diffusers folder or hub id; lora: optional LoRA adapter folder.
        n_draws: (alpha, eps) draws per image, shared by its candidates.
        seed: with the image id, keys each image's draws.
        log_images: items drawn as figures (image and candidate scores).
        microbatch: denoiser inputs per call (None: the model's default); torch_dtype: e.g. "float16" on a GPU.
        fail_fast: stop at the first failed image.
    """

    def __init__(self, pretrained: str, lora: str | None = None, n_draws: int = 16, seed: int = 0,
                 log_images: int = 4, microbatch: int | None = None, torch_dtype: str | None = None, fail_fast: bool = False):
        super().__init__(fail_fast=fail_fast)
        if n_draws < 2:
            raise ValueError(f"n_draws must be >= 2 (a standard error needs two draws), got {n_draws}")
        if microbatch is not None and microbatch < 1:
            raise ValueError(f"microbatch must be >= 1 (or null for the model's default), got {microbatch}")
        if log_images < 0:
            raise ValueError(f"log_images must be >= 0, got {log_images}")
        self.n_draws, self.seed, self.microbatch, self.log_images, self._drawn = n_draws, seed, microbatch, log_images, 0
        self.denoiser = load_text_to_image(pretrained, lora, torch_dtype=torch_dtype_of(torch_dtype))
        self.hits = torch.nn.ModuleDict()  # "<group>/<estimator>" -> SampleHits, made in setup

    def validate(self, datamodule: Any) -> None:
        if not isinstance(datamodule, GroupedEvaluationData):
            raise ValueError("CaptionRanking needs a datamodule with candidate captions (the GroupedEvaluationData protocol, "
                             f"e.g. CaptionRankingData); got {type(datamodule).__name__}")
        rank_zero_info(f"ranking {datamodule.describe_test_split()}")

    def setup(self, stage: str) -> None:
        self.denoiser.to(self.device)
        # Every rank builds the same metrics, in the same order, before the loop (DDP collectives).
        for group in [*self.trainer.datamodule.groups(), OVERALL]:
            for est in ESTIMATORS:
                self.hits[f"{group}/{est}"] = SampleHits().to(self.device)

    def measure(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        records = []
        by_size: dict[int, list[int]] = {}  # candidates of one length are scored together
        for k in keep:
            by_size.setdefault(len(batch["candidates"][k]), []).append(k)
        for ks in by_size.values():
            kids = [int(batch["id"][k]) for k in ks]
            cands = [batch["candidates"][k] for k in ks]
            scores = score_candidates(self.denoiser, batch["image"][ks].to(self.device), kids, cands,
                                      n_draws=self.n_draws, seed=self.seed, microbatch=self.microbatch)
            hit = {est: correct(scores.value[est], [0] * len(ks)) for est in ESTIMATORS}
            for j, k in enumerate(ks):
                rec = {"id": kids[j], "group": batch["group"][k], "groups": batch["groups"][k], "candidates": cands[j]}
                for est in ESTIMATORS:
                    rec[est] = scores.value[est][j].tolist()
                    rec[f"{est}_stderr"] = scores.stderr[est][j].tolist()
                    rec[f"correct_{est}"] = bool(hit[est][j])
                records.append(rec)
                if self.trainer.is_global_zero and self._drawn < self.log_images:
                    p = PREDICTION_ESTIMATOR
                    fig = ranking_figure(batch["image"][k], cands[j], rec[p], rec[f"{p}_stderr"],
                                         f"{rec['group']}, item {kids[j]}: {'right' if rec[f'correct_{p}'] else 'wrong'}")
                    self.save_figure(fig, f"{kids[j]}", f"ranking/{self._drawn}")
                    self._drawn += 1
        self._update(records)
        return sorted(records, key=lambda r: r["id"])

    def _update(self, records: list[dict]) -> None:
        names = dict.fromkeys(g for r in records for g in [*r["groups"], OVERALL])
        for name in names:  # same groups in the same order on resume: the records carry them
            rows = [r for r in records if name == OVERALL or name in r["groups"]]
            for est in ESTIMATORS:
                self.hits[f"{name}/{est}"].update(torch.tensor([r[f"correct_{est}"] for r in rows]),
                                                  [r["id"] for r in rows])

    def replay(self, records: list[dict]) -> None:
        self._update(records)

    def results(self) -> dict:
        out = {}
        for key, metric in self.hits.items():
            group, est = key.rsplit("/", 1)
            counts = metric.compute()  # a collective: every rank, every metric, same order
            if counts["n"]:
                acc, low, high = accuracy_interval(counts["hits"], counts["n"])
                out[f"ranking/{group}/{est}"] = {"accuracy": acc, "low": low, "high": high, **counts}
        groups = self.trainer.datamodule.groups()
        for group in groups:
            subgroups = [g for g in groups if g.startswith(f"{group}/")]
            for est in ESTIMATORS:
                subs = [out[key] for g in subgroups if (key := f"ranking/{g}/{est}") in out]
                if subs:  # ARO's headline: the mean over relations (attribute pairs), not over items
                    acc, low, high = macro_accuracy([(v["hits"], v["n"]) for v in subs])
                    out[f"ranking/{group}/macro/{est}"] = {"accuracy": acc, "low": low, "high": high,
                                                          "subgroups": len(subs), "n": sum(v["n"] for v in subs)}
        log_scalars(self.trainer, {f"info/{k}/accuracy": v["accuracy"] for k, v in out.items()}, step=0)
        return out

    def report_lines(self, results: dict) -> list[str]:
        lines = [f"Prediction: argmax of pointwise MI, {PREDICTION_ESTIMATOR} estimator (orthogonal shown for comparison).",
                 "", "| group | estimator | accuracy | 95% interval | items |", "|---|---|---:|---|---:|"]
        for key, r in results.items():
            group, est = key[len("ranking/"):].rsplit("/", 1)
            lines.append(f"| {group} | {est} | {100 * r['accuracy']:.1f}% | [{100 * r['low']:.1f}, "
                         f"{100 * r['high']:.1f}] | {r['n']} |")
        return lines
