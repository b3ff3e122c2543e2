"""Word localization rows read from the COCO layout (data/world_export.py writes it for the
embedded world; a real benchmark converted to it reads the same way):

    localization.json   {"images": [{id, file_name, caption, ...}],
                         "annotations": [{image_id, word, segmentation (uncompressed RLE), ...}]}

Each annotation is one item: the image, its caption, the word and the word's mask. An
optional second folder (``selection_root``) supplies the items on which the job chooses
its threshold (eq. LOC); they are marked ``split = "selection"``, the others ``"eval"``.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .caption_folder import load_image
from .loaders import evaluation_loader
from .world_export import rle_decode

__all__ = ["LocalizationRows", "LocalizationData", "collate_localization"]


class LocalizationRows(Dataset):
    """Items {"id", "image", "caption", "word", "mask" (image_size, image_size) bool, "split", "error"}."""

    def __init__(self, roots: list[tuple[str, str]], image_size: int = 32, limit: int | None = None):
        self.image_size = image_size
        self.rows: list[tuple[str, Path, str, str, dict]] = []  # (split, image file, caption, word, rle)
        for split, root in roots:
            path = Path(root) / "localization.json"
            if not path.is_file():
                raise FileNotFoundError(f"{split} root {root}: no localization.json")
            data = json.loads(path.read_text())
            try:
                files = {im["id"]: (Path(root) / im["file_name"], im.get("caption")) for im in data["images"]}
                for k, a in enumerate(data["annotations"][:limit]):
                    image, caption = files[a["image_id"]]
                    self.rows.append((split, image, a.get("caption", caption), a["word"], a["segmentation"]))
            except (KeyError, TypeError) as e:
                raise ValueError(f"{path}: not the COCO localization layout (missing {e})") from None
        if not self.rows:
            raise ValueError("no localization rows in " + ", ".join(r for _, r in roots))

    def words(self) -> list[str]:
        return sorted({w for _, _, _, w, _ in self.rows})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        split, image, caption, word, rle = self.rows[i]
        size = self.image_size
        item = {"id": i, "caption": caption, "word": word, "split": split, "error": ""}
        try:
            item["image"] = load_image(image, size)
            mask = rle_decode(rle).float()[None, None]
            item["mask"] = F.interpolate(mask, size=(size, size), mode="nearest")[0, 0].bool()
        except (ValueError, OSError) as e:
            item["image"] = torch.zeros(3, size, size)
            item["mask"] = torch.zeros(size, size, dtype=torch.bool)
            item["error"] = str(e)
        return item


def collate_localization(items: list[dict]) -> dict:
    out = {k: [it[k] for it in items] for k in ("id", "caption", "word", "split", "error")}
    out["image"] = torch.stack([it["image"] for it in items])
    out["mask"] = torch.stack([it["mask"] for it in items])
    return out


class LocalizationData(L.LightningDataModule):
    """The rows of ``root`` (evaluated) and of ``selection_root`` (threshold selection), each
    measured once across devices. ``limit``: the first annotations of each file."""

    def __init__(self, root: str, selection_root: str | None = None, image_size: int = 32, batch_size: int = 16,
                 limit: int | None = None, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        roots = [("eval", root)] + ([("selection", selection_root)] if selection_root else [])
        self.test_set = LocalizationRows(roots, image_size, limit)

    def groups(self) -> list[str]:
        """The words with masks (a fixed order, the same on every rank)."""
        return self.test_set.words()

    def selection_rows(self) -> int:
        """Rows set aside for choosing the threshold (from ``selection_root``)."""
        return sum(r[0] == "selection" for r in self.test_set.rows)

    def test_captions(self) -> list[str]:
        return [r[2] for r in self.test_set.rows]

    def describe_test_split(self) -> str:
        n_sel = self.selection_rows()
        return (f"{len(self.test_set) - n_sel} word masks in {self.hparams.root}"
                + (f", threshold chosen on {n_sel} in {self.hparams.selection_root}" if n_sel else ""))

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.test_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers,
                                 collate_fn=collate_localization)
