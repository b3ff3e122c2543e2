"""The world written in the layouts of the real benchmarks, so that their loaders read it.

``export_world(folder, split)`` writes, for the scenes of a split:

    images/<id>.png          the scene (8-bit RGB)
    localization.json        COCO layout: {"images": [{id, file_name, height, width, caption}],
                             "annotations": [{id, image_id, word, caption, segmentation, area, bbox}]},
                             one annotation per (scene, describing word; ``words``: only
                             these); segmentation is COCO's uncompressed RLE
                             {"size": [h, w], "counts": [...]}
    vg_attribution.json      ARO VG-Attribution layout: [{image_id, image_path, true_caption,
                             false_caption, attributes, bbox_x, bbox_y, bbox_w, bbox_h}] for the
                             two-object scenes whose colours differ (colours swapped)
    vg_relation.json         ARO VG-Relation layout: the same with "left"/"right" exchanged
                             (``relation_name`` "left of")
    coco_order.json          [{image_id, image_path, caption, perturbed: [shuffled captions]}]

The scenes are those of :class:`~infodiff_lightning.data.world.CaptionedWorld`, shifted
when ``shift`` is given (the demo's world: ``--shift shape --p_shift 1 --new_word lovely``).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..io import write_json_atomic
from .localization_files import read_localization_json
from .world import CaptionedWorld, attribute_swap, left_right_swap, shuffled_words, word_masks

__all__ = ["export_world", "rle_encode", "load_localization"]


def rle_encode(mask: torch.Tensor) -> dict:
    """COCO uncompressed RLE of a (h, w) bool mask: run lengths over the column-major
    (Fortran-order) pixels, starting with a run of zeros (possibly empty)."""
    flat = mask.bool().t().reshape(-1).numpy().astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _bbox(mask: torch.Tensor) -> list[int]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if ys.numel() == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _save_png(image: torch.Tensor, path: Path) -> None:
    from PIL import Image

    arr = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr, mode="RGB").save(path)


def export_world(folder: str | Path, split: str = "heldout", n: int | None = None, image_size: int = 32,
                 seed: int = 0, shift: str | None = None, p_shift: float = 0.5, new_word: str | None = None,
                 new_colour: str = "purple", words: Sequence[str] | None = None) -> Path:
    """Write the files of the module doc for the first ``n`` scenes of ``split``; ``shift``,
    ``p_shift``, ``new_word``, ``new_colour``: of a shifted world (world.shift_scene, as
    for CaptionedWorldData; ``shift=None``: the world itself). ``words``: annotate only
    these words in localization.json (None: every word with a mask)."""
    if words is not None and (not words or not all(isinstance(w, str) and w for w in words)):
        raise ValueError(f"words must be a non-empty list of words (or None: every word), got {words!r}")
    folder = Path(folder)
    data = CaptionedWorld(split, image_size, seed, n, shift=shift, p_shift=p_shift, new_word=new_word,
                          new_colour=new_colour)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations, attribution, relation, order = [], [], [], [], []
    g = torch.Generator().manual_seed(seed)
    for i in range(len(data)):
        scene = data.scene(i)
        name = f"images/{scene.id}.png"
        _save_png(data[i]["image"], folder / name)
        caption = scene.caption
        images.append({"id": scene.id, "file_name": name, "height": image_size, "width": image_size,
                       "caption": caption})
        for word, mask in word_masks(scene, image_size).items():
            if words is not None and word not in words:
                continue
            annotations.append({"id": len(annotations) + 1, "image_id": scene.id, "word": word, "caption": caption,
                                "segmentation": rle_encode(mask), "area": int(mask.sum()), "bbox": _bbox(mask)})
        union = torch.zeros(image_size, image_size, dtype=torch.bool)
        for m in word_masks(scene, image_size).values():
            union |= m
        x, y, w, h = _bbox(union)
        box = {"bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h}
        swap = attribute_swap(scene)
        if swap is not None:
            attribution.append({"image_id": scene.id, "image_path": name, "true_caption": caption,
                                "false_caption": swap, "attributes": [" ".join(o.colour_words) for o in scene.objects],
                                **box})
        lr = left_right_swap(scene)
        if lr is not None:
            relation.append({"image_id": scene.id, "image_path": name, "true_caption": caption, "false_caption": lr,
                             "relation_name": "left of", **box})
        order.append({"image_id": scene.id, "image_path": name, "caption": caption,
                      "perturbed": [shuffled_words(caption, g) for _ in range(4)]})
    write_json_atomic(folder / "localization.json", {"images": images, "annotations": annotations})
    write_json_atomic(folder / "vg_attribution.json", attribution)
    write_json_atomic(folder / "vg_relation.json", relation)
    write_json_atomic(folder / "coco_order.json", order)
    return folder


def load_localization(folder: str | Path) -> list[tuple[str, str, str, torch.Tensor]]:
    """(image path, caption, word, mask) rows of an exported localization.json."""
    return [(str(r.image), r.caption, r.word, r.mask()) for r in read_localization_json(folder)]


def main(args: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a split of the embedded world in the COCO / ARO layouts.")
    ap.add_argument("--out", required=True, help="folder to write")
    ap.add_argument("--split", default="heldout", choices=["train", "threshold", "heldout"])
    ap.add_argument("--n", type=int, default=None, help="first n scenes of the split (default: all)")
    ap.add_argument("--image_size", type=int, default=32)
    ap.add_argument("--shift", default=None, choices=["shape", "object", "background"],
                    help="write a shifted world (as CaptionedWorldData's shift; default: the world itself)")
    ap.add_argument("--p_shift", type=float, default=0.5, help="with --shift: probability an object (scene) is shifted")
    ap.add_argument("--new_word", default=None, help="with --shift: the word of the shifted world")
    ap.add_argument("--new_colour", default="purple", help="with --shift object or background: the new colour")
    ap.add_argument("--words", nargs="+", default=None, help="annotate only these words in localization.json "
                                                            "(default: every word with a mask)")
    ns = ap.parse_args(args)
    try:
        print(export_world(ns.out, ns.split, ns.n, ns.image_size, shift=ns.shift, p_shift=ns.p_shift,
                           new_word=ns.new_word, new_colour=ns.new_colour, words=ns.words))
    except ValueError as e:
        ap.error(str(e))


if __name__ == "__main__":
    main()
