"""Export a fine-tuning checkpoint in diffusers format (what ``train.py`` does at the end
of fit, for any checkpoint of a run, e.g. one saved before the run was stopped).

    python -m infodiff_lightning.export --ckpt runs/train/world/version_0/checkpoints/last.ckpt --out models/world

The EMA weights are exported when the run kept them (``--no_ema`` for the trained ones).
The checkpoint is loaded weights-only (checkpoints.py): a file that would need to run
code to load is refused in one line and nothing is written.
"""
from __future__ import annotations

import argparse
import sys

from .runs.checkpoints import load_checkpoint
from .modules import DiffusionFineTuner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="a checkpoint written by train.py (DiffusionFineTuner)")
    ap.add_argument("--out", required=True, help="the diffusers folder to write")
    ap.add_argument("--no_ema", action="store_true", help="export the trained weights, not their EMA")
    args = ap.parse_args(argv)
    try:
        checkpoint = load_checkpoint(args.ckpt)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # The checkpoint keeps only the trained weights; the frozen ones are rebuilt from the
    # hyperparameters (the pretrained folder, or the seeded spec of a model built from scratch).
    module = DiffusionFineTuner.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=True)
    step = checkpoint.get("global_step")
    folder = module.save_pretrained(args.out, use_ema=not args.no_ema)
    print(f"exported step {step} ({'trained' if args.no_ema or module.ema is None else 'EMA'} weights) to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
