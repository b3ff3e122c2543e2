"""How far the demo's monitor probe separates the fine-tuned word's change, over draw seeds.

The probe of configs/demo/finetune.yaml (``--probe_size`` held-out images of the shifted world;
the word's CMI over the first ``--word_images`` of them that name "lovely", as the monitor's
``word_images`` option takes them) measured with the base model and with the demo's fine-tuned model, as the
InformationMonitor measures it at step 0 and at the end (the CMI of the word over the probe
images that name it, std over images / sqrt(images)): z = change / combined standard error,
for several draw seeds, draw counts and samplers.

    python train.py fit --config configs/demo/finetune.yaml --model.init_args.export_dir OUT/model ...
    python benchmarks/bench_monitor_separation.py --finetuned OUT/model
    python benchmarks/bench_monitor_separation.py --finetuned OUT/model --probe_size 128 --word_images 16 24 --draws 8
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics

import torch

from infodiff_lightning.contrasts import without_words
from infodiff_lightning.data import CaptionedWorldData
from infodiff_lightning.denoisers.loading import load_text_to_image
from infodiff_lightning.integrate import Uniform
from infodiff_lightning.measure import DrawSpec, default_sampler, measure
from infodiff_lightning.metrics import PointwiseInformation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="models/world")
    ap.add_argument("--finetuned", required=True, help="the demo's fine-tuned model folder")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--draws", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--probe_size", type=int, default=48, help="the monitor's probe_size (the demo's: see its config)")
    ap.add_argument("--word_images", type=int, nargs="+", default=[None],
                    help="the monitor's word_images: the word over at most its first this many probe images")
    ap.add_argument("--samplers", nargs="+", default=None, help="names of the samplers to run (default: all)")
    args = ap.parse_args()
    data = CaptionedWorldData(image_size=32, batch_size=32, n_val=max(64, args.probe_size), shift="shape",
                              p_shift=1.0, new_word="lovely")
    data.setup("fit")
    holding = [it for it in data.probe_items(args.probe_size) if "lovely" in it["caption"].split()]
    for cap in args.word_images:
        run(args, holding[:cap])


def run(args, probe) -> None:
    ids, captions = [it["id"] for it in probe], [it["caption"] for it in probe]
    images = torch.stack([it["image"] for it in probe])
    models = {"base": load_text_to_image(args.base), "finetuned": load_text_to_image(args.finetuned)}
    context = [without_words(c, ["lovely"], "delete", models["base"].tokenizer) for c in captions]
    samplers = {"model proposal (default)": default_sampler,
                "model proposal, stratified": lambda d: dataclasses.replace(default_sampler(d), stratified=True),
                "uniform": lambda d: Uniform(*default_sampler(d).range),
                "uniform, stratified": lambda d: Uniform(*default_sampler(d).range, stratified=True)}
    print(f"{len(probe)} probe images name 'lovely' (probe_size {args.probe_size})")
    for n_draws in args.draws:
        for name, sampler in samplers.items():
            if args.samplers and name.split(" (")[0] not in args.samplers and name not in args.samplers:
                continue
            zs, ends = [], []
            for seed in range(args.seeds):
                summary = {}
                for key, den in models.items():
                    with torch.no_grad():
                        m = measure(den, {"ctx": context, "cap": captions}, {"cmi": ("ctx", "cap")},
                                    draws=DrawSpec(n_draws, seed, sampler(den)), images=images, ids=ids)
                    metric = PointwiseInformation()
                    metric.update(m.estimate("cmi"), ids=ids)
                    r = metric.compute()
                    summary[key] = (float(r["mean"]), float(r["stderr"]))
                (b, sb), (f, sf) = summary["base"], summary["finetuned"]
                zs.append((f - b) / math.hypot(sb, sf))
                ends.append(f"{f:.2f}+-{sf:.2f}")
            print(f"{n_draws:>3} draws, {name:<28} z mean {statistics.mean(zs):.2f} (min {min(zs):.2f}, max "
                  f"{max(zs):.2f}; {sum(z > 3 for z in zs)} of {len(zs)} above 3); z per seed {[round(z, 1) for z in zs]}; end values {ends}", flush=True)


if __name__ == "__main__":
    main()
