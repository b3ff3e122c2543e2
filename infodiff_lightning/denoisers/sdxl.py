"""Stable Diffusion XL (diffusers ``StableDiffusionXLPipeline`` layout).

A folder (or hub id) with subfolders vae/, text_encoder/ (CLIPTextModel),
text_encoder_2/ (CLIPTextModelWithProjection), tokenizer/, tokenizer_2/, unet/ (a
UNet2DConditionModel with ``addition_embed_type="text_time"``) and scheduler/ (Euler on a
DDPM-type table). x is the VAE latent (vae_latents.py); maps come out at latent
resolution.

Prompt encoding is the pipeline's: each text encoder's penultimate hidden state,
concatenated on the feature axis (text_encoder, then text_encoder_2), and the pooled
embedding is text_encoder_2's projected ``text_embeds``. Word positions are the first
tokenizer's: a masked word is found among the second tokenizer's tokens by its
characters (conditions.transfer_spans).

The null condition "" is the pipeline's own unconditional branch: with
``force_zeros_for_empty_prompt`` (the pipeline config in model_index.json; True, SDXL's
default, when the file or key is absent) its embeddings and pooled embedding are zeros,
otherwise they are the encoding of "". Only the exact prompt "" is null; a context that
a word's removal leaves empty is then null too, as it is for the pipeline.

Added conditions: the UNet also takes ``time_ids`` = (original_h, original_w, crop_top,
crop_left, target_h, target_w). For measurement the sizes default to the pixel size of
the image a latent came from (its H, W times the VAE's downsampling factor) and the crop
to (0, 0): what the pipeline uses when it generates at that size, i.e. the model is
asked about an uncropped image of exactly this size. ``original_size`` /
``target_size`` / ``crops_coords_top_left`` fix them instead (e.g. to ask about a
1024x1024 original that was downsized). The null condition uses the same time ids (the
pipeline's negative time ids default to the positive ones).

The UNet's cross-attention reads as for SD (the added conditions enter the time
embedding, not the attention): :meth:`SDXLDenoiser.cross_attention` gives one map per
token position of the first tokenizer, whose key is both encoders' states at that
position.

Usage::

    den = SDXLDenoiser.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0", variant="fp16",
                                       torch_dtype=torch.float16, device="cuda")
    z = den.encode(images)                             # images in [-1, 1], (N, 3, 1024, 1024)
    est = pointwise_mi(den, z, prompts, n_draws=64, maps=True)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..conditions import as_condition
from .base import Column
from .diffusers_common import DiffusersDenoiser, UNetCrossAttention, load_component, model_proposal, move, open_pretrained
from .text_encoding import PromptEncoder
from .vae_latents import LatentEncoding, VAELatents

__all__ = ["SDXLDenoiser", "empty_prompt_is_zeros"]

REQUIRED = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
N_TIME_IDS = 6  # original (h, w), crop (top, left), target (h, w)


def _pair(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = tuple(int(v) for v in value)
    if len(pair) != 2 or any(v < 0 for v in pair):
        raise ValueError(f"{name} must be two non-negative ints (height, width) / (top, left), got {value!r}")
    return pair


def empty_prompt_is_zeros(path: str, local: bool, revision: str | None = None) -> bool:
    """``force_zeros_for_empty_prompt`` of the pipeline's model_index.json; True (SDXL's
    default) when the file or the key is absent."""
    if local:
        index = Path(path) / "model_index.json"
        config = json.loads(index.read_text()) if index.is_file() else {}
    else:
        from diffusers import DiffusionPipeline

        try:
            config = DiffusionPipeline.load_config(path, revision=revision)
        except OSError:
            config = {}
    return bool(config.get("force_zeros_for_empty_prompt", True))


class SDXLDenoiser(LatentEncoding, UNetCrossAttention, DiffusersDenoiser):
    """eps_hat of an SDXL UNet; conditions are prompts or Conditions (see module doc).

    ``tokenizer`` is the first tokenizer (it decides what a word is); :attr:`text` and
    :attr:`text_2` are the two encoders' :class:`PromptEncoder` caches.
    """

    def __init__(self, unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, *,
                 prediction_type: str | None = None, device=None, autocast_dtype: Any = "auto",
                 cache_text: bool = True, text_batch_size: int = 32, cache_latents: bool = True,
                 force_zeros_for_empty_prompt: bool = True, original_size: Sequence[int] | None = None,
                 target_size: Sequence[int] | None = None, crops_coords_top_left: Sequence[int] = (0, 0)):
        super().__init__(unet, scheduler, prediction_type=prediction_type, device=device, autocast_dtype=autocast_dtype)
        cfg = unet.config
        if cfg.addition_embed_type != "text_time":
            raise ValueError("SDXLDenoiser needs a UNet with SDXL's added conditions (addition_embed_type="
                             f"'text_time'), got addition_embed_type={cfg.addition_embed_type!r}; SD 1.x/2.x UNets "
                             "load with LatentDiffusionDenoiser")
        if cfg.time_cond_proj_dim is not None:
            raise ValueError("this UNet takes a guidance embedding (time_cond_proj_dim set, e.g. LCM); not supported")
        hidden = (text_encoder.config.hidden_size, text_encoder_2.config.hidden_size)
        if cfg.cross_attention_dim != sum(hidden):
            raise ValueError(f"the UNet's cross_attention_dim is {cfg.cross_attention_dim}, but the text encoders' "
                             f"hidden sizes {hidden[0]} + {hidden[1]} concatenate to {sum(hidden)}")
        added = N_TIME_IDS * cfg.addition_time_embed_dim + text_encoder_2.config.projection_dim
        if cfg.projection_class_embeddings_input_dim != added:
            raise ValueError(f"the UNet's added-condition input has {cfg.projection_class_embeddings_input_dim} "
                             f"features; SDXL's {N_TIME_IDS} time ids x {cfg.addition_time_embed_dim} + the pooled "
                             f"{text_encoder_2.config.projection_dim} make {added} (a refiner, which takes an "
                             "aesthetic score, is not supported)")
        if vae.config.latent_channels != cfg.in_channels:
            raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels but the UNet takes "
                             f"{cfg.in_channels}")
        if getattr(vae.config, "force_upcast", False) and next(vae.parameters()).dtype == torch.float16:
            vae.to(torch.float32)  # SDXL's VAE overflows in float16; the pipeline upcasts it the same way
        move([text_encoder, text_encoder_2, vae], device)
        self.unet, self.vae = unet, vae
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        kw = {"batch_size": text_batch_size, "cache": cache_text, "hidden_layer": -2}
        self.text = PromptEncoder(tokenizer, text_encoder, **kw)
        self.text_2 = PromptEncoder(tokenizer_2, text_encoder_2, pooled="text_embeds", span_tokenizer=tokenizer, **kw)
        if self.text.max_length != self.text_2.max_length:
            raise ValueError(f"the tokenizers pad to {self.text.max_length} and {self.text_2.max_length} tokens; "
                             "SDXL concatenates the two encodings position by position and needs one length")
        self.latents = VAELatents(vae, cache=cache_latents)
        self.force_zeros_for_empty_prompt = bool(force_zeros_for_empty_prompt)
        self.original_size = _pair(original_size, "original_size")
        self.target_size = _pair(target_size, "target_size")
        self.crops_coords_top_left = _pair(crops_coords_top_left, "crops_coords_top_left")
        self._time_ids: dict[tuple, Tensor] = {}

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, revision: str | None = None, variant: str | None = None,
                        torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                        lora: str | Path | None = None, **kwargs) -> "SDXLDenoiser":
        """Load each component with from_pretrained(subfolder=...) from a diffusers SDXL
        folder or hub id; ``force_zeros_for_empty_prompt`` comes from model_index.json
        unless given. ``lora``: a UNet LoRA adapter folder to load on top (:meth:`load_lora`).
        ``kwargs`` go to the constructor (prediction_type, autocast_dtype, original_size, ...)."""
        path, local, scheduler = open_pretrained(path_or_hub_id, REQUIRED, "SDXL", revision,
                                                 kwargs.get("prediction_type"))
        if "force_zeros_for_empty_prompt" not in kwargs:
            kwargs["force_zeros_for_empty_prompt"] = empty_prompt_is_zeros(path, local, revision)
        kw = {"revision": revision, "variant": variant, "torch_dtype": torch_dtype}
        unet = load_component(path, local, "unet", "diffusers.UNet2DConditionModel", **kw)
        vae = load_component(path, local, "vae", "diffusers.AutoencoderKL", **kw)
        text_encoder = load_component(path, local, "text_encoder", "transformers.CLIPTextModel", **kw)
        text_encoder_2 = load_component(path, local, "text_encoder_2", "transformers.CLIPTextModelWithProjection",
                                        **kw)
        tokenizer = load_component(path, local, "tokenizer", "transformers.AutoTokenizer", revision=revision)
        tokenizer_2 = load_component(path, local, "tokenizer_2", "transformers.AutoTokenizer", revision=revision)
        for m in (unet, vae, text_encoder, text_encoder_2):
            m.eval()
        den = cls(unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2, scheduler, device=device, **kwargs)
        den.alpha_proposal = model_proposal(path, local)
        return den if lora is None else den.load_lora(lora)

    # -- the model's parts
    def modules(self):
        return [self.unet, self.text_encoder, self.text_encoder_2, self.vae]

    def text_encoders(self):
        return [self.text_encoder, self.text_encoder_2]

    def components(self) -> dict:
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder,
                "text_encoder_2": self.text_encoder_2, "tokenizer": self.tokenizer, "tokenizer_2": self.tokenizer_2,
                "scheduler": self.scheduler}

    def null_conditions(self, n: int) -> list[str]:
        return [""] * n

    def clear_cache(self) -> None:
        super().clear_cache()
        self.text.clear_cache()
        self.text_2.clear_cache()
        self.latents.clear_cache()
        self._time_ids.clear()

    # -- conditioning
    def prompt_features(self, conditions: Column, *, train: bool = False) -> tuple[Tensor, Tensor]:
        """(prompt_embeds (B, L, D1 + D2), pooled (B, P)) on the UNet's device: the
        pipeline's encode_prompt, with "" as its unconditional branch (module doc).
        ``train``: uncached and with gradients (PromptEncoder.embed_features)."""
        if train:
            column = list(conditions)
            (seq_1, _), (seq_2, pooled) = self.text.embed_features(column), self.text_2.embed_features(column)
        else:
            (seq_1, _), (seq_2, pooled) = self.text.features(conditions), self.text_2.features(conditions)
        dev = self.device
        seq, pooled = torch.cat([seq_1.to(dev), seq_2.to(dev)], -1), pooled.to(dev)
        if self.force_zeros_for_empty_prompt:
            null = [as_condition(c).prompt == "" for c in conditions]
            if any(null):
                rows = torch.tensor(null).to(dev, non_blocking=True)
                seq = seq.masked_fill(rows[:, None, None], 0.0)
                pooled = pooled.masked_fill(rows[:, None], 0.0)
        return seq, pooled

    def time_ids(self, latent_size: Sequence[int]) -> Tensor:
        """(1, 6) add_time_ids (original_h, original_w, crop_top, crop_left, target_h,
        target_w) for latents of spatial size ``latent_size``, in the UNet's dtype on its
        device (module doc: sizes default to the image's pixel size, crop to (0, 0))."""
        h, w = (int(v) for v in latent_size)
        key = (h, w, self.device, self.dtype)
        if key not in self._time_ids:
            pixels = (h * self.latents.downsample, w * self.latents.downsample)
            ids = (*(self.original_size or pixels), *self.crops_coords_top_left, *(self.target_size or pixels))
            self._time_ids[key] = torch.tensor([ids], dtype=self.dtype).to(self.device)
        return self._time_ids[key]

    def model_output(self, x_in, t, conditions, *, train: bool = False):
        seq, pooled = self.prompt_features(conditions, train=train)
        time_ids = self.time_ids(x_in.shape[-2:]).expand(x_in.shape[0], -1)
        added = {"text_embeds": pooled.to(self.dtype), "time_ids": time_ids}
        return self.unet(x_in, t, encoder_hidden_states=seq.to(self.dtype), added_cond_kwargs=added,
                         return_dict=False)[0]


