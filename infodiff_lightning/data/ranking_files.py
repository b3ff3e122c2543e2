"""Caption-ranking benchmarks read from their released JSON layouts (ARO, Yuksekgonul et al.
2023), for the real files or the embedded world's export (data/world_export.py):

    vg_attribution.json, vg_relation.json   [{image_path, true_caption, false_caption, ...}]
    coco_order.json, flickr_order.json      [{image_path, caption, perturbed: [captions]}]

ARO's release names the VG files visual_genome_relation.json and visual_genome_attribution.json
and keeps their images in ``images/`` beside them: an ``image_path`` that is not a file under
``root`` is looked up under ``root/images/``, so pointing ``root`` at the unpacked download is
enough (pass the released names in ``files``).
Each row becomes one item: the image (``image_path`` relative to ``root``), its candidate
captions with the true one first, and its groups: the file's stem, and where the row names
one, its relation (VG-Relation ``relation_name``, e.g. ``vg_relation/left of``) or attribute
pair (VG-Attribution ``attributes``, e.g. ``vg_attribution/red_blue``), over which ARO
macro-averages. As ARO does, a VG row's image is cropped to its box (``bbox_x``, ``bbox_y``,
``bbox_w``, ``bbox_h``) unless ``crop_to_bbox`` is off. A row whose image cannot be read is
an item with its ``error`` set (the job records it and goes on), and so is a row whose
captions, image path or box are unusable (missing, null, not text), or whose image path
leaves ``root`` (data/rows.py); a file that is not a JSON list of rows is an error of the
whole job.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .caption_folder import load_image
from .rows import RowError, inside, read_json, some_usable, text_field
from .loaders import evaluation_loader

__all__ = ["RankingFiles", "CaptionRankingData", "collate_ranking", "RANKING_FILES", "RankingRow"]

#: The folder beside the JSON files where ARO's release keeps the VG images.
ARO_IMAGES = "images"
#: The files read by default, in this order.
RANKING_FILES = ("vg_attribution.json", "vg_relation.json", "coco_order.json")


def _candidates(row: dict, where: str) -> list[str]:
    """The row's candidate captions, true first: at least two distinct, non-empty strings."""
    if "true_caption" in row and "false_caption" in row:
        false = row["false_caption"]
        false = false if isinstance(false, list) else [false]
        cands = [text_field(row, "true_caption")] + [text_field({"false_caption": f}, "false_caption") for f in false]
    elif "caption" in row and "perturbed" in row:
        perturbed = row["perturbed"]
        if not isinstance(perturbed, list):
            raise RowError(f"field 'perturbed' must be a list of captions, got {type(perturbed).__name__}")
        cands = [text_field(row, "caption")] + [text_field({"perturbed": c}, "perturbed") for c in perturbed]
    else:
        raise RowError(f"a row needs true_caption + false_caption (VG layout) or caption + perturbed "
                       f"(order layout); it has {', '.join(sorted(map(str, row))) or 'no fields'}")
    if len(cands) < 2 or len(set(cands)) < len(cands):
        raise RowError(f"needs at least two distinct candidate captions, got {cands}")
    return cands


BOX_FIELDS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")


def _subgroup(row: dict, where: str) -> str | None:
    """The relation or attribute pair a VG row belongs to (None for order rows)."""
    if "relation_name" in row:
        return str(row["relation_name"])
    if "attributes" in row:
        attrs = row["attributes"]
        if not isinstance(attrs, list) or not attrs:
            raise RowError(f"attributes must be a non-empty list, got {attrs!r}")
        return "_".join(str(a) for a in attrs)
    return None


def _box(row: dict, where: str) -> tuple[float, float, float, float] | None:
    present = [k for k in BOX_FIELDS if k in row]
    if not present:
        return None
    if len(present) < len(BOX_FIELDS):
        raise RowError(f"a box needs all of {', '.join(BOX_FIELDS)}; it has {', '.join(present)}")
    try:
        return tuple(float(row[k]) for k in BOX_FIELDS)
    except (TypeError, ValueError):
        raise RowError(f"box fields must be numbers, got {[row[k] for k in BOX_FIELDS]}") from None


@dataclass(frozen=True)
class RankingRow:
    group: str
    image_path: str
    candidates: list
    subgroup: str | None = None
    box: tuple | None = None
    error: str = ""  # why the row cannot be used ("" if it can): recorded as its failure

    @property
    def groups(self) -> list[str]:
        """The file's group, then the relation / attribute subgroup where there is one."""
        return [self.group] + ([f"{self.group}/{self.subgroup}"] if self.subgroup else [])


class RankingFiles(Dataset):
    """Items {"id" (position), "image", "candidates" (true first), "group", "groups", "error"}."""

    def __init__(self, root: str | Path, files: Sequence[str] = RANKING_FILES, image_size: int = 32,
                 limit: int | None = None, crop_to_bbox: bool = True):
        self.root, self.image_size, self.crop_to_bbox = Path(root), image_size, crop_to_bbox
        if not self.root.is_dir():
            raise FileNotFoundError(f"root {root}: no such folder")
        self.rows: list[RankingRow] = []
        for name in files:
            path = self.root / name
            if not path.is_file():
                raise FileNotFoundError(f"files: {name} is not in {root}")
            rows = read_json(path)
            if not isinstance(rows, list):
                raise ValueError(f"{name}: expected a JSON list of rows, got {type(rows).__name__}")
            read = [self._row(Path(name).stem, row, f"{name} row {k}") for k, row in enumerate(rows[:limit])]
            some_usable([r.error for r in read], name)
            self.rows += read
        if not self.rows:
            raise ValueError(f"files {', '.join(files)} in {root} hold no rows")

    def _row(self, group: str, row, where: str) -> RankingRow:
        """One ranking row, or a row with its ``error`` set when a field is unusable."""
        try:
            if not isinstance(row, dict):
                raise RowError("not a JSON object")
            cands = _candidates(row, where)
            image = self._image_file(row.get("image_path"))
            return RankingRow(group, image.relative_to(self.root).as_posix(), cands, _subgroup(row, where),
                              _box(row, where))
        except RowError as e:
            return RankingRow(group, "", [], error=f"{where}: {e}")

    def _image_file(self, image_path) -> Path:
        """The row's image under ``root``, or under ``root/images/`` where ARO's release keeps
        it; both inside the folder (data/rows.py). A file found in neither is returned as
        under ``root``, and reading it fails that row."""
        direct = inside(self.root, image_path, "image_path")
        if direct.is_file() or not (self.root / ARO_IMAGES).is_dir():
            return direct
        released = inside(self.root / ARO_IMAGES, image_path, "image_path")
        return released if released.is_file() else direct

    @property
    def groups(self) -> list[str]:
        """Every group an item belongs to: the files in order, then the subgroups (sorted)."""
        files = list(dict.fromkeys(r.group for r in self.rows))
        return files + sorted({g for r in self.rows for g in r.groups[1:]})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        item = {"id": i, "candidates": row.candidates, "group": row.group, "groups": row.groups, "error": row.error}
        if row.error:
            item["image"] = torch.zeros(3, self.image_size, self.image_size)
            return item
        try:
            item["image"] = load_image(self.root / row.image_path, self.image_size,
                                       row.box if self.crop_to_bbox else None)
        except (ValueError, OSError) as e:
            item["image"] = torch.zeros(3, self.image_size, self.image_size)
            item["error"] = str(e)
        return item


def collate_ranking(items: list[dict]) -> dict:
    """Images stacked; ids, candidate lists, groups and errors kept as lists (candidate
    lists differ in length between groups)."""
    return {"image": torch.stack([it["image"] for it in items]), "id": [it["id"] for it in items],
            "candidates": [it["candidates"] for it in items], "group": [it["group"] for it in items],
            "groups": [it["groups"] for it in items],
            "error": [it["error"] for it in items]}


class CaptionRankingData(L.LightningDataModule):
    """The ranking items of ``files`` under ``root`` (each sample measured exactly once
    across devices). ``limit``: the first rows of each file (quick runs); ``crop_to_bbox``:
    crop VG images to their row's box, as ARO does (off for images that are the region
    already, such as the embedded world's scenes)."""

    def __init__(self, root: str, files: Sequence[str] = RANKING_FILES, image_size: int = 32, batch_size: int = 16,
                 limit: int | None = None, crop_to_bbox: bool = True, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.test_set = RankingFiles(root, files, image_size, limit, crop_to_bbox)

    def groups(self) -> list[str]:
        return self.test_set.groups

    def test_captions(self) -> list[str]:
        return [c for r in self.test_set.rows if not r.error for c in r.candidates]

    def describe_test_split(self) -> str:
        counts = {g: sum(1 for r in self.test_set.rows if r.group == g) for g in dict.fromkeys(
            r.group for r in self.test_set.rows)}
        return f"{len(self.test_set)} ranking items in {self.hparams.root}: " + ", ".join(
            f"{g} {n}" for g, n in counts.items())

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.test_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers,
                                 collate_fn=collate_ranking)
