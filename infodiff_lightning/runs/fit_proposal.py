"""Fit a model's log-SNR proposal on a few captioned images and save it in the model folder.

    python -m infodiff_lightning.runs.fit_proposal --model models/world --captions <caption folder>
    python -m infodiff_lightning.runs.fit_proposal --model models/world --world threshold   # the bundled world

Every later estimate with that model (jobs, monitor, library calls that take the default
draws) reads ``<model>/logsnr_proposal.json`` and draws where the model's information is
(proposal.py, eq. OPT): the same integral over the reference log-SNR range, with less
noise per denoiser call (BENCHMARKS.md "Draw schemes"). Delete the file to go back to
stratified reference draws. The pilot measures MI and, with ``--words``, each word's CMI,
on ``--n_images`` images with ``--n_draws`` stratified uniform draws each.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..contrasts import caption_columns
from ..data.caption_folder import CaptionFolder
from ..data.world import CaptionedWorld
from ..denoisers import load_text_to_image
from ..proposal import DEFAULT_BINS, DEFAULT_FLOOR, PROPOSAL_FILE, save_proposal
from ..proposal_fit import fit_model_proposal

__all__ = ["main"]


def _pilot_items(args) -> list[dict]:
    if args.world is not None:
        data = CaptionedWorld(args.world, args.image_size, limit=args.n_images)
    else:
        data = CaptionFolder(args.captions, image_size=args.image_size, strict=True)
    n = min(args.n_images, len(data))
    if n < 1:
        raise SystemExit("fit_proposal: no pilot images found")
    return [data[i] for i in range(n)]


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="local diffusers model folder (the proposal is saved in it)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--captions", help="caption folder of pilot images (images with .txt captions or a table)")
    src.add_argument("--world", choices=["train", "threshold", "heldout"], help="pilot scenes of the embedded world")
    ap.add_argument("--image_size", type=int, default=32, help="pilot images are resized to this (the model's size)")
    ap.add_argument("--words", nargs="*", default=[], help="also fit on these words' CMI where a caption holds them")
    ap.add_argument("--n_images", type=int, default=16, help="pilot images (default 16)")
    ap.add_argument("--n_draws", type=int, default=96, help="stratified uniform draws per pilot image (default 96)")
    ap.add_argument("--n_bins", type=int, default=DEFAULT_BINS, help=f"log-SNR bins (default {DEFAULT_BINS})")
    ap.add_argument("--floor", type=float, default=DEFAULT_FLOOR,
                    help=f"share of the reference sampler's density mixed in (default {DEFAULT_FLOOR})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help=f"where to write (default <model>/{PROPOSAL_FILE})")
    args = ap.parse_args(argv)
    model = Path(args.model)
    if not model.is_dir():
        raise SystemExit(f"fit_proposal: --model {model} is not a local folder")
    den = load_text_to_image(model)
    items = _pilot_items(args)
    ids = [int(it["id"]) for it in items]
    captions = [it["caption"] for it in items]
    cols, contrasts, _ = caption_columns(den, captions, args.words)
    x = den.encode(torch.stack([it["image"] for it in items]), ids=ids)
    q = fit_model_proposal(den, x, cols, contrasts, ids=ids, n_draws=args.n_draws, seed=args.seed,
                           n_bins=args.n_bins, floor=args.floor)
    out = Path(args.out) if args.out else model / PROPOSAL_FILE
    fitted_on = {"images": len(items), "draws_per_image": args.n_draws, "words": list(args.words),
                 "source": args.captions or f"world:{args.world}", "floor": args.floor, "seed": args.seed}
    save_proposal(q, out, fitted_on)
    print(f"wrote {out}: {len(q.mass)} bins over log-SNR [{q.lo:.2f}, {q.hi:.2f}], "
          f"largest bin mass {max(q.mass):.3f}")
    return out


if __name__ == "__main__":
    main()
