"""UNet memory layout and micro-batch size on the bundled models, on CPU: contiguous (NCHW)
weights vs channels_last, and how many UNet inputs one call should take.

For each bundled model (models/world, 3x32x32; models/digits, 1x16x16), both layouts are
timed side by side in this one process, best of --repeats:
1. a fine-tuning step (forward, backward, AdamW) at the training batch size;
2. pointwise MI (null prompt and caption, shared draws) at micro-batch 64 and 256;
3. the bare UNet without gradients, in inputs per second, by batch size (the estimators'
   micro-batch).
The estimates are compared too: a layout changes the arithmetic's order, not the result.
The adapters keep the layout a model loads with (NCHW): channels_last did not pay on CPU
(BENCHMARKS.md). The micro-batch figures set DiffusersDenoiser.default_microbatch (64).

Usage: python benchmarks/bench_memory_format.py [--repeats 3 --threads 2]
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from infodiff_lightning import pointwise_mi
from infodiff_lightning.denoisers import load_text_to_image
from infodiff_lightning.estimators import make_draws
from timing import best  # benchmarks/timing.py

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"world": (ROOT / "models/world", 32, "a red cross"), "digits": (ROOT / "models/digits", 64, "a handwritten seven")}


def train_step(denoiser, x, prompt):
    """One epsilon-prediction step of the UNet (the text encoder frozen), as fine-tuning does."""
    unet = denoiser.unet
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    with torch.no_grad():
        cond = denoiser.text_embeddings([prompt] * x.shape[0])
    t = torch.randint(0, 1000, (x.shape[0],))

    def step():
        eps = torch.randn_like(x)
        abar = denoiser.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        z = abar.sqrt() * x + (1 - abar).sqrt() * eps
        loss = torch.nn.functional.mse_loss(unet(z, t, encoder_hidden_states=cond).sample, eps)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--draws", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads; seconds per call, best of {args.repeats}")
    print("| model | what | NCHW | channels_last | channels_last speed-up |\n|---|---|---:|---:|---:|")
    for name, (folder, batch, prompt) in MODELS.items():
        base = load_text_to_image(str(folder))
        layouts = {"nchw": base, "cl": copy.deepcopy(base)}
        layouts["nchw"].unet.to(memory_format=torch.contiguous_format)
        layouts["cl"].unet.to(memory_format=torch.channels_last)
        shape = (base.unet.config.in_channels, base.unet.config.sample_size, base.unet.config.sample_size)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(batch, *shape, generator=g).clamp(-1, 1)
        images = x[: args.images]
        prompts = [prompt] * args.images
        draws = make_draws(base, images, args.draws, None, g)
        results, timings = {}, {"train step": {}, "pointwise MI, micro-batch 64": {},
                                "pointwise MI, micro-batch 256": {}}
        for key, d in layouts.items():
            d.unet.eval()
            with torch.no_grad():
                results[key] = pointwise_mi(d, images, prompts, draws=draws, microbatch=256)
        for key, d in layouts.items():
            d.unet.train()
            timings["train step"][key] = best(train_step(d, x, prompt), args.repeats, min_seconds=0.5)
            d.unet.eval()
            for mb in (64, 256):
                with torch.no_grad():
                    timings[f"pointwise MI, micro-batch {mb}"][key] = best(
                        lambda d=d, mb=mb: pointwise_mi(d, images, prompts, draws=draws, microbatch=mb), args.repeats)
        for what, t in timings.items():
            print(f"| {name} | {what} | {t['nchw']:.3f} | {t['cl']:.3f} | {t['nchw'] / t['cl']:.2f}x |")
        emb = base.text_embeddings([prompt] * 256)
        for b in (16, 32, 64, 128, 256):
            z, t = torch.randn(b, *shape, generator=g), torch.randint(0, 1000, (b,), generator=g)
            rate = {}
            for key, d in layouts.items():
                with torch.no_grad():
                    rate[key] = b / best(lambda d=d: d.unet(z, t, encoder_hidden_states=emb[:b]), args.repeats)
            print(f"| {name} | bare UNet at batch {b}, inputs/s | {rate['nchw']:.0f} | {rate['cl']:.0f} | "
                  f"{rate['cl'] / rate['nchw']:.2f}x |")
        diff = (results["nchw"].value - results["cl"].value).abs().max().item()
        print(f"| {name} | largest change of a pointwise MI (nats) | | | {diff:.1e} |")


if __name__ == "__main__":
    main()
