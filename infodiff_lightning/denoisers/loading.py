"""One loader for diffusers text-to-image folders: latent or pixel, read from the folder."""
from __future__ import annotations

from pathlib import Path

from .diffusers_latent import LatentDiffusionDenoiser
from .diffusers_pixel import PixelTextDenoiser

__all__ = ["load_text_to_image"]


def load_text_to_image(pretrained: str | Path, lora: str | Path | None = None, **kw):
    """The adapter for a diffusers folder or hub id: :class:`LatentDiffusionDenoiser` if it
    has a vae/ subfolder (or is a hub id), else :class:`PixelTextDenoiser`. ``lora``: a
    UNet LoRA adapter folder loaded on top; ``kw`` go to ``from_pretrained`` (revision,
    variant, torch_dtype, device, ...)."""
    local = Path(pretrained).expanduser()
    cls = PixelTextDenoiser if local.is_dir() and not (local / "vae").is_dir() else LatentDiffusionDenoiser
    return cls.from_pretrained(pretrained, lora=lora, **kw)
