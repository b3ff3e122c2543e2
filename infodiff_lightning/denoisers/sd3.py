"""Stable Diffusion 3 / 3.5 (diffusers ``StableDiffusion3Pipeline`` layout): a rectified-flow
transformer with joint attention over three text encoders.

A folder (or hub id) with subfolders transformer/ (SD3Transformer2DModel), vae/
(AutoencoderKL with a shift_factor), text_encoder/ + tokenizer/ (CLIP-L),
text_encoder_2/ + tokenizer_2/ (CLIP-G), optionally text_encoder_3/ + tokenizer_3/ (T5)
and scheduler/ (FlowMatchEulerDiscreteScheduler). The base class maps alpha to the flow
input k(alpha) x_alpha at timestep 1000 s(alpha) and the velocity to eps_hat
(parametrisation.py, flow.py); this adapter only calls the transformer.

Prompt encoding is the pipeline's: each CLIP encoder's penultimate hidden state
(``clip_skip=None``) over CLIP-L's window, the two concatenated on the feature axis and
zero-padded to the joint attention width; the T5 last hidden state over
``max_sequence_length`` tokens (zeros of that shape without T5) appended along the
sequence; the pooled projection is the two CLIP text_embeds concatenated. The null
condition is the empty prompt through that same encoding (the pipeline's CFG branch;
SD3 does not zero it).

The cross-attention baseline (:meth:`SD3Denoiser.cross_attention`, joint_attention.py)
reads the joint attention of every block (``attn`` of ``transformer_blocks``, including
the last, whose text stream is context-only; not SD3.5's image-only ``attn2``): the
image queries' softmax over all keys, kept on the text keys, heads averaged, summed over
the blocks. CLIP position i is text position i (CLIP-L and CLIP-G share it); with T5
loaded, the T5 tokens' columns are added to the CLIP positions covering the same
characters, so a word's map holds the attention to both of its copies.

Usage::

    den = SD3Denoiser.from_pretrained("path/to/sd3", device="cuda", text_encoder_3=False)
    z = den.encode(images)                             # images in [-1, 1], (N, 3, H, W)
    est = pointwise_mi(den, z, prompts, n_draws=64, maps=True)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from .base import Column
from .diffusers_common import (DiffusersDenoiser, check_transformer_class, load_component, model_proposal, move,
                               open_pretrained, require_flow)
from .joint_attention import IMAGE_FIRST, position_transfer, read_joint_attention
from .parametrisation import parametrisation_of
from .text_encoding import PromptEncoder
from .vae_latents import LatentEncoding, VAELatents

__all__ = ["SD3Denoiser", "REQUIRED", "SD3_TRANSFORMER"]

REQUIRED = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")
SD3_TRANSFORMER = "SD3Transformer2DModel"


class SD3Denoiser(LatentEncoding, DiffusersDenoiser):
    """eps_hat of a Stable Diffusion 3 / 3.5 transformer; conditions are prompts or Conditions.

    ``alpha_range`` comes from the flow parametrisation: s in [1/T, 1 - 1/T] for the
    scheduler's T = 1000 training timesteps, i.e. alpha in [-13.8, 13.8]
    (flow.flow_logsnr_range). ``tokenizer`` is CLIP-L's: it decides what a word is; a
    masked word's spans move to CLIP-G's and T5's tokens by character offsets.
    ``text_encoder_3``/``tokenizer_3``: the T5 encoder, or None for both: the pipeline
    then feeds zeros in its place (what SD3 was trained to accept when T5 is dropped).
    ``max_sequence_length``: the T5 tokens (or zero rows) appended, 256 as the pipeline.
    """

    #: the joint attention's projections of both streams (image: to_*, text: add_*, to_add_out);
    #: SD3.5's second (image-only) attention has to_q/k/v/out too
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")

    def __init__(self, transformer, vae, text_encoder, tokenizer, text_encoder_2, tokenizer_2, scheduler,
                 text_encoder_3=None, tokenizer_3=None, *, max_sequence_length: int = 256,
                 prediction_type: str | None = None, device=None, autocast_dtype: Any = "auto",
                 cache_text: bool = True, text_batch_size: int = 32, cache_latents: bool = True):
        super().__init__(transformer, scheduler, prediction_type=prediction_type, device=device,
                         autocast_dtype=autocast_dtype)
        require_flow(self.parametrisation, scheduler, "Stable Diffusion 3")
        if (text_encoder_3 is None) != (tokenizer_3 is None):
            raise ValueError("pass text_encoder_3 and tokenizer_3 together (T5), or neither")
        if max_sequence_length < 2:
            raise ValueError(f"max_sequence_length must be >= 2, got {max_sequence_length}")
        cfg = transformer.config
        if vae.config.latent_channels != cfg.in_channels:
            raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels but the transformer takes "
                             f"{cfg.in_channels}")
        clip_width = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
        if clip_width > cfg.joint_attention_dim:
            raise ValueError(f"the CLIP hidden states are {clip_width} wide together, wider than the transformer's "
                             f"joint_attention_dim {cfg.joint_attention_dim}")
        pooled_width = text_encoder.config.projection_dim + text_encoder_2.config.projection_dim
        if pooled_width != cfg.pooled_projection_dim:
            raise ValueError(f"the CLIP projections are {pooled_width} wide together but the transformer's "
                             f"pooled_projection_dim is {cfg.pooled_projection_dim}")
        if text_encoder_3 is not None and text_encoder_3.config.d_model != cfg.joint_attention_dim:
            raise ValueError(f"the T5 encoder is {text_encoder_3.config.d_model} wide but the transformer's "
                             f"joint_attention_dim is {cfg.joint_attention_dim}")
        move([vae, text_encoder, text_encoder_2, text_encoder_3], device)
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        self.max_sequence_length = int(max_sequence_length)
        # The pipeline pads both CLIP prompts to CLIP-L's window (its tokenizer_max_length).
        window = int(tokenizer.model_max_length)
        kw = {"batch_size": text_batch_size, "cache": cache_text}
        self.clip_l = PromptEncoder(tokenizer, text_encoder, max_length=window, hidden_layer=-2, pooled="text_embeds",
                                    **kw)
        self.clip_g = PromptEncoder(tokenizer_2, text_encoder_2, max_length=window, hidden_layer=-2,
                                    pooled="text_embeds", span_tokenizer=tokenizer, **kw)
        self.t5 = None if text_encoder_3 is None else PromptEncoder(
            tokenizer_3, text_encoder_3, max_length=self.max_sequence_length, span_tokenizer=tokenizer, **kw)
        self.latents = VAELatents(vae, cache=cache_latents)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, revision: str | None = None, variant: str | None = None,
                        torch_dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                        lora: str | Path | None = None, text_encoder_3: bool = True, max_sequence_length: int = 256,
                        **kwargs) -> "SD3Denoiser":
        """Load each component with from_pretrained(subfolder=...) from a diffusers SD3
        folder or hub id. ``text_encoder_3=False`` skips T5 even when the folder has it
        (T5-XXL is ~4.7B parameters, most of the model's memory): the transformer then sees
        zeros in its place, as the pipeline gives it without T5, which changes the model
        (measure with the same choice throughout). A local folder without
        text_encoder_3/ runs without T5 either way; a hub id is expected to have it. ``lora``: a transformer LoRA adapter
        folder loaded on top (:meth:`load_lora`). ``kwargs`` go to the constructor
        (autocast_dtype, cache_text, ...)."""
        path, local, scheduler = open_pretrained(path_or_hub_id, REQUIRED, "Stable Diffusion 3", revision,
                                                 kwargs.get("prediction_type"))
        require_flow(parametrisation_of(scheduler), scheduler, "Stable Diffusion 3")  # before any weights are loaded
        if local:
            check_transformer_class(path, SD3_TRANSFORMER, "Stable Diffusion 3")
        kw = {"revision": revision, "variant": variant, "torch_dtype": torch_dtype}
        transformer = load_component(path, local, "transformer", f"diffusers.{SD3_TRANSFORMER}", **kw)
        vae = load_component(path, local, "vae", "diffusers.AutoencoderKL", **kw)
        encoders = [load_component(path, local, name, "transformers.CLIPTextModelWithProjection", **kw)
                    for name in ("text_encoder", "text_encoder_2")]
        tokenizers = [load_component(path, local, name, "transformers.AutoTokenizer", revision=revision)
                      for name in ("tokenizer", "tokenizer_2")]
        t5 = tok_t5 = None
        if text_encoder_3 and (not local or (Path(path) / "text_encoder_3").is_dir()):
            if local and not (Path(path) / "tokenizer_3").is_dir():
                raise FileNotFoundError(f"{path} has text_encoder_3/ but no tokenizer_3/ (T5 needs both)")
            t5 = load_component(path, local, "text_encoder_3", "transformers.T5EncoderModel", **kw)
            tok_t5 = load_component(path, local, "tokenizer_3", "transformers.AutoTokenizer", revision=revision)
        for m in (transformer, vae, *encoders, t5):
            if m is not None:
                m.eval()
        den = cls(transformer, vae, encoders[0], tokenizers[0], encoders[1], tokenizers[1], scheduler, t5, tok_t5,
                  max_sequence_length=max_sequence_length, device=device, **kwargs)
        den.alpha_proposal = model_proposal(path, local)
        return den if lora is None else den.load_lora(lora)

    # -- modules
    def modules(self) -> list[torch.nn.Module]:
        return [self.transformer, *self.text_encoders(), self.vae]

    def text_encoders(self) -> list[torch.nn.Module]:
        """CLIP-L, CLIP-G and (when loaded) T5."""
        return [self.text_encoder, self.text_encoder_2] + ([] if self.text_encoder_3 is None else [self.text_encoder_3])

    def components(self) -> dict:
        """Every pipeline folder by name (text_encoder_3/tokenizer_3 None without T5, as the
        pipeline takes them)."""
        return {"transformer": self.transformer, "vae": self.vae, "text_encoder": self.text_encoder,
                "tokenizer": self.tokenizer, "text_encoder_2": self.text_encoder_2, "tokenizer_2": self.tokenizer_2,
                "text_encoder_3": self.text_encoder_3, "tokenizer_3": self.tokenizer_3, "scheduler": self.scheduler}

    def clear_cache(self) -> None:
        super().clear_cache()
        for enc in (self.clip_l, self.clip_g, self.t5):
            if enc is not None:
                enc.clear_cache()
        self.latents.clear_cache()

    # -- conditions
    def null_conditions(self, n: int) -> list[str]:
        return [""] * n

    def prompt_embeddings(self, conditions: Sequence, *, train: bool = False) -> tuple[Tensor, Tensor]:
        """(encoder_hidden_states (B, L_clip + max_sequence_length, joint_attention_dim),
        pooled_projections (B, P_l + P_g)) of a column, on the transformer's device and in
        its dtype, as the pipeline's ``encode_prompt`` builds them (module doc). Cached per
        condition, or with ``train`` uncached and with gradients."""
        column = list(conditions)
        dev, dtype = self.device, self.dtype

        def run(enc: PromptEncoder) -> tuple[Tensor, Tensor | None]:
            seq, pooled = enc.embed_features(column) if train else enc.features(column)
            return seq.to(dev, dtype), (None if pooled is None else pooled.to(dev, dtype))

        (seq_l, pooled_l), (seq_g, pooled_g) = run(self.clip_l), run(self.clip_g)
        width = int(self.transformer.config.joint_attention_dim)
        clip = torch.cat([seq_l, seq_g], -1)
        clip = torch.nn.functional.pad(clip, (0, width - clip.shape[-1]))
        if self.t5 is None:
            t5 = clip.new_zeros(clip.shape[0], self.max_sequence_length, width)
        else:
            t5 = run(self.t5)[0]
        return torch.cat([clip, t5], -2), torch.cat([pooled_l, pooled_g], -1)

    def model_output(self, x_in: Tensor, t: Tensor, conditions: Column, *, train: bool = False) -> Tensor:
        """The transformer's velocity at flow input ``x_in`` and timesteps ``t`` (= 1000 s)."""
        seq, pooled = self.prompt_embeddings(conditions, train=train)
        return self.transformer(hidden_states=x_in, timestep=t, encoder_hidden_states=seq,
                                pooled_projections=pooled, return_dict=False)[0]

    # -- the attention baseline
    def cross_attention(self, x_alpha: Tensor, alpha: Tensor, conditions: Column) -> Tensor:
        """(B, L, H, W) for the L = CLIP-window positions of the first tokenizer (CLIP-L):
        the joint attention each latent element's patch token pays to that position, heads
        averaged and summed over all joint blocks (module doc); with T5, plus the attention
        to the T5 tokens of the same characters (joint_attention.position_transfer)."""
        maps = read_joint_attention(self, x_alpha, alpha, conditions, IMAGE_FIRST,
                                    int(self.transformer.config.patch_size))
        window = self.clip_l.max_length
        fold = torch.zeros(len(conditions), window, maps.shape[1])
        fold[:, :, :window] = torch.eye(window)
        if self.t5 is not None:  # without T5 its positions are zero rows that carry no word
            for i, c in enumerate(conditions):
                fold[i, :, window:] = position_transfer(c, self.tokenizer, window, self.tokenizer_3,
                                                        self.max_sequence_length)
        return torch.einsum("blt,bthw->blhw", fold.to(maps.device), maps)

