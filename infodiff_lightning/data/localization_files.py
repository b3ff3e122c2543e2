"""Word-localization rows (image, caption, word, mask) from one of four layouts:

1. ``localization.json`` in ``root`` (data/world_export.py writes it for the embedded world;
   any data converted to it reads the same way)::

       {"images": [{id, file_name, height, width, caption}],
        "annotations": [{image_id, word, caption (optional), segmentation}]}

2. COCO's released files (``instances`` + ``captions``, images under ``root``): the
   COCO-IT construction of data/coco.py, one row per (image, caption, named category).

3. A folder of images with a mask table (``masks``: JSONL or CSV with the fields
   ``file_name, caption, word, mask``; ``mask`` is an image file, nonzero pixels are the
   word's region; paths relative to ``root``).

4. COCO-IT as released by Kong et al. (``COCO-IT.csv`` or ``COCO100-IT.csv`` beside
   ``val2017/`` and ``annotations/instances_val2017.json``; data/coco_it.py): one row per
   CSV row, the word as written there, the mask the union of every instance of its label.

With ``root`` alone, a folder holding ``localization.json`` is layout 1 and one holding a
COCO-IT table is layout 4.

Segmentations (polygons, uncompressed or compressed RLE) are decoded by pycocotools; masks
go through the geometry of their image (shorter side resized, centre crop) so that the two
stay aligned. A row whose image or mask cannot be read is an item with its ``error`` set
(the job records it and goes on); a malformed file is an error naming the file and field.

The threshold (eq. LOC) is chosen on rows marked ``split = "selection"`` and applied to the
``"eval"`` rows: either a second source of layout 1 (``selection_root``), or the rows of the
first ``n_selection_images`` images of the source itself (any layout).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from .caption_folder import fit_mask, load_image
from ..conditions import shorten
from .rows import RowError, inside, read_json, read_table, some_usable, text_field
from .coco import coco_localization_rows
from .coco_it import COCO_IT_TABLES, read_coco_it
from .mask_row import MaskRow
from .loaders import evaluation_loader

__all__ = ["LocalizationRows", "LocalizationData", "collate_localization", "MaskRow", "read_localization_json",
           "read_mask_table", "MASK_TABLE_FIELDS"]

MASK_TABLE_FIELDS = ("file_name", "caption", "word", "mask")


def read_localization_json(root: str | Path) -> list[MaskRow]:
    """The rows of ``root/localization.json`` (layout 1 of the module doc), in file order.
    An annotation whose image, caption, word or segmentation is unusable (or whose image
    path leaves ``root``) is a row with its ``error`` set; a file without the layout's
    ``images`` and ``annotations`` lists is an error of the whole job."""
    root = Path(root)
    path = root / "localization.json"
    if not path.is_file():
        raise FileNotFoundError(f"root {root}: no localization.json")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or \
            not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path.name}: not the COCO localization layout (an object with 'images' and "
                         "'annotations' lists)")
    images = {im.get("id"): im for im in data["images"] if isinstance(im, dict)}
    rows = []
    for k, a in enumerate(data["annotations"]):
        try:
            if not isinstance(a, dict):
                raise RowError("not a JSON object")
            im = images.get(a.get("image_id"))
            if im is None:
                raise RowError(f"image_id {shorten(str(a.get('image_id')))} names no image")
            image = inside(root, im.get("file_name"), "file_name")
            caption = text_field({"caption": a.get("caption", im.get("caption"))}, "caption")
            word = text_field(a, "word")
            seg = a.get("segmentation")
            # RLE carries its size; polygons need the image's
            h, w = (seg["size"] if isinstance(seg, dict) else (im["height"], im["width"]))
            rows.append(MaskRow(image, caption, word, (seg,), int(h), int(w)))
        except (RowError, KeyError, TypeError, ValueError) as e:
            reason = f"missing {e}" if isinstance(e, KeyError) else str(e)
            rows.append(MaskRow(root, "", "", error=f"{path.name} annotation {k}: {reason}"))
    some_usable([r.error for r in rows], path.name)
    return rows


def read_mask_table(root: str | Path, table: str | Path) -> list[MaskRow]:
    """The rows of a mask table (layout 3 of the module doc), in file order; a row with an
    unusable field, or a path that leaves ``root``, has its ``error`` set."""
    root, out = Path(root), []
    for r in read_table(table, MASK_TABLE_FIELDS):
        try:
            if r["error"]:
                raise RowError(r["error"])
            out.append(MaskRow(inside(root, r["file_name"], "file_name"), r["caption"], r["word"],
                               mask_file=inside(root, r["mask"], "mask")))
        except RowError as e:
            error = str(e) if r["error"] else f"{Path(table).name} line {r['line']}: {e}"
            out.append(MaskRow(root, "", "", error=error))
    some_usable([r.error for r in out], Path(table).name)
    return out


def _coco_row(root: Path, source: str, image: Path, caption: str, word: str, segs: list, h: int, w: int) -> MaskRow:
    """A COCO row, or a failed one when its image's file_name leaves ``root``."""
    try:
        inside(root, image.relative_to(root).as_posix(), "file_name")
    except (RowError, ValueError):
        return MaskRow(root, "", "", error=f"{source}: an image's file_name is not a path inside {root.name} "
                                           "(absolute paths and '..' are refused)")
    return MaskRow(image, caption, word, tuple(segs), h, w)


class LocalizationRows(Dataset):
    """Items {"id", "image", "caption", "word", "mask" (image_size, image_size) bool, "split", "error"}."""

    def __init__(self, rows: Sequence[MaskRow], image_size: int = 32):
        if not rows:
            raise ValueError("no localization rows")
        self.rows, self.image_size = list(rows), image_size

    def words(self) -> list[str]:
        return sorted({r.word for r in self.rows if not r.error})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row, size = self.rows[i], self.image_size
        item = {"id": i, "caption": row.caption, "word": row.word, "split": row.split, "error": ""}
        try:
            if row.error:
                raise ValueError(row.error)
            item["image"] = load_image(row.image, size)
            item["mask"] = fit_mask(row.mask(), size)
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
    """Localization rows from one of the layouts of the module doc, each measured once
    across devices.

    Args:
        root: the folder of ``localization.json`` (layout 1) or of ``COCO-IT.csv`` (layout
            4), or the images folder of layouts 2 and 3.
        instances, captions: COCO's instances and captions files (layout 2).
        masks: a mask table (layout 3).
        selection_root: a second layout-1 folder whose rows choose the threshold.
        n_selection_images: or: the rows of the source's first n images choose it.
        captions_per_image, categories, category_words: COCO options (data/coco.py).
        limit: the first rows of each source (quick runs).
        table: the COCO-IT-layout CSV under ``root`` (layout 4; default COCO-IT.csv, then
            COCO100-IT.csv, when ``root`` has no localization.json).
    """

    def __init__(self, root: str, selection_root: str | None = None, instances: str | None = None,
                 captions: str | None = None, masks: str | None = None, n_selection_images: int = 0,
                 captions_per_image: int = 1, categories: list[str] | None = None,
                 category_words: Mapping[str, str] | None = None, image_size: int = 32, batch_size: int = 16,
                 limit: int | None = None, num_workers: int = 0, table: str | None = None):
        super().__init__()
        self.save_hyperparameters()
        if table is not None and (instances is not None or masks is not None):
            raise ValueError("table is a COCO-IT CSV under root (layout 4); give it without instances, captions or masks")
        if (instances is None) != (captions is None):
            raise ValueError("instances and captions go together: COCO's instances file and its captions file")
        if instances is not None and masks is not None:
            raise ValueError("give either COCO files (instances, captions) or a mask table (masks), not both")
        if selection_root is not None and (instances is not None or masks is not None or table is not None):
            raise ValueError("selection_root is a localization.json folder; with COCO files, a COCO-IT table or a "
                             "mask table use n_selection_images")
        if selection_root is not None and n_selection_images:
            raise ValueError("give selection_root or n_selection_images, not both")
        if n_selection_images < 0:
            raise ValueError(f"n_selection_images must be >= 0, got {n_selection_images}")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"root {root}: no such folder")
        if instances is not None:
            rows = [_coco_row(Path(root), Path(instances).name, *row) for row in
                    coco_localization_rows(root, instances, captions, captions_per_image, categories, category_words)]
        elif masks is not None:
            rows = read_mask_table(root, masks)
        elif table is not None or (not (Path(root) / "localization.json").is_file()
                                   and any((Path(root) / t).is_file() for t in COCO_IT_TABLES)):
            rows = read_coco_it(root, table)
        else:
            rows = read_localization_json(root)
        if not rows:
            raise ValueError(f"no localization rows in {root}" + (" (no caption names a category its image has)"
                                                                  if instances else ""))
        rows = rows[:limit]
        if n_selection_images:
            images = list(dict.fromkeys(r.image for r in rows if not r.error))
            first = images[:n_selection_images]
            if len(first) == len(images):
                raise ValueError(f"n_selection_images={n_selection_images} leaves no image to evaluate")
            chosen = set(first)
            rows = [replace(r, split="selection") if r.image in chosen and not r.error else r for r in rows]
        if selection_root is not None:
            rows += [replace(r, split="selection") for r in read_localization_json(selection_root)[:limit]]
        self.test_set = LocalizationRows(rows, image_size)

    def groups(self) -> list[str]:
        """The words with masks (a fixed order, the same on every rank)."""
        return self.test_set.words()

    def selection_rows(self) -> int:
        """Rows set aside for choosing the threshold."""
        return sum(r.split == "selection" for r in self.test_set.rows)

    def test_captions(self) -> list[str]:
        return [r.caption for r in self.test_set.rows if not r.error]

    def describe_test_split(self) -> str:
        n_sel = self.selection_rows()
        where = self.hparams.selection_root or f"the first {self.hparams.n_selection_images} images"
        return (f"{len(self.test_set) - n_sel} word masks in {self.hparams.root}"
                + (f", threshold chosen on {n_sel} in {where}" if n_sel else ""))

    def test_dataloader(self) -> DataLoader:
        return evaluation_loader(self.test_set, self.hparams.batch_size, self.trainer, self.hparams.num_workers,
                                 collate_fn=collate_localization)
