"""Caption ranking as an analysis job (the ARO protocol of Kong et al. 2024).

For each image, its candidate captions (the true one first) are scored by pointwise MI
from one denoiser pass with draws keyed by the image id and shared by the candidates
(``ranking.score_candidates``); the prediction is the candidate with the largest score of
the standard estimator (the pointwise identity; see ranking.py), and the orthogonal
estimator's choice is reported beside it. Accuracy per group (the benchmark file: VG
attribution, VG relation, COCO order, ...; and each relation or attribute pair within a
file) and overall, with Wilson 95% intervals; for a file with subgroups also the macro
average over every subgroup (``ranking/<file>/macro/<est>``), and beside it ARO's headline
figures as ARO computes them (analyses/aro.py): ``ranking/<file>/aro_macro/<est>`` (VG-Relation
without the symmetric relations, VG-Attribution over attribute pairs of at least 25 rows)
and, for the order sets, ``ranking/<file>/precision_at_1/<est>`` with the count of
perturbations that equal their caption (no rival of it, as under ARO's argmax).

The first ``log_images`` items measured (rank zero) are drawn: the image and each
candidate's score with its standard error (figures/ and TensorBoard ``ranking/<n>``).

With ``adaptive: true`` the draws are spent by successive elimination instead
(``ranking.rank_adaptively``): rounds of ``round_draws`` draws keyed by (seed, image id,
round); from ``min_draws`` on, a candidate further than ``z`` calibrated standard errors
behind the leader gets no more draws, and an image stops with one candidate left or at
``max_draws``. No null column is measured (the choice needs only the candidates' error
differences), so a record holds each candidate's score relative to the choice
(``standard_gap``: i(x; c_k) - i(x; c_choice), over the draws candidate k got), the choice,
the draws of each candidate and of the image, and the image's denoiser inputs (``nfe``);
only the standard estimator is scored. Fixed mode (the default) is unchanged.

Records, resume, failures and the report are those of every analysis job (analysis_job.py).
"""
from __future__ import annotations

import torch

from ..estimators import ESTIMATORS
from ..io import log_scalars
from ..metrics.samples import SampleHits
from ..protocols import GroupedEvaluationData
from ..analyses.ranking import (ELIMINATION_Z, MIN_DRAWS, PREDICTION_ESTIMATOR, check_elimination, rank_adaptively,
                                score_candidates)
from ..analyses.aro import aro_summary
from ..analyses.statistics import accuracy_summary, correct
from ..runs.viz import ranking_figure
from .records import Field, Schema
from .text_to_image_job import TextToImageJob

__all__ = ["CaptionRanking", "OVERALL"]

#: The group name of the accuracy over every item.
OVERALL = "all"


def _rivals(candidates: list[list[str]]) -> torch.Tensor:
    """(N, K) bool: the candidates that compete with the true (first) one: those whose text
    differs from it (a copy of the caption cannot beat it; statistics.correct)."""
    return torch.tensor([[k > 0 and c != cands[0] for k, c in enumerate(cands)] for cands in candidates])


class CaptionRanking(TextToImageJob):
    """Accuracy of choosing the true caption by pointwise MI.

    Args:
        pretrained: diffusers folder or hub id; lora: optional LoRA adapter folder.
        n_draws: (alpha, eps) draws per image, shared by its candidates (fixed mode).
        adaptive: rank by successive elimination (module doc) instead of ``n_draws`` fixed draws.
        round_draws, min_draws, max_draws, z: adaptive mode's draws per round (the same in
            every round; even for the paired design), draws before the first elimination,
            the most draws per image, and the elimination threshold in standard errors.
        seed: with the image id (and the round), keys each image's draws.
        log_images: items drawn as figures (image and candidate scores).
        microbatch: denoiser inputs per call (None: the model's default); torch_dtype: e.g. "float16" on a GPU.
        fail_fast: stop at the first failed image.
    """

    data_protocol, data_example = GroupedEvaluationData, "CaptionRankingData"
    #: per item: its group, every group it counts in, the candidates (true first), and per
    #: estimator each candidate's score with its standard error and whether the true one won
    #: (fixed mode); in adaptive mode instead the standard estimator's scores relative to the
    #: choice, whether the true one won, the choice, the draws of each candidate and of the
    #: image, and the image's denoiser inputs
    schema = Schema([Field("group", "text"), Field("groups", "text"), Field("candidates", "text"),
                     *(f for est in ESTIMATORS for f in (Field(est, "values", stderr=True),
                                                         Field(f"correct_{est}", "flag"))),
                     Field("standard_gap", "values", stderr=True), Field("choice", "count"),
                     Field("candidate_draws", "values"), Field("draws", "count"), Field("nfe", "count")])

    def __init__(self, pretrained: str, lora: str | None = None, n_draws: int = 16, seed: int = 0,
                 adaptive: bool = False, round_draws: int = 4, min_draws: int = MIN_DRAWS, max_draws: int = 32,
                 z: float = ELIMINATION_Z, log_images: int = 4, microbatch: int | None = None,
                 torch_dtype: str | None = None, fail_fast: bool = False):
        if n_draws < 2:
            raise ValueError(f"n_draws must be >= 2 (a standard error needs two draws), got {n_draws}")
        if microbatch is not None and microbatch < 1:
            raise ValueError(f"microbatch must be >= 1 (or null for the model's default), got {microbatch}")
        if adaptive:
            check_elimination(round_draws, min_draws, max_draws, z)
        super().__init__(pretrained, lora, torch_dtype, log_images, fail_fast)
        self.n_draws, self.seed, self.microbatch = n_draws, seed, microbatch
        self.adaptive, self.round_draws, self.min_draws, self.max_draws, self.z = adaptive, round_draws, min_draws, max_draws, z
        # adaptive mode measures no null column, so only the standard estimator is scored
        self.estimators = (PREDICTION_ESTIMATOR,) if adaptive else ESTIMATORS
        self.hits = torch.nn.ModuleDict()  # "<group>/<estimator>" -> SampleHits, made in setup

    def describe_run(self, datamodule) -> str:
        return f"ranking {datamodule.describe_test_split()}"

    def make_metrics(self) -> None:
        for group in [*self.trainer.datamodule.groups(), OVERALL]:
            for est in self.estimators:
                self.hits[f"{group}/{est}"] = SampleHits().to(self.device)

    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        samples = []
        by_size: dict[int, list[int]] = {}  # candidates of one length are scored together
        for k in keep:
            by_size.setdefault(len(batch["candidates"][k]), []).append(k)
        for ks in by_size.values():
            kids = [int(batch["id"][k]) for k in ks]
            cands = [batch["candidates"][k] for k in ks]
            if self.adaptive:
                samples += self.rank_adaptively(batch, ks, kids, cands)
                continue
            scores = score_candidates(self.denoiser, batch["image"][ks].to(self.device), kids, cands,
                                      n_draws=self.n_draws, seed=self.seed, microbatch=self.microbatch)
            hit = {est: correct(scores.value[est], [0] * len(ks), _rivals(cands)) for est in ESTIMATORS}
            for j, k in enumerate(ks):
                samples.append({"id": kids[j], "group": batch["group"][k], "groups": batch["groups"][k],
                                "candidates": cands[j],
                                **{est: (scores.value[est][j], scores.stderr[est][j]) for est in ESTIMATORS},
                                **{f"correct_{est}": hit[est][j] for est in ESTIMATORS}})
                if (n := self.figure_slot()) is not None:
                    p = PREDICTION_ESTIMATOR
                    fig = ranking_figure(batch["image"][k], cands[j], scores.value[p][j].tolist(),
                                         scores.stderr[p][j].tolist(),
                                         f"{batch['group'][k]}, item {kids[j]}: {'right' if hit[p][j] else 'wrong'}")
                    self.save_figure(fig, f"{kids[j]}", f"ranking/{n}")
        return samples

    def rank_adaptively(self, batch, ks: list[int], kids: list[int], cands: list[list[str]]) -> list[dict]:
        """The samples of items ``ks`` (same number of candidates) ranked by successive elimination."""
        r = rank_adaptively(self.denoiser, batch["image"][ks].to(self.device), kids, cands, round_draws=self.round_draws,
                            max_draws=self.max_draws, min_draws=self.min_draws, z=self.z, seed=self.seed,
                            microbatch=self.microbatch)
        hit = correct(r.decision_scores(), [0] * len(ks), _rivals(cands))  # the true caption is the first
        samples = []
        for j, k in enumerate(ks):
            samples.append({"id": kids[j], "group": batch["group"][k], "groups": batch["groups"][k],
                            "candidates": cands[j], "standard_gap": (r.value[j], r.stderr[j]),
                            "choice": r.prediction[j], "candidate_draws": r.draws[j], "draws": r.image_draws[j],
                            "nfe": r.n_evals[j], f"correct_{PREDICTION_ESTIMATOR}": hit[j]})
            if (n := self.figure_slot()) is not None:
                fig = ranking_figure(batch["image"][k], cands[j], r.value[j].tolist(), r.stderr[j].tolist(),
                                     f"{batch['group'][k]}, item {kids[j]}: {'right' if hit[j] else 'wrong'}; "
                                     f"MI relative to the choice, draws {r.draws[j].tolist()}")
                self.save_figure(fig, f"{kids[j]}", f"ranking/{n}")
        return samples

    def update_metrics(self, records: list[dict]) -> None:
        names = dict.fromkeys(g for r in records for g in [*r["groups"], OVERALL])
        for name in names:  # same groups in the same order on resume: the records carry them
            rows = [r for r in records if name == OVERALL or name in r["groups"]]
            for est in self.estimators:
                self.hits[f"{name}/{est}"].update(torch.tensor([r[f"correct_{est}"] for r in rows]),
                                                  [r["id"] for r in rows])

    def results(self) -> dict:
        counts = {key: metric.compute() for key, metric in self.hits.items()}  # collectives: every rank, same order
        out = accuracy_summary(counts, self.trainer.datamodule.groups(), self.estimators)
        benchmarks = getattr(self.trainer.datamodule, "benchmarks", None)
        if benchmarks is not None:  # ARO's own aggregates, beside the job's (analyses/aro.py)
            out.update(aro_summary(out, benchmarks(), self.estimators))
        log_scalars(self.trainer, {f"info/{k}/accuracy": v["accuracy"] for k, v in out.items()}, step=0)
        return out

    def report_lines(self, results: dict) -> list[str]:
        if self.adaptive:
            head = (f"Prediction: argmax of pointwise MI, {PREDICTION_ESTIMATOR} estimator, by successive elimination "
                    f"(rounds of {self.round_draws} draws, from {self.min_draws} draws at z = {self.z}, at most "
                    f"{self.max_draws} per image; the records hold each image's draws).")
        else:
            head = f"Prediction: argmax of pointwise MI, {PREDICTION_ESTIMATOR} estimator (orthogonal shown for comparison)."
        lines = [head, "", "| group | estimator | accuracy | 95% interval | items |", "|---|---|---:|---|---:|"]
        notes = []
        for key, r in results.items():
            group, est = key[len("ranking/"):].rsplit("/", 1)
            lines.append(f"| {group} | {est} | {100 * r['accuracy']:.1f}% | [{100 * r['low']:.1f}, "
                         f"{100 * r['high']:.1f}] | {r['n']} |")
            if est != PREDICTION_ESTIMATOR:
                continue
            if "/aro_macro" in key:
                notes.append(f"- {group}: ARO's macro accuracy over {r['subgroups']} subgroups ({r['rule']}: "
                             f"{r['dropped_subgroups']}); `macro` averages every subgroup.")
            elif "/precision_at_1" in key:
                made = ", ".join(r["perturbations"])
                missing = "" if len(r["perturbations"]) == 4 else (
                    " shuffle_nouns_and_adj and shuffle_allbut_nouns_and_adj need a POS tagger (data.pos_tagger) "
                    f"and were not produced ({len(r['perturbations']) + 1} candidates per case, not ARO's 5).")
                notes.append(f"- {group}: ARO's Precision@1, candidates the caption and {made};{missing} "
                             f"{r['equal_to_caption']} perturbations in {r['cases_with_equal']} cases equal their "
                             "caption and do not compete with it (ARO's argmax gives the tie to the caption).")
        return lines + ([""] + notes if notes else [])
