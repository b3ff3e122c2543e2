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
from ..integrate import AlphaSampler, TruncatedLogistic
from ..measurement import MeasurementSpec
from .pair_information import PairInformationJob

__all__ = ["GroundTruthAnalysis"]


class _Samples(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return {"id": i, "x": self.x[i], "y": self.y[i], "error": ""}


class GroundTruthAnalysis(PairInformationJob):
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
        target_stderr, target_relative, max_draws: adaptive precision, as for VectorInformation:
            each sample draws rounds of ``n_draws`` until its i(x; y) under every estimator
            meets the target (or ``max_draws``); the record says how many draws it took.
    """

    def __init__(self, system: AnalyticSystem, n_samples: int = 2000, estimators: Sequence[str] = ("orthogonal", "standard"),
                 n_draws: int = 32, sampler: AlphaSampler | None = None, seed: int = 0, batch_size: int = 250,
                 microbatch: int = 16384, fail_fast: bool = False, target_stderr: float | None = None,
                 target_relative: float | None = None, max_draws: int = MeasurementSpec.max_draws):
        super().__init__(estimators, n_draws, sampler if sampler is not None else TruncatedLogistic(0.0, 2.0, 6.0, stratified=True),
                         seed, microbatch, fail_fast=fail_fast, target_stderr=target_stderr,
                         target_relative=target_relative, max_draws=max_draws)
        if n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 for a standard error, got {n_samples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.system = system
        self.n_samples, self.batch_size = n_samples, batch_size

    @property
    def denoiser(self) -> AnalyticSystem:
        return self.system

    def truth(self) -> float:
        return float(self.system.mutual_information())

    def title(self) -> str:
        return type(self.system).__name__

    def test_dataloader(self) -> DataLoader:
        x, y = self.system.sample(self.n_samples, torch.Generator().manual_seed(self.seed))
        return evaluation_loader(_Samples(x, y), self.batch_size, self.trainer)
