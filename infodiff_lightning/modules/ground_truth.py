"""The ground-truth analysis job: does the estimator recover a known I(X;Y)?

A LightningModule whose test loop draws samples (x, y) ~ p from an analytic system,
estimates the pointwise i(x;y) with the exact denoiser, reduces the per-sample values
with torchmetrics across devices and compares the dataset-level mean with the closed
form. Samples and draws are keyed by sample id, so any number of devices gives the
same numbers; each sample is evaluated exactly once (no padding duplicates).
"""
from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from ..denoisers.analytic import AnalyticSystem
from ..draws import draws_for_ids
from ..estimators import ESTIMATORS, information_terms, summarize
from ..evaluate import denoiser_errors
from ..integrate import AlphaSampler, TruncatedLogistic
from ..io import run_dir, write_json_atomic
from ..metrics import PointwiseInformation

__all__ = ["GroundTruthAnalysis"]


class _Samples(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int):
        return i, self.x[i], self.y[i]


class GroundTruthAnalysis(L.LightningModule):
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
    """

    def __init__(self, system: AnalyticSystem, n_samples: int = 2000, estimators: Sequence[str] = ("orthogonal", "standard"),
                 n_draws: int = 32, sampler: AlphaSampler | None = None, seed: int = 0, batch_size: int = 250,
                 microbatch: int = 16384):
        super().__init__()
        if n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 for a standard error, got {n_samples}")
        if n_draws < 2:
            raise ValueError(f"n_draws must be >= 2 for a standard error, got {n_draws}")
        bad = [e for e in estimators if e not in ESTIMATORS]
        if bad or not estimators:
            raise ValueError(f"estimators must be a non-empty subset of {ESTIMATORS}, got {list(estimators)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.system = system
        self.n_samples, self.n_draws, self.seed = n_samples, n_draws, seed
        self.estimators = list(estimators)
        self.sampler = sampler if sampler is not None else TruncatedLogistic(0.0, 2.0, 6.0, stratified=True)
        self.batch_size, self.microbatch = batch_size, microbatch
        self.mi = torch.nn.ModuleDict({e: PointwiseInformation() for e in self.estimators})
        self.summary: dict | None = None

    def test_dataloader(self) -> DataLoader:
        x, y = self.system.sample(self.n_samples, torch.Generator().manual_seed(self.seed))
        data = _Samples(x, y)
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # The default DistributedSampler pads with duplicates; this one does not.
            sampler = UnrepeatedDistributedSampler(data, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler, shuffle=False)

    def test_step(self, batch, batch_idx: int) -> None:
        ids, x, y = batch
        draws = draws_for_ids(ids, self.n_draws, tuple(x.shape[1:]), self.sampler, self.seed, dtype=x.dtype)
        n = x.shape[0]
        errors = denoiser_errors(self.system, x, [self.system.null_conditions(n), y], draws, [(0, 1)],
                                 microbatch=self.microbatch)
        for est in self.estimators:
            self.mi[est].update(summarize(information_terms(errors, 0, (0, 1), est), errors.n_evals, errors.design))

    def on_test_epoch_end(self) -> None:
        truth = float(self.system.mutual_information())
        rows = {}
        for est in self.estimators:
            r = self.mi[est].compute()  # a collective: every rank calls it
            # The logged values are identical on every rank; sync_dist only averages equals.
            mean, se = float(r["mean"]), float(r["stderr"])
            rows[est] = {"estimate": mean, "stderr": se, "truth": truth, "z": (mean - truth) / se if se > 0 else None,
                         "relative_error": (mean - truth) / truth if truth else None,
                         "samples": int(r["count"]), "denoiser_evals": int(r["n_evals"])}
            self.log(f"info/mi/{est}", mean, sync_dist=True)
            self.log(f"info/mi/{est}_stderr", se, sync_dist=True)
            self.mi[est].reset()
        self.log("info/mi/truth", truth, sync_dist=True)
        self.summary = {"system": type(self.system).__name__, "truth_nats": truth, "estimators": rows}
        out = run_dir(self.trainer)  # trainer.log_dir broadcasts: every rank must ask
        if self.trainer.is_global_zero:
            path = write_json_atomic(out / "summary.json", self.summary)
            rank_zero_info(format_table(self.summary) + f"\nsummary written to {path}")


def format_table(summary: dict) -> str:
    """The demo's table: estimate, standard error and truth per estimator."""
    lines = [f"I(X;Y) for {summary['system']} (nats)",
             f"{'estimator':<12}{'estimate':>10}{'stderr':>9}{'truth':>10}{'z':>7}{'rel.err':>9}{'evals':>11}"]
    for est, r in summary["estimators"].items():
        z = f"{r['z']:.2f}" if r["z"] is not None else "-"
        rel = f"{100 * r['relative_error']:.2f}%" if r["relative_error"] is not None else "-"
        lines.append(f"{est:<12}{r['estimate']:>10.4f}{r['stderr']:>9.4f}{r['truth']:>10.4f}{z:>7}{rel:>9}{r['denoiser_evals']:>11}")
    return "\n".join(lines)
