"""VAE latents: the x the estimators integrate over for every latent-space family.

x is the posterior mean of the VAE encoder, shifted and scaled by the VAE's config,
x = (E[z | image] - shift_factor) * scaling_factor, never a sample, so x is a
deterministic function of the image (SD 1.x/2.x and SDXL have no shift; SD3 and Flux
have one). Latents are cached per image id.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import torch
from torch import Tensor

__all__ = ["VAELatents", "LatentEncoding"]


class VAELatents:
    """The latents of a diffusers AutoencoderKL (see module doc)."""

    def __init__(self, vae, *, cache: bool = True):
        self.vae = vae
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(getattr(vae.config, "latent_channels", 4))
        self.cache = bool(cache)
        self._latents: dict[Hashable, Tensor] = {}

    def clear_cache(self) -> None:
        self._latents.clear()

    @torch.no_grad()
    def encode(self, images: Tensor, ids: Sequence[Hashable] | None = None, microbatch: int = 16,
               device: torch.device | None = None) -> Tensor:
        """Latents x = (E[z | image] - shift) * scaling_factor, float32, on ``device`` (default:
        the VAE's).

        ``images``: (N, 3, H, W) in [-1, 1] with H, W divisible by the VAE's downsampling
        factor. ``ids``: optional image ids; latents of ids seen before come from the cache.
        """
        if images.ndim != 4 or images.shape[1] != self.vae.config.in_channels:
            raise ValueError(f"images must be (N, {self.vae.config.in_channels}, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise ValueError(f"image size {h}x{w} is not divisible by the VAE's downsampling factor {self.downsample}")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(f"images must lie in [-1, 1], got values in [{lo:.3f}, {hi:.3f}]; map [0, 1] images "
                             "with 2 * x - 1")
        if ids is not None and len(ids) != images.shape[0]:
            raise ValueError(f"got {len(ids)} ids for {images.shape[0]} images")
        if microbatch < 1:
            raise ValueError(f"microbatch must be >= 1, got {microbatch}")
        use_cache = ids is not None and self.cache
        todo = [i for i in range(images.shape[0]) if not (use_cache and ids[i] in self._latents)]
        fresh: dict[int, Tensor] = {}
        vae_dtype = next(self.vae.parameters()).dtype
        vae_device = next(self.vae.parameters()).device
        out_device = vae_device if device is None else device
        for s in range(0, len(todo), microbatch):
            idx = todo[s:s + microbatch]
            batch = images[idx].to(vae_device, vae_dtype)
            mean = self.vae.encode(batch).latent_dist.mean
            z = ((mean.float() - self.shift_factor) * self.scaling_factor).to(out_device)
            for j, i in enumerate(idx):
                fresh[i] = z[j]
                if use_cache:
                    self._latents[ids[i]] = z[j]
        rows = [fresh[i] if i in fresh else self._latents[ids[i]] for i in range(images.shape[0])]
        return torch.stack(rows)

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        """Images in [-1, 1] (clamped) from latents x: the inverse map x / scaling + shift, decoded."""
        vae_dtype = next(self.vae.parameters()).dtype
        vae_device = next(self.vae.parameters()).device
        z = x.to(vae_device, torch.float32) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z.to(vae_dtype)).sample.float().clamp(-1, 1)


class LatentEncoding:
    """The protocol's ``encode`` for adapters that hold ``self.latents`` (a VAELatents) and
    a ``device``: latent-space families share it."""

    latents: VAELatents

    @torch.no_grad()
    def encode(self, images: Tensor, ids: Sequence[Hashable] | None = None) -> Tensor:
        """The VAE latents of :meth:`encode_images`, one image per VAE call, so that an
        image's latent never depends on the images beside it in a batch (on one CPU thread
        a convolution's rounding can), nor on the process count."""
        return self.encode_images(images, ids=ids, microbatch=1)

    def encode_images(self, images: Tensor, ids: Sequence[Hashable] | None = None, microbatch: int = 16) -> Tensor:
        """Latents x = (E[z | image] - shift) * scaling_factor, float32, on the model's device."""
        return self.latents.encode(images, ids, microbatch, device=self.device)
