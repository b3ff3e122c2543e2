"""What the bundled digits model has learned: classification by pointwise MI over the ten
captions, and the dataset MI against its ceiling H(digit) = log 10 nats.

    python benchmarks/digits_findings.py --model models/digits --out digits_findings.json

Each held-out digit is scored against "a handwritten zero" ... "a handwritten nine" from
one denoiser pass with shared draws (ranking.score_candidates); the prediction is the
caption with the largest pointwise MI (standard estimator). The dataset MI is the mean of
i(x; true caption) over the held-out digits (both estimators, with standard errors):
the caption is a function of the digit, so I(X; caption) <= H(digit) <= log 10.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

from infodiff_lightning.data.digits import DIGIT_WORDS, CaptionedDigits, digit_caption
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.analyses.ranking import PREDICTION_ESTIMATOR, score_candidates
from infodiff_lightning.analyses.statistics import accuracy_interval, correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a diffusers folder trained on the digits")
    ap.add_argument("--n", type=int, default=300, help="held-out digits (at most 300)")
    ap.add_argument("--n_draws", type=int, default=16)
    ap.add_argument("--out", help="write the findings as JSON here")
    args = ap.parse_args()
    t0 = time.time()
    denoiser = load_text_to_image(args.model)
    data = CaptionedDigits("heldout", limit=args.n)
    candidates = [digit_caption(k) for k in range(len(DIGIT_WORDS))]
    hits, true_mi = {"standard": 0, "orthogonal": 0}, {"standard": [], "orthogonal": []}
    for start in range(0, len(data), 32):
        items = [data[i] for i in range(start, min(len(data), start + 32))]
        labels = torch.tensor([it["label"] for it in items])
        scores = score_candidates(denoiser, torch.stack([it["image"] for it in items]), [it["id"] for it in items],
                                  [candidates] * len(items), n_draws=args.n_draws, microbatch=512)
        for est in hits:
            hits[est] += int(correct(scores.value[est], labels).sum())
            true_mi[est].append(scores.value[est].gather(1, labels[:, None])[:, 0])
    n = len(data)
    out = {"model": args.model, "n": n, "log10": math.log(10)}
    for est in hits:
        values = torch.cat(true_mi[est])
        out[est] = {"accuracy": accuracy_interval(hits[est], n), "mi": float(values.mean()),
                    "mi_stderr": float(values.std() / math.sqrt(n))}
    out["seconds"] = time.time() - t0
    print(f"{n} held-out digits, {args.n_draws} draws each; log 10 = {math.log(10):.3f} nats")
    for est in hits:
        r = out[est]
        a = r["accuracy"]
        bound = r["mi"] <= math.log(10) + 2 * r["mi_stderr"]
        print(f"  {est:<10} accuracy {100 * a[0]:.1f}% [{100 * a[1]:.1f}, {100 * a[2]:.1f}]"
              f"{' (the choice)' if est == PREDICTION_ESTIMATOR else ''}   dataset MI {r['mi']:.3f} +- "
              f"{r['mi_stderr']:.3f} nats ({'within' if bound else 'ABOVE'} log 10 + 2 se)")
    print(f"{out['seconds']:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
