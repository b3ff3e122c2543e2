"""The job both vector-pair analyses share: i(x;y) per sample, averaged to I(X;Y).

For each pair (x, y) the pointwise information

    i(x; y) = 1/2 Int E_eps[ ||eps - eps_hat(x_a | null)||^2 - ||eps - eps_hat(x_a | y)||^2 ] da   (standard)
    i(x; y) = 1/2 Int E_eps[ ||eps_hat(x_a | y) - eps_hat(x_a | null)||^2 ] da                     (orthogonal)

is estimated with (alpha, eps) draws keyed by the sample id, from one denoiser pass
that both forms share; the dataset-level I(X;Y) is the mean over samples with its
standard error (PointwiseInformation, reduced across devices in id order). With a
target (``target_stderr`` / ``target_relative``, adaptive.py) each sample draws rounds
of ``n_draws``, keyed by (seed, sample id, round), until i(x; y) under every estimator
measured meets it (or ``max_draws``); each record says how many draws its sample took. The
ground-truth job (an analytic system and its exact denoiser) and the vector-MI job (a
trained denoiser on a user's arrays) differ only in where the denoiser, the pairs and
the truth (if known) come from.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..adaptive import measure_adaptively
from ..denoisers.base import Denoiser
from ..estimate import ESTIMATORS, Estimate
from ..integrate import AlphaSampler
from ..measure import DrawSpec, measure
from ..measurement import MeasurementSpec
from ..io import log_scalars
from ..metrics import PointwiseInformation
from .analysis_job import AnalysisJob
from .records import Field, Schema

__all__ = ["PairInformationJob"]


class PairInformationJob(AnalysisJob):
    """Estimate I(X;Y) from pairs (x, y) with a denoiser of x conditioned on y.

    Batches are dicts with "id", "x" (B, dim_x) as the data set holds it (the
    denoiser's ``encode`` maps it to the x the estimators integrate over), "y" (B, dim_y)
    and "error". Subclasses give the ``denoiser`` property, :meth:`truth` and :meth:`title`;
    the record is declared (``schema``), as in every job.

    Args:
        estimators: any of "orthogonal", "standard" (both share one denoiser pass).
        n_draws: (alpha, eps) draws per sample; with a target, the draws of each round.
        sampler: the log-SNR proposal (restricted to the denoiser's ``alpha_range``).
        seed: keys each sample's draws, with its id.
        microbatch: denoiser inputs per call.
        fail_fast: stop at the first failed batch instead of recording it and going on.
        target_stderr, target_relative, max_draws: adaptive precision (validated as
            MeasurementSpec's): each sample draws rounds of ``n_draws`` until i(x; y) has a
            standard error of at most ``target_stderr`` nats or ``target_relative`` x
            |value| under every estimator of ``estimators`` (or ``max_draws``). None
            (both): a fixed ``n_draws`` per sample.
    """

    def __init__(self, estimators: Sequence[str], n_draws: int, sampler: AlphaSampler, seed: int, microbatch: int,
                 fail_fast: bool = False, target_stderr: float | None = None, target_relative: float | None = None,
                 max_draws: int = MeasurementSpec.max_draws):
        super().__init__(fail_fast=fail_fast)
        if n_draws < 2:
            raise ValueError(f"n_draws must be >= 2 for a standard error, got {n_draws}")
        # the caption jobs' validation of the target options, with their names in its errors
        self.precision = MeasurementSpec(n_draws=n_draws, seed=seed, target_stderr=target_stderr,
                                         target_relative=target_relative, max_draws=max_draws).precision
        bad = [e for e in estimators if e not in ESTIMATORS]
        if bad or not estimators:
            raise ValueError(f"estimators must be a non-empty subset of {ESTIMATORS}, got {list(estimators)}")
        if microbatch < 1:
            raise ValueError(f"microbatch must be >= 1, got {microbatch}")
        self.n_draws, self.seed, self.microbatch = n_draws, seed, microbatch
        self.estimators = list(estimators)
        self.sampler = sampler
        self.mi = torch.nn.ModuleDict({e: PointwiseInformation() for e in self.estimators})
        # per sample: its denoiser evaluations, its draws and each estimator's value with its standard error
        self.schema = Schema([Field("n_evals", "count"), Field("draws", "count"),
                              *(Field(e, stderr=True) for e in self.estimators)])

    # ---- what a pair job supplies ---------------------------------------------
    @property
    def denoiser(self) -> Denoiser:
        """The denoiser measured (read-only)."""
        raise NotImplementedError

    def truth(self) -> float | None:
        """The true I(X;Y) in nats where it is known (None otherwise)."""
        raise NotImplementedError

    def title(self) -> str:
        raise NotImplementedError

    # ---- the shared measurement ------------------------------------------------
    def measure_samples(self, batch, keep: list[int], ids: list[int]) -> list[dict]:
        """Per sample: i(x; y) under each estimator, the draws it took, and its share of the
        batch's denoiser evaluations (in proportion to its draws)."""
        den = self.denoiser
        n = len(ids)
        sampler = self.sampler.restricted(den.alpha_range)
        columns, contrasts = {"null": den.null_conditions(n), "y": batch["y"][keep]}, {"mi": ("null", "y")}
        if self.precision is None:
            m = measure(den, columns, contrasts, images=batch["x"][keep], ids=ids,
                        draws=DrawSpec(self.n_draws, self.seed, sampler), microbatch=self.microbatch)
            draws, n_evals = torch.full((n,), self.n_draws, dtype=torch.long), m.n_evals
        else:
            m = measure_adaptively(den, columns, contrasts, precision=self.precision, ids=ids, seed=self.seed,
                                   sampler=sampler, images=batch["x"][keep], estimator=self.estimators,
                                   microbatch=self.microbatch)
            draws, n_evals = m.draws, m.n_evals
        estimates = {est: m.estimate("mi", est) for est in self.estimators}
        total = int(draws.sum())
        return [{"id": i, "n_evals": n_evals * int(draws[k]) // total, "draws": draws[k],
                 **{est: (e.value[k], e.stderr[k]) for est, e in estimates.items()}} for k, i in enumerate(ids)]

    def update_metrics(self, records: list[dict]) -> None:
        n_evals = sum(int(r["n_evals"]) for r in records)
        for est in self.estimators:
            values = torch.tensor([r[est] for r in records], dtype=torch.float64)
            stderrs = torch.tensor([r[f"{est}_stderr"] for r in records], dtype=torch.float64)
            self.mi[est].update(Estimate(values, stderrs, n_evals), ids=[r["id"] for r in records])

    def results(self) -> dict:
        truth = self.truth()
        rows, logged = {}, ({} if truth is None else {"info/mi/truth": truth})
        for est in self.estimators:
            r = self.mi[est].compute()  # a collective: every rank calls it; the one synchronisation
            mean, se = float(r["mean"]), float(r["stderr"])
            rows[est] = {"estimate": mean, "stderr": se, "truth": truth,
                         "z": (mean - truth) / se if truth is not None and se > 0 else None,
                         "relative_error": (mean - truth) / truth if truth else None,
                         "samples": int(r["count"]), "denoiser_evals": int(r["n_evals"])}
            logged[f"info/mi/{est}"], logged[f"info/mi/{est}_stderr"] = mean, se
        log_scalars(self.trainer, logged, step=0)
        return {"system": self.title(), "truth_nats": truth, "estimators": rows}

    def report_lines(self, results: dict) -> list[str]:
        """Estimate, standard error (and truth, z, relative error where known) per estimator."""
        fmt = lambda v, f: "-" if v is None else f.format(v)  # noqa: E731
        lines = [f"I(X;Y) for {results['system']} (nats)", "",
                 "| estimator | estimate | stderr | truth | z | rel. err | evals |", "|---|---:|---:|---:|---:|---:|---:|"]
        for est, r in results["estimators"].items():
            rel = None if r["relative_error"] is None else 100 * r["relative_error"]
            lines.append(f"| {est} | {r['estimate']:.4f} | {r['stderr']:.4f} | {fmt(r['truth'], '{:.4f}')} | "
                         f"{fmt(r['z'], '{:.2f}')} | {fmt(rel, '{:.2f}%')} | {r['denoiser_evals']} |")
        return lines
