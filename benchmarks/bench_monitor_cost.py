"""The cost of one InformationMonitor measurement of the demo's probe, for several monitor
settings, interleaved ``--repeats`` times in one process so that a changing load affects
every setting alike: seconds (median) and denoiser inputs per measurement.

Settings (8 draws, words lovely / red / the; the MMSE figure of 5 points x 1 eps where on):

- ``every image``: the demo's probe until 2026-12-05: 48 images, MI and each word over every
  image, the MMSE figure over every image;
- ``mmse 8``: the same with the MMSE figure over the first 8 images (``mmse_images``);
- ``capped``: the demo's monitor now (configs/demo/finetune.yaml): 128 images, the MI over
  the first 4 (``mi_images``), each word over its first images that hold it (``word_images``
  {lovely: 28, red: 4, the: 4}), no MMSE figure.

- ``custom``: ``capped`` with ``--mi_images`` and ``--word_images`` (JSON) instead.

    python benchmarks/bench_monitor_cost.py [--settings "every image" capped] [--repeats 3]
    python benchmarks/bench_monitor_cost.py --settings capped custom --mi_images 4 \
        --word_images '{"lovely": 24, "red": 4, "the": 4}'
"""
import json
import argparse
import time

import torch

from infodiff_lightning.callbacks import InformationMonitor
from infodiff_lightning.data import CaptionedWorldData
from infodiff_lightning.denoisers.loading import load_text_to_image
from infodiff_lightning.estimators import default_sampler
from infodiff_lightning.measurement import CaptionMetrics
from infodiff_lightning.metrics import InformationMap

COMMON = {"words": ["lovely", "red", "the"], "n_draws": 8, "mmse_points": 5, "mmse_eps": 1}
SETTINGS = {
    "every image": {"probe_size": 48, "mmse_images": None},
    "mmse 8": {"probe_size": 48, "mmse_images": 8},
    "capped": {"probe_size": 128, "mmse_points": 0, "mi_images": 4,
               "word_images": {"lovely": 28, "red": 4, "the": 4}},
    "custom": {"probe_size": 128, "mmse_points": 0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/world")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mi_images", type=int, default=None, help="of the custom setting")
    ap.add_argument("--word_images", type=json.loads, default=None, help="of the custom setting (JSON)")
    args = ap.parse_args()
    SETTINGS["custom"].update(mi_images=args.mi_images, word_images=args.word_images)
    size = max(SETTINGS[s]["probe_size"] for s in args.settings)
    dm = CaptionedWorldData(image_size=32, batch_size=32, n_val=size, shift="shape", p_shift=1.0, new_word="lovely")
    dm.setup("fit")
    den = load_text_to_image(args.model)
    alphas = torch.linspace(*default_sampler(den).range, COMMON["mmse_points"], dtype=torch.float64)
    seconds = {s: [] for s in args.settings}
    inputs = {}
    for _ in range(args.repeats):
        for name in args.settings:
            mon = InformationMonitor(**{**COMMON, **SETTINGS[name]})
            probe = dm.probe_items(mon.probe_size)
            mon._probe, mon._where = probe, mon.measured_on(probe, den.tokenizer)
            metrics = CaptionMetrics(mon.spec)
            with torch.no_grad():
                t = time.perf_counter()
                curve = InformationMap((2, COMMON["mmse_points"])) if mon.mmse_points else None
                mon._measure_local(den, probe, metrics, curve, alphas)
                seconds[name].append(time.perf_counter() - t)
            summary = metrics.compute()
            mmse = len(probe[:mon.mmse_images]) * mon.mmse_points * mon.mmse_eps * 2
            inputs[name] = (int(metrics.metrics["mi"].n_evals) + mmse,
                            {tag: r["images"] for tag, r in summary.items()})
    base = sorted(seconds[args.settings[0]])[len(seconds[args.settings[0]]) // 2]
    for name in args.settings:
        times = sorted(seconds[name])
        median = times[len(times) // 2]
        print(f"{name:<12} {', '.join(f'{t:.2f}' for t in seconds[name])} s; median {median:.2f} s "
              f"({median / base:.2f}x {args.settings[0]!r}); denoiser inputs {inputs[name][0]}; "
              f"images per quantity {inputs[name][1]}")


if __name__ == "__main__":
    main()
