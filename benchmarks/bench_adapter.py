"""Throughput of the diffusers latent adapter on the tiny SD pipeline (CPU by default).

The tiny pipeline of tests/tiny_models.py (a (32, 64) UNet with cross-attention,
2-layer CLIP text encoder, 16x16 images -> 4x8x8 latents; --image-size 32 gives 4x16x16
latents) is saved with save_pretrained and loaded through
LatentDiffusionDenoiser.from_pretrained, as a user would load a real checkpoint.

Measured, best of --repeats runs each:
1. the bare UNet forward (a direct call) vs the adapter's eps_hat at the same batch size:
   the adapter's overhead (timestep interpolation, cached text lookup, output conversion);
2. pointwise MI (2 conditions: null and prompt, shared draws) over images x draws vs the
   estimator's micro-batch size, in images x draws per second and UNet inputs per second;
3. text encoding: a pass with a cold cache vs a warm one.

Usage: python benchmarks/bench_adapter.py [--images 16 --draws 16 --repeats 3 --threads 2 --image-size 16]
       python benchmarks/bench_adapter.py --device cuda --dtype float16 --image-size 64 --images 64
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tiny_models.py (offline tiny models)

from infodiff_lightning import pointwise_mi, sample_draws  # noqa: E402
from infodiff_lightning.denoisers import LatentDiffusionDenoiser  # noqa: E402
from infodiff_lightning.estimators import default_sampler  # noqa: E402
from timing import best  # noqa: E402  (benchmarks/timing.py)

PROMPTS = ["a red cat on the mat", "a photo of a blue sofa", "a dog on a catamaran", "the blue mat and a red sofa"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=16, help="pixels; latents are half as wide")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="weights' dtype (torch_dtype of from_pretrained); latents and estimates stay float32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        c = tiny_models.build_sd_components()
        if args.image_size != 16:
            c["unet"] = tiny_models.build_cond_unet(in_channels=4, sample_size=args.image_size // 2)
        from diffusers import StableDiffusionPipeline

        StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None,
                                requires_safety_checker=False).save_pretrained(tmp)
        den = LatentDiffusionDenoiser.from_pretrained(tmp, device=args.device, torch_dtype=getattr(torch, args.dtype))

    n, s, hw = args.images, args.draws, args.image_size
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, hw, hw, generator=g) * 2 - 1)
    z = den.encode_images(images)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    shape = tuple(z.shape[1:])
    print(f"device {den.device} ({args.dtype}), {args.threads} threads, latents {shape}, {n} images x {s} draws, "
          f"2 conditions, best of {args.repeats}")

    # 1. bare UNet vs adapter
    print("\n1. one forward pass: bare UNet vs adapter eps_hat")
    print(f"  {'batch':>6} {'UNet inputs/s':>14} {'eps_hat inputs/s':>17} {'overhead':>9}")
    for b in (2, 32, 256):
        x = torch.randn(b, *shape, generator=g).to(den.device, den.unet.dtype)
        alpha = torch.rand(b, generator=g, dtype=torch.float64) * 8 - 4
        col = [prompts[i % n] for i in range(b)]
        emb = den.text_embeddings(col)
        t = den.timesteps(alpha)

        def bare():
            with torch.inference_mode():
                den.unet(x, t, encoder_hidden_states=emb)
            if den.device.type == "cuda":
                torch.cuda.synchronize()

        t_bare = best(bare, args.repeats)
        def adapter():
            den.eps_hat(x.float(), alpha, col)
            if den.device.type == "cuda":
                torch.cuda.synchronize()

        t_ad = best(adapter, args.repeats)
        print(f"  {b:>6} {b / t_bare:>14.0f} {b / t_ad:>17.0f} {100 * (t_ad / t_bare - 1):>8.1f}%")

    # 2. estimator throughput vs microbatch
    draws = sample_draws(n, s, shape, default_sampler(den), torch.Generator().manual_seed(1))
    print(f"\n2. pointwise MI over {n} images x {s} draws (= {2 * n * s} UNet inputs) vs micro-batch")
    print(f"  {'microbatch':>10} {'seconds':>8} {'img x draws/s':>14} {'UNet inputs/s':>14} {'MI mean':>9}")
    ref = None
    for mb in (2, 8, 32, 128, 512, 4096):
        result = {}

        def run():
            result["est"] = pointwise_mi(den, z, prompts, draws=draws, microbatch=mb)
            if den.device.type == "cuda":
                torch.cuda.synchronize()

        dt = best(run, args.repeats)
        val = result["est"].value
        ref = val if ref is None else ref
        same = "" if torch.allclose(val, ref, rtol=1e-5, atol=1e-6) else "  (differs!)"
        print(f"  {mb:>10} {dt:>8.3f} {n * s / dt:>14.0f} {2 * n * s / dt:>14.0f} {float(val.mean()):>9.3f}{same}")

    # 3. text cache
    small = sample_draws(n, 1, shape, default_sampler(den), torch.Generator().manual_seed(2))
    den.clear_cache()
    t_cold = best(lambda: (den.text.clear_cache(), pointwise_mi(den, z, prompts, draws=small)), args.repeats)
    t_warm = best(lambda: pointwise_mi(den, z, prompts, draws=small), args.repeats)
    print(f"\n3. one draw per image, cold vs warm text cache ({len(set(prompts)) + 1} unique conditions): "
          f"{1000 * t_cold:.1f} ms vs {1000 * t_warm:.1f} ms")


if __name__ == "__main__":
    main()
