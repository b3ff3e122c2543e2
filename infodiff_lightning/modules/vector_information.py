"""The vector-MI analysis job: I(X;Y) of a user's pairs with a trained vector denoiser.

    python analyze.py --config configs/analyze/vector_mi.yaml \\
        --model.model runs/train/vector_mi/version_0/vector_denoiser --data.x pairs.npz

The pairs come from a VectorPairData datamodule (by default its held-out split, which
the denoiser was not trained on); the measurement is the shared pair-information path
(pair_information.py), with resume, per-sample failures and exact coverage on any
number of devices, and optionally adaptive precision (as many draws per pair as its
target needs; each record says how many it took).
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..denoisers.base import Denoiser
from ..denoisers.vector import load_vector_denoiser
from ..integrate import AlphaSampler
from ..measurement import MeasurementSpec
from ..protocols import VectorPairSource
from ..training import default_vector_sampler
from .pair_information import PairInformationJob

__all__ = ["VectorInformation"]


class VectorInformation(PairInformationJob):
    """Estimate I(X;Y) with the vector denoiser saved in ``model``.

    Args:
        model: a folder saved by VectorMITrainer (config.json, model.safetensors).
        estimators: any of "standard", "orthogonal" (one denoiser pass for both).
        n_draws: (alpha, eps) draws per pair; with a target, the draws of each round.
        sampler: log-SNR proposal (default: the training default, Logistic(0, 2) on [-8, 8]),
            restricted to the model's trained range.
        truth: the true I(X;Y) in nats where it is known (benchmarks): adds z and relative error.
        seed: keys each pair's draws, with its row number.
        microbatch: denoiser inputs per call.
        fail_fast: stop at the first failed batch.
        target_stderr, target_relative, max_draws: adaptive precision: each pair draws
            rounds of ``n_draws`` until its i(x; y) under every estimator has a standard
            error of at most ``target_stderr`` nats or ``target_relative`` x |value| (or
            ``max_draws``); the record says how many draws the pair took ("draws").
    """

    def __init__(self, model: str, estimators: Sequence[str] = ("standard", "orthogonal"), n_draws: int = 32,
                 sampler: AlphaSampler | None = None, truth: float | None = None, seed: int = 0,
                 microbatch: int = 16384, fail_fast: bool = False, target_stderr: float | None = None,
                 target_relative: float | None = None, max_draws: int = MeasurementSpec.max_draws):
        super().__init__(estimators, n_draws, sampler if sampler is not None else default_vector_sampler(), seed,
                         microbatch, fail_fast=fail_fast, target_stderr=target_stderr,
                         target_relative=target_relative, max_draws=max_draws)
        self.model_path = str(model)
        # The network is registered as a submodule, so Lightning moves it to the job's device.
        self._denoiser, self.net, self.dims = self.load(model)
        self.known_truth = truth

    def load(self, model: str) -> tuple[Denoiser, torch.nn.Module, tuple[int, int]]:
        """(the denoiser of raw pairs, the module holding its weights, (dim_x, dim_y)) saved in ``model``."""
        saved = load_vector_denoiser(model)
        return saved.denoiser, saved.net, (saved.net.dim_x, saved.net.dim_y)

    @property
    def denoiser(self) -> Denoiser:
        return self._denoiser

    def truth(self) -> float | None:
        return self.known_truth

    def title(self) -> str:
        return self.model_path

    def validate(self, datamodule) -> None:
        if not isinstance(datamodule, VectorPairSource):
            raise ValueError(f"data: VectorInformation needs a datamodule of vector pairs, got {type(datamodule).__name__}")
        want = tuple(self.dims)
        if tuple(datamodule.dims) != want:
            raise ValueError(f"data: the pairs have dims {tuple(datamodule.dims)} (x, y) but the model {self.model_path} "
                             f"was trained on {want}")
