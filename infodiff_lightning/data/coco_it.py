"""COCO-IT as released by Kong et al. (ICLR 2024, github.com/kxh001/Info_Decomp,
``datasets/coco/COCO-IT.csv``): the localization rows of "Interpretable Diffusion via
Information Decomposition", read from the CSV and COCO's own files beside it::

    root/COCO-IT.csv                          Image ID, Label, correct_obj+context, context, correct_obj
    root/val2017/<file_name>                  the images (file names from the instances file)
    root/annotations/instances_val2017.json   COCO's instances: the masks

Their generator (``datasets/coco_it_generator.py``) writes one row per (image, category)
whose name or plural (``inflect``) a caption of the image names: ``Label`` the category name,
``correct_obj+context`` the caption, ``correct_obj`` the word as written there ("people" for
the category person, "dining table"), ``context`` the caption with that word replaced by
nothing. Each CSV row is one localization row here: the caption, the word as written, and
the mask, the union over *every* instance of the label's category in that image (crowd
ones included; polygons, uncompressed and compressed RLE, data/coco.py). The word is
removed by the job's own ``condition`` (as for every layout); ``context`` is checked to be
there, not used.

COCO100-IT.csv (their 100-row subset used for the prompt-intervention and figure scripts) has
the same columns and is read the same way (``table``). COCO-WL.csv (words of other types:
verbs, numerals, adjectives, adverbs, prepositions, pronouns, conjunctions) has no masks, and
its columns are not documented in what could be looked up; it is not read here.

A row whose image id, label or fields are unusable is a row with its ``error`` naming the
file, line and field (the job records it); a file without the five columns, or without
its instances file, is an error of the whole job.
"""
from __future__ import annotations

from pathlib import Path

from .coco import read_instances
from .mask_row import MaskRow
from .rows import RowError, inside, read_table, some_usable

__all__ = ["read_coco_it", "COCO_IT_COLUMNS", "COCO_IT_TABLES", "COCO_IT_IMAGES", "COCO_IT_INSTANCES"]


#: The CSV's columns, in the released order.
COCO_IT_COLUMNS = ("Image ID", "Label", "correct_obj+context", "context", "correct_obj")
#: The released tables this layout reads, the first found being the default.
COCO_IT_TABLES = ("COCO-IT.csv", "COCO100-IT.csv")
#: Where the images and the instances file lie under ``root`` (COCO's val2017 download).
COCO_IT_IMAGES = "val2017"
COCO_IT_INSTANCES = "annotations/instances_val2017.json"


def _row(root: Path, r: dict, name: str, images: dict, segs: dict, categories: set) -> MaskRow:
    where = f"{name} line {r['line']}"
    try:
        if r["error"]:
            raise RowError(r["error"])
        try:
            image_id = int(r["Image ID"])
        except ValueError:
            raise RowError(f"{where}: field 'Image ID' must be a COCO image id, got {r['Image ID']!r}") from None
        if image_id not in images:
            raise RowError(f"{where}: field 'Image ID': image {image_id} is not in {Path(COCO_IT_INSTANCES).name}")
        label = r["Label"]
        if label not in categories:
            raise RowError(f"{where}: field 'Label': {label!r} is not a category of {Path(COCO_IT_INSTANCES).name}")
        if (image_id, label) not in segs:
            raise RowError(f"{where}: field 'Label': image {image_id} has no instance of {label!r}")
        file_name, h, w = images[image_id]
        try:
            image = inside(root / COCO_IT_IMAGES, file_name, "file_name")
        except RowError as e:
            raise RowError(f"{where}: image {image_id}'s {e}") from None
        return MaskRow(image, r["correct_obj+context"], r["correct_obj"], tuple(segs[(image_id, label)]), h, w)
    except RowError as e:
        return MaskRow(root, "", "", error=str(e))


def read_coco_it(root: str | Path, table: str | None = None) -> list[MaskRow]:
    """The rows of a COCO-IT-layout CSV under ``root`` (module doc), in file order;
    ``table``: its name (default: the first of :data:`COCO_IT_TABLES` present)."""
    root = Path(root)
    if table is None:
        table = next((t for t in COCO_IT_TABLES if (root / t).is_file()), None)
        if table is None:
            raise FileNotFoundError(f"root {root}: none of {', '.join(COCO_IT_TABLES)}")
    path = root / table
    if not path.is_file():
        raise FileNotFoundError(f"root {root}: no {table}")
    if not (root / COCO_IT_INSTANCES).is_file():
        raise FileNotFoundError(f"{table} needs COCO's instances file beside it: {root / COCO_IT_INSTANCES} does not exist")
    images, segs, categories = read_instances(root / COCO_IT_INSTANCES)
    rows = [_row(root, r, path.name, images, segs, categories) for r in read_table(path, COCO_IT_COLUMNS)]
    some_usable([r.error for r in rows], path.name)
    return rows
