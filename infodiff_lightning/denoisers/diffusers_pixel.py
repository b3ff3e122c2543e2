"""Pixel-space diffusers models: text-conditioned and class-conditional UNets.

- :class:`PixelTextDenoiser`: UNet2DConditionModel + text encoder/tokenizer, no VAE;
  x is the image itself (in the range the model was trained on, usually [-1, 1]).
  Conditions are prompts or Conditions, exactly as for the latent adapter (the text
  encoding and its cache are shared: text_encoding.py).
- :class:`ClassConditionalDenoiser`: UNet2DModel with ``num_class_embeds``; the
  condition column is a long tensor of class ids and the null condition is the
  ``null_class`` id the model was trained with for "no label" (classifier-free
  guidance dropout), which must be given.

Both load from a diffusers folder with ``from_pretrained`` or wrap live modules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .diffusers_common import DiffusersDenoiser, TextUNetDenoiser, load_component, model_proposal, open_pretrained

__all__ = ["PixelTextDenoiser", "ClassConditionalDenoiser"]


class PixelTextDenoiser(TextUNetDenoiser):
    """eps_hat of a pixel-space text-conditioned UNet2DConditionModel; x is the image itself."""

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the images the UNet was trained on."""
        c = self.unet.config
        size = c.sample_size if isinstance(c.sample_size, (list, tuple)) else (c.sample_size, c.sample_size)
        return (int(c.in_channels), int(size[0]), int(size[1]))

    @torch.no_grad()
    def encode(self, images: Tensor, ids=None) -> Tensor:
        """The protocol's encode: the images, checked against what the UNet was trained on
        ((N, *sample_shape), values in [-1, 1]), in float32 on the model's device."""
        if images.ndim != 4 or tuple(images.shape[1:]) != self.sample_shape:
            raise ValueError(f"images must be (N, {', '.join(map(str, self.sample_shape))}) for this model (its "
                             f"UNet was trained at that size), got {tuple(images.shape)}")
        lo, hi = float(images.min()), float(images.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(f"images must lie in [-1, 1], got values in [{lo:.3f}, {hi:.3f}]; map [0, 1] images "
                             "with 2 * x - 1")
        return images.to(self.device, torch.float32)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, revision: str | None = None, variant: str | None = None,
                        torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                        lora: str | Path | None = None, **kwargs) -> "PixelTextDenoiser":
        """Load unet/, text_encoder/, tokenizer/, scheduler/ (no vae/) with from_pretrained;
        ``lora``: a UNet LoRA adapter folder to load on top (:meth:`load_lora`)."""
        required = ("unet", "text_encoder", "tokenizer", "scheduler")
        path, local, scheduler = open_pretrained(path_or_hub_id, required, "pixel-space text-to-image", revision,
                                              kwargs.get("prediction_type"))
        kw = {"revision": revision, "variant": variant, "torch_dtype": torch_dtype}
        unet = load_component(path, local, "unet", "diffusers.UNet2DConditionModel", **kw)
        text_encoder = load_component(path, local, "text_encoder", "transformers.CLIPTextModel", **kw)
        tokenizer = load_component(path, local, "tokenizer", "transformers.AutoTokenizer", revision=revision)
        unet.eval()
        text_encoder.eval()
        den = cls(unet, text_encoder, tokenizer, scheduler, device=device, **kwargs)
        den.alpha_proposal = model_proposal(path, local)
        return den if lora is None else den.load_lora(lora)


class ClassConditionalDenoiser(DiffusersDenoiser):
    """eps_hat of a class-conditional UNet2DModel; conditions: long tensor of class ids (B,)."""

    def __init__(self, unet, scheduler, *, null_class: int | None = None, prediction_type: str | None = None,
                 device=None, autocast_dtype: Any = "auto"):
        super().__init__(unet, scheduler, prediction_type=prediction_type, device=device, autocast_dtype=autocast_dtype)
        self.unet = unet
        n = getattr(unet.config, "num_class_embeds", None)
        if n is None or getattr(unet.config, "class_embed_type", None) is not None:
            raise ValueError("ClassConditionalDenoiser needs a UNet2DModel with num_class_embeds set and "
                             f"class_embed_type None (got num_class_embeds={n}, "
                             f"class_embed_type={getattr(unet.config, 'class_embed_type', None)!r})")
        self.num_classes = int(n)
        if null_class is not None and not 0 <= int(null_class) < self.num_classes:
            raise ValueError(f"null_class {null_class} is not a class id of this model (0..{self.num_classes - 1})")
        self.null_class = None if null_class is None else int(null_class)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, revision: str | None = None, variant: str | None = None,
                        torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                        lora: str | Path | None = None, **kwargs) -> "ClassConditionalDenoiser":
        """Load unet/ and scheduler/; pass ``null_class=`` (the "no label" id) for MI and
        optionally a UNet LoRA adapter folder ``lora``."""
        path, local, scheduler = open_pretrained(path_or_hub_id, ("unet", "scheduler"), "class-conditional", revision,
                                              kwargs.get("prediction_type"))
        unet = load_component(path, local, "unet", "diffusers.UNet2DModel", revision=revision, variant=variant,
                              torch_dtype=torch_dtype)
        unet.eval()
        den = cls(unet, scheduler, device=device, **kwargs)
        den.alpha_proposal = model_proposal(path, local)
        return den if lora is None else den.load_lora(lora)

    def null_conditions(self, n: int) -> Tensor:
        if self.null_class is None:
            raise ValueError("this ClassConditionalDenoiser has no null class; pass null_class=<the id the model was "
                             "trained with for 'no label'> to compute MI against the unconditional model")
        return torch.full((n,), self.null_class, dtype=torch.long)

    def _labels(self, conditions) -> Tensor:
        labels = conditions if isinstance(conditions, Tensor) else torch.as_tensor(list(conditions))
        if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"class conditions must be a 1-D integer tensor of class ids, got dtype {labels.dtype} "
                             f"and shape {tuple(labels.shape)}")
        if labels.device.type == "cpu" and labels.numel() and (int(labels.min()) < 0 or
                                                               int(labels.max()) >= self.num_classes):
            raise ValueError(f"class ids must lie in 0..{self.num_classes - 1}, got [{int(labels.min())}, "
                             f"{int(labels.max())}]")
        return labels.to(self.device, torch.long, non_blocking=True)

    def model_output(self, x_in, t, conditions, *, train: bool = False):
        return self.unet(x_in, t, class_labels=self._labels(conditions), return_dict=False)[0]
