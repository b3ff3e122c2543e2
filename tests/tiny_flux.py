"""A tiny Flux pipeline built from configs, offline, for the Flux adapter tests.

Layout and classes as FluxPipeline saves them: transformer/ (FluxTransformer2DModel),
vae/ (AutoencoderKL with a shift and a scale, no quant convs, as Flux's), text_encoder/
+ tokenizer/ (CLIPTextModel and the tiny CLIP BPE tokenizer of tiny_models.py),
text_encoder_2/ + tokenizer_2/ (T5EncoderModel and a T5 Unigram tokenizer built from a
word list), scheduler/ (FlowMatchEulerDiscreteScheduler with Flux's dynamic shifting).

Sizes: 16x16 RGB images -> VAE latents 4x8x8 (downsampling 2; the real VAE has 16 latent
channels and downsampling 8) -> 16 packed tokens of 4 * 4 = 16 features. The transformer
has one double-stream and one single-stream block, 2 heads of 8 dims (rope axes 2 + 2 + 4
= 8), a 32-dim T5 context and a 32-dim pooled CLIP projection.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

from tiny_models import HIDDEN, MAX_TOKENS, WORDS, build_text_encoder, build_tokenizer

T5_HIDDEN = 32  # the transformer's joint_attention_dim
T5_TOKENS = 16  # max_sequence_length for the tests (512 in the pipeline)
LATENT_CHANNELS = 4
SCALING, SHIFT = 0.3611, 0.1159  # the real Flux VAE's scaling_factor and shift_factor


def build_t5_tokenizer(max_length: int = T5_TOKENS):
    """A T5 tokenizer (Unigram over Metaspace pieces, "</s>" appended, pad id 0) in which
    every word of WORDS is one piece "▁word" and every letter, digit and punctuation mark
    a piece of its own, so any word can still be spelled (in several pieces)."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in WORDS]
    vocab += [(c, -5.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=max_length)


def build_t5_encoder(tokenizer, seed: int = 3):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=T5_HIDDEN, d_kv=8, d_ff=2 * T5_HIDDEN, num_layers=2,
                      num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    return T5EncoderModel(config).eval()


def build_flux_vae(seed: int = 2):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=8, sample_size=16, scaling_factor=SCALING,
                         shift_factor=SHIFT, use_quant_conv=False, use_post_quant_conv=False).eval()


def build_flux_transformer(guidance_embeds: bool = True, seed: int = 4):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    model = FluxTransformer2DModel(patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=1, num_single_layers=1,
                                   attention_head_dim=8, num_attention_heads=2, joint_attention_dim=T5_HIDDEN,
                                   pooled_projection_dim=HIDDEN, guidance_embeds=guidance_embeds,
                                   axes_dims_rope=(2, 2, 4))
    return model.eval()


def build_flux_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                           base_shift=0.5, max_shift=1.15)


def build_flux_components(guidance_embeds: bool = True) -> dict:
    clip = build_tokenizer(MAX_TOKENS)
    t5 = build_t5_tokenizer()
    return {"scheduler": build_flux_scheduler(), "vae": build_flux_vae(), "text_encoder": build_text_encoder(clip),
            "tokenizer": clip, "text_encoder_2": build_t5_encoder(t5), "tokenizer_2": t5,
            "transformer": build_flux_transformer(guidance_embeds)}


def save_flux_pipeline(folder: str | Path, guidance_embeds: bool = True) -> Path:
    """A tiny Flux pipeline saved with FluxPipeline.save_pretrained (``guidance_embeds``:
    Flux-dev-like, guidance distilled; False: Flux-schnell-like)."""
    from diffusers import FluxPipeline

    FluxPipeline(**build_flux_components(guidance_embeds)).save_pretrained(folder)
    return Path(folder)
