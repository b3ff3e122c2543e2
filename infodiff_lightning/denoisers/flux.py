"""Flux (black-forest-labs FLUX.1, diffusers ``FluxPipeline`` layout): a rectified-flow
transformer on packed VAE latents, conditioned on T5 and on CLIP's pooled embedding.

A folder (or hub id) with subfolders transformer/ (FluxTransformer2DModel), vae/
(AutoencoderKL with a shift and a scale), text_encoder/ + tokenizer/ (CLIPTextModel: only
its pooled output is used), text_encoder_2/ + tokenizer_2/ (T5EncoderModel: its last
hidden state, padded to ``max_sequence_length``, 512 as in the pipeline) and scheduler/
(FlowMatchEulerDiscreteScheduler).

x, the variable the estimators integrate over, is the *unpacked* latent (B, C, H/8, W/8)
of :class:`~.vae_latents.VAELatents`, so maps come out at latent resolution.
:meth:`FluxDenoiser.model_output` packs each 2x2 patch into one token, (B, (H/2)(W/2), 4C)
(:func:`pack_latents`), with the pipeline's position ids (:func:`latent_image_ids`), calls
the transformer and unpacks its velocity back to (B, C, H, W) (:func:`unpack_latents`).
The transformer takes the flow time s itself and multiplies it by 1000 inside, so the
parametrisation's ``timestep_scale`` is 1 (flow.py gives eps_hat from the velocity).

Guidance: Flux-dev is guidance distilled (``transformer.config.guidance_embeds``): it
takes the guidance scale as an input, ``guidance_scale`` (3.5 by default, as the
pipeline), and never had an unconditional branch. The null condition "" is the empty
prompt through both encoders, so the pointwise MI of such a model measures the
information of a prompt relative to the empty-prompt condition *at that guidance value*,
not an MI to an unconditional model; and a different ``guidance_scale`` is a different
denoiser, with its own informations. Flux-schnell-like models (no guidance embedding)
take no guidance scale.

Word removal: ``tokenizer`` (CLIP's) decides what a word is; a masked word's spans move
to T5's tokens by character offsets (conditions.transfer_spans). CLIP's pooled output
is read where the unmasked prompt ends (text_encoding.py), not at the pad id put on the
masked word, which Flux's CLIP tokenizer shares with its end token.

The cross-attention baseline (:meth:`FluxDenoiser.cross_attention`, joint_attention.py)
reads the joint attention of the double-stream blocks (``transformer_blocks``): the
image queries' softmax over [text; image] keys (rotary embedding applied, as the model
does), kept on the T5 keys, heads averaged, summed over the blocks. The single-stream
blocks are not read: there the text tokens are no longer a stream of their own (one
sequence, one set of projections, and the layer is not told where the text ends), so
their columns are less a reading of the prompt than of tokens the image has already
written into; leaving them out also keeps the baseline what it is for SD3 (every block
dual-stream) and DAAM (the text-conditioning layers). The protocol indexes the first
tokenizer (CLIP), which Flux only pools: each T5 token's attention goes to the CLIP
positions covering its characters, in proportion (joint_attention.position_transfer),
so a word's CLIP positions sum exactly the attention to its T5 tokens. CLIP's start,
end and padding positions get zero maps (T5's end token and padding are not read).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from .diffusers_common import (DiffusersDenoiser, check_transformer_class, load_component, model_proposal, move,
                               open_pretrained, require_flow)
from .joint_attention import TEXT_FIRST, position_transfer, read_joint_attention
from .text_encoding import PromptEncoder
from .vae_latents import LatentEncoding, VAELatents

__all__ = ["FluxDenoiser", "pack_latents", "unpack_latents", "latent_image_ids", "DEFAULT_GUIDANCE_SCALE",
           "MAX_SEQUENCE_LENGTH"]

REQUIRED = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")
TRANSFORMER_CLASS = "FluxTransformer2DModel"
#: the pipeline's default guidance scale for guidance-distilled models (Flux-dev)
DEFAULT_GUIDANCE_SCALE = 3.5
#: the pipeline's T5 sequence length, which is also the most it accepts
MAX_SEQUENCE_LENGTH = 512


# ----------------------------------------------------------------------------- packing

def pack_latents(x: Tensor) -> Tensor:
    """(B, C, H, W) latents -> (B, (H/2)(W/2), 4C) tokens: each 2x2 patch is one token,
    patches in row-major order, features ordered (channel, row in patch, column in patch)."""
    if x.ndim != 4:
        raise ValueError(f"Flux latents must be (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"Flux packs 2x2 latent patches; latent size {h}x{w} must be even (images a multiple "
                         "of 16 pixels for the real VAE)")
    patches = x.reshape(b, c, h // 2, 2, w // 2, 2)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack_latents(tokens: Tensor, height: int, width: int) -> Tensor:
    """The inverse of :func:`pack_latents`: (B, (H/2)(W/2), 4C) -> (B, C, H, W), for the
    latent size ``height`` x ``width``."""
    b, n, d = tokens.shape
    if height % 2 or width % 2 or n != (height // 2) * (width // 2) or d % 4:
        raise ValueError(f"{n} tokens of {d} features are not the 2x2 patches of a {height}x{width} latent")
    patches = tokens.reshape(b, height // 2, width // 2, d // 4, 2, 2)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, height, width)


def latent_image_ids(rows: int, cols: int, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """The (rows * cols, 3) position ids of the packed tokens of a ``rows`` x ``cols`` patch
    grid, in :func:`pack_latents`' order: (0, row, column), the rotary embedding's axes."""
    r = torch.arange(rows, device=device).repeat_interleave(cols)
    c = torch.arange(cols, device=device).repeat(rows)
    return torch.stack([torch.zeros_like(r), r, c], dim=1).to(dtype)


# ----------------------------------------------------------------------------- adapter

def _guidance(guidance_scale: Any, guidance_embeds: bool) -> float | None:
    """The guidance value the transformer is given: "auto" is the pipeline's default for
    a guidance-distilled model and None otherwise."""
    if isinstance(guidance_scale, str):
        if guidance_scale != "auto":
            raise ValueError(f"guidance_scale must be a number, None or 'auto', got {guidance_scale!r}")
        return DEFAULT_GUIDANCE_SCALE if guidance_embeds else None
    if not guidance_embeds:
        if guidance_scale is not None:
            raise ValueError(f"guidance_scale={guidance_scale!r}, but this Flux transformer takes no guidance "
                             "(guidance_embeds is false, as for Flux-schnell); pass guidance_scale=None")
        return None
    if guidance_scale is None or isinstance(guidance_scale, bool) or not math.isfinite(float(guidance_scale)):
        raise ValueError(f"this Flux transformer is guidance distilled (guidance_embeds is true) and needs a finite "
                         f"guidance_scale (the pipeline's default is {DEFAULT_GUIDANCE_SCALE}), got {guidance_scale!r}")
    return float(guidance_scale)


class FluxDenoiser(LatentEncoding, DiffusersDenoiser):
    """eps_hat of a Flux transformer on unpacked VAE latents; conditions are prompts or
    Conditions, the null condition is "" (see the module doc for what MI then means).

    ``guidance_scale``: the embedded guidance value of a guidance-distilled transformer
    ("auto": 3.5 if it has a guidance embedding, else None; a number for a transformer
    without one is an error). ``max_sequence_length``: T5's padded length (at most 512).
    """

    #: the attention projections of the double-stream blocks (image stream to_*, text
    #: stream add_*) and, by the same suffixes, the single-stream blocks' to_q/k/v (whose
    #: attention output is fused with the MLP in proj_out, which is left out, as is the
    #: final proj_out of the same name)
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")

    def __init__(self, transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, scheduler, *,
                 guidance_scale: float | None | str = "auto", max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 device=None, autocast_dtype: Any = "auto", cache_text: bool = True, text_batch_size: int = 32,
                 cache_latents: bool = True):
        super().__init__(transformer, scheduler, device=device, autocast_dtype=autocast_dtype, timestep_scale=1.0)
        require_flow(self.parametrisation, scheduler, "Flux")
        cfg = transformer.config
        if int(cfg.patch_size) != 1:
            raise ValueError(f"the transformer's patch_size is {cfg.patch_size}; Flux packs 2x2 latent patches "
                             "outside the transformer (patch_size 1)")
        latent = int(vae.config.latent_channels)
        if 4 * latent != int(cfg.in_channels):
            raise ValueError(f"the VAE has {latent} latent channels, i.e. 2x2 patches of {4 * latent} features, but the "
                             f"transformer takes {cfg.in_channels}")
        if int(text_encoder_2.config.d_model) != int(cfg.joint_attention_dim):
            raise ValueError(f"text_encoder_2 has hidden size {text_encoder_2.config.d_model} but the transformer's "
                             f"joint_attention_dim is {cfg.joint_attention_dim}")
        if int(text_encoder.config.hidden_size) != int(cfg.pooled_projection_dim):
            raise ValueError(f"text_encoder has hidden size {text_encoder.config.hidden_size} but the transformer's "
                             f"pooled_projection_dim is {cfg.pooled_projection_dim}")
        if not 2 <= int(max_sequence_length) <= MAX_SEQUENCE_LENGTH:
            raise ValueError(f"max_sequence_length must lie in [2, {MAX_SEQUENCE_LENGTH}] (the pipeline's limit), "
                             f"got {max_sequence_length}")
        self.guidance_scale = _guidance(guidance_scale, bool(cfg.guidance_embeds))
        move([vae, text_encoder, text_encoder_2], device)
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.text = PromptEncoder(tokenizer, text_encoder, batch_size=text_batch_size, cache=cache_text,
                                  pooled="pooler_output")
        self.text_2 = PromptEncoder(tokenizer_2, text_encoder_2, batch_size=text_batch_size, cache=cache_text,
                                    max_length=int(max_sequence_length), span_tokenizer=tokenizer)
        self.latents = VAELatents(vae, cache=cache_latents)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, revision: str | None = None, variant: str | None = None,
                        torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                        lora: str | Path | None = None, guidance_scale: float | None | str = "auto",
                        max_sequence_length: int = MAX_SEQUENCE_LENGTH, **kwargs) -> "FluxDenoiser":
        """Load each component with from_pretrained(subfolder=...) from a diffusers Flux
        folder or hub id; ``lora``: a transformer LoRA adapter folder to load on top
        (:meth:`load_lora`). ``kwargs`` go to the constructor (autocast_dtype, ...)."""
        path, local, scheduler = open_pretrained(path_or_hub_id, REQUIRED, "Flux", revision)
        if local:
            check_transformer_class(path, TRANSFORMER_CLASS, "Flux")
        kw = {"revision": revision, "variant": variant, "torch_dtype": torch_dtype}
        transformer = load_component(path, local, "transformer", f"diffusers.{TRANSFORMER_CLASS}", **kw)
        vae = load_component(path, local, "vae", "diffusers.AutoencoderKL", **kw)
        text_encoder = load_component(path, local, "text_encoder", "transformers.CLIPTextModel", **kw)
        text_encoder_2 = load_component(path, local, "text_encoder_2", "transformers.T5EncoderModel", **kw)
        tokenizer = load_component(path, local, "tokenizer", "transformers.CLIPTokenizer", revision=revision)
        tokenizer_2 = load_component(path, local, "tokenizer_2", "transformers.T5TokenizerFast", revision=revision)
        for m in (transformer, vae, text_encoder, text_encoder_2):
            m.eval()
        den = cls(transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, scheduler, device=device,
                  guidance_scale=guidance_scale, max_sequence_length=max_sequence_length, **kwargs)
        den.alpha_proposal = model_proposal(path, local)
        return den if lora is None else den.load_lora(lora)

    # -- modules
    def modules(self):
        return [self.transformer, self.text_encoder, self.text_encoder_2, self.vae]

    def text_encoders(self):
        return [self.text_encoder, self.text_encoder_2]

    def components(self) -> dict:
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder,
                "tokenizer": self.tokenizer, "text_encoder_2": self.text_encoder_2, "tokenizer_2": self.tokenizer_2,
                "scheduler": self.scheduler}

    def clear_cache(self) -> None:
        super().clear_cache()
        self.text.clear_cache()
        self.text_2.clear_cache()
        self.latents.clear_cache()

    # -- the attention baseline
    def cross_attention(self, x_alpha: Tensor, alpha: Tensor, conditions) -> Tensor:
        """(B, L, H, W) for the L positions of CLIP's window (the first tokenizer): the joint
        attention that each latent element's 2x2 token pays to the T5 tokens of the same
        characters, heads averaged, summed over the double-stream blocks (module doc)."""
        maps = read_joint_attention(self, x_alpha, alpha, conditions, TEXT_FIRST, 2)  # 2x2 packed tokens
        fold = torch.stack([position_transfer(c, self.tokenizer, self.text.max_length, self.tokenizer_2,
                                              self.text_2.max_length) for c in conditions])
        return torch.einsum("blt,bthw->blhw", fold.to(maps.device), maps)

    # -- conditions
    def null_conditions(self, n: int) -> list[str]:
        return [""] * n

    def prompt_embeddings(self, conditions: Sequence, *, train: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(prompt_embeds (B, L, D) of T5, pooled_prompt_embeds (B, P) of CLIP, text_ids
        (L, 3) of zeros) on the transformer's device and dtype: the pipeline's
        ``encode_prompt``. Cached per unique condition, or with ``train`` uncached and with
        gradients. The encoders run in their own weights' dtype, outside any autocast
        (T5 overflows in float16), so an embedding is the same wherever it is first asked for."""
        conditions = list(conditions)
        dev = self.device
        with torch.autocast(device_type=dev.type, enabled=False):
            if train:
                seq, pooled = self.text_2.embed_features(conditions)[0], self.text.embed_features(conditions)[1]
            else:
                seq, pooled = self.text_2.features(conditions)[0], self.text.features(conditions)[1]
        seq, pooled = seq.to(dev, self.dtype), pooled.to(dev, self.dtype)
        return seq, pooled, torch.zeros(seq.shape[1], 3, device=dev, dtype=self.dtype)

    # -- the backbone
    def model_output(self, x_in: Tensor, t: Tensor, conditions, *, train: bool = False) -> Tensor:
        """The transformer's velocity (B, C, H, W) at unpacked latents ``x_in`` and flow
        times ``t`` = s (B,), with the embedded guidance when the transformer takes one."""
        b, c, h, w = x_in.shape
        if 4 * c != int(self.transformer.config.in_channels):
            raise ValueError(f"latents with {c} channels, but the transformer takes 2x2 patches of "
                             f"{self.transformer.config.in_channels} features ({self.latents.latent_channels} channels)")
        seq, pooled, text_ids = self.prompt_embeddings(conditions, train=train)
        guidance = None if self.guidance_scale is None else \
            torch.full((b,), self.guidance_scale, device=x_in.device, dtype=torch.float32)
        out = self.transformer(hidden_states=pack_latents(x_in), timestep=t.to(x_in.dtype), guidance=guidance,
                               pooled_projections=pooled, encoder_hidden_states=seq, txt_ids=text_ids,
                               img_ids=latent_image_ids(h // 2, w // 2, x_in.device, x_in.dtype),
                               return_dict=False)[0]
        return unpack_latents(out, h, w)
