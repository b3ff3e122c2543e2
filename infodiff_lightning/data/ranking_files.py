"""Caption-ranking benchmarks read from their released JSON layouts (ARO, Yuksekgonul et al.
2023), for the real files or the embedded world's export (data/world_export.py):

    vg_attribution.json, vg_relation.json   [{image_path, true_caption, false_caption, ...}]
    coco_order.json, flickr_order.json      [{image_path, caption, perturbed: [captions]}]

Each row becomes one item: the image (``image_path`` relative to ``root``), its candidate
captions with the true one first, and its group (the file's stem). A row whose image
cannot be read is an item with its ``error`` set (the job records it and goes on); a row
that lacks a caption field is an error of the whole file, named with its row number.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .caption_folder import load_image
from .loaders import evaluation_loader

__all__ = ["RankingFiles", "CaptionRankingData", "collate_ranking", "RANKING_FILES"]

#: The files read by default, in this order.
RANKING_FILES = ("vg_attribution.json", "vg_relation.json", "coco_order.json")


def _candidates(row: dict, where: str) -> list[str]:
    if "true_caption" in row and "false_caption" in row:
        false = row["false_caption"]
        return [row["true_caption"], *(false if isinstance(false, list) else [false])]
    if "caption" in row and "perturbed" in row:
        return [row["caption"], *row["perturbed"]]
    raise ValueError(f"{where}: a row needs true_caption + false_caption (VG layout) or caption + perturbed "
                     f"(order layout); it has {', '.join(sorted(row)) or 'no fields'}")


class RankingFiles(Dataset):
    """Items {"id" (position), "image", "candidates" (true first), "group", "error"}."""

    def __init__(self, root: str | Path, files: Sequence[str] = RANKING_FILES, image_size: int = 32,
                 limit: int | None = None):
        self.root, self.image_size = Path(root), image_size
        if not self.root.is_dir():
            raise FileNotFoundError(f"root {root}: no such folder")
        self.rows: list[tuple[str, str, list[str]]] = []  # (group, image path, candidates)
        for name in files:
            path = self.root / name
            if not path.is_file():
                raise FileNotFoundError(f"files: {name} is not in {root}")
            rows = json.loads(path.read_text())
            if not isinstance(rows, list):
                raise ValueError(f"{name}: expected a JSON list of rows, got {type(rows).__name__}")
            for k, row in enumerate(rows[:limit]):
                cands = _candidates(row, f"{name} row {k}")
                if len(cands) < 2 or len(set(cands)) < len(cands):
                    raise ValueError(f"{name} row {k}: needs at least two distinct candidate captions, got {cands}")
                self.rows.append((Path(name).stem, str(row["image_path"]), cands))
        if not self.rows:
            raise ValueError(f"files {', '.join(files)} in {root} hold no rows")

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(g for g, _, _ in self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        group, image_path, cands = self.rows[i]
        item = {"id": i, "candidates": cands, "group": group, "error": ""}
        try:
            item["image"] = load_image(self.root / image_path, self.image_size)
        except (ValueError, OSError) as e:
            item["image"] = torch.zeros(3, self.image_size, self.image_size)
            item["error"] = str(e)
        return item


def collate_ranking(items: list[dict]) -> dict:
    """Images stacked; ids, candidate lists, groups and errors kept as lists (candidate
    lists differ in length between groups)."""
    return {"image": torch.stack([it["image"] for it in items]), "id": [it["id"] for it in items],
            "candidates": [it["candidates"] for it in items], "group": [it["group"] for it in items],
            "error": [it["error"] for it in items]}


class CaptionRankingData(L.LightningDataModule):
    """The ranking items of ``files`` under ``root`` (each sample measured exactly once
    across devices). ``limit``: the first rows of each file (quick runs)."""

    def __init__(self, root: str, files: Sequence[str] = RANKING_FILES, image_size: int = 32, batch_size: int = 16,
                 limit: int | None = None, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.test_set = RankingFiles(root, files, image_size, limit)

    def groups(self) -> list[str]:
        return self.test_set.groups

    def test_captions(self) -> list[str]:
        return [c for _, _, cands in self.test_set.rows for c in cands]

    def describe_test_split(self) -> str:
        counts = {g: sum(1 for r in self.test_set.rows if r[0] == g) for g in self.groups()}
        return f"{len(self.test_set)} ranking items in {self.hparams.root}: " + ", ".join(
            f"{g} {n}" for g, n in counts.items())

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.test_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers,
                                 collate_fn=collate_ranking)
