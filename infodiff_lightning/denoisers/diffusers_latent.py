"""Stable Diffusion-style latent text-to-image models (diffusers SD 1.x / 2.x layout).

A folder (or hub id) with subfolders vae/, text_encoder/, tokenizer/, unet/, scheduler/.
The information estimators run on VAE latents: x is the posterior
mean of the VAE encoder times the VAE's scaling factor (:meth:`encode_images`), never a
sample, so x is a deterministic function of the image. Pixel maps come out at latent
resolution (H/8 x W/8 for SD); upsample them for display.

Usage::

    den = LatentDiffusionDenoiser.from_pretrained("path/to/sd", device="cuda")
    z = den.encode(images)                             # images in [-1, 1], (N, 3, H, W)
    est = pointwise_mi(den, z, prompts, n_draws=64, maps=True)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .diffusers_common import TextUNetDenoiser, load_component, model_proposal, move, open_pretrained
from .vae_latents import LatentEncoding, VAELatents

__all__ = ["LatentDiffusionDenoiser"]

REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class LatentDiffusionDenoiser(LatentEncoding, TextUNetDenoiser):
    """eps_hat of a latent text-to-image UNet; conditions are prompts or Conditions.

    ``alpha_range`` is the scheduler's trained log-SNR range; alpha maps to a continuous
    timestep; epsilon, v_prediction and sample outputs convert exactly to eps_hat.
    """

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, *, prediction_type: str | None = None,
                 device=None, autocast_dtype: Any = "auto", cache_text: bool = True, text_batch_size: int = 32,
                 cache_latents: bool = True):
        super().__init__(unet, text_encoder, tokenizer, scheduler, prediction_type=prediction_type, device=device,
                         autocast_dtype=autocast_dtype, cache_text=cache_text, text_batch_size=text_batch_size)
        latent = getattr(vae.config, "latent_channels", None)
        if latent is not None and latent != unet.config.in_channels:
            raise ValueError(f"the VAE has {latent} latent channels but the UNet takes {unet.config.in_channels}")
        move([vae], device)
        self.vae = vae
        self.latents = VAELatents(vae, cache=cache_latents)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, revision: str | None = None, variant: str | None = None,
                        torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                        lora: str | Path | None = None, **kwargs) -> "LatentDiffusionDenoiser":
        """Load each component with from_pretrained(subfolder=...) from a diffusers folder
        or hub id; ``lora``: a UNet LoRA adapter folder to load on top (:meth:`load_lora`).
        ``kwargs`` go to the constructor (prediction_type, autocast_dtype, ...)."""
        path, local, scheduler = open_pretrained(path_or_hub_id, REQUIRED, "Stable Diffusion-style", revision,
                                                 kwargs.get("prediction_type"))
        kw = {"revision": revision, "variant": variant, "torch_dtype": torch_dtype}
        unet = load_component(path, local, "unet", "diffusers.UNet2DConditionModel", **kw)
        vae = load_component(path, local, "vae", "diffusers.AutoencoderKL", **kw)
        text_encoder = load_component(path, local, "text_encoder", "transformers.CLIPTextModel", **kw)
        tokenizer = load_component(path, local, "tokenizer", "transformers.AutoTokenizer", revision=revision)
        for m in (unet, vae, text_encoder):
            m.eval()
        den = cls(unet, vae, text_encoder, tokenizer, scheduler, device=device, **kwargs)
        den.alpha_proposal = model_proposal(path, local)
        return den if lora is None else den.load_lora(lora)

    def modules(self):
        return [self.unet, self.text_encoder, self.vae]

    def components(self) -> dict:
        return {**super().components(), "vae": self.vae}

    def clear_cache(self) -> None:
        super().clear_cache()
        self.latents.clear_cache()
