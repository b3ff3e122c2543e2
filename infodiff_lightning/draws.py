"""Monte-Carlo draws (alpha, weight, eps) shared by every condition of an image.

Sharing the draws across conditions (common random numbers) makes differences and
rankings between conditions sharp. Draws can be made from one generator
(:func:`sample_draws`) or keyed by sample id (:func:`draws_for_ids`), so that an
evaluation split over any number of devices sees the same draws for the same sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .integrate import AlphaSampler
from .uncertainty import check_design

__all__ = ["Draws", "sample_draws", "draws_for_ids", "id_generator"]


@dataclass
class Draws:
    """alpha and weight (N, S) and eps (N, S, *shape) for N images and S draws each.

    ``design`` says how the S draws of an image relate ("iid", "paired": two draws per
    stratum, "grid": deterministic alpha); it decides the standard-error formula
    (uncertainty.py). Draws built by hand are "iid" unless told otherwise."""

    alpha: Tensor
    weight: Tensor
    eps: Tensor
    design: str = "iid"

    def __post_init__(self) -> None:
        if self.alpha.ndim != 2:
            raise ValueError(f"Draws.alpha must be (N, S), got shape {tuple(self.alpha.shape)}")
        if self.weight.shape != self.alpha.shape:
            raise ValueError(f"Draws.weight {tuple(self.weight.shape)} must match alpha {tuple(self.alpha.shape)}")
        if self.eps.shape[:2] != self.alpha.shape:
            raise ValueError(f"Draws.eps must start with (N, S) = {tuple(self.alpha.shape)}, got {tuple(self.eps.shape)}")
        if self.alpha.shape[1] < 1:
            raise ValueError("Draws need at least one draw per image (S >= 1)")
        check_design(self.design, self.n_draws)

    @property
    def n_images(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def n_draws(self) -> int:
        return int(self.alpha.shape[1])

    def select(self, index: Tensor) -> "Draws":
        return Draws(self.alpha[index], self.weight[index], self.eps[index], self.design)


def sample_draws(n_images: int, n_draws: int, shape: tuple[int, ...], sampler: AlphaSampler,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> Draws:
    """N x S draws from one generator (on CPU; moved to the model's device per micro-batch)."""
    if n_images < 1 or n_draws < 1:
        raise ValueError(f"need n_images >= 1 and n_draws >= 1, got {n_images}, {n_draws}")
    alpha, weight = sampler.sample((n_images, n_draws), generator)
    eps = torch.randn((n_images, n_draws, *shape), generator=generator, dtype=dtype)
    return Draws(alpha, weight, eps, sampler.design)


def id_generator(seed: int, sample_id: int, round: int = 0) -> torch.Generator:
    """A generator determined by (seed, sample id, round) alone, never by rank or batch.

    ``round`` numbers the successive draw rounds of adaptive precision (adaptive.py);
    round 0 is the generator every fixed-count measurement uses."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + int(sample_id) * 0xBF58476D1CE4E5B9) % (2**63 - 1)
    if round:
        mixed = (mixed + int(round) * 0x94D049BB133111EB) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def draws_for_ids(ids, n_draws: int, shape: tuple[int, ...], sampler: AlphaSampler, seed: int = 0,
                  dtype: torch.dtype = torch.float32, round: int = 0) -> Draws:
    """Draws for each sample id, each from its own generator keyed by (seed, id, round)."""
    ids = [int(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]
    if not ids:
        raise ValueError("draws_for_ids: no sample ids given")
    parts = [sample_draws(1, n_draws, shape, sampler, id_generator(seed, i, round), dtype) for i in ids]
    return Draws(torch.cat([p.alpha for p in parts]), torch.cat([p.weight for p in parts]),
                 torch.cat([p.eps for p in parts]), sampler.design)
