"""COCO annotations as word-localization rows (the COCO-IT construction of Kong et al. 2023):
for each image, a caption from COCO's captions file, and for each object category that the
caption names and the image has instances of, the word as written in the caption and the
union of that category's instance masks.

The files are the ones COCO releases, read unchanged:

    instances_val2017.json  {"images": [{id, file_name, height, width}],
                             "annotations": [{id, image_id, category_id, segmentation, iscrowd}],
                             "categories": [{id, name, supercategory}]}
    captions_val2017.json   {"annotations": [{id, image_id, caption}]}

A segmentation is a list of polygons, an uncompressed RLE ({"size", "counts": [runs]}, the
crowd annotations) or a compressed RLE ({"size", "counts": "<string>"}); all three are
decoded by pycocotools. A category is named by a caption when one of the caption's words is
its name or its name plus "s" ("dog", "dogs"); multi-word names ("traffic light") are matched
through ``category_words`` only, which maps any caption word to a category name.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping, Sequence

import torch

__all__ = ["coco_mask", "union_mask", "coco_localization_rows", "caption_words", "read_instances"]


def coco_mask(segmentation, height: int, width: int) -> torch.Tensor:
    """The (height, width) bool mask of one COCO segmentation (polygons, uncompressed or
    compressed RLE). A ValueError names what is malformed."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if not segmentation or any(len(p) < 6 or len(p) % 2 for p in segmentation):
            raise ValueError("a polygon needs an even number of coordinates, at least 6 (three points)")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        h, w = (int(v) for v in segmentation["size"])
        counts = segmentation["counts"]
        if isinstance(counts, list):
            # pycocotools does not check that the runs cover the image; a short list would decode to garbage
            if sum(counts) != h * w or any(c < 0 for c in counts):
                raise ValueError(f"uncompressed RLE runs cover {sum(counts)} pixels, its size says {h}x{w}")
            rle = mask_utils.frPyObjects(segmentation, h, w)
        elif isinstance(counts, (str, bytes)):
            rle = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
        else:
            raise ValueError(f"RLE counts must be a list or a string, got {type(counts).__name__}")
        if (h, w) != (height, width):
            raise ValueError(f"RLE size {h}x{w} differs from the image's {height}x{width}")
    else:
        raise ValueError("segmentation must be a list of polygons or an RLE {size, counts}")
    return torch.from_numpy(mask_utils.decode(rle).astype(bool))


def caption_words(caption: str) -> list[str]:
    """The caption's words, lower case, punctuation stripped (how categories are matched)."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", caption.lower())


def _load(path: Path, keys: Sequence[str]) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path.name}: not JSON ({e.msg}, line {e.lineno})") from None
    missing = [k for k in keys if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path.name}: no {missing[0]!r} list (not COCO's released layout)")
    return data


def _field(entry: dict, key: str, where: str):
    if not isinstance(entry, dict) or key not in entry:
        raise ValueError(f"{where}: field {key!r} is missing")
    return entry[key]


def _category_names(inst: dict, name: str) -> dict:
    """Category id -> name of an instances file's content."""
    return {_field(c, "id", f"{name} categories[{k}]"): _field(c, "name", f"{name} categories[{k}]")
            for k, c in enumerate(inst["categories"])}


def _index_instances(inst: dict, name: str, names: Mapping, wanted) -> tuple[dict, dict]:
    """(images: id -> (file_name, height, width), segmentations: (image id, category name)
    -> every instance's segmentation, crowd ones included) of an instances file's content,
    for the categories in ``wanted``; a ValueError names the entry and field that is missing."""
    images = {}
    for k, im in enumerate(inst["images"]):
        where = f"{name} images[{k}]"
        images[_field(im, "id", where)] = (_field(im, "file_name", where), int(_field(im, "height", where)),
                                           int(_field(im, "width", where)))
    segs: dict[tuple[int, str], list] = {}
    for k, a in enumerate(inst["annotations"]):
        where = f"{name} annotations[{k}]"
        image_id, cat = _field(a, "image_id", where), _field(a, "category_id", where)
        if cat not in names:
            raise ValueError(f"{where}: category_id {cat} is not among the categories")
        if names[cat] in wanted:
            segs.setdefault((image_id, names[cat]), []).append(_field(a, "segmentation", where))
    return images, segs


def read_instances(instances: str | Path) -> tuple[dict, dict, set]:
    """(images, segmentations, category names) of COCO's instances file, every category
    (see :func:`_index_instances`)."""
    instances = Path(instances)
    inst = _load(instances, ("images", "annotations", "categories"))
    names = _category_names(inst, instances.name)
    return (*_index_instances(inst, instances.name, names, set(names.values())), set(names.values()))


def coco_localization_rows(images_root: str | Path, instances: str | Path, captions: str | Path,
                           captions_per_image: int = 1, categories: Sequence[str] | None = None,
                           category_words: Mapping[str, str] | None = None) -> list[tuple[Path, str, str, list, int, int]]:
    """(image file, caption, word, segmentations, height, width) rows, images in id order,
    captions in annotation-id order (the first ``captions_per_image`` of each image).

    ``categories``: only these category names (default: all). ``category_words``: extra
    caption word -> category name pairs (synonyms, multi-word names)."""
    instances, captions = Path(instances), Path(captions)
    inst = _load(instances, ("images", "annotations", "categories"))
    caps = _load(captions, ("annotations",))
    names = _category_names(inst, instances.name)
    if categories is not None:
        unknown = sorted(set(categories) - set(names.values()))
        if unknown:
            raise ValueError(f"categories: {unknown} are not categories of {instances.name}")
    wanted = set(categories) if categories is not None else set(names.values())
    lookup = {}  # caption word -> category name
    for name in wanted:
        if " " not in name:
            lookup[name], lookup[name + "s"] = name, name
    for word, name in (category_words or {}).items():
        if name not in names.values():
            raise ValueError(f"category_words: {word!r} -> {name!r}, which is not a category of {instances.name}")
        if name in wanted:
            lookup[word.lower()] = name
    images, segs = _index_instances(inst, instances.name, names, wanted)
    by_image: dict[int, list[tuple[int, str]]] = {}
    for k, a in enumerate(caps["annotations"]):
        where = f"{captions.name} annotations[{k}]"
        by_image.setdefault(_field(a, "image_id", where), []).append((a.get("id", k), str(_field(a, "caption", where))))
    rows = []
    for image_id in sorted(images):
        file_name, h, w = images[image_id]
        for _, caption in sorted(by_image.get(image_id, []))[:captions_per_image]:
            seen = set()
            for word in caption_words(caption):
                name = lookup.get(word)
                if name is None or name in seen or (image_id, name) not in segs:
                    continue
                seen.add(name)  # one row per category: the first word that names it
                rows.append((Path(images_root) / file_name, caption.strip(), word, segs[(image_id, name)], h, w))
    return rows


def union_mask(segmentations: list, height: int, width: int) -> torch.Tensor:
    """The union of several instances' masks (a category's pixels in one image)."""
    out = torch.zeros(height, width, dtype=torch.bool)
    for seg in segmentations:
        out |= coco_mask(seg, height, width)
    return out

