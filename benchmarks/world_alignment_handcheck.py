"""Images of the bundled world model for hand-checking the world alignment scorer.

    python benchmarks/world_alignment_handcheck.py --model models/world --out /work/i28/handcheck

From the first held-out scenes, a fixed mix of captions (one object: plain, "scarlet",
a "bat", wavy/spotted; two objects), each generated once with the model's own sampler
(:func:`regenerate` over :func:`regeneration_grid`, 50 DDIM steps, no guidance) from noise
seeded by the scene id (``id_generator(seed, id)``), so the same command gives the same images.
Writes ``<id>_<caption with underscores>.png`` (32x32, the model's output) and a 256x256
nearest-neighbour copy under ``view/`` for looking at, plus ``captions.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from infodiff_lightning.analyses.regeneration import regenerate, regeneration_grid
from infodiff_lightning.data.world import CaptionedWorld
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.draws import id_generator

#: How many images of each kind (24 in all).
MIX = {"one": 6, "scarlet": 2, "bat": 3, "dot": 3, "two": 10}


def kind_of(scene) -> str:
    """The hand-check stratum of a held-out scene (first matching rule)."""
    if len(scene.objects) == 2:
        return "two"
    o = scene.objects[0]
    if o.shape in ("bar", "vee"):
        return "bat"
    if "scarlet" in o.colour_words:
        return "scarlet"
    if o.modifiers:
        return "dot"
    return "one"


def pick_scenes(world: CaptionedWorld) -> list:
    """The first held-out scenes of each kind, :data:`MIX` of them."""
    chosen, left = [], dict(MIX)
    for i in range(len(world)):
        scene = world.scene(i)
        k = kind_of(scene)
        if left.get(k, 0) > 0:
            chosen.append(scene)
            left[k] -= 1
        if not any(left.values()):
            return chosen
    raise RuntimeError(f"held-out split ran out of scenes for {left}")


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models/world")
    ap.add_argument("--out", default="/work/i28/handcheck")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    (out / "view").mkdir(parents=True, exist_ok=True)
    denoiser = load_text_to_image(args.model)
    scenes = pick_scenes(CaptionedWorld("heldout", 32))
    grid = regeneration_grid(denoiser, args.steps)
    noise = torch.stack([torch.randn((3, 32, 32), generator=id_generator(args.seed, s.id)) for s in scenes])
    images = regenerate(denoiser, noise, [s.caption for s in scenes], grid)
    table = []
    for scene, image in zip(scenes, images):
        name = f"{scene.id}_{scene.caption.replace(' ', '_')}.png"
        pixels = to_uint8(image)
        Image.fromarray(pixels).save(out / name)
        Image.fromarray(pixels).resize((256, 256), Image.NEAREST).save(out / "view" / name)
        table.append({"file": name, "id": scene.id, "caption": scene.caption, "kind": kind_of(scene)})
    (out / "captions.json").write_text(json.dumps(table, indent=1))
    print(f"{len(table)} images in {out}")


if __name__ == "__main__":
    main()
