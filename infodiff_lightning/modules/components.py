"""Loading diffusers components for training, and wrapping live ones as a denoiser."""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["load_components", "make_denoiser", "drop_words"]


def load_components(pretrained: str, revision: str | None = None, variant: str | None = None,
                    torch_dtype: torch.dtype | None = None) -> dict:
    """{"unet", "text_encoder", "tokenizer", "scheduler", "vae" or None} from a diffusers
    folder or hub id (subfolders unet/, text_encoder/, tokenizer/, scheduler/, vae/)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    local = Path(pretrained)
    if local.exists() or str(pretrained).startswith((".", "/", "~")):
        if not local.is_dir():
            raise FileNotFoundError(f"pretrained model folder {pretrained} does not exist")
        for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
            if not (local / sub).is_dir():
                raise FileNotFoundError(f"{pretrained} has no {sub}/ subfolder; expected the diffusers layout "
                                        "(unet/, text_encoder/, tokenizer/, scheduler/, optionally vae/)")
    kw = {"revision": revision}
    unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", variant=variant, torch_dtype=torch_dtype, **kw)
    text_encoder = CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", variant=variant,
                                                 torch_dtype=torch_dtype, **kw)
    tokenizer = CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer", **kw)
    scheduler = DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler", **kw)
    vae = None
    if not local.is_dir() or (local / "vae").is_dir():
        vae = AutoencoderKL.from_pretrained(pretrained, subfolder="vae", variant=variant, torch_dtype=torch_dtype, **kw)
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler, "vae": vae}


def make_denoiser(unet, text_encoder, tokenizer, scheduler, vae=None):
    """The adapter over live (possibly training) modules: latent when there is a VAE."""
    from ..denoisers import LatentDiffusionDenoiser, PixelTextDenoiser

    if vae is not None:
        return LatentDiffusionDenoiser(unet, vae, text_encoder, tokenizer, scheduler)
    return PixelTextDenoiser(unet, text_encoder, tokenizer, scheduler)


def drop_words(caption: str, p: float, generator: torch.Generator, tokenizer=None) -> str:
    """Delete each word of ``caption`` with probability p, by the same whole-word
    deletion the CMI estimator uses (conditions.remove_word, method "delete")."""
    from ..conditions import remove_word

    words = caption.split()
    drop = [i for i in range(len(words)) if float(torch.rand((), generator=generator)) < p]
    text = caption
    for i in reversed(drop):
        key = words[i].strip(".,;:!?\"'()").lower()
        if not key:
            continue
        occurrence = sum(1 for w in words[:i] if w.strip(".,;:!?\"'()").lower() == key)
        try:
            text = remove_word(text, key, method="delete", occurrence=occurrence)
        except ValueError:  # a word the estimator could not delete either: keep it
            pass
    return text
