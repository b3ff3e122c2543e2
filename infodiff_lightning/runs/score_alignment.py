"""Score a set of generated world images with the exact alignment scorer: one JSON file.

    python -m infodiff_lightning.runs.score_alignment --run runs/analyze/generate/run-<identity> --out scores.json
    python -m infodiff_lightning.runs.score_alignment --run runs/analyze/select/run-<identity>/selected/mi --out mi_set.json

``--run`` is a finished generation run (modules/generation.py: its per-candidate records
name the images) or a selected set (modules/selection.py: ``selected/<rule>/`` with its
``selection.jsonl``). Every image is read once (world_alignment.read_scene) and judged
in each category of analyses/alignment_eval.py (colour, shape, position on one-object
prompts; binding on two-object prompts; aligned with and without the dot rule on all).

The file holds: ``categories`` (per category hits, n, rate and Wilson 95% interval over
images), ``prompts`` and ``images``, ``diversity`` (mean pairwise RMS pixel distance over
the set and within prompts; share of distinct scene readings), and ``items`` (per image:
id, prompt, candidate, outcomes), from which analyses/alignment_eval.py compares arms
by prompt. An image that cannot be read is counted in ``failures`` and left out.

Scoring is cheap (about 35 ms per 32-px image on one thread); a rerun rescores. Exit
status: 0 written; 2 a bad argument or input (one line).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..analyses.alignment_eval import (distinct_readings, outcomes, pairwise_distance, rates, reading_key,
                                       within_prompt_distance)
from ..analyses.world_alignment import parse_prompt, read_scene
from ..data.caption_folder import load_image
from ..data.generated import generation_records
from ..io import write_json_atomic

__all__ = ["image_records", "score_images", "main"]


def image_records(run: Path) -> tuple[list[dict], Path]:
    """(records {id, prompt, candidate, caption, file}, the folder the files are relative to)
    of a generation run or a selected set."""
    selection = run / "selection.jsonl"
    if selection.is_file():
        rows = [json.loads(line) for line in selection.read_text().splitlines() if line.strip()]
        if not rows:
            raise ValueError(f"{selection} lists no image")
        return rows, run
    return generation_records(run), run


def score_images(records: list[dict], base: Path) -> dict:
    """The scores of the images of ``records`` (module doc)."""
    for caption in dict.fromkeys(r["caption"] for r in records):  # every prompt checked before any image is read
        parse_prompt(caption)
    from PIL import Image

    items, images, prompts, readings, failures = [], [], [], [], []
    size = None
    for r in records:
        try:
            if size is None:  # the images' own size (every image is read at the first one's)
                with Image.open(base / r["file"]) as first:
                    size = min(first.size)
            image = load_image(base / r["file"], size)
        except (ValueError, OSError) as e:
            failures.append({"id": r["id"], "error": str(e)})
            continue
        seen = read_scene(image)
        items.append({"id": int(r["id"]), "prompt": int(r["prompt"]), "candidate": int(r["candidate"]),
                      "outcomes": outcomes(seen, r["caption"])})
        images.append(image)
        prompts.append(int(r["prompt"]))
        readings.append(reading_key(seen))
    if not items:
        raise ValueError("no image could be read")
    stack = torch.stack(images)
    return {"images": len(items), "prompts": len(set(prompts)),
            "categories": rates([it["outcomes"] for it in items]),
            "diversity": {"pairwise_distance": pairwise_distance(stack),
                          "within_prompt_distance": within_prompt_distance(stack, prompts),
                          "distinct_readings": distinct_readings(readings)},
            "failures": failures, "items": items}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished generation run folder, or a selected/<rule>/ folder")
    ap.add_argument("--out", required=True, help="the JSON file to write")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # small tensors: a second thread only adds synchronisation
    start = time.time()
    try:
        run = Path(args.run)
        if not run.is_dir():
            raise FileNotFoundError(f"--run {run} is not a folder")
        records, base = image_records(run)
        result = score_images(records, base)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: score_alignment: {e}", file=sys.stderr)
        return 2
    result.update(run=str(run), seconds=time.time() - start)
    write_json_atomic(args.out, result)
    c = result["categories"]
    print("  ".join(f"{k} {v['hits']}/{v['n']}" for k, v in c.items()) + f"  ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
