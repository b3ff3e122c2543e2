"""Evaluation loaders that cover each sample exactly once on any number of devices."""
from __future__ import annotations

from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

__all__ = ["evaluation_loader"]


def evaluation_loader(dataset: Dataset, batch_size: int, trainer=None, num_workers: int = 0,
                      collate_fn=None) -> DataLoader:
    """In order, no shuffling; under DDP each rank gets a disjoint share without the
    padding duplicates of the default DistributedSampler (Lightning keeps a sampler
    that already is a DistributedSampler)."""
    sampler = None
    if trainer is not None and trainer.world_size > 1:
        sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank,
                                               shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_fn)
