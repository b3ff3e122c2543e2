"""The cost of one InformationMonitor measurement of the demo's probe (configs/demo/finetune.yaml:
48 images, 8 draws, words lovely / red / the, MMSE figure of 5 points x 1 eps) with the MMSE
figure over every probe image and over the first 8 (``mmse_images``), interleaved three times
in one process so that a changing load affects both alike.

    python benchmarks/bench_monitor_cost.py
"""
import time, torch
from infodiff_lightning.denoisers.loading import load_text_to_image
from infodiff_lightning.data import CaptionedWorldData
from infodiff_lightning.callbacks import InformationMonitor
from infodiff_lightning.measurement import CaptionMetrics
from infodiff_lightning.metrics import InformationMap
from infodiff_lightning.estimators import default_sampler
dm = CaptionedWorldData(image_size=32, batch_size=32, n_val=64, shift="shape", p_shift=1.0, new_word="lovely"); dm.setup("fit")
probe = dm.probe_items(48)
den = load_text_to_image("models/world")
alphas = torch.linspace(*default_sampler(den).range, 5, dtype=torch.float64)
res = {None: [], 8: []}
for rep in range(3):
    for k in (None, 8):
        mon = InformationMonitor(words=["lovely", "red", "the"], probe_size=48, n_draws=8, mmse_points=5, mmse_eps=1, mmse_images=k)
        mon._probe = probe
        with torch.no_grad():
            t = time.perf_counter()
            mon._measure_local(den, probe, CaptionMetrics(mon.spec), InformationMap((2, 5)), alphas)
            res[k].append(time.perf_counter() - t)
for k, v in res.items():
    print(f"mmse_images={k}: {sorted(v)} s; median {sorted(v)[1]:.2f}")
print(f"ratio of medians {sorted(res[8])[1] / sorted(res[None])[1]:.3f}")
