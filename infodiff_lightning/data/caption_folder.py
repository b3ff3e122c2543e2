"""A folder of captioned images: ``name.png|jpg|jpeg|webp`` with ``name.txt`` beside it.

Images are resized (shorter side) and centre-cropped to ``image_size`` and scaled to
[-1, 1]. Sample ids are the positions in the sorted file list, so they are stable
across runs and ranks. A file that cannot be read raises an error naming it.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .loaders import evaluation_loader

__all__ = ["CaptionFolder", "CaptionFolderData", "load_image"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """(3, size, size) float in [-1, 1]: resize the shorter side, centre crop."""
    from PIL import Image

    try:
        img = Image.open(path).convert("RGB")
    except Exception as e:  # PIL raises several types; name the file in one clear error
        raise ValueError(f"cannot read image {path}: {e}") from e
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)
    return arr / 127.5 - 1.0


class CaptionFolder(Dataset):
    def __init__(self, root: str | Path, image_size: int = 512):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"caption folder {root} does not exist")
        self.files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        missing = [p.name for p in self.files if not p.with_suffix(".txt").exists()]
        if missing:
            raise ValueError(f"{len(missing)} images in {root} have no caption file (.txt beside them), e.g. {missing[:3]}")
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        p = self.files[i]
        return {"id": i, "image": load_image(p, self.image_size),
                "caption": p.with_suffix(".txt").read_text().strip()}


class CaptionFolderData(L.LightningDataModule):
    """Train on all but the last ``n_probe`` items; those are validation and probe items."""

    def __init__(self, root: str, image_size: int = 512, batch_size: int = 4, n_probe: int = 8, num_workers: int = 2,
                 seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.data = CaptionFolder(root, image_size)
        if len(self.data) <= n_probe:
            raise ValueError(f"{root} has {len(self.data)} items; need more than n_probe={n_probe}")
        n = len(self.data)
        self.train_set = Subset(self.data, range(n - n_probe))
        self.val_set = Subset(self.data, range(n - n_probe, n))

    def probe_items(self, n: int) -> list[dict]:
        if n > len(self.val_set):
            raise ValueError(f"probe of {n} items asked, but only {len(self.val_set)} are held out (n_probe)")
        return [self.val_set[i] for i in range(n)]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.hparams.num_workers, generator=torch.Generator().manual_seed(self.hparams.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        """The held-out split, each item exactly once across devices (analysis jobs)."""
        return evaluation_loader(self.val_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers)
