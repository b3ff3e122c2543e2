"""The datamodule shape every captioned dataset shares (generated shapes, digits and
world, and a caption folder): a train split, a held-out validation split whose first
items are the monitor's probe, and a test split that an analysis job measures exactly
once across devices."""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .loaders import evaluation_loader

__all__ = ["SplitCaptionData"]


class SplitCaptionData(L.LightningDataModule):
    """Base of the captioned datamodules. Subclasses set ``train_set``, ``val_set`` and
    ``test_set`` (datasets of {"id", "image", "caption", "error"} with ``caption(i)`` and
    ``ids``, or a ``Subset`` of one; attributes or properties) and save ``batch_size``,
    ``seed``, ``num_workers`` and ``test_split`` as hparams. ``probe_option`` names the
    option that sets the size of the validation split (in the error of a too-large probe)."""

    train_set: Dataset
    val_set: Dataset
    test_set: Dataset
    name: str = "captioned items"
    probe_option: str = "n_val"

    def probe_items(self, n: int) -> list[dict]:
        if n > len(self.val_set):
            raise ValueError(f"probe of {n} items asked, but the validation split has {len(self.val_set)} "
                             f"({self.probe_option})")
        return [self.val_set[i] for i in range(n)]

    def test_captions(self) -> list[str | None]:
        """Captions of the items an analysis job measures (cheap: nothing is loaded)."""
        data, indices = self.test_set, range(len(self.test_set))
        if isinstance(data, Subset):
            data, indices = data.dataset, data.indices
        return [data.caption(i) for i in indices]

    def describe_test_split(self) -> str:
        ids = self.test_set.ids
        return f"{len(ids)} {self.name}, ids {ids[0]}..{ids[-1]} (test_split={self.hparams.test_split})"

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.hparams.num_workers,
                          generator=torch.Generator().manual_seed(self.hparams.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        """The measured items, each exactly once across devices (analysis jobs)."""
        return evaluation_loader(self.test_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers)
