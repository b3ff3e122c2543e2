"""What a model trained on the embedded world has learned, measured with the project's
estimators against the planted truth (the README's "measured" column).

    python benchmarks/world_findings.py --model path/to/diffusers --n_threshold 100 --n_heldout 200

For each scene: per-word CMI (with maps) for the colour and shape words, a distractor
and "the", and the conditional PID of the planted pairs and their controls, all through
the shared measurement path (MeasurementSpec -> measure_captions -> CaptionMetrics).
Localization: the threshold of eq. LOC is chosen on the threshold split and mean IoU is
reported on the held-out split with its standard error, beside the whole-image baseline.
"""
from __future__ import annotations

import argparse
import json
import time

from infodiff_lightning.data.world import COLOURS, SHAPES, CaptionedWorld
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.localization import WordMaps, collect_word_maps, localization
from infodiff_lightning.measurement import MeasurementSpec

WORDS = (*COLOURS, *SHAPES, "scarlet", "lovely", "the")
PAIRS = (("scarlet", "red"), ("big", "red"), ("wavy", "spotted"), ("red", "cross"), ("blue", "cross"))


def measure(denoiser, split: str, n: int, spec: MeasurementSpec) -> WordMaps:
    """Maps, masks and the measurement summary of the first ``n`` scenes of ``split``."""
    data = CaptionedWorld(split, 32, limit=n)
    return collect_word_maps(denoiser, (data[i] for i in range(n)), data.true_masks, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a diffusers folder trained on the world")
    ap.add_argument("--n_threshold", type=int, default=100)
    ap.add_argument("--n_heldout", type=int, default=200)
    ap.add_argument("--n_draws", type=int, default=16)
    ap.add_argument("--out", help="write the findings as JSON here")
    args = ap.parse_args()
    t0 = time.time()
    denoiser = load_text_to_image(args.model)
    spec = MeasurementSpec(WORDS, PAIRS, n_draws=args.n_draws, maps=True, microbatch=256)
    selection = measure(denoiser, "threshold", args.n_threshold, spec)
    heldout = measure(denoiser, "heldout", args.n_heldout, spec)
    summary = heldout.summary
    loc = {kind: localization(selection, heldout, words) for kind, words in (("colour", COLOURS), ("shape", SHAPES))}
    findings = {"model": args.model, "summary": summary, "localization": loc, "seconds": time.time() - t0}
    print(f"localization on {args.n_heldout} held-out scenes (threshold from {args.n_threshold} others):")
    for kind, r in loc.items():
        print(f"  {kind:<7} mIoU {r['miou'][0]:.3f} +- {r['miou'][1]:.3f}   whole image {r['whole_image'][0]:.3f}"
              f" +- {r['whole_image'][1]:.3f}   (tau {r['threshold']}, {r['maps']} maps)")
    print("CMI and PID (nats, mean +- stderr over held-out images that contain the word/pair):")
    for tag, r in summary.items():
        print(f"  {tag:<32}{r['mean']:>9.3f} +- {r['stderr']:.3f}  ({r['images']})")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(findings, f, indent=1)


if __name__ == "__main__":
    main()
