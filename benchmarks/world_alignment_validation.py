"""The world alignment scorer against the world's renderer, on held-out scenes.

    python benchmarks/world_alignment_validation.py --out /work/i28/world_alignment_validation.json

Every held-out scene (1000) is rendered at 32x32 and scored with its own caption (must be
aligned) and with its mismatched captions (must not be). Levels:

- ``exact``: the world's own render;
- ``sd=s`` (s in --sigmas): a perturbed render (:func:`perturbed_render`: each object moved
  by up to two pixels in x and in y (the scorer's offsets), its colour moved by up to +-0.2 per channel, the
  background tinted by up to +-0.1) plus Gaussian pixel noise of sd s, clamped to [-1, 1].

Mismatched captions (:func:`mismatches`): the world's hard negatives (colour_candidates'
three wrong colours, attribute_swap, left_right_swap; a swap of two words of one
meaning, "scarlet" and "red", is no mismatch and left out) and, for one object, the caption
with another shape, the other size, another position, and the dot flipped (one XOR word
added or taken away). Reports the share right per level with its Wilson interval, per kind
of mismatch, and the share of scenes read exactly (every object's slot, shape, colour,
size and dot).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from infodiff_lightning.analyses.statistics import accuracy_interval
from infodiff_lightning.analyses.world_alignment import judge_reading, parse_prompt, read_scene
from infodiff_lightning.data.world import (BACKGROUND, COLOURS, DOT, POSITIONS_ONE, SHAPES, XOR_WORDS, Scene, _centre,
                                           attribute_swap, caption_of, colour_candidates, left_right_swap,
                                           object_mask, render_scene, sample_scene, split_ids)
from infodiff_lightning.draws import id_generator


def perturbed_render(scene: Scene, generator: torch.Generator, sigma: float, shift: int = 2,
                     colour_jitter: float = 0.2, tint: float = 0.1) -> torch.Tensor:
    """(3, 32, 32): ``scene`` drawn as render_scene draws it, but each object (with its dot)
    rolled by a uniform offset in [-shift, shift] px per axis, its colour moved by a uniform
    [-colour_jitter, colour_jitter] per channel, the background by [-tint, tint], then
    Gaussian noise of sd ``sigma``; clamped to [-1, 1]."""
    size = 32
    u = lambda n, a: (torch.rand(n, generator=generator) * 2 - 1) * a  # noqa: E731
    img = (torch.full((3,), BACKGROUND) + u(3, tint))[:, None, None].expand(3, size, size).clone()
    for o in scene.objects:
        dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
        mask = torch.roll(object_mask(o, size), (dy, dx), (0, 1))
        img[:, mask] = (torch.tensor(COLOURS[o.colour]) + u(3, colour_jitter))[:, None]
        if o.dot:
            cy, cx = _centre(o.position, size)
            img[:, cy + dy - 1:cy + dy + 2, cx + dx - 1:cx + dx + 2] = (torch.tensor(DOT) + u(3, colour_jitter))[:, None, None]
    img = img + sigma * torch.randn(img.shape, generator=generator)
    return img.clamp(-1, 1)


def mismatches(scene: Scene) -> dict[str, list[str]]:
    """Captions of ``scene`` with one claim changed, by kind (module doc). A swap that only
    exchanges words of one meaning ("scarlet" and "red") claims the scene itself and is
    left out: it is no mismatch."""
    out: dict[str, list[str]] = {}
    cand = colour_candidates(scene)
    if cand is not None:
        captions, truth = cand
        out["colour"] = [c for k, c in enumerate(captions) if k != truth]
    for kind, caption in (("attribute_swap", attribute_swap(scene)), ("left_right_swap", left_right_swap(scene))):
        if caption is not None:
            out[kind] = [caption]
    if len(scene.objects) == 1:
        o = scene.objects[0]
        other = lambda options, v: next(x for x in options if x != v)  # noqa: E731
        shape = other(SHAPES, o.shape) if o.shape in SHAPES else {"bar": "vee", "vee": "bar"}[o.shape]
        mods = o.modifiers[1:] if o.modifiers else XOR_WORDS[:1]  # one word fewer or one more: the dot flips
        variants = {"shape": replace(o, shape=shape), "size": replace(o, size="big" if o.size == "small" else "small"),
                    "position": replace(o, position=other(POSITIONS_ONE, o.position)),
                    "dot": replace(o, modifiers=mods, dot=len(mods) == 1)}
        for kind, changed in variants.items():
            out[kind] = [caption_of(replace(scene, objects=(changed,)))]
    truth = sorted(parse_prompt(scene.caption), key=str)
    return {k: kept for k, v in out.items() if (kept := [c for c in v if sorted(parse_prompt(c), key=str) != truth])}


def read_exactly(seen, scene: Scene) -> bool:
    """Whether the objects read (:func:`read_scene`) are the scene's: slot, shape, colour, size, dot."""
    truth = sorted((o.position, o.shape, o.colour, o.size, o.dot) for o in scene.objects)
    return sorted((s.position, s.shape, s.colour, s.size, s.dot) for s in seen) == truth


def validate(ids, sigmas, seed: int = 0) -> dict:
    """Counts and Wilson intervals per level (module doc) over the scenes ``ids``."""
    levels = {"exact": None, **{f"sd={s:g}": s for s in sigmas}}
    out = {}
    for name, sigma in levels.items():
        counts = {"aligned": [0, 0], "read_exactly": [0, 0]}
        for i in ids:
            scene = sample_scene(i)
            image = render_scene(scene) if sigma is None else perturbed_render(scene, id_generator(seed, i), sigma)
            seen = read_scene(image)  # one reading for the caption and all its mismatches
            counts["aligned"][0] += judge_reading(seen, scene.caption)["aligned"]
            counts["aligned"][1] += 1
            counts["read_exactly"][0] += read_exactly(seen, scene)
            counts["read_exactly"][1] += 1
            for kind, captions in mismatches(scene).items():
                c = counts.setdefault(f"rejects_{kind}", [0, 0])
                for caption in captions:
                    c[0] += not judge_reading(seen, caption)["aligned"]
                    c[1] += 1
        rejects = [sum(v[k] for key, v in counts.items() if key.startswith("rejects_")) for k in (0, 1)]
        counts["rejects_all"] = rejects
        out[name] = {key: {"hits": h, "n": n, "rate": (a := accuracy_interval(h, n))[0], "low": a[1], "high": a[2]}
                     for key, (h, n) in counts.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/work/i28/world_alignment_validation.json")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--limit", type=int, default=None, help="first scenes of the held-out split only")
    args = ap.parse_args()
    torch.set_num_threads(1)  # small tensors: a second thread only waits
    ids = list(split_ids("heldout"))[:args.limit]
    t0 = time.time()
    same = lambda c, s: c is not None and sorted(parse_prompt(c), key=str) == sorted(parse_prompt(s.caption), key=str)  # noqa: E731
    scenes = [sample_scene(i) for i in ids]
    dropped = {f.__name__: sum(same(f(s), s) for s in scenes) for f in (attribute_swap, left_right_swap)}
    result = {"scenes": len(ids), "swaps_of_one_meaning_left_out": dropped, "levels": validate(ids, args.sigmas),
              "seconds": round(time.time() - t0, 1)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    for name, row in result["levels"].items():
        print(name, "  ".join(f"{k} {v['hits']}/{v['n']} [{v['low']:.4f}, {v['high']:.4f}]" for k, v in row.items()))


if __name__ == "__main__":
    main()
