"""The ground-truth analysis job: does the estimator recover a known I(X;Y)?

A LightningModule whose test loop draws samples (x, y) ~ p from an analytic system,
estimates the pointwise i(x;y) with the exact denoiser, reduces the per-sample values
with torchmetrics across devices and compares the dataset-level mean with the closed
form. Samples and draws are keyed by sample id, so any number of devices gives the
same numbers; each sample is evaluated exactly once (no padding duplicates).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.loaders import evaluation_loader
from ..denoisers.analytic import AnalyticSystem
from ..draws import draws_for_ids
from ..estimators import ESTIMATORS, Estimate, contrast_estimate
from ..evaluate import denoiser_errors
from ..integrate import AlphaSampler, TruncatedLogistic
from ..io import log_scalars
from ..metrics import PointwiseInformation
from .analysis_job import AnalysisJob

__all__ = ["GroundTruthAnalysis"]


class _Samples(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return {"id": i, "x": self.x[i], "y": self.y[i], "error": ""}


class GroundTruthAnalysis(AnalysisJob):
    """Estimate I(X;Y) of ``system`` with each estimator and compare with the truth.

    Args:
        system: an analytic system (e.g. CorrelatedGaussian, GaussianMixture).
        n_samples: samples (x, y) ~ p averaged for the dataset-level value.
        estimators: any of "orthogonal", "standard" (both share one denoiser pass).
        n_draws: (alpha, eps) draws per sample.
        sampler: log-SNR proposal; default truncated logistic (loc 0, scale 2, clip 6),
            wide enough for the information to lie inside it for the default systems.
        seed: keys the samples and, with the sample id, each sample's draws.
        batch_size: samples per test step; microbatch: denoiser inputs per call.
        fail_fast: stop at the first failed batch instead of recording it and going on.
    """

    def __init__(self, system: AnalyticSystem, n_samples: int = 2000, estimators: Sequence[str] = ("orthogonal", "standard"),
                 n_draws: int = 32, sampler: AlphaSampler | None = None, seed: int = 0, batch_size: int = 250,
                 microbatch: int = 16384, fail_fast: bool = False):
        super().__init__(fail_fast=fail_fast)
        if n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 for a standard error, got {n_samples}")
        if n_draws < 2:
            raise ValueError(f"n_draws must be >= 2 for a standard error, got {n_draws}")
        bad = [e for e in estimators if e not in ESTIMATORS]
        if bad or not estimators:
            raise ValueError(f"estimators must be a non-empty subset of {ESTIMATORS}, got {list(estimators)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if microbatch < 1:
            raise ValueError(f"microbatch must be >= 1, got {microbatch}")
        self.system = system
        self.n_samples, self.n_draws, self.seed = n_samples, n_draws, seed
        self.estimators = list(estimators)
        self.sampler = sampler if sampler is not None else TruncatedLogistic(0.0, 2.0, 6.0, stratified=True)
        self.batch_size, self.microbatch = batch_size, microbatch
        self.mi = torch.nn.ModuleDict({e: PointwiseInformation() for e in self.estimators})

    def test_dataloader(self) -> DataLoader:
        x, y = self.system.sample(self.n_samples, torch.Generator().manual_seed(self.seed))
        return evaluation_loader(_Samples(x, y), self.batch_size, self.trainer)

    def measure(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        x, y = batch["x"][keep], batch["y"][keep]
        draws = draws_for_ids(ids, self.n_draws, tuple(x.shape[1:]), self.sampler, self.seed, dtype=x.dtype)
        n = x.shape[0]
        errors = denoiser_errors(self.system, x, [self.system.null_conditions(n), y], draws, [(0, 1)],
                                 microbatch=self.microbatch)
        rows = [{"id": i, "n_evals": errors.n_evals // n} for i in ids]
        for est in self.estimators:
            e = contrast_estimate(errors, 0, (0, 1), est)
            self.mi[est].update(e, ids=ids)
            for k, row in enumerate(rows):
                row[est], row[f"{est}_stderr"] = float(e.value[k]), float(e.stderr[k])
        return rows

    def replay(self, records: list[dict]) -> None:
        n_evals = sum(int(r["n_evals"]) for r in records)
        for est in self.estimators:
            values = torch.tensor([r[est] for r in records], dtype=torch.float64)
            stderrs = torch.tensor([float("nan") if r[f"{est}_stderr"] is None else r[f"{est}_stderr"]
                                    for r in records], dtype=torch.float64)
            self.mi[est].update(Estimate(values, stderrs, n_evals), ids=[r["id"] for r in records])

    def results(self) -> dict:
        truth = float(self.system.mutual_information())
        rows, logged = {}, {"info/mi/truth": truth}
        for est in self.estimators:
            r = self.mi[est].compute()  # a collective: every rank calls it; the one synchronisation
            mean, se = float(r["mean"]), float(r["stderr"])
            rows[est] = {"estimate": mean, "stderr": se, "truth": truth, "z": (mean - truth) / se if se > 0 else None,
                         "relative_error": (mean - truth) / truth if truth else None,
                         "samples": int(r["count"]), "denoiser_evals": int(r["n_evals"])}
            logged[f"info/mi/{est}"], logged[f"info/mi/{est}_stderr"] = mean, se
        log_scalars(self.trainer, logged, step=0)
        return {"system": type(self.system).__name__, "truth_nats": truth, "estimators": rows}

    def report_lines(self, results: dict) -> list[str]:
        """The demo's table: estimate, standard error and truth per estimator."""
        lines = [f"I(X;Y) for {results['system']} (nats)", "",
                 "| estimator | estimate | stderr | truth | z | rel. err | evals |", "|---|---:|---:|---:|---:|---:|---:|"]
        for est, r in results["estimators"].items():
            z = f"{r['z']:.2f}" if r["z"] is not None else "-"
            rel = f"{100 * r['relative_error']:.2f}%" if r["relative_error"] is not None else "-"
            lines.append(f"| {est} | {r['estimate']:.4f} | {r['stderr']:.4f} | {r['truth']:.4f} | {z} | {rel} | "
                         f"{r['denoiser_evals']} |")
        return lines
